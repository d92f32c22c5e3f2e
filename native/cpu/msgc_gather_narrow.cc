// msgc_gather_narrow.cc: the gathered 1×1 MSGC convolution with narrow heads (1 to 8 outputs each: MobileNetV2's
// projections at 28²-112², O/G = 4, 6, 8) on an nChw16c input, each head over its own selected channels.
//
// Where a head's outputs fill a few lanes of a 16-lane vector, the output-vector kernel (ocvec) wastes the rest, and
// running the heads as one head over their union (narrowHeadsUnite) computes the union's multiply-adds: with 4 heads
// at density 0.5, 94% of the dense conv's. The masked path computes all of them. Here the vectors run over pixels:
// per tile of 16·PV pixels (PV = 6, 4, 3 for heads of up to 4, 6, 8 outputs) the tile's input is transposed from
// nChw16c into plain rows in L1 (16×16 register transposes, once per tile for all heads), then each head's OG × PV
// accumulators take, per selected channel, PV row vectors and OG broadcast weights (W[o, c] times the scale, packed
// per sample) for OG·PV FMAs: the heads' own multiply-adds, half the dense conv's at density 0.5. The tile's output
// rows [O][16·PV] go back into nChw16c by the same transposes, with the fused eval BatchNorm, residual and
// activation (Post) and the per-channel sums for the pooled means applied on the way; O not a multiple of 16
// (heads of 6: 24 outputs) writes oneDNN's padded layout, its padding lanes zero.
//
// Threads take contiguous runs of the (sample, tile) items; the pooled means add the tiles' sums in tile order, so
// the results do not depend on the number of threads. In a network x comes from the layer before, partly from the
// other core's cache: each tile prefetches the next tile's input rows as it transposes its own (MobileNetV2 at batch
// 1, in-process A/B, per call: 96->24 at 56² 117 -> 104 µs, 144->24 150 -> 132, 192->32 at 28² 67 -> 63).
//
// Against the masked path (MobileNetV2's projections at batch 1, density 0.5, BN + ReLU6 + pooled means, 2 threads,
// Zen 5; alone, hot): 96->24 at 56² 0.73x, 144->24 0.76x, 144->32 at 28² 0.84x, 192->32 0.78x; inside the network
// about 0.9x (its input comes cold from the depthwise conv); 32->16 at 112² 0.88x alone but 1.5x inside, where the
// transposes outweigh its few multiply-adds. At batch 32 it ties with the masked path's per-sample oneDNN convs
// (0.91-1.02x; 32->16 1.5x) and beats the gathered kernels it replaces (0.6-0.9x). The rule is msgcConv2d's
// (preferGathered).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "msgc_gather.h"

