// msgc_pointwise_bwd.cc: the backward of a 1×1 (stride 1, no padding) MSGC convolution with AVX-512 kernels of our
// own, for batches of 2 and more: the weight gradient only over the channels each head selected, and no
// per-sample weight gradient.
//
// With P pixels, head i owning outputs [i·Og, (i+1)·Og) and scale s[n, i, c]:
//   U_i[n, c, p]  = Σ_{o in head i} W[o, c] · gy[n, o, p]      (the gradient w.r.t. head i's scaled input)
//   gx[n, c, p]   = Σ_i s[n, i, c] · U_i[n, c, p]
//   gs[n, i, c]   = Σ_p x[n, c, p] · U_i[n, c, p]
//   gW[o, c]      = Σ_n s[n, i(o), c] · Σ_p gy[n, o, p] · x[n, c, p]     (only where s ≠ 0)
// U costs one dense data gradient (the gate gradient needs it for every channel); gW costs the heads' density
// times a dense weight gradient. The per-sample path (msgc_persample.cc) computes a full weight gradient per
// sample instead (O·C floats a sample, 1.2 MB for MobileNetV2's 960→320 projection), folded into per-thread sums:
// on 7² maps that traffic cost it 1.5x the dense backward.
//
// Layouts: x, gx and gy in nChw16c (C and O multiples of 16), W plain [O, C], s plain [N, G, C].
// Part 1 (gx, gs): per sample (threads take samples), per group of up to 4 blocks of 16 input channels, per head:
// tiles of 16 channels × 4 blocks × up to 6 pixels accumulate U over the head's outputs (4 weight vectors and 6
// broadcasts of gy per 24 FMAs); the tile's epilogue adds s ⊙ U into gx (the first head writes) and x ⊙ U into the
// head's scale-gradient sums.
// Part 2 (gW): items of (a chunk of input channels whose planes of a sample stay in L1, ~25 KB; up to 4 blocks of 16
// outputs), each accumulating its own slice of gW over all samples in order (no reduction across threads: the same
// bits on any number of threads): per sample and output block, the channels the block's head selected, 8 at a time,
// accumulate Σ_p gy ⊗ x (one gy vector per block and one broadcast of x for the two blocks of a head taken
// together), then add it times the scale; a block across heads takes the channels any of them selected, with
// lane-wise scales.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc_gather.h"
#include "msgc_internal.h"

