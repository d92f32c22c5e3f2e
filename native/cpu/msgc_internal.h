// msgc_internal.h: the masked MSGC convolution's two CPU implementations (msgc_conv.cc dispatches).
#pragma once
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "msgc/ops.h"

namespace msgc {

// [0, n) in near-equal chunks of at most maxLen, as (start, length): 49 by 6 -> 9 chunks of 5-6, 14 by 8 -> 7 + 7
// (the backward kernels' pixel tiles)
inline std::vector<std::pair<int64_t, int>> nearEqualChunks(int64_t n, int64_t maxLen) {
  const int64_t count = (n + maxLen - 1) / maxLen;
  std::vector<std::pair<int64_t, int>> r;
  for (int64_t k = 0, at = 0; k < count; k++) {
    const int64_t len = (n - at) / (count - k);
    r.push_back({at, (int)len});
    at += len;
  }
  return r;
}

// [N, O, OH, OW] of the MSGC convolution of x [N, C, H, W] with weight [O, C, KH, KW].
inline Shape msgcOutputShape(const Shape& x, const Shape& w, const MsgcConvParams& p) {
  return {x[0], w[0], (x[2] + 2 * p.padH - w[2]) / p.strideH + 1, (x[3] + 2 * p.padW - w[3]) / p.strideW + 1};
}

// The masked conv's three implementations: G batched head convs one after another (msgc_conv.cc), one grouped conv
// over the G-fold scaled input (msgc_conv.cc), or one full-width conv per sample with the scales folded into the
// weights (msgc_persample.cc; its eval forward with the BatchNorm: msgc_persample_bn.cc). msgcMaskedImpl picks one
// by shape (MSGC_MASKED_IMPL=batched|grouped|persample forces one, for tests and benchmarks); the choice decides the
// forward and the backward alike.
enum class MaskedImpl { Batched, Grouped, PerSample };
MaskedImpl msgcMaskedImpl(const Tensor& x, const Tensor& weight, const MsgcConvParams& p);
TensorPtr msgcConvForwardPerSample(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p);
// The same forward with the eval BatchNorm, residual and activation (and the per-channel means for `means`)
// applied to each sample's output right after its conv, while it is in cache (batch 1: one multi-threaded conv,
// then the epilogue over its output split over the threads); null when the CPU has neither AVX-512 nor AVX2 + FMA,
// or, above batch 1, when the output layout is neither plain nor the ISA's block (nChw16c with AVX-512, nChw8c with
// AVX2) (the caller then composes the two).
TensorPtr msgcConvForwardPerSampleBn(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                                     const FusedBnAct& bn, TensorPtr* means);
// The input activation's backward (MsgcConvParams::inputAct; hi = 6 for ReLU6, +inf for ReLU): g[i] = 0 unless
// 0 < x[i] < hi. Compiled for AVX-512, AVX2 and the baseline, outside any OpenMP region: written inline in one, such
// loops ran scalar with a reload per element (GCC reached the arrays through the region's captured pointers): 1.3 ms
// on ResNet-20's [32, 16, 32, 32]; a clamp of [32, 144, 56, 56] the same way, 39 ms instead of ~1.
void inputActBackward(float* g, const float* x, int64_t n, float hi);
// The upper bound of the input activation's pass band (MsgcConvParams::inputAct: 6 for ReLU6, +inf for ReLU)
inline float inputActHi(int act) { return act == 1 ? 6.f : std::numeric_limits<float>::infinity(); }
// msgcConvBackward without MsgcConvParams::inputAct's generic pass (which msgcConvBackward adds where the path did not
// apply it: MsgcConvGrads::actApplied)
MsgcConvGrads msgcConvBackwardPaths(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                    const MsgcConvParams& p, bool needX, bool needWeight, bool needScale);
MsgcConvGrads msgcConvBackwardPerSample(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                        const MsgcConvParams& p, bool needX, bool needWeight, bool needScale);
// The 1×1 backward with the weight gradient over the selected channels only (msgc_pointwise_bwd.cc): AVX-512, 1×1
// stride 1 without padding, batch >= 2, C and O multiples of 16; where it applies (MSGC_POINTWISE_BWD=0: nowhere,
// =1: wherever it can run) it replaces the masked implementations' backward.
bool pointwiseBackwardApplies(const Tensor& x, const Tensor& weight, const MsgcConvParams& p);
MsgcConvGrads msgcConvBackwardPointwise(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                        const MsgcConvParams& p, bool needX, bool needWeight, bool needScale);
// The 3×3 (stride 1, padding 1) counterpart (msgc_spatial_bwd.cc): AVX-512, batch >= 2, C and O multiples of 16;
// MSGC_SPATIAL_BWD=0: nowhere, =1: wherever it can run.
bool spatialBackwardApplies(const Tensor& x, const Tensor& weight, const MsgcConvParams& p);
MsgcConvGrads msgcConvBackwardSpatial(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                      const MsgcConvParams& p, bool needX, bool needWeight, bool needScale);

}  // namespace msgc