namespace msgc {
namespace gather {

#if MSGC_GATHER_AVX512
namespace {

// pixel vectors per tile for heads of OG outputs: the pixvec kernel's register block (OG·PV <= 24 accumulators)
constexpr int narrowVectors(int OG) { return pixvecMaxNR(OG); }

// One output pixel's 16 lanes with the epilogue, act(a·v + b + residual), stored at yo[i]; returns sum + the result
__attribute__((target("avx512f"), always_inline)) inline __m512 postPixel(__m512 v, __m512 av, __m512 bv, const float* rs,
                                                                         int64_t i, bool clamp, __m512 lov, __m512 hiv,
                                                                         float* yo, __m512 sum) {
  __m512 u = _mm512_fmadd_ps(v, av, bv);
  if (rs) u = _mm512_add_ps(u, _mm512_loadu_ps(rs + i * 16));
  if (clamp) u = _mm512_min_ps(hiv, _mm512_max_ps(u, lov));  // max(NaN, lo) = lo, as postBlock16
  _mm512_storeu_ps(yo + i * 16, u);
  return _mm512_add_ps(sum, u);
}

// One call's operands: the geometry, the selections, the BN's a and b over whole blocks (zero in the padding lanes,
// which then stay zero), the tiles' per-channel sums for the pooled means (the calling thread's vectors, kept from
// call to call: a vector of a few KB allocated per call made glibc consolidate its fast bins, after the many small
// frees of a network's forward pass, 30-40 µs inside MobileNetV2 at batch 1)
struct NarrowCall {
  const Geometry& g;
  const Selection& sel;
  const float* scale;
  const Source& src;
  const float* Wt;
  const Post* post;
  float* y;
  int64_t tiles, Ob;
  std::vector<float>& ab;
  std::vector<float>& partial;
  bool sums;
};

// The items [i0, i1) of (sample, tile) on this thread
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 about the unpack intrinsics' internal temporaries
template <int OG>
__attribute__((target("avx512f"))) void narrowItems(NarrowCall& a, int64_t i0, int64_t i1) {
  constexpr int PV = narrowVectors(OG), TP = 16 * PV;
  const Geometry& g = a.g;
  const Selection& sel = a.sel;
  const Post* post = a.post;
  const int64_t C = g.C, P = g.OHW, G = g.G, O = g.O, Ob = a.Ob, Cb = C / 16, tiles = a.tiles;
  // (the thread's buffers, kept from call to call)
  static thread_local std::vector<float> tBuf, yBuf, wBuf;
  static thread_local std::vector<char> used;
  // per selected channel of each head: its row of the tile and its packed weights, the pixvec kernel's operands
  static thread_local std::vector<const float*> rowOf, weightsOf;
  tBuf.resize((size_t)(C * TP));
  yBuf.resize((size_t)(Ob * 16 * TP));
  float* T = tBuf.data();
  float* Y = yBuf.data();
  // rows of outputs past O (a partial last block) stay zero
  std::fill(Y + O * TP, Y + Ob * 16 * TP, 0.f);
  used.resize((size_t)Cb);
  // head i's first selected channel among sample n's (its operands' index)
  auto firstOf = [&](int64_t n, int64_t i) { return sel.start[(size_t)(n * G + i)] - sel.start[(size_t)(n * G)]; };
  int64_t packed = -1;
  const __m512 lov = _mm512_set1_ps(post ? post->lo : 0.f), hiv = _mm512_set1_ps(post ? post->hi : 0.f);
  for (int64_t it = i0; it < i1; it++) {
    const int64_t n = it / tiles, p0 = it % tiles * TP;
    if (n != packed) {
      // the sample's weights per head, W[o, c] · s[n, i, c] for its selected channels in order, and the blocks of
      // 16 channels that some head reads
      // (the sample's selected channels, head after head, are entries [0, total) from sel.start[n·G] on)
      const int64_t total = sel.start[(size_t)((n + 1) * G)] - sel.start[(size_t)(n * G)];
      wBuf.resize((size_t)std::max<int64_t>(1, total * OG));
      rowOf.resize((size_t)total + 1);
      weightsOf.resize(rowOf.size());
      std::fill(used.begin(), used.end(), 0);
      for (int64_t i = 0; i < G; i++) {
        const int32_t* cs = sel.sel(n, i);
        const float* si = a.scale + (n * G + i) * C;
        const int64_t j0 = firstOf(n, i);
        float* d = wBuf.data() + j0 * OG;
        for (int64_t k = 0, e = sel.count(n, i); k < e; k++) {
          const int64_t c = cs[k];
          used[(size_t)(c >> 4)] = 1;
          const float sv = si[c];
          const float* w = a.Wt + c * O + i * OG;
          for (int o = 0; o < OG; o++) d[k * OG + o] = w[o] * sv;
          rowOf[(size_t)(j0 + k)] = T + c * TP;
          weightsOf[(size_t)(j0 + k)] = d + k * OG;
        }
      }
      packed = n;
    }
    // the tile's input as plain rows: T[c][16·PV] (pixels past P read as zeros)
    const float* xn = a.src.data + n * Cb * P * 16;
    const bool pf = p0 + 2 * TP <= P;
    for (int64_t cb = 0; cb < Cb; cb++) {
      if (!used[(size_t)cb]) continue;
      for (int v = 0; v < PV; v++) {
        const int64_t q0 = p0 + 16 * v, rem = std::max<int64_t>(0, std::min<int64_t>(16, P - q0));
        const float* xs = xn + (cb * P + q0) * 16;
        __m512 r[16], t[16];
        if (rem == 16) {
#pragma GCC unroll 16
          for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(xs + i * 16);
        } else {
          for (int i = 0; i < 16; i++) r[i] = i < rem ? _mm512_loadu_ps(xs + i * 16) : _mm512_setzero_ps();
        }
        transpose16(r, t);
        if (pf) {  // the next tile's 16 pixels of this block (see the file comment)
          const char* nx = (const char*)(xs + TP * 16);
          for (int i = 0; i < 16; i++) _mm_prefetch(nx + i * 64, _MM_HINT_T0);
        }
        float* d = T + cb * 16 * TP + 16 * v;
        for (int l = 0; l < 16; l++) _mm512_storeu_ps(d + l * TP, t[l]);
      }
    }
    // each head: OG outputs × PV vectors of pixels over its channels' rows (the pixvec kernel, one row of TP pixels)
    const PixvecFn kernel = pixvecKernelFor(OG, PV);
    const int64_t tap0 = 0;
    for (int64_t i = 0; i < G; i++) {
      float* Yi = Y + i * OG * TP;
      const int64_t j0 = firstOf(n, i);
      if (sel.count(n, i) == 0)
        std::fill(Yi, Yi + OG * TP, 0.f);
      else
        kernel(rowOf.data() + j0, weightsOf.data() + j0, sel.count(n, i), &tap0, 1, OG, 0, 0, TP, Yi, TP, 0, 0, 0, PV);
    }
    // the output rows into nChw16c, with the epilogue
    for (int64_t ob = 0; ob < Ob; ob++) {
      __m512 av = _mm512_setzero_ps(), bv = av, sum = av;
      if (post) {
        av = _mm512_loadu_ps(a.ab.data() + ob * 16);
        bv = _mm512_loadu_ps(a.ab.data() + (Ob + ob) * 16);
      }
      for (int v = 0; v < PV; v++) {
        const int64_t q0 = p0 + 16 * v, rem = std::min<int64_t>(16, P - q0);
        if (rem <= 0) break;
        __m512 r[16], t[16];
        for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_ps(Y + (ob * 16 + l) * TP + 16 * v);
        transpose16(r, t);
        const int64_t off = ((n * Ob + ob) * P + q0) * 16;
        float* yo = a.y + off;
        if (!post) {
          for (int64_t i = 0; i < rem; i++) _mm512_storeu_ps(yo + i * 16, t[i]);
          continue;
        }
        const float* rs = post->residual ? post->residual + off : nullptr;
        if (rem == 16) {
#pragma GCC unroll 16
          for (int i = 0; i < 16; i++) sum = postPixel(t[i], av, bv, rs, i, post->clamp, lov, hiv, yo, sum);
        } else {
          for (int64_t i = 0; i < rem; i++) sum = postPixel(t[i], av, bv, rs, i, post->clamp, lov, hiv, yo, sum);
        }
      }
      if (a.sums) _mm512_storeu_ps(a.partial.data() + (it * Ob + ob) * 16, sum);
    }
  }
}

#pragma GCC diagnostic pop

template <int OG>
void runNarrowHeads(const Geometry& g, const Selection& sel, const float* scale, const Source& src, const float* Wt,
                    const Post* post, float* pooled, float* y) {
  constexpr int TP = 16 * narrowVectors(OG);
  const int64_t N = g.N, P = g.OHW, O = g.O;
  static thread_local std::vector<float> abStore, partialStore;
  NarrowCall a{g, sel, scale, src, Wt, post, y, (P + TP - 1) / TP, (O + 15) / 16, abStore, partialStore, pooled != nullptr};
  const int64_t items = N * a.tiles;
  if (post) {
    a.ab.assign((size_t)(2 * a.Ob * 16), 0.f);
    std::copy(post->a, post->a + O, a.ab.begin());
    std::copy(post->b, post->b + O, a.ab.begin() + a.Ob * 16);
  }
  if (pooled) a.partial.assign((size_t)(items * a.Ob * 16), 0.f);
  // (one thread for a single tile: a team's start and end cost more than such a call)
  if (items > 1 && omp_get_max_threads() > 1) {
#pragma omp parallel
    {
      const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
      narrowItems<OG>(a, items * t / T, items * (t + 1) / T);
    }
  } else {
    narrowItems<OG>(a, 0, items);
  }
  if (pooled)
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < O; o++) {
        double acc = 0;
        for (int64_t k = 0; k < a.tiles; k++) acc += a.partial[(size_t)(((n * a.tiles + k) * a.Ob) * 16 + o)];
        pooled[n * O + o] = (float)(acc / (double)P);
      }
}

}  // namespace

bool narrowApplies(const Geometry& g, int64_t xBlock) {
  if (gatherIsa() != Isa::Avx512) return false;
  const bool pointwise = g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.PH == 0 && g.PW == 0;
  return pointwise && xBlock == 16 && g.C % 16 == 0 && g.Og >= 1 && g.Og <= 8 && g.Og * g.G == g.O;
}

void runNarrow(const Geometry& g, const Selection& sel, const float* scale, const Source& src, const float* Wt,
               const Post* post, float* pooled, float* y) {
  switch (g.Og) {
    case 1: return runNarrowHeads<1>(g, sel, scale, src, Wt, post, pooled, y);
    case 2: return runNarrowHeads<2>(g, sel, scale, src, Wt, post, pooled, y);
    case 3: return runNarrowHeads<3>(g, sel, scale, src, Wt, post, pooled, y);
    case 4: return runNarrowHeads<4>(g, sel, scale, src, Wt, post, pooled, y);
    case 5: return runNarrowHeads<5>(g, sel, scale, src, Wt, post, pooled, y);
    case 6: return runNarrowHeads<6>(g, sel, scale, src, Wt, post, pooled, y);
    case 7: return runNarrowHeads<7>(g, sel, scale, src, Wt, post, pooled, y);
    default: return runNarrowHeads<8>(g, sel, scale, src, Wt, post, pooled, y);
  }
}
#else
bool narrowApplies(const Geometry&, int64_t) { return false; }
void runNarrow(const Geometry&, const Selection&, const float*, const Source&, const float*, const Post*, float*,
               float*) {}
#endif

}  // namespace gather
}  // namespace msgc
