// gate.cc: the binary gate of MSGC heads — Gumbel(logistic)-sigmoid with a straight-through estimator in
// training, a deterministic threshold on the logit in eval (spec §2.3).
#include <dnnl.h>
#include <omp.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "layout.h"
#include "msgc_gather.h"
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

// C[M, N] = op(A) · op(B) (row-major)
static void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc) {
  cpu::sgemm("squeezeHead", ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc);
}

// Σ_k a[k]·b[k] in 8 (AVX2) or 4 independent partial sums
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2,fma"))) static float dotAvx2(const float* a, const float* b, int64_t K) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), acc1);
  }
  if (k + 8 <= K) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    k += 8;
  }
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float r = _mm_cvtss_f32(s);
  for (; k < K; k++) r += a[k] * b[k];
  return r;
}
#else
static float dotAvx2(const float*, const float*, int64_t) { return 0.f; }
#endif
static float dotPortable(const float* a, const float* b, int64_t K) {
  float s[4] = {0.f, 0.f, 0.f, 0.f};
  int64_t k = 0;
  for (; k + 4 <= K; k += 4)
    for (int j = 0; j < 4; j++) s[j] += a[k + j] * b[k + j];
  for (; k < K; k++) s[0] += a[k] * b[k];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// C = A · Bᵀ (A [M, K], B [N, K]): both of a head's GEMMs in training (inference at batch 1-4: headGemmPanels
// below). At batch 1-4 they are GEMVs that stream the weights once: dot products row by row, on one thread below
// 8K multiply-adds (oneDNN's sgemm started its threads even for a 128×8 weight, whose fixed cost is what counts
// there), else split over the threads by rows of B: in a network the weights come from memory, not cache
// (MobileNetV2's 17 heads at batch 1, 3.2 MB of weights: 1.03 ms with the split from 64K multiply-adds up, 0.94
// from 8K, against 0.37 ms when they are hot). Larger batches: oneDNN's sgemm.
static void headGemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  if (M > 4) {
    sgemm('N', 'T', M, N, K, A, K, B, K, C, N);
    return;
  }
  const bool avx2 = gather::cpuHasAvx2Fma();
  auto rows = [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++)
      for (int64_t m = 0; m < M; m++)
        C[m * N + n] = avx2 ? dotAvx2(A + m * K, B + n * K, K) : dotPortable(A + m * K, B + n * K, K);
  };
  const int threads = omp_get_max_threads();
  if (threads == 1 || M * N * K < (int64_t(1) << 13)) {
    rows(0, N);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
    rows(N * t / T, N * (t + 1) / T);
  }
}

// Inference at batch 1-4: C = A · Wᵀ with W [N, K] kept (per weight, as a derived copy) in groups of 64 of its
// rows, P[g][k][j] = W[64g + j][k] (zeros past N), so that the product reads each group as one sequential stream,
// every multiply-add vectorized over the group's outputs. The row-by-row dot products above read the same bytes,
// but rows of 24-128 floats (MobileNetV2's second layers: 3840 rows of 40) spend more on the horizontal sums than
// on the multiply-adds.
constexpr int64_t kPanel = 64;
static const float* headPanels(const Tensor& w, int64_t N, int64_t K) {
  auto& cache = w.storage->derived;
  // (the key holds the shape read: a reshaped view shares its tensor's storage, and with it this cache)
  const std::string key = "gate:panels64:" + std::to_string(N) + "x" + std::to_string(K);
  auto it = cache.find(key);
  if (it != cache.end() && it->second.version == w.storage->version) return it->second.copy->data;
  const float* b = plainData(w);
  const int64_t P = (N + kPanel - 1) / kPanel;
  auto st = std::make_shared<Storage>((size_t)(P * K * kPanel) * sizeof(float), w.device());
  float* d = st->data;
  for (int64_t p = 0; p < P; p++)
    for (int64_t k = 0; k < K; k++)
      for (int64_t j = 0; j < kPanel; j++) {
        const int64_t n = p * kPanel + j;
        d[(p * K + k) * kPanel + j] = n < N ? b[n * K + k] : 0.f;
      }
  cache[key] = Storage::Derived{w.storage->version, st};
  return d;
}

