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
// Part 2 (gW): items of a chunk of input channels (near-equal chunks of whole blocks, a multiple of the thread count;
// a sample's planes of the chunk, up to ~50 KB, stay in L1) over every output block (its slice of gW in L2), each
// accumulating its own slice over all samples in order (no reduction across threads: the same bits on any number of
// threads), so that x is read once and gy once per chunk. Per sample and head, the head's blocks up to 5 at a time
// (heads of 80 outputs in one call) over the channels the head selected, 4-8 at a time, accumulate Σ_p gy ⊗ x (one
// broadcast of x feeds one FMA per block), then add it times the scale; a block that two heads share (heads of 24
// or 40 outputs) is taken by each, adding only its own lanes. Until 2026-12-05 items took 4 output blocks of 128
// channels, so x was read once per 4 blocks and gy once per 128 channels, a head's blocks went 2 at a time, and a
// shared block took the union of its heads' channels with lane-wise scales (9 loads for 8 FMAs): batch 32, density
// 0.5, 2 threads, old and new builds alternating in one process, the weight gradient 960->320 at 7² 2.39 -> 2.08 ms,
// 960->160 1.89 -> 1.45, 576->160 1.98 -> 1.63 (the same bits).
#include <omp.h>

#include <algorithm>
#include <array>
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
// [p0, p0 + NP); then gx (+)= s ⊙ U, gsa[b] += Σ_q x ⊙ U. MODE's bits: kGx (gx wanted), kGs (gs wanted), kFirst (the
// first head: gx written, not added to). The epilogue is specialised by MODE and unrolled so that the accumulators are
// used from their registers: with run-time flags GCC spilled GPRs into xmm registers and stored all 24 accumulators
// to the stack after the multiply-adds, reading them back for each use.
// kAct (the last head, with MsgcConvParams::inputAct): gx's sum through the input activation, gx · 1[0 < x < actHi].
constexpr int kGx = 1, kGs = 2, kFirst = 4, kAct = 8;
template <int NB, int NP, int MODE>
__attribute__((target("avx512f"))) void dgradTile(const float* W, int64_t C, int64_t cw, const float* gyn, int64_t P,
                                                  int64_t o0, int64_t o1, int64_t p0, const float* sv, const float* xn,
                                                  float* gxn, float* gsa, float actHi) {
  __m512 acc[NB][NP];
  for (int b = 0; b < NB; b++)
    for (int q = 0; q < NP; q++) acc[b][q] = _mm512_setzero_ps();
  // the outputs block by block of gy, so that W's row and gy's lane advance by a constant (computing gy's address
  // from o each time took a third of the loop's instructions)
  const float* wr = W + o0 * C + cw;
  for (int64_t o = o0; o < o1;) {
    const int64_t e = std::min(o1, (o | 15) + 1);
    const float* g = gyn + (o >> 4) * P * 16 + (o & 15) + p0 * 16;
    for (; o < e; o++, wr += C, g++) {
      __m512 wv[NB];
      for (int b = 0; b < NB; b++) wv[b] = _mm512_loadu_ps(wr + b * 16);
      for (int q = 0; q < NP; q++) {
        const __m512 gb = _mm512_set1_ps(g[q * 16]);
        for (int b = 0; b < NB; b++) acc[b][q] = _mm512_fmadd_ps(wv[b], gb, acc[b][q]);
      }
    }
  }
  float* d = (MODE & kGx) ? gxn + p0 * 16 : nullptr;
  const float* xq = xn + p0 * 16;
  if (MODE & kGs) {
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++) {
      __m512 g = _mm512_loadu_ps(gsa + b * 16);
#pragma GCC unroll 8
      for (int q = 0; q < NP; q++) g = _mm512_fmadd_ps(_mm512_loadu_ps(xq + q * 16), acc[b][q], g);
      _mm512_storeu_ps(gsa + b * 16, g);
      xq += P * 16;
    }
  }
  if (MODE & kGx) {
    const float* xa = xn + p0 * 16;
    const __m512 zero = _mm512_setzero_ps(), hi = _mm512_set1_ps(actHi);
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++) {
      const __m512 s = _mm512_loadu_ps(sv + b * 16);
#pragma GCC unroll 8
      for (int q = 0; q < NP; q++) {
        __m512 v = _mm512_mul_ps(s, acc[b][q]);
        if (!(MODE & kFirst)) v = _mm512_add_ps(v, _mm512_loadu_ps(d + q * 16));
        if (MODE & kAct) {
          const __m512 xv = _mm512_loadu_ps(xa + q * 16);
          const __mmask16 live = _mm512_cmp_ps_mask(xv, zero, _CMP_GT_OQ) & _mm512_cmp_ps_mask(xv, hi, _CMP_LT_OQ);
          v = _mm512_maskz_mov_ps(live, v);
        }
        _mm512_storeu_ps(d + q * 16, v);
      }
      d += P * 16;
      xa += P * 16;
    }
  }
}

using DgradFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, int64_t, const float*,
                         const float*, float*, float*, float);
template <int NB, int MODE>
constexpr DgradFn dgradRow[kMaxNP] = {dgradTile<NB, 1, MODE>, dgradTile<NB, 2, MODE>, dgradTile<NB, 3, MODE>,
                                      dgradTile<NB, 4, MODE>, dgradTile<NB, 5, MODE>, dgradTile<NB, 6, MODE>};
template <int MODE>
constexpr const DgradFn* dgradRows[kMaxNB] = {dgradRow<1, MODE>, dgradRow<2, MODE>, dgradRow<3, MODE>, dgradRow<4, MODE>};
// [MODE][NB - 1][NP - 1] (MODE 0 and kFirst alone are never called; kAct only with kGx)
const DgradFn* const* const dgradTable[16] = {dgradRows<0>,  dgradRows<1>,  dgradRows<2>,  dgradRows<3>,
                                              dgradRows<4>,  dgradRows<5>,  dgradRows<6>,  dgradRows<7>,
                                              dgradRows<0>,  dgradRows<9>,  dgradRows<2>,  dgradRows<11>,
                                              dgradRows<4>,  dgradRows<13>, dgradRows<6>,  dgradRows<15>};

// Part 2, one group of NC channels of one sample for NO (1..5) consecutive blocks of 16 outputs of one head:
// T_b[c] += scale_c ⊙ Σ_p gy_b[p] · x_c[p] for the channels c = cidx[j] (gyb: the first output block's plane, 16
// lanes a pixel, the next one P·16 floats on; xn: the sample in nChw16c; T: the first block's accumulator rows, 16
// lanes a channel from channel c0 on, the next block's tStride floats on; sh: the head's scales [C]). One broadcast
// of x feeds NO FMAs. A head that starts or ends inside a block of 16 (heads of 40 or 24 outputs) adds only its own
// lanes there: m0 masks the first block, m1 the last.
template <int NC, int NO>
__attribute__((target("avx512f"))) void wgradGroup(const float* gyb, int64_t P, const float* xn, const int32_t* cidx,
                                                   const float* sh, __mmask16 m0, __mmask16 m1, float* T,
                                                   int64_t tStride, int64_t c0) {
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
    const __m512 sc = _mm512_set1_ps(sh[cidx[j]]);
    for (int b = 0; b < NO; b++) {
      float* t = T + b * tStride + (cidx[j] - c0) * 16;
      const __mmask16 m = (b == 0 ? m0 : (__mmask16)0xFFFF) & (b == NO - 1 ? m1 : (__mmask16)0xFFFF);
      _mm512_mask_storeu_ps(t, m, _mm512_fmadd_ps(sc, acc[b][j], _mm512_loadu_ps(t)));
    }
  }
}

using WgradFn = void (*)(const float*, int64_t, const float*, const int32_t*, const float*, __mmask16, __mmask16, float*,
                         int64_t, int64_t);
