// gate.cc: the binary gate of MSGC heads — Gumbel(logistic)-sigmoid with a straight-through estimator in
// training, a deterministic threshold on the logit in eval (spec §2.3).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "head_gemm.h"
#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

namespace {
// The training gate's arithmetic, vectorizable: log and exp of our own (polynomials), so that the whole gate is one
// pass over the logits, chunk by chunk with the noise, instead of six passes (the generator, the odds, a oneDNN log,
// the logits, a oneDNN logistic, the threshold), most of them on one thread, with two primitive calls: MobileNetV2's
// [32, 4, 960] gates took ~240 µs that way, ResNet-56's [32, 4, 64] ~24 µs. gateValues is compiled without
// contracting products and sums into fused multiply-adds, so that its AVX-512, AVX2 and baseline versions
// (MSGC_SIMD_CLONES) compute the same bits.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF  // (clang has no optimize attribute: MSGC_NO_CONTRACT is empty there)
#endif
#define MSGC_GATE_INLINE __attribute__((always_inline)) inline
MSGC_GATE_INLINE float fromBits(uint32_t v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
MSGC_GATE_INLINE uint32_t toBits(float f) {
  uint32_t v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

// log x for a normal positive x: x = m·2^e with m in [√½, √2), log m = 2·atanh(s), s = (m − 1)/(m + 1) (|s| <=
// 0.1716), by its series to s⁹ (the rest below 2e-9 relative)
MSGC_GATE_INLINE float logPositive(float x) {
  const uint32_t b = toBits(x);
  const uint32_t mb = (b & 0x7fffffu) | 0x3f800000u;  // m in [1, 2)
  const uint32_t high = mb > 0x3fb504f3u ? 1u : 0u;  // m > √2 (integer comparisons and selects: they vectorize)
  const float m = fromBits(mb - (high << 23));  // (halved exactly)
  const float e = (float)((int32_t)((b >> 23) & 0xffu) + (int32_t)high - 127);
  const float s = (m - 1.f) / (m + 1.f), s2 = s * s;
  const float q = 2.f + s2 * (2.f / 3.f + s2 * (2.f / 5.f + s2 * (2.f / 7.f + s2 * (2.f / 9.f))));
  return e * 0.693147180559945309f + s * q;
}

// exp x with x clamped to [-87, 87] (on the bits: a float comparison there kept the loop from vectorizing for AVX2
// and the baseline; NaN becomes ±87): x = k·ln 2 + r (k the nearest integer, by adding and subtracting 1.5·2²³; ln 2
// in two parts, the first times k exact), exp r by its series to r⁷ (|r| <= ½ ln 2: the rest below 6e-9 relative),
// times 2^k from the exponent bits
MSGC_GATE_INLINE float expClamped(float x) {
  const uint32_t xb = toBits(x);
  x = (xb & 0x7fffffffu) > 0x42ae0000u ? fromBits((xb & 0x80000000u) | 0x42ae0000u) : x;
  const float k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187045e-06f;
  const float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6.f + r * (1.f / 24.f + r * (1.f / 120.f + r * (1.f / 720.f + r * (1.f / 5040.f)))))));
  return p * fromBits((uint32_t)((int32_t)k + 127) << 23);
}

// soft = sigmoid((l + g) / τ) with g = log(u + 1e-8) − log(1 − u + 1e-8) = the log of the odds below, and
// mask = 1[soft >= 0.5], for n values
MSGC_SIMD_CLONES MSGC_NO_CONTRACT void gateValues(const float* l, const float* u, float temperature, int64_t n,
                                                        float* soft, float* mask) {
  for (int64_t i = 0; i < n; i++) {
    const float odds = (u[i] + 1e-8f) / (1.f - u[i] + 1e-8f);
    const float t = (l[i] + logPositive(odds)) / temperature;
    const float v = 1.f / (1.f + expClamped(-t));
    soft[i] = v;
    mask[i] = v >= 0.5f ? 1.f : 0.f;
  }
}
// z = (l + b) · invSigma (the separate ops' order: the bias added, then F.scale's product, when invSigma != 1)
MSGC_SIMD_CLONES MSGC_NO_CONTRACT void addBiasScaled(const float* l, const float* b, int64_t n, float invSigma, float* z) {
  if (invSigma == 1.f) {
    for (int64_t i = 0; i < n; i++) z[i] = l[i] + b[i];
  } else {
    for (int64_t i = 0; i < n; i++) z[i] = (l[i] + b[i]) * invSigma;
  }
}
#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#endif

