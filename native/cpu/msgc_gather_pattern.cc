// msgc_gather_pattern.cc: the gathered 1×1 MSGC convolution for batches of whole samples per thread, with each
// input channel's broadcast shared by every head that selected it.
//
// The ocvec kernel runs head by head: per selected channel one weight vector per block of the head's outputs and
// one broadcast per pixel. With heads of 16 outputs (MobileNetV2's 64-output projections in 4 heads) that is a load
// for every FMA, where oneDNN's dense 1×1 kernel feeds 4 FMAs per broadcast; at batch 32 a gathered 384->64
// projection at density 0.5 took 0.93x the dense conv's time for half its multiply-adds.
// Here, per sample and group of up to 4 consecutive output blocks, each channel's "pattern" is the set of the group's
// blocks that some head selecting it owns; the channels are sorted by pattern (a counting sort), and per tile of Q
// pixels each pattern's channels run a loop specialised for it: per channel its K = |pattern| weight vectors (W[o, c]
// times the scale of the head owning o, zero in the lanes of a head that did not select c) and Q broadcasts feed
// K·Q FMAs. At density 0.5 with 4 heads a channel feeds 2 blocks on average. The multiply-adds are the heads' own
// (a block two heads share, heads of 24 or 40, computes both heads' lanes when either selected the channel).
//
// Layouts: x nChw16c, y nChw16c, the weight as [C][O] (weightLayout's CTO copy), the packed weights per sample in a
// thread's buffer. The fused eval BatchNorm (Post) runs per output block over its whole plane after the block's
// tiles, with its per-channel sums for the pooled means.
#include <omp.h>

#include <array>
#include <utility>

#include "msgc_gather.h"

