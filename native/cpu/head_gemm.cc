// head_gemm.cc: the squeeze heads' GEMMs (head_gemm.h): the dot products and oneDNN's sgemm of training, and the
// panel products of inference at batch 1-4.
#include <dnnl.h>
#include <omp.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "head_gemm.h"
#include "layout.h"
#include "msgc_gather.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

// C[M, N] = op(A) · op(B) (row-major)
void headSgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
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
void headGemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  if (M > 4) {
    headSgemm('N', 'T', M, N, K, A, K, B, K, C, N);
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
                                                             int64_t nk, int64_t ahead) {
  for (int64_t p = p0; p < p1; p++) {
    __m512 acc[MM][4];
    for (int m = 0; m < MM; m++)
      for (int v = 0; v < 4; v++) acc[m][v] = _mm512_setzero_ps();
    const float* panel = P + p * K * kPanel;
    for (int64_t j = 0; j < nk; j++) {
      const int64_t k = ks[j];
      const float* q = panel + k * kPanel;
      if (ahead && j + ahead < nk) {
        const char* f = (const char*)(panel + ks[j + ahead] * kPanel);
        for (int v = 0; v < 4; v++) _mm_prefetch(f + 64 * v, _MM_HINT_T0);
      }
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
  // AVX-512: each panel's rows of the selected k prefetched 16 rows ahead. They are scattered runs of 256 bytes,
  // cold in a network, which the hardware prefetchers do not follow. MobileNetV2 at batch 1, in-process A/B: its
  // heads 3% faster (8 and 32 ahead: within 1-2% of that). MSGC_HEAD_PREFETCH=d sets the distance (0: none).
  const char* pfEnv = std::getenv("MSGC_HEAD_PREFETCH");
  const int64_t ahead = pfEnv ? std::max(0, std::atoi(pfEnv)) : 16;
  const char* force = std::getenv("MSGC_HEAD_KERNEL");
  const bool portable = force && std::string(force) == "portable", avx2Only = force && std::string(force) == "avx2";
  auto run = [&](int64_t p0, int64_t p1) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (!portable && !avx2Only && gather::cpuHasAvx512()) {
      switch (M) {
        case 1: return panelsAvx512<1>(K, A, P, p0, p1, N, C, kp, nk, ahead);
        case 2: return panelsAvx512<2>(K, A, P, p0, p1, N, C, kp, nk, ahead);
        case 3: return panelsAvx512<3>(K, A, P, p0, p1, N, C, kp, nk, ahead);
        default: return panelsAvx512<4>(K, A, P, p0, p1, N, C, kp, nk, ahead);  // (M == 4: headGemmEval)
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
void headGemmEval(int64_t M, int64_t N, int64_t K, const float* A, const Tensor& w, float* C) {
  if (M == 0 || N == 0) return;  // (an empty batch: nothing to compute, and A may be empty)
  const char* env = std::getenv("MSGC_HEAD_PANELS");
  if (M <= 4 && !(env && env[0] == '0')) return headGemmPanels(M, N, K, A, w, C);
  headGemm(M, N, K, A, plainData(w), C);
}

}  // namespace msgc
