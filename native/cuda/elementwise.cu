// elementwise.cu: what a model's eval forward needs around its convolutions, on the GPU: activations, broadcast
// binary ops and scaling, pooling, the linear layer, and the gate heads (the same contracts as the CPU ops in
// ops.h; tensors plain). One thread per output element (or one warp per dot product): these passes are
// bandwidth-bound and small next to the convolutions. The per-element bodies are in elementwise_ops.h, which the
// CPU build also runs (core/cuda_emulation.cc) for the tests.
#include <cmath>

#include "common.h"
#include "elementwise_ops.h"
#include "msgc/cuda.h"

namespace msgc {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void activationKernel(const float* x, float* y, int64_t n, int kind) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = activationAt(x[i], kind);
}

__global__ void scaleKernel(const float* x, float* y, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = alpha * x[i];
}

__global__ void binaryKernel(const float* a, const float* b, float* y, int64_t n, int op, BroadcastShape s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = binaryAt(a[i], b[broadcastIndex(s, i)], op);
}

__global__ void poolKernel(const float* x, float* y, int64_t total, int H, int W, int OH, int OW, Pool2dParams p,
                           int isMax) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = poolAt(x, i, H, W, OH, OW, p, isMax != 0);
}

// out[r, k] = Σ_j in[r, j] · w[k, j] (+ bias[k]); one warp per output, lanes over j
__global__ void rowDotKernel(const float* in, const float* w, const float* bias, float* out, int64_t rows, int K, int J,
                             RowDotEpilogue e) {
  const int64_t o = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= rows * K) return;
  const int64_t r = o / K;
  const int k = (int)(o - r * K);
  const float* a = in + r * J;
  const float* b = w + (int64_t)k * J;
  float s = 0.f;
  for (int j = lane; j < J; j += 32) s = fmaf(a[j], b[j], s);
  for (int off = 16; off; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
  if (lane == 0) out[o] = e.apply(s + (bias ? bias[k] : 0.f), k);
}

__global__ void thresholdKernel(float* z, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    z[i] = thresholdAt(z[i]);
}

void rowDot(const float* in, const float* w, const float* bias, float* out, int64_t rows, int64_t K, int64_t J,
            const RowDotEpilogue& e = RowDotEpilogue()) {
  if (rows * K <= 0) return;
  const int warps = kThreads / 32;
  rowDotKernel<<<(unsigned)((rows * K + warps - 1) / warps), kThreads>>>(in, w, bias, out, rows, (int)K, (int)J, e);
  MSGC_CUDA_LAUNCHED("row dot products");
}

}  // namespace

TensorPtr activationForward(Activation a, const Tensor& x) {
  ensureDevice();
  TensorPtr y = emptyTensor(x.shape, Device::CUDA);
  const int64_t n = x.numel();
  if (n) activationKernel<<<blocksFor(n, kThreads), kThreads>>>(x.data(), y->data(), n, (int)a);
  MSGC_CUDA_LAUNCHED("activation");
  return y;
}

TensorPtr scale(const Tensor& x, float alpha) {
  ensureDevice();
  TensorPtr y = emptyTensor(x.shape, Device::CUDA);
  const int64_t n = x.numel();
  if (n) scaleKernel<<<blocksFor(n, kThreads), kThreads>>>(x.data(), y->data(), n, alpha);
  MSGC_CUDA_LAUNCHED("scale");
  return y;
}

TensorPtr binaryForward(Binary op, const Tensor& a, const Tensor& b) {
  ensureDevice();
  MSGC_CHECK(a.dim() <= 8, "binary (cuda): at most 8 dims");
  const BroadcastShape s = broadcastShape(a.shape, b.shape);
  TensorPtr y = emptyTensor(a.shape, Device::CUDA);
  const int64_t n = a.numel();
  if (n) binaryKernel<<<blocksFor(n, kThreads), kThreads>>>(a.data(), b.data(), y->data(), n, (int)op, s);
  MSGC_CUDA_LAUNCHED("binary op");
  return y;
}

TensorPtr pool2dForward(PoolKind kind, const Tensor& x, const Pool2dParams& p) {
  ensureDevice();
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t OH = (H + 2 * p.padH - p.kernelH) / p.strideH + 1, OW = (W + 2 * p.padW - p.kernelW) / p.strideW + 1;
  TensorPtr y = emptyTensor({N, C, OH, OW}, Device::CUDA);
  const int64_t total = y->numel();
  if (total)
    poolKernel<<<blocksFor(total, kThreads), kThreads>>>(x.data(), y->data(), total, (int)H, (int)W, (int)OH, (int)OW, p,
                                                           kind == PoolKind::Max ? 1 : 0);
  MSGC_CUDA_LAUNCHED("pooling");
  return y;
}