namespace msgc {
using namespace cpu;

#if MSGC_GATHER_AVX512
namespace {

constexpr int kMaxNB = 4;  // channel blocks per part-1 tile
constexpr int kMaxNP = 6;  // pixels per part-1 tile
constexpr int kMaxNC = 8;  // channels per part-2 group

// Part 1, one tile: U over head outputs [o0, o1) for NB blocks of 16 channels starting at W's column cw, pixels
// [p0, p0 + NP); then gx (+)= s ⊙ U, gsa[b] += Σ_q x ⊙ U.
template <int NB, int NP>
__attribute__((target("avx512f"))) void dgradTile(const float* W, int64_t C, int64_t cw, const float* gyn, int64_t P,
                                                  int64_t o0, int64_t o1, int64_t p0, const float* sv, const float* xn,
                                                  float* gxn, bool first, float* gsa) {
  __m512 acc[NB][NP];
  for (int b = 0; b < NB; b++)
    for (int q = 0; q < NP; q++) acc[b][q] = _mm512_setzero_ps();
  for (int64_t o = o0; o < o1; o++) {
    const float* wr = W + o * C + cw;
    __m512 wv[NB];
    for (int b = 0; b < NB; b++) wv[b] = _mm512_loadu_ps(wr + b * 16);
    const float* g = gyn + (o >> 4) * P * 16 + (o & 15) + p0 * 16;
    for (int q = 0; q < NP; q++) {
      const __m512 gb = _mm512_set1_ps(g[q * 16]);
      for (int b = 0; b < NB; b++) acc[b][q] = _mm512_fmadd_ps(wv[b], gb, acc[b][q]);
    }
  }
  for (int b = 0; b < NB; b++) {
    const int64_t base = b * P * 16 + p0 * 16;
    if (gxn) {
      const __m512 s = _mm512_loadu_ps(sv + b * 16);
      for (int q = 0; q < NP; q++) {
        float* d = gxn + base + q * 16;
        __m512 v = _mm512_mul_ps(s, acc[b][q]);
        if (!first) v = _mm512_add_ps(v, _mm512_loadu_ps(d));
        _mm512_storeu_ps(d, v);
      }
    }
    if (gsa) {
      __m512 g = _mm512_loadu_ps(gsa + b * 16);
      for (int q = 0; q < NP; q++) g = _mm512_fmadd_ps(_mm512_loadu_ps(xn + base + q * 16), acc[b][q], g);
      _mm512_storeu_ps(gsa + b * 16, g);
    }
  }
}

using DgradFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, int64_t, const float*,
                         const float*, float*, bool, float*);
template <int NB>
constexpr DgradFn dgradRow[kMaxNP] = {dgradTile<NB, 1>, dgradTile<NB, 2>, dgradTile<NB, 3>,
                                      dgradTile<NB, 4>, dgradTile<NB, 5>, dgradTile<NB, 6>};
const DgradFn* const dgradTable[kMaxNB] = {dgradRow<1>, dgradRow<2>, dgradRow<3>, dgradRow<4>};

// Part 2, one group of NC channels of one sample for NO (1 or 2) consecutive blocks of 16 outputs:
// T_b[c] += scale_c ⊙ Σ_p gy_b[p] · x_c[p] for the channels c = cidx[j] (gyb: the first output block's plane, 16
// lanes a pixel, the next one P·16 floats on; xn: the sample in nChw16c; T: the first block's accumulator rows, 16
// lanes a channel from channel c0 on, the next block's tStride floats on). Blocks within one head: scalar scales
// sh[c] (one broadcast of x feeds NO FMAs); a block across heads (VEC, NO = 1): lane-wise scales sv[j·16 + lane].
template <int NC, int NO, bool VEC>
__attribute__((target("avx512f"))) void wgradGroup(const float* gyb, int64_t P, const float* xn, const int32_t* cidx,
                                                   const float* sh, const float* sv, float* T, int64_t tStride, int64_t c0) {
  const float* xb[NC];
  for (int j = 0; j < NC; j++) xb[j] = xn + (cidx[j] >> 4) * P * 16 + (cidx[j] & 15);
  __m512 acc[NO][NC];
  for (int b = 0; b < NO; b++)
    for (int j = 0; j < NC; j++) acc[b][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < P; p++) {
    __m512 g[NO];
    for (int b = 0; b < NO; b++) g[b] = _mm512_loadu_ps(gyb + b * P * 16 + p * 16);
    for (int j = 0; j < NC; j++) {
      const __m512 xv = _mm512_set1_ps(xb[j][p * 16]);
      for (int b = 0; b < NO; b++) acc[b][j] = _mm512_fmadd_ps(g[b], xv, acc[b][j]);
    }
  }
  for (int j = 0; j < NC; j++) {
    const __m512 sc = VEC ? _mm512_loadu_ps(sv + j * 16) : _mm512_set1_ps(sh[cidx[j]]);
    for (int b = 0; b < NO; b++) {
      float* t = T + b * tStride + (cidx[j] - c0) * 16;
      _mm512_storeu_ps(t, _mm512_fmadd_ps(sc, acc[b][j], _mm512_loadu_ps(t)));
    }
  }
}

using WgradFn = void (*)(const float*, int64_t, const float*, const int32_t*, const float*, const float*, float*, int64_t,
                         int64_t);
template <int NO, bool VEC>
constexpr WgradFn wgradRow[kMaxNC] = {wgradGroup<1, NO, VEC>, wgradGroup<2, NO, VEC>, wgradGroup<3, NO, VEC>,
                                      wgradGroup<4, NO, VEC>, wgradGroup<5, NO, VEC>, wgradGroup<6, NO, VEC>,
                                      wgradGroup<7, NO, VEC>, wgradGroup<8, NO, VEC>};
// [one block, two blocks, one block across heads]
const WgradFn* const wgradTable[3] = {wgradRow<1, false>, wgradRow<2, false>, wgradRow<1, true>};

// For a block of outputs across heads h0..h1 (laneMask[h - h0]: the lanes of head h): the channels of [c0, c1) some
// of the heads selected in sample n (sn: its scales [G, C]) into uni, their lane-wise scales into sv; returns the count.
__attribute__((target("avx512f"))) int64_t straddleChannels(const float* sn, int64_t C, int64_t c0, int64_t c1, int64_t h0,
                                                            int64_t h1, const uint16_t* laneMask, int32_t* uni, float* sv) {
  int64_t k = 0;
  for (int64_t c = c0; c < c1; c++) {
    __m512 r = _mm512_setzero_ps();
    bool any = false;
    for (int64_t h = h0; h <= h1; h++) {
      const float v = sn[h * C + c];
      any = any || v != 0.f;
      r = _mm512_mask_mov_ps(r, laneMask[h - h0], _mm512_set1_ps(v));
    }
    if (!any) continue;
    _mm512_storeu_ps(sv + k * 16, r);
    uni[k++] = (int32_t)c;
  }
  return k;
}

// pixel chunks of at most kMaxNP, near-equal (49 -> 9 chunks of 5-6)
std::vector<std::pair<int64_t, int>> pixelChunks(int64_t P) {
  const int64_t n = (P + kMaxNP - 1) / kMaxNP;
  std::vector<std::pair<int64_t, int>> r;
  for (int64_t k = 0, p = 0; k < n; k++) {
    const int64_t len = (P - p) / (n - k);
    r.push_back({p, (int)len});
    p += len;
  }
  return r;
}

}  // namespace
#endif

