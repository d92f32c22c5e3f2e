// loss.cc: softmax cross-entropy with integer labels and optional label smoothing (torch semantics: target =
// (1 - eps) * onehot + eps / K, loss = mean over the batch of -sum_k target_k * log softmax_k).
#include <cmath>

#include "layout.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;

// logits: [N, K] -> loss [], probs [N, K]
CrossEntropyResult crossEntropyForward(const Tensor& logits, const int32_t* labels, float eps) {
  int64_t N = logits.shape[0], K = logits.shape[1];
  const float* z = plainData(logits);
  CrossEntropyResult r;
  r.probs = emptyTensor({N, K});
  r.loss = emptyTensor({});
  float* p = r.probs->data();
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) if (N * K > 65536)
  for (int64_t n = 0; n < N; n++) {
    const float* zn = z + n * K;
    float mx = zn[0];
    for (int64_t k = 1; k < K; k++) mx = std::max(mx, zn[k]);
    double sum = 0.0;
    for (int64_t k = 0; k < K; k++) sum += std::exp((double)zn[k] - mx);
    double logSum = std::log(sum) + mx;
    double sumLogp = 0.0;
    for (int64_t k = 0; k < K; k++) {
      double logp = zn[k] - logSum;
      p[n * K + k] = (float)std::exp(logp);
      sumLogp += logp;
    }
    double logpLabel = zn[labels[n]] - logSum;
    total += -(1.0 - eps) * logpLabel - (eps / K) * sumLogp;
  }
  r.loss->data()[0] = N > 0 ? (float)(total / N) : 0.f;
  return r;
}

TensorPtr crossEntropyBackward(const Tensor& probs, const int32_t* labels, float eps, float gLoss) {
  int64_t N = probs.shape[0], K = probs.shape[1];
  const float* p = probs.data();
  TensorPtr g = emptyTensor({N, K});
  float* gp = g->data();
  float scale = N > 0 ? gLoss / N : 0.f;
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      float target = eps / K + (k == labels[n] ? 1.f - eps : 0.f);
      gp[n * K + k] = scale * (p[n * K + k] - target);
    }
  return g;
}

}  // namespace msgc