// C[m, 64p + j] for m < MM over the groups [p0, p1)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <int MM>
__attribute__((target("avx512f"))) static void panelsAvx512(int64_t K, const float* A, const float* P, int64_t p0,
                                                             int64_t p1, int64_t N, float* C, const int32_t* ks,
                                                             int64_t nk) {
  for (int64_t p = p0; p < p1; p++) {
    __m512 acc[MM][4];
    for (int m = 0; m < MM; m++)
      for (int v = 0; v < 4; v++) acc[m][v] = _mm512_setzero_ps();
    const float* panel = P + p * K * kPanel;
    for (int64_t j = 0; j < nk; j++) {
      const int64_t k = ks[j];
      const float* q = panel + k * kPanel;
      __m512 w[4];
      for (int v = 0; v < 4; v++) w[v] = _mm512_loadu_ps(q + 16 * v);
      for (int m = 0; m < MM; m++) {
        const __m512 a = _mm512_set1_ps(A[m * K + k]);
        for (int v = 0; v < 4; v++) acc[m][v] = _mm512_fmadd_ps(a, w[v], acc[m][v]);
      }
    }
    for (int v = 0; v < 4; v++) {
      const int64_t n0 = p * kPanel + 16 * v, left = N - n0;
      if (left <= 0) break;
      const __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
      for (int m = 0; m < MM; m++) _mm512_mask_storeu_ps(C + m * N + n0, mk, acc[m][v]);
    }
  }
}
// AVX2: a group's 64 outputs 16 at a time (two ymm per sample, up to 8 accumulators)
template <int MM>
__attribute__((target("avx2,fma"))) static void panelsAvx2(int64_t K, const float* A, const float* P, int64_t p0,
                                                           int64_t p1, int64_t N, float* C, const int32_t* ks,
                                                           int64_t nk) {
  for (int64_t p = p0; p < p1; p++)
    for (int64_t v = 0; v < kPanel / 16 && p * kPanel + 16 * v < N; v++) {
      __m256 lo[MM], hi[MM];
      for (int m = 0; m < MM; m++) lo[m] = hi[m] = _mm256_setzero_ps();
      const float* panel = P + p * K * kPanel + 16 * v;
      for (int64_t j = 0; j < nk; j++) {
        const int64_t k = ks[j];
        const float* q = panel + k * kPanel;
        const __m256 wl = _mm256_loadu_ps(q), wh = _mm256_loadu_ps(q + 8);
        for (int m = 0; m < MM; m++) {
          const __m256 a = _mm256_set1_ps(A[m * K + k]);
          lo[m] = _mm256_fmadd_ps(a, wl, lo[m]);
          hi[m] = _mm256_fmadd_ps(a, wh, hi[m]);
        }
      }
      alignas(32) float t[16];
      const int64_t n0 = p * kPanel + 16 * v;
      for (int m = 0; m < MM; m++) {
        _mm256_store_ps(t, lo[m]);
        _mm256_store_ps(t + 8, hi[m]);
        for (int64_t l = 0; l < 16 && n0 + l < N; l++) C[m * N + n0 + l] = t[l];
      }
    }
}
#endif
static void panelsPortable(int64_t M, int64_t K, const float* A, const float* P, int64_t p0, int64_t p1, int64_t N,
                           float* C, const int32_t* ks, int64_t nk) {
  for (int64_t p = p0; p < p1; p++)
    for (int64_t m = 0; m < M; m++) {
      float acc[kPanel] = {};
      const float* q = P + p * K * kPanel;
      for (int64_t t = 0; t < nk; t++) {
        const int64_t k = ks[t];
        const float a = A[m * K + k];
        for (int64_t j = 0; j < kPanel; j++) acc[j] += a * q[k * kPanel + j];
      }
      for (int64_t j = 0; j < kPanel && p * kPanel + j < N; j++) C[m * N + p * kPanel + j] = acc[j];
    }
}