// The training gate over n logits: u ~ U[0, 1) from `seed` (fillUniform's stream), soft and mask as gateValues (three
// separate arrays: the loop vectorizes behind a check that they do not overlap). Chunks of 1024 values, the noise of
// each drawn into a buffer on the stack, split over the threads from 16K values.
// With `bias` (K values): the logits are (l[i] + bias[i % K]) · invSigma, formed chunk by chunk in a buffer (a head's
// second layer before its bias and noise scale: two passes over [N, K] fewer, the second one serial, and the same
// bits as adding and scaling first).
void gumbelGate(const float* l, float temperature, uint64_t seed, int64_t n, float* soft, float* mask,
                const float* bias = nullptr, int64_t K = 0, float invSigma = 1.f) {
  constexpr int64_t kChunk = 1024;
  const bool avx512 = uniformAvx512();
  parallelFor((n + kChunk - 1) / kChunk, n >= 16384, [&](int64_t c) {
    alignas(64) float u[kChunk];
    alignas(64) float z[kChunk];
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    uniformRange(u, i0, i0 + len, seed, avx512);
    const float* lc = l + i0;
    if (bias) {
      // rows of K logits: the chunk's part of each row gets the row's bias run
      for (int64_t j = 0, k = i0 % K; j < len;) {
        const int64_t run = std::min(len - j, K - k);
        addBiasScaled(lc + j, bias + k, run, invSigma, z + j);
        j += run;
        k = 0;
      }
      lc = z;
    }
    gateValues(lc, u, temperature, len, soft + i0, mask + i0);
  });
}
}  // namespace

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
  gumbelGate(l, temperature, seed, n, r.soft->data(), m);
  return r;
}

TensorPtr gateBackward(const Tensor& soft, const Tensor& gy, float temperature) {
  const float* s = soft.data();
  const float* g = plainData(gy);
  TensorPtr gx = emptyTensor(soft.shape);
  float* d = gx->data();
  const int64_t n = soft.numel();
  parallelForSimd(n, n > 32768, [&](int64_t i) { d[i] = g[i] * s[i] * (1.f - s[i]) / temperature; });
  return gx;
}


TensorPtr squeezeHeadEval(const Tensor& ctx, const Tensor& w1, const Tensor& mean, const Tensor& var,
                          const Tensor* gamma, const Tensor* beta, float eps, const Tensor& w2, const Tensor& b2,
                          bool threshold) {
  const int64_t N = ctx.shape[0], Cc = ctx.shape[1], B = w1.shape[0], K = w2.shape[0];
  std::vector<float> h((size_t)(N * B));
  headGemmEval(N, B, Cc, plainData(ctx), w1, h.data());
  const float* mu = plainData(mean);
  const float* v = plainData(var);
  const float* g = gamma ? plainData(*gamma) : nullptr;
  const float* bt = beta ? plainData(*beta) : nullptr;
  std::vector<float> sc((size_t)B), sh((size_t)B);
  for (int64_t b = 0; b < B; b++) {
    sc[b] = (g ? g[b] : 1.f) / std::sqrt(v[b] + eps);
    sh[b] = (bt ? bt[b] : 0.f) - mu[b] * sc[b];
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t b = 0; b < B; b++) {
      float z = h[n * B + b] * sc[b] + sh[b];
      h[n * B + b] = z > 0.f ? z : 0.f;
    }
  TensorPtr y = emptyTensor({N, K});
  float* out = y->data();
  headGemmEval(N, K, B, h.data(), w2, out);
  const float* bias = plainData(b2);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      const float z = out[n * K + k] + bias[k];
      out[n * K + k] = threshold ? (z >= 0.f ? 1.f : 0.f) : z;
    }
  return y;
}

