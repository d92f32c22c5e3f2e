// msgc_gather_avx2.cc: the gathered MSGC convolution's micro-kernels for x86-64 CPUs with AVX2 and FMA but without
// AVX-512 (AMD Zen 2/3, most Intel client cores), and its BN epilogue there. The AVX-512 kernels hold 16 output
// channels in one zmm register; here a block of 16 outputs is two ymm halves, so with 16 ymm registers a register
// block is 2 halves × up to 6 pixels (12 accumulators + 2 weight vectors + 1 broadcast), and one broadcast of an
// input pixel feeds two FMAs. The weights keep the AVX-512 layout ([G][B][C][T][16]); the halves are written
// `ho` floats apart (8 in a [pixel][16] tile or nChw16c, 8·OH·OW in nChw8c, oneDNN's layout on these CPUs).
// See msgc_gather.cc for the design.
#include <stdexcept>

#include "msgc_gather.h"
#include "msgc_gather_tables.h"

namespace msgc {
namespace gather {
#if MSGC_GATHER_AVX512
namespace {

// acc[h][r][q] += w[h] * x[r*irs + q*S] for the halves h < HV, r < R, LO <= q < HI (one tap)
template <int HV, int Q, int R, int S, int LO, int HI>
__attribute__((target("avx2,fma"), always_inline)) inline void fmaTap2(__m256 (&acc)[HV][R][Q], const __m256 (&w)[HV],
                                                                      const float* x, int64_t irs) {
#pragma GCC unroll 4
  for (int r = 0; r < R; r++, x += irs)
#pragma GCC unroll 8
    for (int q = LO; q < HI; q++) {
      const __m256 xb = _mm256_broadcast_ss(x + q * S);
#pragma GCC unroll 3
      for (int h = 0; h < HV; h++) acc[h][r][q] = _mm256_fmadd_ps(w[h], xb, acc[h][r][q]);
    }
}

// acc += x * (8 floats at w), the weights as the FMA's memory operand (asm: the compiler would keep them in a
// register, and with 14 accumulators there is none to spare)
__attribute__((target("avx2,fma"), always_inline)) inline __m256 fmaMem(__m256 acc, __m256 x, const float* w) {
  asm("vfmadd231ps %2, %1, %0" : "+x"(acc) : "x"(x), "m"(*(const float(*)[8])w));
  return acc;
}

// fmaTap2 for 2 halves with more than 6 pixels: the upper half's weights (wu) read by each FMA
template <int Q, int R, int S, int LO, int HI>
__attribute__((target("avx2,fma"), always_inline)) inline void fmaTap2m(__m256 (&acc)[2][R][Q], __m256 w0, const float* wu,
                                                                       const float* x, int64_t irs) {
#pragma GCC unroll 4
  for (int r = 0; r < R; r++, x += irs)
#pragma GCC unroll 8
    for (int q = LO; q < HI; q++) {
      const __m256 xb = _mm256_broadcast_ss(x + q * S);
      acc[0][r][q] = _mm256_fmadd_ps(w0, xb, acc[0][r][q]);
      acc[1][r][q] = fmaMem(acc[1][r][q], xb, wu);
    }
}

// one tap's weights: the block's lower half, its upper half (HV >= 2), and the lower half of the next block, wnext
// floats on (HV = 3)
template <int HV>
__attribute__((target("avx2,fma"), always_inline)) inline void loadW(__m256 (&w)[HV], const float* wt, int64_t wnext) {
  w[0] = _mm256_loadu_ps(wt);
  if constexpr (HV >= 2) w[1] = _mm256_loadu_ps(wt + 8);
  if constexpr (HV == 3) w[2] = _mm256_loadu_ps(wt + wnext);
}

// one tap: its weights (wt; the next block's lower half wnext floats on) times the inputs at x. With 2 halves and more
// than kAvx2Pixels pixels (14 accumulators) the upper half's weights are the FMAs' memory operands
template <int HV, int Q, int R, int S, int LO, int HI>
__attribute__((target("avx2,fma"), always_inline)) inline void tap2(__m256 (&acc)[HV][R][Q], const float* wt,
                                                                   int64_t wnext, const float* x, int64_t irs) {
  if constexpr (HV == 2 && R * Q > kAvx2Pixels) {
    fmaTap2m<Q, R, S, LO, HI>(acc, _mm256_loadu_ps(wt), wt + 8, x, irs);
  } else {
    __m256 wv[HV];
    loadW<HV>(wv, wt, wnext);
    fmaTap2<HV, Q, R, S, LO, HI>(acc, wv, x, irs);
  }
}

// 16 output channels (HV = 2 halves; HV = 1: the lower 8, for heads of 16k + 8 outputs; HV = 3: 24, the lower 8 of
// the next block too, its weights wnext floats on, for a head's last 24 outputs) × R rows × Q pixels
// (HV·R·Q accumulators + HV weight vectors + 1 broadcast <= 16 ymm; 2 halves of 7 pixels: see tap2):
//   out[(r*ors + q)*ol + h*ho + l] = sum_j sum_t (wch[j] + wshift)[t*16 + 8h + l] * chan[j][pos + tapOffset[t] + r*irs + q*S]
// (half 2's weights at wch[j] + wshift + wnext + t*16 + l). E: the padding edges of a 3-wide kernel with one column
// of padding, as the AVX-512 ocvec kernel's.
template <int Q, int R, int S, int E, int HV>
__attribute__((target("avx2,fma"))) void ocvec2Kernel(const float* const* chan, const float* const* wch, int64_t nch,
                                                      const int64_t* tapOffset, int64_t T, int64_t wshift, int64_t pos,
                                                      int64_t irs, float* out, int64_t ors, int64_t ol, int64_t ho,
                                                      int64_t wnext, int64_t accumulate) {
  __m256 acc[HV][R][Q];
#pragma GCC unroll 3
  for (int h = 0; h < HV; h++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
      for (int q = 0; q < Q; q++)
        acc[h][r][q] = accumulate ? _mm256_loadu_ps(out + (r * ors + q) * ol + h * ho) : _mm256_setzero_ps();
  // the weights a few channels ahead into L2, one 64-byte line per tap (not for 1×1 convs: 3-15% slower at distances
  // of 8-32 channels). 3×3 convs: 8 channels ahead into L2 against 4 into L1 took 0.88-0.92x the time at batch 1
  // (ResNet-18's 3×3 shapes, density 0.5, 4 heads, after two dense convs' weights went through the caches; 2
  // threads, Zen 3, interleaved), 0.9-1.0x at batch 32; whole ResNet-18 / ResNet-20 inference: within the ±3% noise
  const int64_t ahead = T >= 4 ? 8 : T > 1 ? 16 : nch;
  for (int64_t j = 0; j < nch; j++) {
    const float* base = chan[j] + pos;
    const float* w = wch[j] + wshift;
    if (j + ahead < nch)
      for (int64_t t = 0; t < T; t++) {
        _mm_prefetch((const char*)(wch[j + ahead] + wshift + 16 * t), _MM_HINT_T1);
        if constexpr (HV == 3) _mm_prefetch((const char*)(wch[j + ahead] + wshift + wnext + 16 * t), _MM_HINT_T1);
      }
    if (E) {
      for (int64_t t = 0; t < T; t += 3) {
        const float* wt = w + 16 * t;
        tap2<HV, Q, R, S, (E & 1), Q>(acc, wt, wnext, base + tapOffset[t], irs);
        tap2<HV, Q, R, S, 0, Q>(acc, wt + 16, wnext, base + tapOffset[t + 1], irs);
        tap2<HV, Q, R, S, 0, Q - (E >> 1)>(acc, wt + 32, wnext, base + tapOffset[t + 2], irs);
      }
    } else {
      for (int64_t t = 0; t < T; t++) tap2<HV, Q, R, S, 0, Q>(acc, w + 16 * t, wnext, base + tapOffset[t], irs);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int q = 0; q < Q; q++) {
      float* o = out + (r * ors + q) * ol;
#pragma GCC unroll 3
      for (int h = 0; h < HV; h++) _mm256_storeu_ps(o + h * ho, acc[h][r][q]);
    }
}

// the tables (msgc_gather_tables.h): copied rows, pixels 1 apart (every edge variant) or 2 apart; one output row of
// a blocked x read in place, pixels S apart (8: nChw8c stride 1 or 1×1; 16: nChw8c stride 2 or nChw16c stride 1;
// 32: nChw16c stride 2)
template <int Q, int R, int S, int E>
struct Ocvec2K {
  static constexpr Ocvec2Fn fn = &ocvec2Kernel<Q, R, S, E, 2>;
};
template <int Q, int R, int S, int E>
struct Ocvec2KHalf {
  static constexpr Ocvec2Fn fn = &ocvec2Kernel<Q, R, S, E, 1>;
};
template <int Q, int R, int S, int E>
struct Ocvec2KTriple {
  static constexpr Ocvec2Fn fn = &ocvec2Kernel<Q, R, S, E, 3>;
};
template <template <int, int, int, int> class K, int P, int (*Rows)(int)>
struct Ocvec2Tables {
  decltype(pixelRowTables<Ocvec2Fn, K, P, Rows, 1>()) s1 = pixelRowTables<Ocvec2Fn, K, P, Rows, 1>();
  decltype(pixelRowTable<Ocvec2Fn, K, Rows, 2, 0>(std::make_index_sequence<P * kMaxRows>{})) s2 =
      pixelRowTable<Ocvec2Fn, K, Rows, 2, 0>(std::make_index_sequence<P * kMaxRows>{});
  decltype(oneRowTables<Ocvec2Fn, K, P, 8>()) row8 = oneRowTables<Ocvec2Fn, K, P, 8>();
  decltype(oneRowTables<Ocvec2Fn, K, P, 16>()) row16 = oneRowTables<Ocvec2Fn, K, P, 16>();
  decltype(oneRowTables<Ocvec2Fn, K, P, 32>()) row32 = oneRowTables<Ocvec2Fn, K, P, 32>();
};
const Ocvec2Tables<Ocvec2K, kAvx2RowPixels, avx2Rows7> kOcvec2;
const Ocvec2Tables<Ocvec2KHalf, kAvx2Pixels, avx2Rows> kOcvec2Half;
const Ocvec2Tables<Ocvec2KTriple, kAvx2TriplePixels, avx2TripleRows> kOcvec2Triple;

// pixvec with AVX2: y[m*ldy + ypos + p] = sum_j sum_t (wch[j] + wshift)[t*ldw + m] * chan[j][pos + tapOffset[t] + p]
// for m < MR, as the AVX-512 pixvec kernel with vectors of 8 pixels: MR output channels × NR vectors covering rows of
// npx <= 8·vr pixels, vr vectors per row, rows rowIn apart in the input and rowOut apart in y
template <int MR, int NR, bool FULL>
__attribute__((target("avx2,fma"), always_inline)) inline void pixvec2Loop(__m256 (&acc)[MR][NR], const __m256i (&mk)[NR],
                                                                          const int64_t (&inOff)[NR],
                                                                          const float* const* chan,
                                                                          const float* const* wch, int64_t nch,
                                                                          const int64_t* tapOffset, int64_t T,
                                                                          int64_t ldw, int64_t wshift, int64_t pos) {
  for (int64_t j = 0; j < nch; j++) {
    const float* base = chan[j] + pos;
    const float* w = wch[j] + wshift;
    for (int64_t t = 0; t < T; t++, w += ldw) {
      const float* r = base + tapOffset[t];
      __m256 xv[NR];
#pragma GCC unroll 8
      for (int v = 0; v < NR; v++) xv[v] = FULL ? _mm256_loadu_ps(r + inOff[v]) : _mm256_maskload_ps(r + inOff[v], mk[v]);
#pragma GCC unroll 8
      for (int m = 0; m < MR; m++) {
        const __m256 wb = _mm256_broadcast_ss(w + m);
#pragma GCC unroll 8
        for (int v = 0; v < NR; v++) acc[m][v] = _mm256_fmadd_ps(wb, xv[v], acc[m][v]);
      }
    }
  }
}

template <int MR, int NR>
__attribute__((target("avx2,fma"))) void pixvec2Kernel(const float* const* chan, const float* const* wch, int64_t nch,
                                                       const int64_t* tapOffset, int64_t T, int64_t ldw, int64_t wshift,
                                                       int64_t pos, int64_t npx, float* y, int64_t ldy, int64_t ypos,
                                                       int64_t rowIn, int64_t rowOut, int64_t vr) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i mk[NR];
  int64_t inOff[NR], outOff[NR];
  bool full = true;  // every vector whole
#pragma GCC unroll 8
  for (int v = 0; v < NR; v++) {
    const int64_t row = v / vr, col = 8 * (v % vr), rem = std::max<int64_t>(0, std::min<int64_t>(8, npx - col));
    mk[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), lane);
    inOff[v] = row * rowIn + col;
    outOff[v] = row * rowOut + col;
    full = full && rem == 8;
  }
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; m++)
#pragma GCC unroll 8
    for (int v = 0; v < NR; v++) acc[m][v] = _mm256_setzero_ps();
  // whole vectors (rows of 8k pixels) load and store unmasked: AMD CPUs run masked moves slowly
  if (full)
    pixvec2Loop<MR, NR, true>(acc, mk, inOff, chan, wch, nch, tapOffset, T, ldw, wshift, pos);
  else
    pixvec2Loop<MR, NR, false>(acc, mk, inOff, chan, wch, nch, tapOffset, T, ldw, wshift, pos);
#pragma GCC unroll 8
  for (int m = 0; m < MR; m++)
#pragma GCC unroll 8
    for (int v = 0; v < NR; v++) {
      if (full)
        _mm256_storeu_ps(y + m * ldy + ypos + outOff[v], acc[m][v]);
      else
        _mm256_maskstore_ps(y + m * ldy + ypos + outOff[v], mk[v], acc[m][v]);
    }
}

// table[(MR - 1) * kMaxNR + NR - 1] for NR <= pixvec2MaxNR(MR) (others repeat NR = 1, never used)
template <size_t... I>
constexpr std::array<PixvecFn, sizeof...(I)> pixvec2Table(std::index_sequence<I...>) {
  return {&pixvec2Kernel<(int)(I / kMaxNR) + 1,
                         ((int)(I % kMaxNR) + 1 <= pixvec2MaxNR((int)(I / kMaxNR) + 1) ? (int)(I % kMaxNR) + 1 : 1)>...};
}
const std::array<PixvecFn, kMaxMR * kMaxNR> kPixvec2 = pixvec2Table(std::make_index_sequence<kMaxMR * kMaxNR>{});

}  // namespace

PixvecFn pixvec2KernelFor(int mr, int nr) {
  if (mr < 1 || mr > kMaxMR || nr < 1 || nr > pixvec2MaxNR(mr)) throw std::logic_error("pixvec (AVX2): register block out of range");
  return kPixvec2[(mr - 1) * kMaxNR + nr - 1];
}

bool cpuHasAvx2Fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

namespace {
template <class Tables>
Ocvec2Fn pickOcvec2(const Tables& t, int64_t stride, int64_t q, int64_t r, int edges) {
  if (stride == 8 || stride == 16 || stride == 32) {
    if (r != 1) throw std::logic_error("ocvec (AVX2): a blocked x read in place one row at a time");
    return (stride == 8 ? t.row8 : stride == 16 ? t.row16 : t.row32)[edges][q - 1];
  }
  if (stride == 2) {
    if (edges) throw std::logic_error("ocvec (AVX2): no padding edges on stride-2 copies");
    return t.s2[(q - 1) * kMaxRows + r - 1];
  }
  if (stride != 1) throw std::logic_error("ocvec (AVX2): pixel stride must be 1, 2, 8, 16 or 32");
  return t.s1[edges][(q - 1) * kMaxRows + r - 1];
}
}  // namespace

Ocvec2Fn ocvec2KernelFor(int64_t stride, int64_t q, int64_t r, int edges, int halves) {
  const int P = halves == 3 ? kAvx2TriplePixels : halves == 2 ? kAvx2RowPixels : kAvx2Pixels;
  const int rows = halves == 3 ? avx2TripleRows((int)q) : halves == 2 ? avx2Rows7((int)q) : avx2Rows((int)q);
  if (halves < 1 || halves > 3 || q < 1 || q > P || r < 1 || r > rows || edges < 0 || edges > 3)
    throw std::logic_error("ocvec (AVX2): register block out of range");
  return halves == 3 ? pickOcvec2(kOcvec2Triple, stride, q, r, edges)
         : halves == 1 ? pickOcvec2(kOcvec2Half, stride, q, r, edges)
                       : pickOcvec2(kOcvec2, stride, q, r, edges);
}

__attribute__((target("avx2,fma"))) void postBlock8(float* y, const float* res, int64_t r, int64_t q, int64_t rowStep,
                                                     const float* a, const float* b, bool clamp, float lo, float hi,
                                                     float* sums) {
  const __m256 av = _mm256_loadu_ps(a), bv = _mm256_loadu_ps(b), lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t rr = 0; rr < r; rr++) {
    float* yr = y + rr * rowStep * 8;
    const float* rs = res ? res + rr * rowStep * 8 : nullptr;
    for (int64_t p = 0; p < q; p++) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(yr + p * 8), av, bv);
      if (rs) v = _mm256_add_ps(v, _mm256_loadu_ps(rs + p * 8));
      if (clamp) v = _mm256_min_ps(hiv, _mm256_max_ps(v, lov));  // max(NaN, lo) = lo, as the separate ops
      _mm256_storeu_ps(yr + p * 8, v);
      if (sums) sum = _mm256_add_ps(sum, v);
    }
  }
  if (sums) _mm256_storeu_ps(sums, sum);
}

