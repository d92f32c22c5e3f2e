// loss.cc: softmax cross-entropy with integer labels and optional label smoothing (torch semantics: target =
// (1 - eps) * onehot + eps / K, loss = mean over the batch of -sum_k target_k * log softmax_k), and the
// knowledge-distillation loss T^2 * KL(softmax(teacher / T) || softmax(student / T)).
#include <cmath>
#include <vector>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

// One row: log-softmax of z / T in double (with T = 1 exactly the float logits' log-softmax).
static void logSoftmaxRow(const float* z, int64_t K, double T, double* out) {
  double mx = z[0] / T;
  for (int64_t k = 1; k < K; k++) mx = std::max(mx, z[k] / T);
  double sum = 0.0;
  for (int64_t k = 0; k < K; k++) sum += std::exp(z[k] / T - mx);
  double logSum = std::log(sum) + mx;
  for (int64_t k = 0; k < K; k++) out[k] = z[k] / T - logSum;
}

// logits: [N, K] -> loss [], probs [N, K]
CrossEntropyResult crossEntropyForward(const Tensor& logits, const int32_t* labels, float eps) {
  int64_t N = logits.shape[0], K = logits.shape[1];
  const float* z = plainData(logits);
  CrossEntropyResult r;
  r.probs = emptyTensor({N, K});
  r.loss = emptyTensor({});
  float* p = r.probs->data();
  const double total = parallelSum(N, N * K > 65536, [&](int64_t n) {
    std::vector<double> logp(K);
    logSoftmaxRow(z + n * K, K, 1.0, logp.data());
    double sumLogp = 0.0;
    for (int64_t k = 0; k < K; k++) {
      p[n * K + k] = (float)std::exp(logp[k]);
      sumLogp += logp[k];
    }
    double logpLabel = logp[labels[n]];
    return -(1.0 - eps) * logpLabel - (eps / K) * sumLogp;
  });
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

DistillationResult distillationForward(const Tensor& student, const Tensor& teacher, float temperature) {
  int64_t N = student.shape[0], K = student.shape[1];
  const float* s = plainData(student);
  const float* t = plainData(teacher);
  const double T = temperature;
  DistillationResult r;
  r.diff = emptyTensor({N, K});
  r.loss = emptyTensor({});
  float* d = r.diff->data();
  const double total = parallelSum(N, N * K > 65536, [&](int64_t n) {
    std::vector<double> ls(K), lt(K);
    logSoftmaxRow(s + n * K, K, T, ls.data());
    logSoftmaxRow(t + n * K, K, T, lt.data());
    double kl = 0.0;
    for (int64_t k = 0; k < K; k++) {
      double pt = std::exp(lt[k]);
      kl += pt * (lt[k] - ls[k]);
      d[n * K + k] = (float)(std::exp(ls[k]) - pt);
    }
    return kl;
  });
  r.loss->data()[0] = N > 0 ? (float)(T * T * total / N) : 0.f;
  return r;
}

TensorPtr distillationBackward(const Tensor& diff, float temperature, float gLoss) {
  int64_t N = diff.shape[0], K = diff.shape[1];
  const float* d = diff.data();
  TensorPtr g = emptyTensor({N, K});
  float* gp = g->data();
  float scale = N > 0 ? gLoss * temperature / N : 0.f;
  for (int64_t i = 0; i < N * K; i++) gp[i] = scale * d[i];
  return g;
}

}  // namespace msgc