// (addBias false: z without b2, which the caller adds; gateHeadTrainForward does in the gate's pass)
static SqueezeHeadTrain squeezeHeadTrain(const Tensor& ctx, const Tensor& w1, Tensor& runningMean, Tensor& runningVar,
                                         const Tensor* gamma, const Tensor* beta, float momentum, float eps,
                                         const Tensor& w2, const Tensor& b2, bool addBias) {
  const int64_t N = ctx.shape[0], Cc = ctx.shape[1], B = w1.shape[0], K = w2.shape[0];
  SqueezeHeadTrain r;
  r.h1 = emptyTensor({N, B});
  r.h = emptyTensor({N, B});
  r.mean = emptyTensor({B});
  r.invStd = emptyTensor({B});
  r.z = emptyTensor({N, K});
  float* h1 = r.h1->data();
  float* h = r.h->data();
  headGemm(N, B, Cc, plainData(ctx), plainData(w1), h1);
  const float* g = gamma ? plainData(*gamma) : nullptr;
  const float* bt = beta ? plainData(*beta) : nullptr;
  float* rm = runningMean.data();
  float* rv = runningVar.data();
  const float unbias = N > 1 ? (float)N / (float)(N - 1) : 1.f;
  for (int64_t b = 0; b < B; b++) {
    double s = 0;
    for (int64_t n = 0; n < N; n++) s += h1[n * B + b];
    const double mu = s / (double)N;
    double q = 0;
    for (int64_t n = 0; n < N; n++) {
      const double d = h1[n * B + b] - mu;
      q += d * d;
    }
    const float var = (float)(q / (double)N), m = (float)mu;
    const float is = 1.f / std::sqrt(var + eps);
    r.mean->data()[b] = m;
    r.invStd->data()[b] = is;
    rm[b] = (1.f - momentum) * rm[b] + momentum * m;
    rv[b] = (1.f - momentum) * rv[b] + momentum * var * unbias;
    const float a = (g ? g[b] : 1.f) * is, c = (bt ? bt[b] : 0.f) - m * a;
    for (int64_t n = 0; n < N; n++) {
      const float v = h1[n * B + b] * a + c;
      h[n * B + b] = v > 0.f ? v : 0.f;
    }
  }
  runningMean.storage->touch();
  runningVar.storage->touch();
  float* z = r.z->data();
  headGemm(N, K, B, h, plainData(w2), z);
  if (!addBias) return r;
  const float* bias = plainData(b2);
  parallelFor(N, N * K >= 32768, [&](int64_t n) {
    for (int64_t k = 0; k < K; k++) z[n * K + k] += bias[k];
  });
  return r;
}

SqueezeHeadTrain squeezeHeadTrainForward(const Tensor& ctx, const Tensor& w1, Tensor& runningMean, Tensor& runningVar,
                                         const Tensor* gamma, const Tensor* beta, float momentum, float eps,
                                         const Tensor& w2, const Tensor& b2) {
  return squeezeHeadTrain(ctx, w1, runningMean, runningVar, gamma, beta, momentum, eps, w2, b2, true);
}

