// elementwise.cu: what a model's eval forward needs around its convolutions, on the GPU: activations, broadcast
// binary ops and scaling, pooling, the linear layer, and the gate heads (the same contracts as the CPU ops in
// ops.h; tensors plain). One thread per output element (or one warp per dot product): these passes are
// bandwidth-bound and small next to the convolutions.
#include <cmath>

#include "common.h"
#include "msgc/cuda.h"

namespace msgc {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void activationKernel(const float* x, float* y, int64_t n, int kind) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = x[i];
    // (ReLU/ReLU6 send NaN to 0, as the CPU backend's oneDNN eltwise does; the logistic keeps it)
    y[i] = kind == (int)Activation::ReLU    ? fmaxf(v, 0.f)
           : kind == (int)Activation::ReLU6 ? fminf(fmaxf(v, 0.f), 6.f)
                                             : 1.f / (1.f + expf(-v));
  }
}

__global__ void scaleKernel(const float* x, float* y, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = alpha * x[i];
}

struct BroadcastShape {
  int rank;
  int64_t dims[8];     // a's (and y's) dims
  int64_t bStride[8];  // b's stride per dim, 0 where b broadcasts
};

__global__ void binaryKernel(const float* a, const float* b, float* y, int64_t n, int op, BroadcastShape s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rest = i, j = 0;
    for (int d = s.rank - 1; d >= 0; d--) {
      const int64_t q = rest / s.dims[d];
      j += (rest - q * s.dims[d]) * s.bStride[d];
      rest = q;
    }
    const float u = a[i], v = b[j];
    y[i] = op == (int)Binary::Add ? u + v : op == (int)Binary::Sub ? u - v : u * v;
  }
}

// y[n, c, oh, ow] over a kernel window; max ignores padding, avg counts it (count_include_pad, as the CPU backend)
__global__ void poolKernel(const float* x, float* y, int64_t total, int H, int W, int OH, int OW, Pool2dParams p,
                           int isMax) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int ow = (int)(i % OW), oh = (int)((i / OW) % OH);
    const int64_t plane = i / ((int64_t)OW * OH);
    const float* xp = x + plane * H * W;
    const int h0 = oh * (int)p.strideH - (int)p.padH, w0 = ow * (int)p.strideW - (int)p.padW;
    float acc = isMax ? -INFINITY : 0.f;
    for (int kh = 0; kh < (int)p.kernelH; kh++) {
      const int h = h0 + kh;
      if (h < 0 || h >= H) continue;
      for (int kw = 0; kw < (int)p.kernelW; kw++) {
        const int w = w0 + kw;
        if (w < 0 || w >= W) continue;
        const float v = xp[(int64_t)h * W + w];
        acc = isMax ? fmaxf(acc, v) : acc + v;
      }
    }
    y[i] = isMax ? acc : acc / (float)(p.kernelH * p.kernelW);
  }
}

// out[r, k] = Σ_j in[r, j] · w[k, j] (+ bias[k]); one warp per output, lanes over j
__global__ void rowDotKernel(const float* in, const float* w, const float* bias, float* out, int64_t rows, int K, int J) {
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
  if (lane == 0) out[o] = s + (bias ? bias[k] : 0.f);
}

// the head's middle: h = ReLU(h · sc + sh) with sc = γ/√(var + eps), sh = β − mean · sc, per column b of [N, B]
__global__ void headBnReluKernel(float* h, int64_t n, int B, const float* mean, const float* var, const float* gamma,
                                 const float* beta, float eps) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int b = (int)(i % B);
    const float sc = (gamma ? gamma[b] : 1.f) / sqrtf(var[b] + eps);
    const float z = h[i] * sc + ((beta ? beta[b] : 0.f) - mean[b] * sc);
    h[i] = z > 0.f ? z : 0.f;
  }
}

__global__ void thresholdKernel(float* z, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    z[i] = z[i] >= 0.f ? 1.f : 0.f;  // (NaN: closed, as the CPU's comparison)
}

void rowDot(const float* in, const float* w, const float* bias, float* out, int64_t rows, int64_t K, int64_t J) {
  if (rows * K <= 0) return;
  const int warps = kThreads / 32;
  rowDotKernel<<<(unsigned)((rows * K + warps - 1) / warps), kThreads>>>(in, w, bias, out, rows, (int)K, (int)J);
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
  BroadcastShape s{};
  s.rank = (int)a.dim();
  const bool scalar = b.numel() == 1;
  int64_t stride = 1;
  for (int d = s.rank - 1; d >= 0; d--) {
    s.dims[d] = a.shape[d];
    const int64_t bd = scalar ? 1 : b.shape[d];
    s.bStride[d] = bd == 1 ? 0 : stride;
    stride *= bd;
  }
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
  rowDot(ctx.data(), w1.data(), nullptr, h->data(), N, B, Cc);
  if (N * B)
    headBnReluKernel<<<blocksFor(N * B, kThreads), kThreads>>>(h->data(), N * B, (int)B, mean.data(), var.data(),
                                                                 gamma ? gamma->data() : nullptr,
                                                                 beta ? beta->data() : nullptr, eps);
  MSGC_CUDA_LAUNCHED("gate head batch norm");
  TensorPtr z = emptyTensor({N, K}, Device::CUDA);
  rowDot(h->data(), w2.data(), b2.data(), z->data(), N, K, B);
  if (threshold && N * K) thresholdKernel<<<blocksFor(N * K, kThreads), kThreads>>>(z->data(), N * K);
  MSGC_CUDA_LAUNCHED("gate threshold");
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

}  // namespace cuda
}  // namespace msgc