namespace msgc {
namespace gather {

#if MSGC_GATHER_AVX512
namespace {

constexpr int kMaxGroup = 4;  // output blocks per group: 2^4 - 1 patterns
// pixels per tile for B blocks: B·Q <= 24 accumulators, with B weight vectors and one broadcast in registers
constexpr int tilePixels(int B) { return B == 1 ? 24 : B == 2 ? 12 : B == 3 ? 8 : 6; }

// One sample's channels of one output group, sorted by pattern.
struct Buckets {
  std::array<int64_t, 1 << kMaxGroup> start{}, count{};  // into off (channels) and, times K, into w (vectors)
  std::array<int64_t, 1 << kMaxGroup> wstart{};
  std::vector<int64_t> off;  // per channel: its offset in the sample's nChw16c planes at pixel 0
  std::vector<float> w;      // per channel its K weight vectors of 16 lanes
};

// the index of block b among the blocks of pattern pt (its weight vector's)
constexpr int rankOf(int pt, int b) { return __builtin_popcount(pt & ((1 << b) - 1)); }

// acc[b][q] += Σ_j w_j[rank(b)] · x_j[q] over a pattern's channels, for the blocks b in PT
template <int B, int Q, int PT>
__attribute__((target("avx512f"), always_inline)) inline void bucketLoop(__m512 (&acc)[B][Q], const int64_t* off,
                                                                         const float* wp, int64_t count, const float* xt) {
  constexpr int K = __builtin_popcount(PT);
  for (int64_t j = 0; j < count; j++) {
    const float* xc = xt + off[j];
    __m512 w[K];
#pragma GCC unroll 4
    for (int k = 0; k < K; k++) w[k] = _mm512_loadu_ps(wp + (j * K + k) * 16);
#pragma GCC unroll 24
    for (int q = 0; q < Q; q++) {
      const __m512 xb = _mm512_set1_ps(xc[q * 16]);
#pragma GCC unroll 4
      for (int b = 0; b < B; b++)  // (unrolled: PT's bits and ranks are constants)
        if (PT >> b & 1) acc[b][q] = _mm512_fmadd_ps(w[rankOf(PT, b)], xb, acc[b][q]);
    }
  }
}

template <int B, int Q, int PT>
__attribute__((target("avx512f"), always_inline)) inline void dispatch(int pt, __m512 (&acc)[B][Q], const Buckets& bk,
                                                                       const float* xt) {
  if constexpr (PT < (1 << B)) {
    if (pt == PT) {
      bucketLoop<B, Q, PT>(acc, bk.off.data() + bk.start[PT], bk.w.data() + bk.wstart[PT], bk.count[PT], xt);
      return;
    }
    dispatch<B, Q, PT + 1>(pt, acc, bk, xt);
  }
}

// One tile: Q pixels from xt (the sample's x at the tile's first pixel) into the group's B blocks at yt (block b's
// plane P·16 floats apart)
template <int B, int Q>
__attribute__((target("avx512f"))) void tile(const Buckets& bk, const float* xt, float* yt, int64_t P) {
  __m512 acc[B][Q];
#pragma GCC unroll 4
  for (int b = 0; b < B; b++)
#pragma GCC unroll 24
    for (int q = 0; q < Q; q++) acc[b][q] = _mm512_setzero_ps();
  for (int pt = 1; pt < (1 << B); pt++)
    if (bk.count[pt]) dispatch<B, Q, 1>(pt, acc, bk, xt);
#pragma GCC unroll 4
  for (int b = 0; b < B; b++)
#pragma GCC unroll 24
    for (int q = 0; q < Q; q++) _mm512_storeu_ps(yt + b * P * 16 + q * 16, acc[b][q]);
}

using TileFn = void (*)(const Buckets&, const float*, float*, int64_t);
template <int B, size_t... I>
constexpr std::array<TileFn, tilePixels(1)> tileRow(std::index_sequence<I...>) {
  return {tile<B, std::min((int)I + 1, tilePixels(B))>...};
}
// [B - 1][Q - 1] (Q <= tilePixels(B))
const std::array<TileFn, tilePixels(1)> tileTable[kMaxGroup] = {
    tileRow<1>(std::make_index_sequence<tilePixels(1)>{}), tileRow<2>(std::make_index_sequence<tilePixels(1)>{}),
    tileRow<3>(std::make_index_sequence<tilePixels(1)>{}), tileRow<4>(std::make_index_sequence<tilePixels(1)>{})};

// Sorts sample n's channels by their pattern over blocks [blk0, blk0 + B) and packs their scaled weight vectors:
// the patterns 16 channels at a time from the scales' comparisons with zero, a counting sort of the channels, then per
// pattern its channels' vectors (per pattern the same blocks, so that the packing's branches are predictable: per
// channel they mispredicted half the time, and the packing took as long as the tiles on 7² maps).
__attribute__((target("avx512f"))) void fillBuckets(const Geometry& g, const float* sn, const float* Wt, int64_t blk0,
                                                    int B, Buckets& bk, std::vector<int32_t>& pat,
                                                    std::vector<int32_t>& order) {
  const int64_t C = g.C, P = g.OHW;
  pat.resize((size_t)C);
  order.resize((size_t)C);
  // the heads owning each block's first and last lane (heads of at least 16 outputs: at most two per block)
  int64_t hFirst[kMaxGroup], hLast[kMaxGroup];
  for (int b = 0; b < B; b++) {
    hFirst[b] = (blk0 + b) * 16 / g.Og;
    hLast[b] = ((blk0 + b) * 16 + 15) / g.Og;
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; c += 16) {  // (C is a multiple of 16)
    __m512i pv = _mm512_setzero_si512();
    for (int b = 0; b < B; b++) {
      __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(sn + hFirst[b] * C + c), zero, _CMP_NEQ_UQ);
      if (hLast[b] != hFirst[b]) m |= _mm512_cmp_ps_mask(_mm512_loadu_ps(sn + hLast[b] * C + c), zero, _CMP_NEQ_UQ);
      pv = _mm512_mask_or_epi32(pv, m, pv, _mm512_set1_epi32(1 << b));
    }
    _mm512_storeu_si512(pat.data() + c, pv);
  }
  std::array<int64_t, 1 << kMaxGroup> cnt{}, pos{};
  for (int64_t c = 0; c < C; c++) cnt[(size_t)pat[(size_t)c]]++;
  int64_t at = 0, wat = 0;
  for (int p = 0; p < (1 << B); p++) {
    pos[(size_t)p] = at;
    bk.start[(size_t)p] = at;
    bk.count[(size_t)p] = cnt[(size_t)p];
    bk.wstart[(size_t)p] = wat;
    at += cnt[(size_t)p];
    wat += p ? cnt[(size_t)p] * __builtin_popcount(p) * 16 : 0;
  }
  for (int64_t c = 0; c < C; c++) order[(size_t)pos[(size_t)pat[(size_t)c]]++] = (int32_t)c;
  if ((int64_t)bk.off.size() < C) bk.off.resize((size_t)C);
  if ((int64_t)bk.w.size() < wat) bk.w.resize((size_t)wat);
  for (int p = 1; p < (1 << B); p++) {
    int blocks[kMaxGroup], K = 0;
    for (int b = 0; b < B; b++)
      if (p >> b & 1) blocks[K++] = b;
    float* d = bk.w.data() + bk.wstart[(size_t)p];
    for (int64_t j = bk.start[(size_t)p], e = j + bk.count[(size_t)p]; j < e; j++) {
      const int64_t c = order[(size_t)j];
      bk.off[(size_t)j] = (c >> 4) * P * 16 + (c & 15);
      for (int k = 0; k < K; k++) {
        const int b = blocks[k];
        const int64_t o0 = (blk0 + b) * 16;
        __m512 sv = _mm512_set1_ps(sn[hFirst[b] * C + c]);
        if (hLast[b] != hFirst[b])  // lanes from the second head's first output on take its scale
          sv = _mm512_mask_mov_ps(sv, (__mmask16)(0xFFFFu << (hLast[b] * g.Og - o0)), _mm512_set1_ps(sn[hLast[b] * C + c]));
        _mm512_storeu_ps(d, _mm512_mul_ps(_mm512_loadu_ps(Wt + c * g.O + o0), sv));
        d += 16;
      }
    }
  }
}

}  // namespace

bool patternApplies(const Geometry& g, int64_t xBlock, bool forced) {
  if (gatherIsa() != Isa::Avx512) return false;
  const bool pointwise = g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.PH == 0 && g.PW == 0;
  if (!pointwise || xBlock != 16 || g.C % 16 != 0 || g.O % 16 != 0 || g.G < 2 || g.Og < 16) return false;
  // By itself only for heads of 16 outputs, where ocvec feeds one FMA per broadcast: batch 32, density 0.5, 2 threads,
  // Zen 5, against ocvec: 384->64 at 14² 0.74-0.89 -> 0.55-0.64 ms (oneDNN's dense conv 0.82-0.86), 192->64 0.42-0.47
  // -> 0.29-0.37. Heads of 24 and 40, whose blocks two heads share, ran as fast as ocvec (576->96 at 14²) or slower
  // (960->160 at 7²: 1.14 -> 1.28 ms), heads of 80 slower (960->320: 1.91 -> 2.31; ocvec feeds 5 FMAs per broadcast
  // there), heads of 8 at 28² slower than the masked conv (192->32: 1.04 against 0.88 ms). In MobileNetV2's training
  // step at batch 32 its gathered forward convs took 15.4 -> 14.9 ms, its inference forward 90.3 -> 89.6 ms.
  return forced || (g.Og == 16 && g.N >= 4 * omp_get_max_threads());
}

void runPattern(const Geometry& g, const float* scale, const Source& src, const float* Wt, const Post* post,
                float* pooled, float* y) {
  const int64_t N = g.N, C = g.C, P = g.OHW, Ob = g.O / 16;
  // groups of consecutive output blocks, as equal as they come, at most kMaxGroup each
  const int64_t groups = (Ob + kMaxGroup - 1) / kMaxGroup;
  auto sample = [&](int64_t n) {
    static thread_local Buckets bk;
    static thread_local std::vector<int32_t> pat, order;
    const float* sn = scale + n * g.G * C;
    const float* xn = src.data + n * C * P;
    for (int64_t gi = 0; gi < groups; gi++) {
      const int64_t blk0 = gi * Ob / groups, blk1 = (gi + 1) * Ob / groups;
      const int B = (int)(blk1 - blk0), Qm = tilePixels(B);
      fillBuckets(g, sn, Wt, blk0, B, bk, pat, order);
      float* yg = y + (n * Ob + blk0) * P * 16;
      // near-equal tiles of at most Qm pixels (49 = 4·6 + 5·5, not 8·6 + 1: a tile of one pixel walks every channel
      // for one FMA per broadcast)
      const int64_t tiles = (P + Qm - 1) / Qm;
      for (int64_t t = 0; t < tiles; t++) {
        const int64_t p0 = t * P / tiles, Q = (t + 1) * P / tiles - p0;
        tileTable[B - 1][(size_t)(Q - 1)](bk, xn + p0 * 16, yg + p0 * 16, P);
      }
      if (!post) continue;
      alignas(64) float sums[16];
      for (int64_t blk = blk0; blk < blk1; blk++) {
        const int64_t off = (n * Ob + blk) * P * 16;
        postBlock16(y + off, post->residual ? post->residual + off : nullptr, 1, P, P, post->a + blk * 16,
                    post->b + blk * 16, post->clamp, post->lo, post->hi, pooled ? sums : nullptr);
        if (pooled)
          for (int l = 0; l < 16; l++) pooled[n * g.O + blk * 16 + l] = (float)((double)sums[l] / (double)P);
      }
    }
  };
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t n = 0; n < N; n++) sample(n);
}
#else
bool patternApplies(const Geometry&, int64_t, bool) { return false; }
void runPattern(const Geometry&, const float*, const Source&, const float*, const Post*, float*, float*) {}
#endif

}  // namespace gather
}  // namespace msgc
