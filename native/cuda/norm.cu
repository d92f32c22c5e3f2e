// norm.cu: the eval BatchNorm with residual and activation (one pass over [N, C, H, W]) and per-channel spatial
// means, on the GPU. The same contract as cpu/norm.cc's batchNormActEval.
#include <cmath>

#include "common.h"
#include "epilogue.h"
#include "msgc/cuda.h"

namespace msgc {
namespace cuda {
namespace {

// y[n, c, p] = act(x · mul[c] + add[c] + residual); P = H·W
__global__ void bnActKernel(const float* x, float* y, int64_t total, int C, int64_t P, Epilogue e) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)((i / P) % C);
    float mul, add;
    e.affine(c, mul, add);
    y[i] = e.finish(x[i] * mul + add, i);
  }
}

// means[row] = mean of y[row, 0..P) for row = n·C + c; one warp per row, summed in float64 as the CPU does
__global__ void rowMeansKernel(const float* y, float* means, int64_t rows, int64_t P) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* r = y + row * P;
  double s = 0;
  for (int64_t p = lane; p < P; p += 32) s += r[p];
  for (int off = 16; off; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
  if (lane == 0) means[row] = (float)(s / (double)P);
}

}  // namespace

Epilogue makeEpilogue(const FusedBnAct* bn) {
  Epilogue e;
  if (!bn) return e;
  e.mean = bn->runningMean->data();
  e.var = bn->runningVar->data();
  e.gamma = bn->weight ? bn->weight->data() : nullptr;
  e.beta = bn->bias ? bn->bias->data() : nullptr;
  e.eps = bn->eps;
  e.act = bn->act;
  e.residual = bn->residual ? bn->residual->data() : nullptr;
  return e;
}

void channelMeans(const float* y, float* means, int64_t rows, int64_t P) {
  if (rows <= 0) return;
  rowMeansKernel<<<blocksFor(rows * 32, 256, 1LL << 30), 256>>>(y, means, rows, P);
  MSGC_CUDA_LAUNCHED("channel means");
}

void applyEpilogue(const float* x, float* y, int64_t N, int64_t C, int64_t P, const Epilogue& e) {
  const int64_t total = N * C * P;
  if (total <= 0) return;
  bnActKernel<<<blocksFor(total, 256), 256>>>(x, y, total, (int)C, P, e);
  MSGC_CUDA_LAUNCHED("batch norm + activation");
}

TensorPtr batchNormActEval(const Tensor& x, const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                           const Tensor* bias, float eps, int act, const Tensor* residual, TensorPtr* means) {
  ensureDevice();
  const int64_t N = x.shape[0], C = x.shape[1];
  const int64_t P = x.numel() / (N * C > 0 ? N * C : 1);
  const FusedBnAct bn = fusedBnAct(runningMean, runningVar, weight, bias, eps, act, residual);
  TensorPtr y = emptyTensor(x.shape, Device::CUDA);
  applyEpilogue(x.data(), y->data(), N, C, P, makeEpilogue(&bn));
  if (means) {
    *means = emptyTensor({N, C, 1, 1}, Device::CUDA);
    channelMeans(y->data(), (*means)->data(), N * C, P);
  }
  return y;
}

}  // namespace cuda
}  // namespace msgc