SqueezeHeadGrads squeezeHeadTrainBackward(const Tensor& ctx, const Tensor& w1, const Tensor* gamma, const Tensor& w2,
                                          const SqueezeHeadTrain& saved, const Tensor& gz, bool needCtx, bool needParams) {
  const int64_t N = ctx.shape[0], Cc = ctx.shape[1], B = w1.shape[0], K = w2.shape[0];
  const float* dz = plainData(gz);
  const float* h = saved.h->data();
  const float* h1 = saved.h1->data();
  SqueezeHeadGrads r;
  if (needParams) {
    r.w2 = emptyTensor(w2.shape);
    headSgemm('T', 'N', K, B, N, dz, K, h, B, r.w2->data(), B);  // gW2 = gz^T h
    r.b2 = emptyTensor({K});
    // column sums in double, each over n in order (as a loop per column would add them), by chunks of columns
    // read row by row: a loop per column read [N, K] with a stride of K floats, on one thread (MobileNetV2's
    // [32, 3840] took ~50 µs that way)
    constexpr int64_t kCols = 256;
    float* gb = r.b2->data();
    parallelFor((K + kCols - 1) / kCols, N * K >= 32768, [&](int64_t c) {
      const int64_t k0 = c * kCols, len = std::min(kCols, K - k0);
      double acc[kCols];
      for (int64_t j = 0; j < len; j++) acc[j] = 0;
      for (int64_t n = 0; n < N; n++) {
        const float* row = dz + n * K + k0;
        for (int64_t j = 0; j < len; j++) acc[j] += row[j];
      }
      for (int64_t j = 0; j < len; j++) gb[k0 + j] = (float)acc[j];
    });
  }
  // gh = gz W2, through the ReLU, then the batch norm's backward with batch statistics
  std::vector<float> gh((size_t)(N * B));
  headSgemm('N', 'N', N, B, K, dz, K, plainData(w2), B, gh.data(), B);
  const float* g = gamma ? plainData(*gamma) : nullptr;
  if (needParams && gamma) {
    r.gamma = emptyTensor({B});
    r.beta = emptyTensor({B});
  }
  for (int64_t b = 0; b < B; b++) {
    const float mu = saved.mean->data()[b], is = saved.invStd->data()[b];
    double sg = 0, sgx = 0;
    for (int64_t n = 0; n < N; n++) {
      float& d = gh[n * B + b];
      if (!(h[n * B + b] > 0.f)) d = 0.f;
      sg += d;
      sgx += (double)d * ((h1[n * B + b] - mu) * is);
    }
    if (r.gamma) {
      r.gamma->data()[b] = (float)sgx;
      r.beta->data()[b] = (float)sg;
    }
    // gh1 = γ·is/N · (N·gy − Σgy − x̂·Σ(gy·x̂))
    const float a = (g ? g[b] : 1.f) * is;
    const float ms = (float)(sg / (double)N), mx = (float)(sgx / (double)N);
    for (int64_t n = 0; n < N; n++) {
      const float xh = (h1[n * B + b] - mu) * is;
      gh[n * B + b] = a * (gh[n * B + b] - ms - xh * mx);
    }
  }
  if (needParams) {
    r.w1 = emptyTensor(w1.shape);
    headSgemm('T', 'N', B, Cc, N, gh.data(), B, plainData(ctx), Cc, r.w1->data(), Cc);  // gW1 = gh1^T ctx
  }
  if (needCtx) {
    r.ctx = emptyTensor(ctx.shape);
    headSgemm('N', 'N', N, Cc, B, gh.data(), B, plainData(w1), Cc, r.ctx->data(), Cc);  // gctx = gh1 W1
  }
  return r;
}

GateHeadTrain gateHeadTrainForward(const Tensor& ctx, const Tensor& w1, Tensor& runningMean, Tensor& runningVar,
                                   const Tensor* gamma, const Tensor* beta, float momentum, float eps, const Tensor& w2,
                                   const Tensor& b2, int64_t heads, float temperature, float invSigma, uint64_t seed) {
  GateHeadTrain r;
  r.head = squeezeHeadTrain(ctx, w1, runningMean, runningVar, gamma, beta, momentum, eps, w2, b2, false);
  TensorPtr z = std::move(r.head.z);
  const int64_t N = ctx.shape[0], K = w2.shape[0], n = N * K;
  r.soft = emptyTensor({N, heads, K / heads});
  r.mask = emptyTensor({N, heads, K / heads});
  // the bias, F.scale's product and gateForward's gate in one pass: the same bits as the separate ops
  gumbelGate(z->data(), temperature, seed, n, r.soft->data(), r.mask->data(), plainData(b2), K, invSigma);
  r.stats = maskStats(*r.mask);
  return r;
}