// channels per group for NO blocks: NO·NC <= 24 accumulators (16 for one or two blocks: 8 channels)
constexpr int wgradChannels(int NO) { return NO <= 3 ? kMaxNC : NO == 4 ? 6 : 4; }
template <int NO, size_t... I>
constexpr std::array<WgradFn, sizeof...(I)> wgradRow(std::index_sequence<I...>) {
  return {wgradGroup<std::min((int)I + 1, wgradChannels(NO)), NO>...};
}
constexpr int kMaxNO = 5;  // output blocks per part-2 group (heads of 80 outputs in one call)
// [NO - 1][NC - 1]
const std::array<WgradFn, kMaxNC> wgradTable[kMaxNO] = {
    wgradRow<1>(std::make_index_sequence<kMaxNC>{}), wgradRow<2>(std::make_index_sequence<kMaxNC>{}),
    wgradRow<3>(std::make_index_sequence<kMaxNC>{}), wgradRow<4>(std::make_index_sequence<kMaxNC>{}),
    wgradRow<5>(std::make_index_sequence<kMaxNC>{})};

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
  // (ResNet-50's companion-gated 1×1 convs, G = 1: 512->2048 at 7², gx + gs 13.8 / 10.5 ms). Those figures predate
  // the 2026-12-05 weight-gradient items and data-gradient loop order; with them 14² still loses (576->96, backward
  // 5.13 against 4.42 ms per-sample; dense 3.8).
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
    const bool act = needX && p.inputAct >= 0;
    const float actHi = inputActHi(p.inputAct);
    r.actApplied = act;
    const auto chunks = nearEqualChunks(P, kMaxNP);
    auto sample = [&](int64_t n) {
      static thread_local std::vector<float> gsaStore;
      const float* xn = xp + n * C * P;
      const float* gyn = gyp + n * O * P;
      float* gxn = gx ? gx + n * C * P : nullptr;
      // the heads' scale-gradient sums over a channel group: [head][block][lane]
      std::vector<float>& gsa = gsaStore;
      gsa.resize((size_t)(G * kMaxNB * 16));
      for (int64_t cg = 0; cg < Cb; cg += kMaxNB) {
        const int nb = (int)std::min<int64_t>(kMaxNB, Cb - cg);
        const int mode = (gxn ? kGx : 0) | (gs ? kGs : 0);
        const int last = act ? kAct : 0;  // (the last head: through the input activation)
        const DgradFn* row = dgradTable[mode][nb - 1];
        const DgradFn* rowFirst = dgradTable[mode | kFirst | (G == 1 ? last : 0)][nb - 1];
        const DgradFn* rowLast = dgradTable[mode | last][nb - 1];
        if (gs) std::fill(gsa.begin(), gsa.end(), 0.f);
        auto tile = [&](int64_t i, const std::pair<int64_t, int>& ch) {
          (i == 0 ? rowFirst : i == G - 1 ? rowLast : row)[ch.second - 1](
              W, C, cg * 16, gyn, P, i * Og, (i + 1) * Og, ch.first, s + (n * G + i) * C + cg * 16, xn + cg * P * 16,
              gxn ? gxn + cg * P * 16 : nullptr, gs ? gsa.data() + i * kMaxNB * 16 : nullptr, actHi);
        };
        // Where the group's planes of x and gx (2·P lines a block) outweigh W's rows for every head (O lines a
        // block), chunk-major with the heads inside, so that the chunk's lines stay in L1 from one head to the next:
        // head-major, a group's planes on 14² maps (100 KB) came back from L2 for every head. Otherwise head-major,
        // a head's rows of W staying in L1 across the chunks. Batch 32, density 0.5, gx and gs, the builds
        // alternating: 576->96 at 14² 3.16 -> 2.86 ms, 384->64 1.88 -> 1.67, 192->64 1.47 -> 0.93; chunk-major on
        // MobileNetV2's 7² projections was 3-9% slower.
        if (2 * P > O) {
          for (const auto& ch : chunks)
            for (int64_t i = 0; i < G; i++) tile(i, ch);
        } else {
          for (int64_t i = 0; i < G; i++)
            for (const auto& ch : chunks) tile(i, ch);
        }
        if (gs)
          for (int64_t i = 0; i < G; i++)
            std::memcpy(gs + (n * G + i) * C + cg * 16, gsa.data() + i * kMaxNB * 16, nb * 16 * sizeof(float));
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
    // Items: near-equal chunks of whole 16-channel blocks, a multiple of the thread count, each over every output
    // block (its accumulator slice, nc·O floats, in L2), so that x is read once and gy once per chunk: chunks of at
    // most ~50 KB of a sample's planes (256 channels on 7² maps), which stay in L1 across the output blocks; output
    // groups only where a slice would outgrow ~512 KB.
    const int threads = parallel ? omp_get_max_threads() : 1;
    int64_t maxChans = std::max<int64_t>(16, 12544 / P / 16 * 16);
    if (const char* e = std::getenv("MSGC_PW_KCHANS")) maxChans = std::atoi(e);  // (benchmarks)
    const int64_t nChunks = std::min<int64_t>(Cb, threads * ((C + threads * maxChans - 1) / (threads * maxChans)));
    const int64_t kChans = (Cb + nChunks - 1) / nChunks * 16;  // the widest chunk
    auto chunkStart = [&](int64_t ch) { return ch * Cb / nChunks * 16; };
    const int64_t nOGroups = std::max<int64_t>(1, std::min<int64_t>(Ob, (O * kChans * 4 + (512 << 10) - 1) / (512 << 10)));
    const int64_t kOBlocks = (Ob + nOGroups - 1) / nOGroups;
    int64_t maxNO = kMaxNO;
    if (const char* e = std::getenv("MSGC_PW_NO")) maxNO = std::max(1, std::min(kMaxNO, std::atoi(e)));  // (benchmarks)
    // per (sample n, head i, chunk of channels) the selected channels, ascending, at sel[((n·G + i)·nChunks + chunk)·kChans]
    // and their number at count[(n·G + i)·nChunks + chunk] (built by the items' threads first)
    std::vector<int32_t> sel((size_t)(N * G * nChunks * kChans));
    std::vector<int32_t> count((size_t)(N * G * nChunks));
    auto selectRow = [&](int64_t ni) {
      const float* row = s + ni * C;
      for (int64_t ch = 0; ch < nChunks; ch++) {
        int32_t* d = sel.data() + (ni * nChunks + ch) * kChans;
        int32_t k = 0;
        for (int64_t c = chunkStart(ch), e = chunkStart(ch + 1); c < e; c++) {
          d[k] = (int32_t)c;
          k += row[c] != 0.f ? 1 : 0;
        }
        count[(size_t)(ni * nChunks + ch)] = k;
      }
    };
    // lanes of head h in output block ob
    auto laneMask = [&](int64_t h, int64_t ob) {
      const int64_t lo = std::max<int64_t>(0, h * Og - ob * 16), hi = std::min<int64_t>(16, (h + 1) * Og - ob * 16);
      return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
    };
    auto item = [&](int64_t it) {
      const int64_t chunk = it / nOGroups, og = it % nOGroups;
      const int64_t c0 = chunkStart(chunk), c1 = chunkStart(chunk + 1), nc = c1 - c0;
      const int64_t ob0 = og * kOBlocks, ob1 = std::min(Ob, ob0 + kOBlocks);
      // T[ob - ob0][c - c0][16 lanes]
      std::vector<float> Tbuf((size_t)((ob1 - ob0) * nc * 16), 0.f);
      const int64_t hFirst = ob0 * 16 / Og, hLast = (ob1 * 16 - 1) / Og;
      for (int64_t n = 0; n < N; n++) {
        const float* xn = xp + n * C * P;
        const float* sn = s + n * G * C;
        // per head, its blocks in [ob0, ob1) up to kMaxNO at a time over the channels it selected (a block two heads
        // share is taken by both, each adding its own lanes)
        for (int64_t h = hFirst; h <= hLast; h++) {
          const int64_t hb0 = std::max(ob0, h * Og / 16), hb1 = std::min(ob1, ((h + 1) * Og + 15) / 16);
          const int64_t row = (n * G + h) * nChunks + chunk, k = count[(size_t)row];
          const int32_t* ci = sel.data() + row * kChans;
          for (int64_t ob = hb0; ob < hb1;) {
            const int64_t no = std::min<int64_t>(maxNO, hb1 - ob);
            const std::array<WgradFn, kMaxNC>& fns = wgradTable[no - 1];
            const int64_t step = wgradChannels((int)no);
            const __mmask16 m0 = laneMask(h, ob), m1 = laneMask(h, ob + no - 1);
            float* T = Tbuf.data() + (ob - ob0) * nc * 16;
            const float* gyb = gyp + (n * Ob + ob) * P * 16;
            for (int64_t j = 0; j < k; j += step) {
              const int len = (int)std::min<int64_t>(step, k - j);
              fns[len - 1](gyb, P, xn, ci + j, sn + h * C, m0, m1, T, nc * 16, c0);
            }
            ob += no;
          }
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