// C [M, N] = A [M, K] · Wᵀ (W [N, K]) at M <= 4 over W's groups of rows (headPanels), split over the threads by
// groups from 32K multiply-adds (each thread then streams its own contiguous part of them).
// MSGC_HEAD_KERNEL=avx2|portable forces the other kernels (tests).
static void headGemmPanels(int64_t M, int64_t N, int64_t K, const float* A, const Tensor& w, float* C) {
  const float* P = headPanels(w, N, K);
  const int64_t groups = (N + kPanel - 1) / kPanel;
  // the k with a non-zero input in some row of A: a zero input's weights add nothing (0·w = 0 for finite w; the
  // sums, in the same order, come out the same but for the sign of a zero), so their lines are not read. The second
  // layer's input is a ReLU's output, about half zeros: at batch 1 the heads' weight bytes, more than a fifth of
  // MobileNetV2's (the gathered projections read half of theirs), about halve.
  static thread_local std::vector<int32_t> ksStore;
  std::vector<int32_t>& ks = ksStore;
  ks.clear();
  // (MSGC_HEAD_SKIPZERO=0: every k, for benchmarks)
  const char* skipEnv = std::getenv("MSGC_HEAD_SKIPZERO");
  const bool all = skipEnv && skipEnv[0] == '0';
  for (int64_t k = 0; k < K; k++)
    for (int64_t m = 0; m < M; m++)
      if (all || A[m * K + k] != 0.f) {
        ks.push_back((int32_t)k);
        break;
      }
  const int32_t* kp = ks.data();
  const int64_t nk = (int64_t)ks.size();
  const char* force = std::getenv("MSGC_HEAD_KERNEL");
  const bool portable = force && std::string(force) == "portable", avx2Only = force && std::string(force) == "avx2";
  auto run = [&](int64_t p0, int64_t p1) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (!portable && !avx2Only && gather::cpuHasAvx512()) {
      switch (M) {
        case 1: return panelsAvx512<1>(K, A, P, p0, p1, N, C, kp, nk);
        case 2: return panelsAvx512<2>(K, A, P, p0, p1, N, C, kp, nk);
        case 3: return panelsAvx512<3>(K, A, P, p0, p1, N, C, kp, nk);
        default: return panelsAvx512<4>(K, A, P, p0, p1, N, C, kp, nk);  // (M == 4: headGemmEval)
      }
    }
    if (!portable && gather::cpuHasAvx2Fma()) {
      switch (M) {
        case 1: return panelsAvx2<1>(K, A, P, p0, p1, N, C, kp, nk);
        case 2: return panelsAvx2<2>(K, A, P, p0, p1, N, C, kp, nk);
        case 3: return panelsAvx2<3>(K, A, P, p0, p1, N, C, kp, nk);
        default: return panelsAvx2<4>(K, A, P, p0, p1, N, C, kp, nk);
      }
    }
#endif
    panelsPortable(M, K, A, P, p0, p1, N, C, kp, nk);
  };
  const bool split = omp_get_max_threads() > 1 && M * N * K >= (int64_t(1) << 15) && groups >= 2;
  parallelFor(groups, split, [&](int64_t p) { run(p, p + 1); });
}

// A squeeze head's GEMM in inference: the panel product at batch 1-4, else headGemm. (Training keeps the dot
// products: its weights change every step, and a new panel copy per call would read them twice.)
// MSGC_HEAD_PANELS=0: the dot products here too (benchmarks).
static void headGemmEval(int64_t M, int64_t N, int64_t K, const float* A, const Tensor& w, float* C) {
  if (M == 0 || N == 0) return;  // (an empty batch: nothing to compute, and A may be empty)
  const char* env = std::getenv("MSGC_HEAD_PANELS");
  if (M <= 4 && !(env && env[0] == '0')) return headGemmPanels(M, N, K, A, w, C);
  headGemm(M, N, K, A, plainData(w), C);
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
    sgemm('T', 'N', K, B, N, dz, K, h, B, r.w2->data(), B);  // gW2 = gz^T h
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
  sgemm('N', 'N', N, B, K, dz, K, plainData(w2), B, gh.data(), B);
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
    sgemm('T', 'N', B, Cc, N, gh.data(), B, plainData(ctx), Cc, r.w1->data(), Cc);  // gW1 = gh1^T ctx
  }
  if (needCtx) {
    r.ctx = emptyTensor(ctx.shape);
    sgemm('N', 'N', N, Cc, B, gh.data(), B, plainData(w1), Cc, r.ctx->data(), Cc);  // gctx = gh1 W1
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
