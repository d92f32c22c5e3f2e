// epilogue.h: what follows a convolution in inference, applied per output element on the GPU:
//   y = act(v · mul[c] + add[c] + residual[i]),  mul = γ/√(var + eps), add = β − mean · mul
// (no BatchNorm: mul = 1, add = bias[c] or 0). Shared by the MSGC kernel, the cuDNN conv and the BN pass, and
// compiled for the host too (MSGC_HD), where core/cuda_emulation.cc runs the MSGC kernel's tiles in CPU tests.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define MSGC_HD __host__ __device__ __forceinline__
#else
#define MSGC_HD inline
#endif

#include "msgc/ops.h"

namespace msgc {
namespace cuda {

struct Epilogue {
  const float* mean = nullptr;  // null: no BatchNorm
  const float* var = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  const float* bias = nullptr;  // a conv bias (without BatchNorm)
  float eps = 1e-5f;
  int act = -1;  // -1 none, else Activation::ReLU / ReLU6
  const float* residual = nullptr;

  MSGC_HD void affine(int c, float& mul, float& add) const {
    if (mean) {
#ifdef __CUDA_ARCH__
      const float inv = rsqrtf(var[c] + eps);
#else
      const float inv = 1.f / std::sqrt(var[c] + eps);
#endif
      mul = gamma ? gamma[c] * inv : inv;
      add = (beta ? beta[c] : 0.f) - mean[c] * mul;
    } else {
      mul = 1.f;
      add = bias ? bias[c] : 0.f;
    }
  }
  // v already scaled and shifted; i: the element's flat index (for the residual)
  MSGC_HD float finish(float v, int64_t i) const {
    if (residual) v += residual[i];
    // NaN goes to the lower bound, as the CPU backend's ReLU does (fmaxf returns the number)
    if (act == (int)Activation::ReLU) v = fmaxf(v, 0.f);
    else if (act == (int)Activation::ReLU6) v = fminf(fmaxf(v, 0.f), 6.f);
    return v;
  }
  bool any() const { return mean || bias || residual || act >= 0; }
};

// the fused-BN description of an eval BatchNorm + residual + activation given piece by piece
inline FusedBnAct fusedBnAct(const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                             const Tensor* bias, float eps, int act, const Tensor* residual) {
  FusedBnAct bn;
  bn.runningMean = &runningMean;
  bn.runningVar = &runningVar;
  bn.weight = weight;
  bn.bias = bias;
  bn.eps = eps;
  bn.act = act;
  bn.residual = residual;
  return bn;
}

// from the ops' fused-BN description (tensors on the GPU); null -> identity
Epilogue makeEpilogue(const FusedBnAct* bn);
// y = epilogue(x) elementwise over [N, C, P] (x == y allowed)
void applyEpilogue(const float* x, float* y, int64_t N, int64_t C, int64_t P, const Epilogue& e);
// means[r] = mean of y[r·P .. r·P + P) for r < rows
void channelMeans(const float* y, float* means, int64_t rows, int64_t P);

}  // namespace cuda
}  // namespace msgc
