// msgc_internal.h: the masked MSGC convolution's two CPU implementations (msgc_conv.cc dispatches).
#pragma once
#include "msgc/ops.h"

namespace msgc {

// Per-sample execution (msgc_persample.cc): one full-width conv per sample with the scales folded into the
// weights; chosen for narrow heads (O/G below the SIMD width) or when MSGC_MASKED_IMPL=persample.
bool msgcPerSampleWanted(const Tensor& x, const Tensor& weight, const MsgcConvParams& p);
TensorPtr msgcConvForwardPerSample(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p);
MsgcConvGrads msgcConvBackwardPerSample(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                        const MsgcConvParams& p, bool needX, bool needWeight, bool needScale);

}  // namespace msgc
