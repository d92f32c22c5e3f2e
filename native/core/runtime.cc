// runtime.cc: thread settings and the seedable random generator (Philox-4x32-10, counter based, so a stream
// is reproducible whatever the thread count).
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <signal.h>
#define MSGC_HAS_SIGMASK 1
#else
#define MSGC_HAS_SIGMASK 0
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <xmmintrin.h>
#define MSGC_HAS_MXCSR 1
#else
#define MSGC_HAS_MXCSR 0
#endif

#include "msgc/tensor.h"
#include "msgc/parallel.h"

namespace msgc {
namespace {
std::atomic<uint64_t> gSeedState{0x5eed5eed12345678ull};

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

void setNumThreads(int n) {
  if (n > 0) omp_set_num_threads(n);
}
int getNumThreads() { return omp_get_max_threads(); }

// ---- denormal flushing ----
namespace {
constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bits: flush-to-zero (15) and denormals-are-zero (6)
bool defaultFlush() {
  const char* e = std::getenv("MSGC_FLUSH_DENORMALS");
  return !(e && (std::strcmp(e, "0") == 0 || std::strcmp(e, "false") == 0 || std::strcmp(e, "off") == 0));
}
std::atomic<bool> gFlush{defaultFlush()};
// per JavaScript thread: libgomp keeps a pool of workers for each thread that starts parallel regions (the main
// thread, each worker_threads Worker)
thread_local int tWorkersFlushed = 0;  // the thread count this thread's workers were last set up for (0: not yet)
thread_local bool tWorkersFlush = false;

// Blocks every signal but the fault signals in the calling thread; the previous mask into `saved` (a sigset_t) when
// not null. False where there are no signal masks.
bool blockAsyncSignals(void* saved) {
#if MSGC_HAS_SIGMASK
  sigset_t async;
  sigfillset(&async);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&async, sig);
  return pthread_sigmask(SIG_BLOCK, &async, static_cast<sigset_t*>(saved)) == 0;
#else
  (void)saved;
  return false;
#endif
}

// Sets every OpenMP worker's MXCSR to the current choice (threads keep it for their life); again when the thread
// count grows or the choice changes.
void setupWorkers(bool on) {
#if MSGC_HAS_MXCSR
  const int threads = omp_get_max_threads();
  if (tWorkersFlushed >= threads && tWorkersFlush == on) return;
#pragma omp parallel num_threads(threads)
  {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | kFtzDaz) : (csr & ~kFtzDaz));
    // the workers hold asynchronous signals back for good (ScopedBlockSignals): they run oneDNN's JIT kernels, and
    // signals sent to the process go to a thread that does not block them
    if (omp_get_thread_num() != 0) blockAsyncSignals(nullptr);
  }
  tWorkersFlushed = threads;
  tWorkersFlush = on;
#else
  (void)on;
#endif
}
}  // namespace

bool setFlushDenormals(bool on) {
  gFlush.store(on);
  return MSGC_HAS_MXCSR != 0;
}
bool flushDenormals() { return MSGC_HAS_MXCSR && gFlush.load(); }

ScopedFlushDenormals::ScopedFlushDenormals() {
#if MSGC_HAS_MXCSR
  const bool on = gFlush.load();
  saved_ = _mm_getcsr();
  _mm_setcsr(on ? (saved_ | kFtzDaz) : (saved_ & ~kFtzDaz));
  active_ = true;
  setupWorkers(on);  // the calling thread first: the pool's threads inherit it when created
#endif
}
ScopedFlushDenormals::~ScopedFlushDenormals() {
#if MSGC_HAS_MXCSR
  if (active_) _mm_setcsr(saved_);
#endif
}

ScopedBlockSignals::ScopedBlockSignals() { active_ = blockAsyncSignals(saved_); }
#if MSGC_HAS_SIGMASK
static_assert(sizeof(sigset_t) <= 128, "sigset_t does not fit ScopedBlockSignals::saved_");
#endif
ScopedBlockSignals::~ScopedBlockSignals() {
#if MSGC_HAS_SIGMASK
  if (active_) pthread_sigmask(SIG_SETMASK, reinterpret_cast<const sigset_t*>(saved_), nullptr);
#endif
}

