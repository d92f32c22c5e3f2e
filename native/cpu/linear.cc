// linear.cc: fully connected layer y = x W^T + b on oneDNN's sgemm (row-major), forward and backward.
#include <cstring>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;

// x: [N, in], weight: [out, in], bias: [out] -> y: [N, out]
TensorPtr linearForward(const Tensor& x, const Tensor& weight, const Tensor* bias) {
  int64_t N = x.shape[0], In = x.shape[1], Out = weight.shape[0];
  TensorPtr y = emptyTensor({N, Out});
  float* yp = y->data();
  if (bias) {
    const float* b = plainData(*bias);
    for (int64_t n = 0; n < N; n++) std::memcpy(yp + n * Out, b, Out * sizeof(float));
  }
  if (N > 0 && Out > 0 && In > 0)
    sgemm("linear", 'N', 'T', N, Out, In, 1.f, plainData(x), In, plainData(weight), In, bias ? 1.f : 0.f, yp, Out);
  else if (!bias && N * Out > 0)  // no features: y is the bias, or zeros (sgemm rejects K = 0)
    std::memset(yp, 0, (size_t)(N * Out) * sizeof(float));
  return y;
}

LinearGrads linearBackward(const Tensor& x, const Tensor& weight, const Tensor& gy, bool needX, bool needWeight,
                           bool needBias) {
  int64_t N = x.shape[0], In = x.shape[1], Out = weight.shape[0];
  const float* g = plainData(gy);
  LinearGrads r;
  if (needX) {  // gx[N, In] = gy[N, Out] W[Out, In]
    r.x = zerosTensor({N, In});
    if (N > 0 && In > 0 && Out > 0) sgemm("linear", 'N', 'N', N, In, Out, 1.f, g, Out, plainData(weight), In, 0.f, r.x->data(), In);
  }
  if (needWeight) {  // gW[Out, In] = gy^T x
    r.weight = zerosTensor({Out, In});
    if (N > 0 && In > 0 && Out > 0) sgemm("linear", 'T', 'N', Out, In, N, 1.f, g, Out, plainData(x), In, 0.f, r.weight->data(), In);
  }
  if (needBias) {
    r.bias = zerosTensor({Out});
    float* b = r.bias->data();
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < Out; o++) b[o] += g[n * Out + o];
  }
  return r;
}

}  // namespace msgc