TensorPtr linearForward(const Tensor& x, const Tensor& weight, const Tensor* bias) {
  ensureDevice();
  const int64_t N = x.shape[0], J = x.shape[1], K = weight.shape[0];
  TensorPtr y = emptyTensor({N, K}, Device::CUDA);
  rowDot(x.data(), weight.data(), bias ? bias->data() : nullptr, y->data(), N, K, J);
  return y;
}

TensorPtr squeezeHeadEval(const Tensor& ctx, const Tensor& w1, const Tensor& mean, const Tensor& var, const Tensor* gamma,
                          const Tensor* beta, float eps, const Tensor& w2, const Tensor& b2, bool threshold) {
  ensureDevice();
  const int64_t N = ctx.shape[0], Cc = ctx.shape[1], B = w1.shape[0], K = w2.shape[0];
  TensorPtr h = emptyTensor({N, B}, Device::CUDA);
  rowDot(ctx.data(), w1.data(), nullptr, h->data(), N, B, Cc, headEpilogue(mean.data(), var.data(),
         gamma ? gamma->data() : nullptr, beta ? beta->data() : nullptr, eps));
  TensorPtr z = emptyTensor({N, K}, Device::CUDA);
  RowDotEpilogue gate;
  if (threshold) gate.kind = RowDotEpilogue::kThreshold;
  rowDot(h->data(), w2.data(), b2.data(), z->data(), N, K, B, gate);
  return z;
}

TensorPtr gateEval(const Tensor& logits) {
  ensureDevice();
  TensorPtr m = emptyTensor(logits.shape, Device::CUDA);
  const int64_t n = logits.numel();
  copyDeviceToDevice(m->data(), logits.data(), (size_t)n * sizeof(float));
  if (n) thresholdKernel<<<blocksFor(n, kThreads), kThreads>>>(m->data(), n);
  MSGC_CUDA_LAUNCHED("gate threshold");
  return m;
}

namespace {
// gates m [N, G, C] -> out [3 + G] (see msgc::gateSummary): one block; each thread sums its (n, c) columns in
// float64, then a shared-memory tree; the heads' sums by shared atomics (exact for binary gates, in any order)
__global__ void gateSummaryKernel(const float* m, int64_t N, int G, int64_t C, float* out) {
  extern __shared__ double sh[];  // [2 · blockDim.x] partial sums, then [G] head sums
  double* heads = sh + 2 * blockDim.x;
  for (int i = threadIdx.x; i < G; i += blockDim.x) heads[i] = 0;
  __syncthreads();
  double sum = 0, unselected = 0;
  int ones = 1;
  for (int64_t q = threadIdx.x; q < N * C; q += blockDim.x) {
    const int64_t n = q / C, c = q - n * C;
    double prod = 1;
    for (int i = 0; i < G; i++) {
      const float v = m[(n * G + i) * C + c];
      sum += v;
      prod *= 1.0 - (double)v;
      ones &= v == 1.f;
      atomicAdd(&heads[i], (double)v);
    }
    unselected += prod;
  }
  sh[threadIdx.x] = sum;
  sh[blockDim.x + threadIdx.x] = unselected;
  const int allOnes = __syncthreads_and(ones);
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) {
      sh[threadIdx.x] += sh[threadIdx.x + half];
      sh[blockDim.x + threadIdx.x] += sh[blockDim.x + threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[0] = (float)sh[0];
    out[1] = (float)sh[blockDim.x];
    out[2] = allOnes && N * C * G > 0 ? 1.f : 0.f;
  }
  for (int i = threadIdx.x; i < G; i += blockDim.x) out[3 + i] = (float)heads[i];
}
}  // namespace

TensorPtr gateSummary(const Tensor& m) {
  ensureDevice();
  const int64_t N = m.shape[0], G = m.shape[1], C = m.shape[2];
  MSGC_CHECK(G <= 4096, "gateSummary (cuda): at most 4096 heads, got ", G);
  TensorPtr out = emptyTensor({3 + G}, Device::CUDA);
  const int threads = 256;
  gateSummaryKernel<<<1, threads, (size_t)(2 * threads + G) * sizeof(double)>>>(m.data(), N, (int)G, C, out->data());
  MSGC_CUDA_LAUNCHED("gate summary");
  return out;
}

}  // namespace cuda
}  // namespace msgc