void manualSeed(uint64_t seed) { gSeedState.store(seed); }

uint64_t rngState() { return gSeedState.load(); }
void setRngState(uint64_t s) { gSeedState.store(s); }

uint64_t nextSeed() {
  uint64_t s = gSeedState.load();
  uint64_t out = splitmix64(s);
  gSeedState.store(s);
  return out;
}

namespace {
// Philox-4x32-10's ten rounds on the counter (c0..c3) under key (k0, k1), in place
__attribute__((always_inline)) inline void philoxRounds(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                                       uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; r++) {
    const uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}
}  // namespace

void Philox::block(uint64_t key, uint64_t ctr, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
  philoxRounds(c0, c1, c2, c3, (uint32_t)key, (uint32_t)(key >> 32));
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

static inline float toUnit(uint32_t v) { return (v >> 8) * (1.0f / 16777216.0f); }  // [0, 1)

namespace {
// out[4(b - b0) + j] = toUnit(Philox(seed, b)[j]) for the blocks b in [b0, b1): the rounds inlined in a loop over
// blocks that vectorizes (one block per lane), compiled for AVX-512 and AVX2 as well. The values are
// exact ((v >> 8)·2⁻²⁴), so every version gives the same bits. (Scalar, the generator was 44% of a training gate's
// time: 316 µs for MobileNetV2's [32, 4, 960] gates.)
MSGC_SIMD_CLONES void unitBlocksAuto(float* out, int64_t b0, int64_t b1, uint64_t seed) {
  const uint32_t key0 = (uint32_t)seed, key1 = (uint32_t)(seed >> 32);
  for (int64_t b = b0; b < b1; b++) {
    uint32_t c0 = (uint32_t)b, c1 = (uint32_t)((uint64_t)b >> 32), c2 = 0, c3 = 0;
    philoxRounds(c0, c1, c2, c3, key0, key1);
    float* o = out + 4 * (b - b0);
    o[0] = toUnit(c0);
    o[1] = toUnit(c1);
    o[2] = toUnit(c2);
    o[3] = toUnit(c3);
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// 32-bit products' high halves, lane-wise: the even lanes' and the odd lanes' 64-bit products, interleaved
__attribute__((target("avx512f"))) inline __m512i mulhiEpu32(__m512i a, __m512i m) {
  const __m512i even = _mm512_mul_epu32(a, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  return _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

// unitBlocksAuto with AVX-512 intrinsics, 16 blocks (64 values) at a time: the rounds on four vectors of counter
// words, then the 4×16 values transposed into the stream's order (block by block). GCC's vectorization of the loop
// above spent ~1.3 ns a value (half of a training gate's time); the values are the same bits (integer arithmetic,
// then (v >> 8)·2⁻²⁴ exactly).
__attribute__((target("avx512f"))) void unitBlocksAvx512(float* out, int64_t b0, int64_t b1, uint64_t seed) {
  const uint32_t key0 = (uint32_t)seed, key1 = (uint32_t)(seed >> 32);
  const __m512i m0 = _mm512_set1_epi32((int)0xD2511F53u), m1 = _mm512_set1_epi32((int)0xCD9E8D57u);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 unit = _mm512_set1_ps(1.0f / 16777216.0f);
  int64_t b = b0;
  // (whole groups whose 16 block indices share their upper 32 bits)
  for (; b + 16 <= b1 && ((uint64_t)b & 0xffffffffu) <= 0xffffffffu - 15; b += 16) {
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)b), lanes);
    __m512i c1 = _mm512_set1_epi32((int)(uint32_t)((uint64_t)b >> 32));
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < 10; r++) {
      const __m512i hi0 = mulhiEpu32(c0, m0), lo0 = _mm512_mullo_epi32(c0, m0);
      const __m512i hi1 = mulhiEpu32(c2, m1), lo1 = _mm512_mullo_epi32(c2, m1);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
      c1 = lo1;
      c3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const __m512 f0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c0, 8)), unit);
    const __m512 f1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c1, 8)), unit);
    const __m512 f2 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c2, 8)), unit);
    const __m512 f3 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c3, 8)), unit);
    // per 128-bit lane L: u_j holds block 4L + j's four values
    const __m512 t0 = _mm512_unpacklo_ps(f0, f1), t1 = _mm512_unpackhi_ps(f0, f1);
    const __m512 t2 = _mm512_unpacklo_ps(f2, f3), t3 = _mm512_unpackhi_ps(f2, f3);
    const __m512 u0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
    const __m512 u1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
    const __m512 u2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
    const __m512 u3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
    // the 4×4 transpose of 128-bit lanes: output vector q holds blocks 4q .. 4q + 3
    const __m512 v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u2, u3, 0x44);
    const __m512 v2 = _mm512_shuffle_f32x4(u0, u1, 0xEE), v3 = _mm512_shuffle_f32x4(u2, u3, 0xEE);
    float* o = out + 4 * (b - b0);
    _mm512_storeu_ps(o, _mm512_shuffle_f32x4(v0, v1, 0x88));
    _mm512_storeu_ps(o + 16, _mm512_shuffle_f32x4(v0, v1, 0xDD));
    _mm512_storeu_ps(o + 32, _mm512_shuffle_f32x4(v2, v3, 0x88));
    _mm512_storeu_ps(o + 48, _mm512_shuffle_f32x4(v2, v3, 0xDD));
  }
  if (b < b1) unitBlocksAuto(out + 4 * (b - b0), b, b1, seed);
}
#endif

