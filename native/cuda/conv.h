// conv.h (cuda): cuDNN's forward convolution on raw device pointers, for the backend's own callers (conv.cu's
// conv2dForward, and msgc_conv.cu's grouped execution of the MSGC convolution). Plain NCHW float32; the
// descriptors and the algorithm are found once per shape (and TF32 setting) and cached, as for conv2dForward.
#pragma once
#include "msgc/ops.h"
#include "msgc/tensor.h"

namespace msgc {
namespace cuda {
// y [ys] = conv(x [xs], w [ws]) with p (p.groups groups: ws[1] = xs[1] / groups); throws without cuDNN
void convForwardRaw(const float* x, const Shape& xs, const float* w, const Shape& ws, const Conv2dParams& p,
                    const Shape& ys, float* y);
// whether this build links cuDNN
bool haveCudnn();
}  // namespace cuda
}  // namespace msgc
