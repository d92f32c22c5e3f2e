// msgc_gather_kernels.cc: the gathered MSGC convolution's AVX-512 micro-kernels (ocvec: 16 output channels in a
// register × pixels; pixvec: 16 pixels in a register × output channels) and their dispatch tables.
// See msgc_gather.cc for the design.
#include <stdexcept>

#include "msgc_gather.h"
#include "msgc_gather_tables.h"

namespace msgc {
namespace gather {
// ---- AVX-512 micro-kernels ---------------------------------------------------------------------------------
#if MSGC_GATHER_AVX512
namespace {
thread_local int tInputPrefetch = 0;  // setInputPrefetch()
thread_local int tWeightPrefetch = 0;  // setWeightPrefetch()

// acc[b][r][q] += wv[b] * x[r*irs + q*S] for b < NB, r < R, LO <= q < HI (one tap; one broadcast serves NB FMAs)
template <int NB, int Q, int R, int S, int LO, int HI>
__attribute__((target("avx512f"), always_inline)) inline void fmaTapNB(__m512 (&acc)[NB][R][Q], const __m512 (&wv)[NB],
                                                                       const float* x, int64_t irs) {
#pragma GCC unroll 4
  for (int r = 0; r < R; r++, x += irs)
#pragma GCC unroll 32
    for (int q = LO; q < HI; q++) {
      const __m512 xb = _mm512_set1_ps(x[q * S]);
#pragma GCC unroll 4
      for (int b = 0; b < NB; b++) acc[b][r][q] = _mm512_fmadd_ps(wv[b], xb, acc[b][r][q]);
    }
}

// One kernel row of a 3-wide stride-1 conv for one block of 16 outputs × Q pixels: acc[q] += Σ_kw w[kw] · x[(q + kw)·S],
// each input pixel broadcast once for the (up to) three outputs it feeds, where one tap at a time broadcasts it
// three times. E as in ocvecBody: bit 0 skips kw = 0 at q = 0 (left padding), bit 1 kw = 2 at q = Q - 1 (right).
// Heads of 16 outputs on 3×3 stride-1 convs (one block, one row: ResNet-18/50's 64-channel layers, ResNet-20's
// 64-channel stage); wider heads take two blocks per broadcast instead (NB = 2). ResNet-18's 64→64 at 56², 4 heads,
// density 0.5, 2 threads, Zen 5, alternating runs: batch 32 12.5 -> 11.3 ms, batch 1 0.38 -> 0.34 ms; the models
// at batch 1: ResNet-18 9.5 -> 9.15 ms, ResNet-50 23.5 -> 22.6 ms.
template <int Q, int S, int E>
__attribute__((target("avx512f"), always_inline)) inline void fmaRow3(__m512 (&acc)[Q], const __m512 w0, const __m512 w1,
                                                                      const __m512 w2, const float* x) {
#pragma GCC unroll 32
  for (int u = (E & 1); u < Q + 2 - (E >> 1); u++) {
    const __m512 xb = _mm512_set1_ps(x[u * S]);
    if (u < Q) acc[u] = _mm512_fmadd_ps(w0, xb, acc[u]);
    if (u >= 1 && u - 1 < Q) acc[u - 1] = _mm512_fmadd_ps(w1, xb, acc[u - 1]);
    if (u >= 2) acc[u - 2] = _mm512_fmadd_ps(w2, xb, acc[u - 2]);
  }
}

template <int NB>
__attribute__((target("avx512f"), always_inline)) inline void loadBlocks(__m512 (&wv)[NB], const float* w, int64_t wbs) {
#pragma GCC unroll 4
  for (int b = 0; b < NB; b++) wv[b] = _mm512_loadu_ps(w + b * wbs);
}

// NB blocks of 16 output channels × R rows × Q pixels: for b < NB, r < R, q < Q
//   out[b*obs + (r*ors + q)*16 + l] = sum_j sum_t (wch[j] + wshift + b*wbs)[t*16 + l] * chan[j][pos + tapOffset[t] + r*irs + q*S]
// (nChw16c order). Per (channel, tap) NB weight vector loads and R·Q broadcasts for NB·R·Q FMAs: with NB = 2 one
// broadcast feeds two FMAs (wide heads, O/G = 32..128, are bound by loads with one). E (edges, for a 3-wide
// stride-1 kernel with one column of padding): bit 0, the block starts a row, so its first column skips the
// tap over the left padding; bit 1, it ends a row, so its last column skips the tap over the right padding
// (as a direct convolution does; 2/OW of the work).
template <int NB, int Q, int R, int S, int E>
__attribute__((target("avx512f"), always_inline)) inline void ocvecBody(const float* const* chan, const float* const* wch, int64_t nch,
                                                      const int64_t* tapOffset, int64_t T, int64_t wshift, int64_t pos,
                                                      int64_t irs, float* out, int64_t ors, int64_t wbs, int64_t obs) {
  __m512 acc[NB][R][Q];
#pragma GCC unroll 4
  for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 32
      for (int q = 0; q < Q; q++) acc[b][r][q] = _mm512_setzero_ps();
  // prefetch the weights a few channels ahead: they come in scattered runs of T·64 bytes (cold in a network);
  // not for 1×1 convs, where a head's weights (one vector per channel and block) stay in L2 and the NB prefetches
  // per channel crowded the load ports (MobileNetV2's 960->160 projection at batch 32: 8% faster without)
  const int64_t ahead = T >= 4 ? 4 : T > 1 ? 16 : nch;
  const int64_t inAhead = S == 16 && R == 1 ? tInputPrefetch : 0;
  bool oneTapDone = false;
  if constexpr (E == 0) {
    if (T == 1) {
      // one tap (1×1 convs): no loop over taps inside the loop over channels. With that loop (whose trip count GCC
      // cannot know) the accumulators of NB = 5 blocks (25 of them, 31 zmm registers in use) were kept in
      // registers only with a dozen flag stores and mask-register moves per channel, which tracked whether the
      // tap loop had run (MobileNetV2's 960->320 projection, heads of 80 outputs).
      const int64_t off = tapOffset[0];
      const int64_t wAhead = tWeightPrefetch;
      for (int64_t j = 0; j < nch; j++) {
        if (wAhead && j + wAhead < nch)
          for (int b = 0; b < NB; b++) _mm_prefetch((const char*)(wch[j + wAhead] + wshift + b * wbs), _MM_HINT_T0);
        if (inAhead && j + inAhead < nch) {
          const float* nx = chan[j + inAhead] + pos;
          const float* pv = chan[j + inAhead - 1] + pos;
          if (nx - pv >= 16 || nx < pv)
            for (int q = 0; q < Q; q++) _mm_prefetch((const char*)(nx + q * 16), _MM_HINT_T0);
        }
        // (an opaque pointer: otherwise GCC kept pos + off + q·S, for every q, in registers and stack slots as
        // indices, instead of the constant displacements of one base register)
        const float* xb = chan[j] + pos + off;
        asm("" : "+r"(xb));
        __m512 wv[NB];
        loadBlocks<NB>(wv, wch[j] + wshift, wbs);
        fmaTapNB<NB, Q, R, S, 0, Q>(acc, wv, xb, irs);
      }
      oneTapDone = true;
    }
  }
  for (int64_t j = 0; j < nch && !oneTapDone; j++) {
    const float* base = chan[j] + pos;
    const float* w = wch[j] + wshift;
    // nChw16c read in place (1×1): the pixels of the channel inAhead positions on, when it starts another block
    if (inAhead && j + inAhead < nch) {
      const float* nx = chan[j + inAhead] + pos;
      const float* pv = chan[j + inAhead - 1] + pos;
      if (nx - pv >= 16 || nx < pv)
        for (int q = 0; q < Q; q++) _mm_prefetch((const char*)(nx + q * 16), _MM_HINT_T0);
    }
    if (j + ahead < nch)
      for (int b = 0; b < NB; b++)
        for (int64_t t = 0; t < T; t++) _mm_prefetch((const char*)(wch[j + ahead] + wshift + b * wbs + 16 * t), _MM_HINT_T0);
    __m512 wv[NB];
    if constexpr (E != 0 && NB == 1 && R == 1 && S != 32) {
      // (E with pixels 1 or 16 apart: a 3-wide stride-1 kernel, taps kh-major, a kernel row's three taps S apart;
      // S = 32 is nChw16c read in place at stride 2, where the taps are 16 apart)
      for (int64_t t = 0; t < T; t += 3)
        fmaRow3<Q, S, E>(acc[0][0], _mm512_loadu_ps(w + 16 * t), _mm512_loadu_ps(w + 16 * t + 16),
                         _mm512_loadu_ps(w + 16 * t + 32), base + tapOffset[t]);
    } else if (E) {
      for (int64_t t = 0; t < T; t += 3) {
        loadBlocks<NB>(wv, w + 16 * t, wbs);
        fmaTapNB<NB, Q, R, S, (E & 1), Q>(acc, wv, base + tapOffset[t], irs);
        loadBlocks<NB>(wv, w + 16 * t + 16, wbs);
        fmaTapNB<NB, Q, R, S, 0, Q>(acc, wv, base + tapOffset[t + 1], irs);
        loadBlocks<NB>(wv, w + 16 * t + 32, wbs);
        fmaTapNB<NB, Q, R, S, 0, Q - (E >> 1)>(acc, wv, base + tapOffset[t + 2], irs);
      }
    } else {
      for (int64_t t = 0; t < T; t++) {
        loadBlocks<NB>(wv, w + 16 * t, wbs);
        fmaTapNB<NB, Q, R, S, 0, Q>(acc, wv, base + tapOffset[t], irs);
      }
    }
  }
#pragma GCC unroll 4
  for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 32
      for (int q = 0; q < Q; q++) _mm512_storeu_ps(out + b * obs + (r * ors + q) * 16, acc[b][r][q]);
}

// one block (the tables' OcvecFn) and NB blocks (OcvecNBFn)
template <int Q, int R, int S, int E>
__attribute__((target("avx512f"))) void ocvecKernel(const float* const* chan, const float* const* wch, int64_t nch,
                                                    const int64_t* tapOffset, int64_t T, int64_t wshift, int64_t pos,
                                                    int64_t irs, float* out, int64_t ors) {
  ocvecBody<1, Q, R, S, E>(chan, wch, nch, tapOffset, T, wshift, pos, irs, out, ors, 0, 0);
}
template <int NB, int Q, int R, int S, int E>
__attribute__((target("avx512f"))) void ocvecKernelNB(const float* const* chan, const float* const* wch, int64_t nch,
                                                      const int64_t* tapOffset, int64_t T, int64_t wshift, int64_t pos,
                                                      int64_t irs, float* out, int64_t ors, int64_t wbs, int64_t obs) {
  ocvecBody<NB, Q, R, S, E>(chan, wch, nch, tapOffset, T, wshift, pos, irs, out, ors, wbs, obs);
}

// the tables (msgc_gather_tables.h): copied rows, pixels 1 apart (every edge variant) or 2 apart; one output row of
// nChw16c read in place, pixels 16 apart (1×1 and 3×3 stride-1 convs) or 32 (3×3 stride 2)
template <int Q, int R, int S, int E>
struct OcvecK {
  static constexpr OcvecFn fn = &ocvecKernel<Q, R, S, E>;
};
constexpr int ocvecRows1(int Q) { return ocvecRows(Q); }
const auto kOcvec1 = pixelRowTables<OcvecFn, OcvecK, kMaxPixels, ocvecRows1, 1>();
const auto kOcvec2 = pixelRowTable<OcvecFn, OcvecK, ocvecRows1, 2, 0>(std::make_index_sequence<kMaxPixels * kMaxRows>{});
const auto kOcvecRow16 = oneRowTables<OcvecFn, OcvecK, kMaxPixels, 16>();
const auto kOcvecRow32 = oneRowTables<OcvecFn, OcvecK, kMaxPixels, 32>();

// tables per NB: index (Q - 1) * kMaxRows + R - 1 for Q <= ocvecPixels(NB), R <= ocvecRows(Q, NB) (other entries
// repeat a valid kernel and are never used)
template <int NB, int S, int E, size_t... I>
constexpr std::array<OcvecNBFn, sizeof...(I)> ocvecNBTable(std::index_sequence<I...>) {
  return {&ocvecKernelNB<NB, std::min((int)(I / kMaxRows) + 1, ocvecPixels(NB)),
                         ((int)(I % kMaxRows) + 1 <= ocvecRows(std::min((int)(I / kMaxRows) + 1, ocvecPixels(NB)), NB)
                              ? (int)(I % kMaxRows) + 1 : 1),
                         S, E>...};
}
template <int NB>
struct OcvecNBTables {
  static constexpr int kQ = ocvecPixels(NB);
  using Table = std::array<OcvecNBFn, kQ * kMaxRows>;
  static constexpr auto kIndex = std::make_index_sequence<kQ * kMaxRows>{};
  const std::array<Table, 4> s1 = {ocvecNBTable<NB, 1, 0>(kIndex), ocvecNBTable<NB, 1, 1>(kIndex),
                                   ocvecNBTable<NB, 1, 2>(kIndex), ocvecNBTable<NB, 1, 3>(kIndex)};
  const Table s2 = ocvecNBTable<NB, 2, 0>(kIndex);
  const Table s16 = ocvecNBTable<NB, 16, 0>(kIndex);
  OcvecNBFn get(int64_t stride, int64_t q, int64_t r, int edges) const {
    const Table& t = stride == 16 ? s16 : stride == 2 ? s2 : s1[edges];
    return t[(q - 1) * kMaxRows + r - 1];
  }
};
const OcvecNBTables<2> kOcvecNB2;
const OcvecNBTables<4> kOcvecNB4;
// two output blocks over one row of nChw16c read in place (as kOcvecRow16/32): table[E][Q - 1]
template <int Q, int R, int S, int E>
struct OcvecNB2K {
  static constexpr OcvecNBFn fn = &ocvecKernelNB<2, Q, R, S, E>;
};
const auto kOcvecNB2Row16 = oneRowTables<OcvecNBFn, OcvecNB2K, ocvecPixels(2), 16>();
const auto kOcvecNB2Row32 = oneRowTables<OcvecNBFn, OcvecNB2K, ocvecPixels(2), 32>();
// odd block counts, for pointwise convs only (MobileNetV2's projections: heads of 40 and 80 outputs)
template <int NB>
struct OcvecNBPointwise {
  static constexpr int kQ = ocvecPixels(NB);
  using Table = std::array<OcvecNBFn, kQ * kMaxRows>;
  static constexpr auto kIndex = std::make_index_sequence<kQ * kMaxRows>{};
  const Table s1 = ocvecNBTable<NB, 1, 0>(kIndex);
  const Table s16 = ocvecNBTable<NB, 16, 0>(kIndex);
  OcvecNBFn get(int64_t stride, int64_t q, int64_t r) const { return (stride == 16 ? s16 : s1)[(q - 1) * kMaxRows + r - 1]; }
};
const OcvecNBPointwise<3> kOcvecNB3;
const OcvecNBPointwise<5> kOcvecNB5;

}  // namespace

void setInputPrefetch(int channelsAhead) { tInputPrefetch = channelsAhead; }
void setWeightPrefetch(int channelsAhead) { tWeightPrefetch = channelsAhead; }

OcvecFn ocvecKernelFor(int64_t stride, int64_t q, int64_t r, int edges) {
  if (stride == 16 || stride == 32) {
    if (r != 1) throw std::logic_error("ocvec: nChw16c read in place one row at a time");
    return (stride == 32 ? kOcvecRow32 : kOcvecRow16)[edges][q - 1];
  }
  return (stride == 2 ? kOcvec2 : kOcvec1[edges])[(q - 1) * kMaxRows + r - 1];
}

OcvecNBFn ocvecNBKernelFor(int nb, int64_t stride, int64_t q, int64_t r, int edges) {
  if (nb == 3 || nb == 5) {
    if ((stride != 1 && stride != 16) || edges) throw std::logic_error("ocvec: 3 or 5 output blocks only for pointwise rows");
    return nb == 3 ? kOcvecNB3.get(stride, q, r) : kOcvecNB5.get(stride, q, r);
  }
  if ((stride == 16 && edges) || stride == 32) {
    if (nb != 2 || r != 1) throw std::logic_error("ocvec: nChw16c in place with row ends or stride 2 only for 2 blocks, one row at a time");
    return (stride == 32 ? kOcvecNB2Row32 : kOcvecNB2Row16)[edges][q - 1];
  }
  return nb == 4 ? kOcvecNB4.get(stride, q, r, edges) : kOcvecNB2.get(stride, q, r, edges);
}

namespace {

// y[m*ldy + ypos + p] = sum_j sum_t (wch[j] + wshift)[t*ldw + m] * chan[j][pos + tapOffset[t] + p] for m < MR:
// MR output channels × NR vectors of 16 pixels. The vectors cover rows of npx <= 16·vr pixels, vr vectors per row
// (vector v: row v / vr, pixels 16·(v % vr) on), rows rowIn apart in the input and rowOut apart in y; so rows
// narrower than 16·NR share a register block (ResNet-20's 32- and 16-pixel rows: 3 rows per block)
template <int MR, int NR>
__attribute__((target("avx512f"))) void pixvecKernel(const float* const* chan, const float* const* wch, int64_t nch,
                                                     const int64_t* tapOffset, int64_t T, int64_t ldw, int64_t wshift,
                                                     int64_t pos, int64_t npx, float* y, int64_t ldy, int64_t ypos,
                                                     int64_t rowIn, int64_t rowOut, int64_t vr) {
  __mmask16 mk[NR];
  int64_t inOff[NR], outOff[NR];
#pragma GCC unroll 8
  for (int v = 0; v < NR; v++) {
    const int64_t row = v / vr, col = 16 * (v % vr), rem = npx - col;
    mk[v] = rem >= 16 ? (__mmask16)0xFFFF : rem > 0 ? (__mmask16)((1u << rem) - 1) : (__mmask16)0;
    inOff[v] = row * rowIn + col;
    outOff[v] = row * rowOut + col;
  }
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; m++)
#pragma GCC unroll 8
    for (int v = 0; v < NR; v++) acc[m][v] = _mm512_setzero_ps();
  // (no weight prefetch, unlike ocvec: a narrow head's weights are few and stay in cache; prefetching them cost
  // 4-10% on ResNet-20's and MobileNetV2's narrow heads)
  for (int64_t j = 0; j < nch; j++) {
    const float* base = chan[j] + pos;
    const float* w = wch[j] + wshift;
    for (int64_t t = 0; t < T; t++, w += ldw) {
      const float* r = base + tapOffset[t];
      __m512 xv[NR];
#pragma GCC unroll 8
      for (int v = 0; v < NR; v++) xv[v] = _mm512_maskz_loadu_ps(mk[v], r + inOff[v]);
#pragma GCC unroll 8
      for (int m = 0; m < MR; m++) {
        const __m512 wb = _mm512_set1_ps(w[m]);
#pragma GCC unroll 8
        for (int v = 0; v < NR; v++) acc[m][v] = _mm512_fmadd_ps(wb, xv[v], acc[m][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; m++)
#pragma GCC unroll 8
    for (int v = 0; v < NR; v++) _mm512_mask_storeu_ps(y + m * ldy + ypos + outOff[v], mk[v], acc[m][v]);
}

// table[(MR - 1) * kMaxNR + NR - 1] for NR <= pixvecMaxNR(MR) (others repeat NR = 1, never used)
template <size_t... I>
constexpr std::array<PixvecFn, sizeof...(I)> pixvecTable(std::index_sequence<I...>) {
  return {&pixvecKernel<(int)(I / kMaxNR) + 1,
                        ((int)(I % kMaxNR) + 1 <= pixvecMaxNR((int)(I / kMaxNR) + 1) ? (int)(I % kMaxNR) + 1 : 1)>...};
}
const std::array<PixvecFn, kMaxMR * kMaxNR> kPixvec = pixvecTable(std::make_index_sequence<kMaxMR * kMaxNR>{});

}  // namespace

PixvecFn pixvecKernelFor(int mr, int nr) { return kPixvec[(mr - 1) * kMaxNR + nr - 1]; }

__attribute__((target("avx512f"))) void postBlock16(float* y, const float* res, int64_t r, int64_t q, int64_t rowStep,
                                                    const float* a, const float* b, bool clamp, float lo, float hi,
                                                    float* sums) {
  const __m512 av = _mm512_loadu_ps(a), bv = _mm512_loadu_ps(b), lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(hi);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t rr = 0; rr < r; rr++) {
    float* yr = y + rr * rowStep * 16;
    const float* rs = res ? res + rr * rowStep * 16 : nullptr;
    for (int64_t p = 0; p < q; p++) {
      __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(yr + p * 16), av, bv);
      if (rs) v = _mm512_add_ps(v, _mm512_loadu_ps(rs + p * 16));
      if (clamp) v = _mm512_min_ps(hiv, _mm512_max_ps(v, lov));  // max(NaN, lo) = lo, as the separate ops
      _mm512_storeu_ps(yr + p * 16, v);
      if (sums) sum = _mm512_add_ps(sum, v);
    }
  }
  if (sums) _mm512_storeu_ps(sums, sum);
}

__attribute__((target("avx512f"))) void storeShifted16(const float* tile, int64_t valid, int64_t o0, float* y,
                                                       const float* res, int64_t OHW, int64_t pos, int64_t r, int64_t q,
                                                       int64_t rowStep, const float* a, const float* b, bool clamp,
                                                       float lo, float hi, float* sums) {
  // tile lane l -> output o0 + l: block o0 / 16, lane off + l for l < 16 - off, else the next block, lane l - (16 - off)
  const int64_t off = o0 % 16, first = std::min<int64_t>(valid, 16 - off), second = valid - first;
  const __mmask16 m0 = (__mmask16)(((1u << first) - 1) << off), m1 = (__mmask16)((1u << second) - 1);
  float* y0 = y + o0 / 16 * OHW * 16;
  float* y1 = y0 + OHW * 16;
  const float* r0 = res ? res + o0 / 16 * OHW * 16 : nullptr;
  const float* r1 = r0 && second ? r0 + OHW * 16 : nullptr;
  const __mmask16 lanes = (__mmask16)((1u << valid) - 1);
  const __m512 av = a ? _mm512_maskz_loadu_ps(lanes, a) : _mm512_setzero_ps();
  const __m512 bv = a ? _mm512_maskz_loadu_ps(lanes, b) : _mm512_setzero_ps();
  const __m512 lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(hi);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t rr = 0; rr < r; rr++)
    for (int64_t qq = 0; qq < q; qq++) {
      const int64_t p = (pos + rr * rowStep + qq) * 16;
      __m512 v = _mm512_loadu_ps(tile + (rr * q + qq) * 16);
      if (a) {
        v = _mm512_fmadd_ps(v, av, bv);
        if (r0) {
          // the residual's lanes in the tile's order (the upper half of block o0 / 16, the lower half of the next)
          const __m512 lo16 = _mm512_loadu_ps(r0 + p);
          v = _mm512_add_ps(v, off == 0 ? lo16 : _mm512_shuffle_f32x4(lo16, r1 ? _mm512_loadu_ps(r1 + p) : lo16, 0x4E));
        }
        if (clamp) v = _mm512_min_ps(hiv, _mm512_max_ps(v, lov));  // max(NaN, lo) = lo, as the separate ops
        if (sums) sum = _mm512_add_ps(sum, v);
      }
      if (off == 0) {
        _mm512_mask_storeu_ps(y0 + p, m0, v);
      } else {
        const __m512 w = _mm512_shuffle_f32x4(v, v, 0x4E);  // (the 256-bit halves swapped: off is 8)
        _mm512_mask_storeu_ps(y0 + p, m0, w);
        if (second) _mm512_mask_storeu_ps(y1 + p, m1, w);
      }
    }
  if (sums) _mm512_storeu_ps(sums, sum);
}

__attribute__((target("avx512f"))) void postPlanes(float* y, const float* res, int64_t planes, int64_t planeStride,
                                                   int64_t r, int64_t q, int64_t rowStep, const float* a, const float* b,
                                                   bool clamp, float lo, float hi, float* sums) {
  const __m512 lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(hi);
  for (int64_t c = 0; c < planes; c++) {
    const __m512 av = _mm512_set1_ps(a[c]), bv = _mm512_set1_ps(b[c]);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t rr = 0; rr < r; rr++) {
      float* yr = y + c * planeStride + rr * rowStep;
      const float* rs = res ? res + c * planeStride + rr * rowStep : nullptr;
      for (int64_t p = 0; p < q; p += 16) {
        const __mmask16 m = q - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (q - p)) - 1);
        __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, yr + p), av, bv);
        if (rs) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, rs + p));
        if (clamp) v = _mm512_min_ps(hiv, _mm512_max_ps(v, lov));  // max(NaN, lo) = lo, as the separate ops
        _mm512_mask_storeu_ps(yr + p, m, v);
        if (sums) sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, v));
      }
    }
    if (sums) sums[c] = _mm512_reduce_add_ps(sum);
  }
}

#endif

}  // namespace gather
}  // namespace msgc