SqueezeHeadGrads gateHeadTrainBackward(const Tensor& ctx, const Tensor& w1, const Tensor* gamma, const Tensor& w2,
                                       const SqueezeHeadTrain& saved, const Tensor& soft, const Tensor& gm,
                                       float temperature, bool needCtx, bool needParams) {
  TensorPtr gz = gateBackward(soft, gm, temperature);
  return squeezeHeadTrainBackward(ctx, w1, gamma, w2, saved, *gz, needCtx, needParams);
}

namespace {
struct SampleStats {
  double sum = 0, unselected = 0;
  bool allOnes = true;
};
// One sample's G rows of C gates: their sum, Σ_c Π_i (1 - m[i, c]) and whether all are 1. Three separate loops,
// each free of a dependence from one channel to the next, so that they vectorize (one loop with a running sum took
// 6 µs on MobileNetV2's [1, 4, 960] gates); compiled for AVX-512 and AVX2 as well, picked at load time
// (MobileNetV2's [32, 4, 960] gates at batch 32 took ~90 µs of a 200 µs gate head on the baseline SSE2 code).
MSGC_SIMD_CLONES SampleStats sampleStats(const float* v, int64_t G, int64_t C, double* prod) {
  SampleStats st;
  double part[4] = {0, 0, 0, 0};
  int ones = 1;
  for (int64_t c = 0; c < C; c++) prod[c] = 1.0;
  for (int64_t i = 0; i < G; i++) {
    const float* row = v + i * C;
    int64_t c = 0;
    for (; c + 4 <= C; c += 4)
      for (int j = 0; j < 4; j++) part[j] += row[c + j];
    for (; c < C; c++) part[0] += row[c];
    for (c = 0; c < C; c++) prod[c] *= 1.0 - (double)row[c];
    for (c = 0; c < C; c++) ones &= row[c] == 1.f ? 1 : 0;
  }
  for (int64_t c = 0; c < C; c++) st.unselected += prod[c];
  st.sum = (part[0] + part[1]) + (part[2] + part[3]);
  st.allOnes = ones != 0;
  return st;
}
}  // namespace

MaskStats maskStats(const Tensor& m) {
  const int64_t N = m.shape[0], G = m.shape[1], C = m.shape[2];
  const float* v = plainData(m);
  // per sample (split over the threads for large gates), summed in sample order: the same result on any number of
  // threads
  std::vector<SampleStats> per((size_t)N);
  parallelFor(N, N * G * C >= 65536, [&](int64_t n) {
    static thread_local std::vector<double> prod;
    if ((int64_t)prod.size() < C) prod.resize(C);
    per[n] = sampleStats(v + n * G * C, G, C, prod.data());
  });
  MaskStats r;
  bool ones = true;
  for (const SampleStats& st : per) {
    r.sum += st.sum;
    r.unselected += st.unselected;
    ones = ones && st.allOnes;
  }
  r.allOnes = ones;
  return r;
}

TensorPtr gateSummary(const Tensor& m) {
  const int64_t N = m.shape[0], G = m.shape[1], C = m.shape[2];
  const MaskStats st = maskStats(m);
  TensorPtr out = emptyTensor({3 + G});
  float* o = out->data();
  o[0] = (float)st.sum;
  o[1] = (float)st.unselected;
  o[2] = st.allOnes && m.numel() > 0 ? 1.f : 0.f;
  const float* v = plainData(m);
  for (int64_t i = 0; i < G; i++) {
    double s = 0;
    for (int64_t n = 0; n < N; n++) {
      const float* row = v + (n * G + i) * C;
      for (int64_t c = 0; c < C; c++) s += row[c];
    }
    o[3 + i] = (float)s;
  }
  return out;
}

}  // namespace msgc