__attribute__((target("avx2,fma"))) void postPlanes2(float* y, const float* res, int64_t planes, int64_t planeStride,
                                                      int64_t r, int64_t q, int64_t rowStep, const float* a,
                                                      const float* b, bool clamp, float lo, float hi, float* sums) {
  const __m256 lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);
  for (int64_t c = 0; c < planes; c++) {
    const __m256 av = _mm256_set1_ps(a[c]), bv = _mm256_set1_ps(b[c]);
    __m256 sum = _mm256_setzero_ps();
    float tail = 0.f;
    for (int64_t rr = 0; rr < r; rr++) {
      float* yr = y + c * planeStride + rr * rowStep;
      const float* rs = res ? res + c * planeStride + rr * rowStep : nullptr;
      int64_t p = 0;
      for (; p + 8 <= q; p += 8) {
        __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(yr + p), av, bv);
        if (rs) v = _mm256_add_ps(v, _mm256_loadu_ps(rs + p));
        if (clamp) v = _mm256_min_ps(hiv, _mm256_max_ps(v, lov));
        _mm256_storeu_ps(yr + p, v);
        sum = _mm256_add_ps(sum, v);
      }
      for (; p < q; p++) {
        float v = yr[p] * a[c] + b[c];
        if (rs) v += rs[p];
        if (clamp) v = std::min(hi, std::max(lo, v));  // (NaN -> lo)
        yr[p] = v;
        tail += v;
      }
    }
    if (sums) {
      alignas(32) float s8[8];
      _mm256_store_ps(s8, sum);
      sums[c] = ((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7])) + tail;
    }
  }
}
#else
bool cpuHasAvx2Fma() { return false; }
#endif

}  // namespace gather
}  // namespace msgc
