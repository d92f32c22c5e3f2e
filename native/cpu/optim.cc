// optim.cc: the SGD update kernel (torch.optim.SGD semantics with dampening 0), in place on the parameter and
// its momentum buffer. The gradient may arrive in a blocked layout; it is read in the parameter's layout.
// Also the two halves of gradient-norm clipping: a float64 sum of squares and an in-place scale.
#include "layout.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

void sgdStep(Tensor& param, const Tensor& grad, Tensor* buf, float lr, float momentum, float weightDecay,
             bool nesterov) {
  dnnl::memory::desc md = currentDesc(param);
  const float* g = static_cast<const float*>(asLayout(grad, md).get_data_handle());
  float* p = param.data();
  float* b = buf ? buf->data() : nullptr;
  int64_t n = param.layout ? (int64_t)(param.storage->bytes / sizeof(float)) : param.numel();
  parallelForSimd(n, n > 32768, [&](int64_t i) {
    float d = g[i] + weightDecay * p[i];
    if (b) {
      b[i] = momentum * b[i] + d;
      d = nesterov ? d + momentum * b[i] : b[i];
    }
    p[i] -= lr * d;
  });
  param.storage->touch();
  if (buf) buf->storage->touch();
}

double sumSquares(const Tensor& x) {
  const float* p = plainData(x);  // (a blocked layout's padded lanes are not values)
  const int64_t n = x.numel();
  return parallelSum(n, n > 65536, [&](int64_t i) { return (double)p[i] * p[i]; });
}

void scaleInPlace(Tensor& x, float alpha) {
  float* p = x.data();
  const int64_t n = x.layout ? (int64_t)(x.storage->bytes / sizeof(float)) : x.numel();
  parallelForSimd(n, n > 32768, [&](int64_t i) { p[i] *= alpha; });
  x.storage->touch();
}

}  // namespace msgc