bool pointwiseBackwardApplies(const Tensor& x, const Tensor& weight, const MsgcConvParams& p) {
#if MSGC_GATHER_AVX512
  const char* env = std::getenv("MSGC_POINTWISE_BWD");  // 0: never (benchmarks, tests); 1: wherever it can run
  if (env && env[0] == '0') return false;
  const Shape& ws = weight.shape;
  if (!gather::cpuHasAvx512() || x.shape.size() != 4 || ws.size() != 4 || ws[2] != 1 || ws[3] != 1) return false;
  if (p.strideH != 1 || p.strideW != 1 || p.padH != 0 || p.padW != 0) return false;
  const int64_t N = x.shape[0], C = x.shape[1], O = ws[0];
  if (N < 2 || C % 16 != 0 || O % 16 != 0 || O % p.heads != 0 || O * C >= (int64_t(1) << 31)) return false;
  if (env && env[0] == '1') return true;
  // Where it beat the per-sample backward (bench/msgc_backward.js, batch 32, density 0.5, G = 4, 2 threads, AVX-512,
  // forward + backward ms, pointwise / per-sample / dense): MobileNetV2's projections on 7² maps, 960->320
  // 3.14+6.06 / 3.24+8.59 / 2.60+5.55, 960->160 1.64+3.70 / 1.70+4.20, 576->160 1.00+2.36 / 1.09+2.59. Behind on 14²
  // maps (576->96 5.99 / 4.82 backward, 384->64 3.21 / 2.49), where the per-sample path's one weight gradient per
  // sample also yields the scale gradient and our data-gradient tiles (heads of 16-24 outputs: few multiply-adds
  // between epilogues) run at 1.3x oneDNN's data gradient; on 28² (192->32 5.81 / 2.80); and with one head
  // (ResNet-50's companion-gated 1×1 convs, G = 1: 512->2048 at 7², gx + gs 13.8 / 10.5 ms). The weight-gradient
  // kernels run at about half their speed on data in L1 (concurrent threads, hot: ~12 G vector FMAs/s; in the call
  // ~6.3), for reasons not found (no PMU on this VM).
  return p.heads > 1 && x.shape[2] * x.shape[3] <= 7 * 7;
#else
  (void)x, (void)weight, (void)p;
  return false;
#endif
}

