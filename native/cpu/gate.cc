// gate.cc: the binary gate of MSGC heads — Gumbel(logistic)-sigmoid with a straight-through estimator in
// training, a deterministic threshold on the logit in eval (spec §2.3).
#include <cmath>

#include "layout.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;

GateResult gateForward(const Tensor& logits, float temperature, bool training, uint64_t seed) {
  const float* l = plainData(logits);
  const int64_t n = logits.numel();
  GateResult r;
  r.mask = emptyTensor(logits.shape);
  float* m = r.mask->data();
  if (!training) {
    for (int64_t i = 0; i < n; i++) m[i] = l[i] >= 0.f ? 1.f : 0.f;
    return r;
  }
  r.soft = emptyTensor(logits.shape);
  float* soft = r.soft->data();
  fillUniform(soft, n, seed, 0.f, 1.f);  // u, overwritten in place by the soft gate
  for (int64_t i = 0; i < n; i++) {
    float u = soft[i];
    float g = std::log(u + 1e-8f) - std::log(1.f - u + 1e-8f);
    float z = (l[i] + g) / temperature;
    float sg = 1.f / (1.f + std::exp(-z));
    soft[i] = sg;
    m[i] = sg >= 0.5f ? 1.f : 0.f;
  }
  return r;
}

TensorPtr gateBackward(const Tensor& soft, const Tensor& gy, float temperature) {
  const float* s = soft.data();
  const float* g = plainData(gy);
  TensorPtr gx = emptyTensor(soft.shape);
  float* d = gx->data();
  const int64_t n = soft.numel();
  for (int64_t i = 0; i < n; i++) d[i] = g[i] * s[i] * (1.f - s[i]) / temperature;
  return gx;
}

}  // namespace msgc