void unitBlocks(float* out, int64_t b0, int64_t b1, uint64_t seed, bool avx512) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (avx512) return unitBlocksAvx512(out, b0, b1, seed);
#endif
  unitBlocksAuto(out, b0, b1, seed);
}
}  // namespace

bool uniformAvx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // (MSGC_PHILOX_GENERIC=1: the generic loop, for tests)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 && !std::getenv("MSGC_PHILOX_GENERIC");
#else
  return false;
#endif
}

void uniformRange(float* out, int64_t i0, int64_t i1, uint64_t seed, bool avx512) {
  // whole blocks, then the part of the last one that is in the range
  const int64_t b0 = i0 / 4, full = i1 / 4;
  if (full > b0) unitBlocks(out, b0, full, seed, avx512);
  if (i1 % 4) {
    uint32_t v[4];
    Philox::block(seed, (uint64_t)full, v);
    for (int64_t i = std::max(full * 4, i0); i < i1; i++) out[i - i0] = toUnit(v[i - full * 4]);
  }
}

void fillUniform(float* out, int64_t n, uint64_t seed, float low, float high) {
  // ranges of 4096 values (split over the threads for large n)
  const int64_t ranges = (n + 4095) / 4096;
  const bool avx512 = uniformAvx512();
  parallelFor(ranges, n > 65536, [&](int64_t r) {
    uniformRange(out + r * 4096, r * 4096, std::min(n, (r + 1) * 4096), seed, avx512);
  });
  // low + (high - low)·u, in this baseline-ISA code as before (no fused multiply-add: the same bits on every CPU)
  if (low != 0.f || high != 1.f) {
    const float span = high - low;
    parallelFor(n, n > 65536, [&](int64_t i) { out[i] = low + span * out[i]; });
  }
}

void fillNormal(float* out, int64_t n, uint64_t seed, float mean, float std) {
  int64_t blocks = (n + 3) / 4;
  parallelFor(blocks, n > 65536, [&](int64_t b) {
    uint32_t r[4];
    Philox::block(seed, (uint64_t)b, r);
    float z[4];
    for (int j = 0; j < 4; j += 2) {  // Box-Muller on pairs
      double u1 = ((r[j] >> 8) + 1.0) / 16777217.0;  // (0, 1]
      double u2 = (r[j + 1] >> 8) / 16777216.0;
      double rad = std::sqrt(-2.0 * std::log(u1));
      z[j] = (float)(rad * std::cos(2.0 * M_PI * u2));
      z[j + 1] = (float)(rad * std::sin(2.0 * M_PI * u2));
    }
    for (int j = 0; j < 4; j++) {
      int64_t i = b * 4 + j;
      if (i < n) out[i] = mean + std * z[j];
    }
  });
}

}  // namespace msgc