MsgcConvGrads msgcConvBackwardPointwise(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                        const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  MsgcConvGrads r;
#if MSGC_GATHER_AVX512
  const int64_t N = x.shape[0], C = x.shape[1], P = x.shape[2] * x.shape[3], O = weight.shape[0], G = p.heads,
                Og = O / G, Cb = C / 16, Ob = O / 16;
  const float* xp = static_cast<const float*>(asLayout(x, blockedDesc(x.shape, 16)).get_data_handle());
  const float* gyp = static_cast<const float*>(asLayout(gy, blockedDesc(gy.shape, 16)).get_data_handle());
  const float* W = plainData(weight);
  const float* s = plainData(scale);
  const bool parallel = N * O * C * P > (1 << 16);
  if (needX || needScale) {
    if (needX) r.x = tensorWithDesc(x.shape, blockedDesc(x.shape, 16));
    if (needScale) r.scale = emptyTensor(scale.shape);
    float* gx = needX ? r.x->data() : nullptr;
    float* gs = needScale ? r.scale->data() : nullptr;
    const auto chunks = pixelChunks(P);
    auto sample = [&](int64_t n) {
      const float* xn = xp + n * C * P;
      const float* gyn = gyp + n * O * P;
      float* gxn = gx ? gx + n * C * P : nullptr;
      float gsa[kMaxNB * 16];  // one head's scale-gradient sums over a channel group: [block][lane]
      for (int64_t cg = 0; cg < Cb; cg += kMaxNB) {
        const int nb = (int)std::min<int64_t>(kMaxNB, Cb - cg);
        const DgradFn* row = dgradTable[nb - 1];
        for (int64_t i = 0; i < G; i++) {
          float* ga = gs ? gsa : nullptr;
          if (ga) std::memset(ga, 0, kMaxNB * 16 * sizeof(float));
          const float* sv = s + (n * G + i) * C + cg * 16;
          for (const auto& ch : chunks)
            row[ch.second - 1](W, C, cg * 16, gyn, P, i * Og, (i + 1) * Og, ch.first, sv, xn + cg * P * 16,
                               gxn ? gxn + cg * P * 16 : nullptr, i == 0, ga);
          if (ga) std::memcpy(gs + (n * G + i) * C + cg * 16, ga, nb * 16 * sizeof(float));
        }
      }
    };
    if (parallel) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t n = 0; n < N; n++) sample(n);
    } else {
      for (int64_t n = 0; n < N; n++) sample(n);
    }
  }
  if (needWeight) {
    r.weight = emptyTensor(weight.shape);
    float* gw = r.weight->data();
    // chunks of channels whose planes of a sample (kChans·P floats, ~25 KB) stay in L1 across the output blocks
    const int64_t kChans = std::max<int64_t>(16, 6272 / P / 16 * 16), kOBlocks = 4;
    const int64_t nChunks = (C + kChans - 1) / kChans, nOGroups = (Ob + kOBlocks - 1) / kOBlocks;
    // per (sample n, head i, chunk of channels) the selected channels, ascending, at sel[((n·G + i)·nChunks + chunk)·kChans]
    // and their number at count[(n·G + i)·nChunks + chunk] (built by the items' threads first)
    std::vector<int32_t> sel((size_t)(N * G * nChunks * kChans));
    std::vector<int32_t> count((size_t)(N * G * nChunks));
    auto selectRow = [&](int64_t ni) {
      const float* row = s + ni * C;
      for (int64_t ch = 0; ch < nChunks; ch++) {
        int32_t* d = sel.data() + (ni * nChunks + ch) * kChans;
        int32_t k = 0;
        for (int64_t c = ch * kChans, e = std::min(C, c + kChans); c < e; c++) {
          d[k] = (int32_t)c;
          k += row[c] != 0.f ? 1 : 0;
        }
        count[(size_t)(ni * nChunks + ch)] = k;
      }
    };
    // lane l of output block ob belongs to head (16·ob + l) / Og
    auto item = [&](int64_t it) {
      const int64_t chunk = it / nOGroups, og = it % nOGroups;
      const int64_t c0 = chunk * kChans, c1 = std::min(C, c0 + kChans), nc = c1 - c0;
      const int64_t ob0 = og * kOBlocks, ob1 = std::min(Ob, ob0 + kOBlocks);
      // T[ob - ob0][c - c0][16 lanes]
      std::vector<float> Tbuf((size_t)((ob1 - ob0) * nc * 16), 0.f);
      std::vector<float> sv((size_t)(nc * 16));
      std::vector<int32_t> uni((size_t)nc);
      for (int64_t n = 0; n < N; n++) {
        const float* xn = xp + n * C * P;
        const float* sn = s + n * G * C;
        for (int64_t ob = ob0; ob < ob1;) {
          const int64_t h0 = ob * 16 / Og, h1 = (ob * 16 + 15) / Og;
          float* T = Tbuf.data() + (ob - ob0) * nc * 16;
          const float* gyb = gyp + (n * Ob + ob) * P * 16;
          if (h0 == h1) {
            // one head: its selected channels, scalar scales; with the next block when that is the same head's too
            const bool two = ob + 1 < ob1 && (ob * 16 + 31) / Og == h0;
            const int64_t row = (n * G + h0) * nChunks + chunk, k = count[(size_t)row];
            const int32_t* ci = sel.data() + row * kChans;
            const WgradFn* fns = wgradTable[two ? 1 : 0];
            for (int64_t j = 0; j < k; j += kMaxNC) {
              const int len = (int)std::min<int64_t>(kMaxNC, k - j);
              fns[len - 1](gyb, P, xn, ci + j, sn + h0 * C, nullptr, T, nc * 16, c0);
            }
            ob += two ? 2 : 1;
            continue;
          }
          // the channels some of the block's heads selected, lane-wise scales
          uint16_t laneMask[16] = {0};
          for (int l = 0; l < 16; l++) laneMask[(ob * 16 + l) / Og - h0] |= (uint16_t)(1u << l);
          const int64_t k = straddleChannels(sn, C, c0, c1, h0, h1, laneMask, uni.data(), sv.data());
          for (int64_t j = 0; j < k; j += kMaxNC) {
            const int len = (int)std::min<int64_t>(kMaxNC, k - j);
            wgradTable[2][len - 1](gyb, P, xn, uni.data() + j, nullptr, sv.data() + j * 16, T, 0, c0);
          }
          ob++;
        }
      }
      for (int64_t ob = ob0; ob < ob1; ob++) {
        const float* T = Tbuf.data() + (ob - ob0) * nc * 16;
        for (int l = 0; l < 16; l++) {
          float* d = gw + (ob * 16 + l) * C + c0;
          for (int64_t c = 0; c < nc; c++) d[c] = T[c * 16 + l];
        }
      }
    };
    const int64_t items = nChunks * nOGroups;
    if (parallel) {
#pragma omp parallel
      {
#pragma omp for schedule(static)
        for (int64_t ni = 0; ni < N * G; ni++) selectRow(ni);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) item(it);
      }
    } else {
      for (int64_t ni = 0; ni < N * G; ni++) selectRow(ni);
      for (int64_t it = 0; it < items; it++) item(it);
    }
  }
#else
  (void)x, (void)weight, (void)scale, (void)gy, (void)p, (void)needX, (void)needWeight, (void)needScale;
#endif
  return r;
}

}  // namespace msgc
