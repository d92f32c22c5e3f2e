// msgc_spatial_bwd.cc: the backward of a 3×3 MSGC convolution (padding 1; stride 1, or stride 2 with one head) with
// kernels of our own (AVX-512, or AVX2 + FMA), for batches of 2 and more: the weight gradient only over the channels
// the heads selected, no per-sample weight gradient. The 3×3 counterpart of msgc_pointwise_bwd.cc. The kernels are
// written once over L lanes (msgc_spatial_kernels.inc) and compiled for both: L = 16 on nChw16c, L = 8 on nChw8c.
//
// With head i owning outputs [i·Og, (i+1)·Og), scale s[n, i, c] and ⋆ the 3×3 correlation:
//   U_i[n, c]     = Σ_{o in head i} W[o, c]ᵀ ⋆ gy[n, o]     (the gradient w.r.t. head i's scaled input)
//   gx[n, c]      = Σ_i s[n, i, c] · U_i[n, c]
//   gs[n, i, c]   = Σ_p x[n, c, p] · U_i[n, c, p]
//   gW[o, c, k]   = Σ_n s[n, i(o), c] · Σ_p gy[n, o, p] · x[n, c, p + k]     (only where s ≠ 0)
// U costs one dense data gradient (the gate gradient needs it for every channel); gW costs the heads' density times
// a dense weight gradient (narrow heads packed, see below; wider ones by blocks of 16 outputs).
// The per-sample path (msgc_persample.cc) pays a full data gradient and a full weight gradient per sample (the
// scale gradient comes from the latter), the grouped path a full weight gradient of the G-fold input: both above a
// dense backward (ResNet-20/56's convs at batch 32: 1.10-1.22 ms against dense 0.95).
//
// Layouts: x, gx and gy in nChw16c (nChw8c with AVX2; C and O multiples of the lanes), W plain [O, C, 3, 3], s plain
// [N, G, C]. Below, "16" is the AVX-512 figure.
// Each thread takes samples statically (the same bits from run to run) and, per sample:
//   copies gy (stride 1) or x (stride 2, for part 2) into zero-bordered planes, so that no kernel tests borders;
//   part 1 (gx, gs): per block of 16 input channels, pair of rows and chunk of up to 8 pixels, per head: U over the
//     head's outputs and the 9 taps (one weight vector and a broadcast of gy per pixel: 16 FMAs a load), then
//     gx (+)= s ⊙ U and the head's scale-gradient sums += x ⊙ U. Stride 2 (one head): U is oneDNN's data
//     gradient, folded per sample (foldOneHead);
//   part 2 (gW): heads of 4 or 8 outputs on up to 32 channels with their selected channels packed into the lanes
//     (wgradPacked, AVX-512 only); otherwise per block of 16 outputs, the channels any of its heads selected, 8 at a time and a
//     row of taps per pass (wgradGroup: 3 gy vectors and a broadcast of x per channel for 24 FMAs; stride 2:
//     wgradGroupS2), added into the thread's accumulator times the lanes' scales (0 in the lanes of a head that
//     did not select the channel).
// The threads' accumulators are summed in thread order at the end.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"
#include "msgc_gather.h"
#include "msgc_internal.h"

namespace msgc {
using namespace cpu;

#if MSGC_GATHER_AVX512
namespace {

// The kernels over L lanes (msgc_spatial_kernels.inc), compiled once for AVX-512 and once for AVX2 + FMA: every
// function of each region takes that region's target
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif
namespace k16 {
using VF = __m512;
constexpr int L = 16;
constexpr int kMaxTP = 8;   // pixels per part-1 tile row (2 rows: 16 accumulators)
constexpr int kMaxWC = 8;   // channels per part-2 group (24 accumulators)
constexpr int kMaxWC2 = 3;  // channels per stride-2 part-2 group (27 accumulators)
inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline VF vset1(float x) { return _mm512_set1_ps(x); }
inline VF vfmadd(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
inline VF vpass(VF v, VF x, float hi) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, vzero(), _CMP_GT_OQ) & _mm512_cmp_ps_mask(x, vset1(hi), _CMP_LT_OQ), v);
}
#include "msgc_spatial_kernels.inc"
}  // namespace k16
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace k8 {
using VF = __m256;
constexpr int L = 8;
constexpr int kMaxTP = 6;   // 2 rows: 12 of the 16 registers
constexpr int kMaxWC = 4;   // 12 accumulators, 3 gy vectors, a broadcast
constexpr int kMaxWC2 = 1;  // 9 accumulators
inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline VF vset1(float x) { return _mm256_set1_ps(x); }
inline VF vfmadd(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
inline VF vpass(VF v, VF x, float hi) {
  return _mm256_and_ps(v, _mm256_and_ps(_mm256_cmp_ps(x, vzero(), _CMP_GT_OQ), _mm256_cmp_ps(x, vset1(hi), _CMP_LT_OQ)));
}
#include "msgc_spatial_kernels.inc"
}  // namespace k8
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// The kernels of one lane width, for the entry below
template <int L>
using Kernels = std::conditional_t<L == 16, k16::Kernels, k8::Kernels>;

// Part 2 for a narrow head (OG = 4 or 8 outputs) of one sample, channels packed into the lanes: lane (j, o) of group
// g holds output o of the head and its channel slot j (16 / OG slots a group), so a vector does the head's work for
// 16 / OG selected channels at once instead of 16 outputs of which the head owns OG (the union path takes every
// channel some head of the block selected: 94% at density 0.5 with four heads of 4). Per input pixel q: x's vector
// (one or two blocks: C <= 32) permuted into each group's slots, and for the 9 taps k the head's gy at q - k
// broadcast OG lanes at a time, 9·NG FMAs. acc: [NG][9][16], lane (j, o) at j·OG + o.
// OG consecutive floats at p repeated over the 16 lanes, as one load (vbroadcastf32x4 / vbroadcastf64x4 from memory:
// written as intrinsics, GCC loads once and shuffles for each use, and the shuffles outnumbered the FMAs' port)
template <int OG>
__attribute__((target("avx512f"))) inline __m512 broadcastLanes(const float* p) {
  __m512 r;
  if constexpr (OG == 4)
    asm("vbroadcastf32x4 %1, %0" : "=v"(r) : "m"(*reinterpret_cast<const float(*)[4]>(p)));
  else
    asm("vbroadcastf64x4 %1, %0" : "=v"(r) : "m"(*reinterpret_cast<const float(*)[8]>(p)));
  return r;
}

template <int OG, int NG>
__attribute__((target("avx512f"))) void wgradPacked(const float* gyh, int64_t H, int64_t W, const float* xn, int64_t Cb,
                                                    const int32_t* idx, float* accOut) {
  const int64_t Wp = W + 2, HW = H * W;
  __m512i perm[NG];
  for (int g = 0; g < NG; g++) perm[g] = _mm512_loadu_si512(idx + g * 16);
  __m512 acc[NG][9];
  for (int g = 0; g < NG; g++)
    for (int k = 0; k < 9; k++) acc[g][k] = _mm512_setzero_ps();
  for (int64_t hi = 0; hi < H; hi++) {
    // x at (hi, wi) meets gy at (hi + 1 - kh, wi + 1 - kw): the bordered plane's (hi + 2 - kh, wi + 2 - kw). Along
    // the row the taps kw = 1, 2 take the vectors kw = 0, 1 had at the previous pixel: one new broadcast per kh.
    const float* gr[3];
    for (int kh = 0; kh < 3; kh++) gr[kh] = gyh + ((hi + 2 - kh) * Wp + 2) * 16;
    __m512 gv[3][3];
    for (int kh = 0; kh < 3; kh++) {
      gv[kh][1] = broadcastLanes<OG>(gr[kh] - 1 * 16);
      gv[kh][2] = broadcastLanes<OG>(gr[kh] - 2 * 16);
    }
    for (int64_t wi = 0; wi < W; wi++) {
      const float* xq = xn + (hi * W + wi) * 16;
      const __m512 x0 = _mm512_loadu_ps(xq), x1 = Cb > 1 ? _mm512_loadu_ps(xq + HW * 16) : x0;
      __m512 xs[NG];
      for (int g = 0; g < NG; g++) xs[g] = _mm512_permutex2var_ps(x0, perm[g], x1);
      for (int kh = 0; kh < 3; kh++) {
        gv[kh][0] = broadcastLanes<OG>(gr[kh] + wi * 16);
        for (int kw = 0; kw < 3; kw++)
          for (int g = 0; g < NG; g++) acc[g][kh * 3 + kw] = _mm512_fmadd_ps(gv[kh][kw], xs[g], acc[g][kh * 3 + kw]);
      }
      for (int kh = 0; kh < 3; kh++) {
        gv[kh][2] = gv[kh][1];
        gv[kh][1] = gv[kh][0];
      }
    }
  }
  for (int g = 0; g < NG; g++)
    for (int k = 0; k < 9; k++) _mm512_storeu_ps(accOut + (g * 9 + k) * 16, acc[g][k]);
}

using PackedFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, const int32_t*, float*);
const PackedFn packedTable[2][2] = {{wgradPacked<4, 1>, wgradPacked<4, 2>}, {wgradPacked<8, 1>, wgradPacked<8, 2>}};

// The lane width the kernels run with: 16 with AVX-512, 8 with AVX2 + FMA (MSGC_GATHER_ISA=avx2 picks AVX2 on an
// AVX-512 CPU, for benchmarks and tests), 0 without either
int spatialLanes() {
  const gather::Isa isa = gather::gatherIsa();
  return isa == gather::Isa::Avx512 ? 16 : isa == gather::Isa::Avx2 ? 8 : 0;
}


// the planes of one sample ([Cb][H][W][L]) into the interior of zero-bordered ones ([Cb][H+2][W+2][L])
void copyBordered(float* dst, const float* src, int64_t Cb, int64_t H, int64_t W, int64_t L) {
  const int64_t Wp = W + 2, Hp = H + 2;
  for (int64_t b = 0; b < Cb; b++)
    for (int64_t h = 0; h < H; h++)
      std::memcpy(dst + ((b * Hp + h + 1) * Wp + 1) * L, src + ((b * H + h) * W) * L, W * L * sizeof(float));
}

}  // namespace
#endif

bool spatialBackwardApplies(const Tensor& x, const Tensor& weight, const MsgcConvParams& p) {
#if MSGC_GATHER_AVX512
  const char* env = std::getenv("MSGC_SPATIAL_BWD");  // 0: never (benchmarks, tests); 1: wherever it can run
  if (env && env[0] == '0') return false;
  const Shape& ws = weight.shape;
  const int L = spatialLanes();
  if (L == 0 || x.shape.size() != 4 || ws.size() != 4 || ws[2] != 3 || ws[3] != 3) return false;
  // stride 2 with one head only (its data gradient is the dense one: see foldOneHead)
  if (p.strideH != p.strideW || (p.strideH != 1 && !(p.strideH == 2 && p.heads == 1)) || p.padH != 1 || p.padW != 1) return false;
  const int64_t N = x.shape[0], C = x.shape[1], O = ws[0];
  if (N < 2 || C % L != 0 || O % L != 0 || O % p.heads != 0) return false;
  // the threads' accumulators (O·C·9 floats each) and the bordered planes stay within a few MB
  if (O * C * 9 > (int64_t(1) << 22) || (C + O) * (x.shape[2] + 2) * (x.shape[3] + 2) > (int64_t(1) << 22)) return false;
  if (env && env[0] == '1') return true;
  // Measured against the masked paths' backward (bench/msgc_backward.js shapes, batch 32, density 0.5, 2 threads,
  // AVX-512; x, weight and scale gradients, ms; spatial / masked / dense):
  //   ResNet-20/56, G = 4: 16 ch at 32² 0.80 / 0.96 / 0.83, 32 at 16² 0.73 / 0.94 / 0.76, 64 at 8² 0.71 / 1.01 / 0.80
  //   their companion-gated convs, G = 1: 0.78 / 1.10 / 1.00, 0.76 / 1.06 / 0.95, 0.86 / 1.14 / 1.00
  //   ResNet-18, G = 4: 64 at 56² 31.7 / 46.9 / 44.3, 128 at 28² 35.7 / 48.2 / 45.1, 256 at 14² 39.4 / 50.3 / 45.6,
  //   512 at 7² 68.5 / 47.9 / 45.3
  // On 7² maps with wide layers the per-sample passes over the weights and the accumulators (O·C·9 floats, 9 MB
  // for 512 channels) outweigh the few pixels that use them. Stride 2, one head (spatial / masked / dense):
  // 16->32 at 32² 0.48 / 0.54 / 0.47, 32->64 at 16² 0.49 / 0.60 / 0.52, ResNet-18's 64->128 at 56² 19.4 / 23.7 / 22.0,
  // 128->256 at 28² 19.1 / 23.0 / 22.4, 256->512 at 14² 22.3 / 25.9 / 24.8.
  // AVX2 (this AVX-512 CPU restricted: MSGC_GATHER_ISA=avx2, ONEDNN_MAX_CPU_ISA=AVX2; spatial / masked / dense):
  //   ResNet-20/56, G = 4: 1.73 / 1.72 / 1.62, 1.48 / 1.67 / 1.48, 1.27 / 1.62 / 1.44; G = 1: 1.53 / 1.66 / 1.62,
  //   1.48 / 1.57 / 1.47, 1.30 / 1.51 / 1.43
  return x.shape[2] * x.shape[3] >= 64 || O * C <= 64 * 64;
#else
  (void)x, (void)weight, (void)p;
  return false;
#endif
}

#if MSGC_GATHER_AVX512
namespace {
// The entry for L lanes (16: AVX-512 on nChw16c; 8: AVX2 on nChw8c)
template <int L>
MsgcConvGrads spatialBackward(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                              const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  using K = Kernels<L>;
  MsgcConvGrads r;
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], O = weight.shape[0], G = p.heads,
                Og = O / G, Cb = C / L, Ob = O / L, HW = H * W, S = p.strideH;
  // gy's planes with a zero border (stride 1): OH + 2 rows of OW + 2 pixels
  const int64_t OH = gy.shape[2], OW = gy.shape[3], OHW = OH * OW, Hp = OH + 2, Wp = OW + 2;
  const bool part1 = needX || needScale;
  if (!part1 && !needWeight) return r;
  const float* xp = static_cast<const float*>(asLayout(x, blockedDesc(x.shape, L)).get_data_handle());
  const float* gyp = static_cast<const float*>(asLayout(gy, blockedDesc(gy.shape, L)).get_data_handle());
  const float* Wsrc = plainData(weight);
  const float* s = plainData(scale);
  if (needX) r.x = tensorWithDesc(x.shape, blockedDesc(x.shape, L));
  if (needScale) r.scale = emptyTensor(scale.shape);
  if (needWeight) r.weight = emptyTensor(weight.shape);
  float* gx = needX ? r.x->data() : nullptr;
  float* gs = needScale ? r.scale->data() : nullptr;
  // the input activation (p.inputAct) in the last head's gx epilogue, stride 1 (stride 2: msgcConvBackward's pass)
  const float actHi = needX && S == 1 && p.inputAct >= 0 ? inputActHi(p.inputAct) : 0.f;
  r.actApplied = actHi > 0.f;
  const auto chunks = nearEqualChunks(W, K::maxTP);  // a row's pixels
  // stride 2 (one head): U from oneDNN's data gradient
  TensorPtr U;
  const float* up = nullptr;
  if (S == 2 && part1) {
    U = conv2dBackward(x, weight, gy, convParams(p), true, false, false).x;
    up = static_cast<const float*>(asLayout(*U, blockedDesc(x.shape, L)).get_data_handle());
  }
  // narrow heads (4 or 8 outputs) with their channels packed into the lanes (wgradPacked): C <= 32
  const char* packEnv = std::getenv("MSGC_SPATIAL_PACKED");  // 0: the union path for every head (benchmarks, tests)
  const bool packed = L == 16 && S == 1 && (Og == 4 || Og == 8) && C <= 32 && !(packEnv && packEnv[0] == '0');
  const bool parallel = N * O * C * HW * 9 > (1 << 18);
  const int threads = parallel ? std::min<int>(omp_get_max_threads(), (int)N) : 1;
  const size_t tLen = (size_t)(O * C * 9);
  // Kept from call to call on the calling thread (a fresh 300 KB block was an mmap and page faults a call):
  // W as [O][9][C] (a tap's L channels of a block in one vector) and the threads' weight-gradient accumulators,
  // [thread][Ob][C][9][L]
  static thread_local std::vector<float> WtStore, TallStore;
  std::vector<float>& Wt = WtStore;
  std::vector<float>& Tall = TallStore;
  if (part1 && S == 1 && Wt.size() < (size_t)(O * 9 * C)) Wt.resize((size_t)(O * 9 * C));
  if (needWeight && Tall.size() < tLen * threads) Tall.resize(tLen * threads);
  // Each team thread's scratch, carved from one buffer the calling thread keeps from call to call (allocated here,
  // before the region: nothing inside it allocates): gy's planes with a zero border (and for stride 2 x's, for part
  // 2), which stay zero while the geometry does (the copies write the interiors only), the heads' scale-gradient sums,
  // the lane scales, the packed kernel's accumulators; and the selected channels and permutation indices.
  const size_t gybLen = S == 1 ? (size_t)(Ob * Hp * Wp * L) : 0, xbbLen = S == 2 && needWeight ? (size_t)(Cb * (H + 2) * (W + 2) * L) : 0;
  const size_t fLen = gybLen + xbbLen + (size_t)(G * L) + (size_t)(C * L) + 2 * 9 * 16, iLen = (size_t)C + 32;
  static thread_local std::vector<float> scratchF;
  static thread_local std::vector<int32_t> scratchI;
  static thread_local int64_t scratchKey[6] = {0, 0, 0, 0, 0, 0};
  const int64_t key[6] = {Ob, Hp, Wp, (int64_t)xbbLen, (int64_t)fLen, threads};
  if (!std::equal(key, key + 6, scratchKey)) {
    scratchF.assign(fLen * threads, 0.f);
    std::copy(key, key + 6, scratchKey);
  }
  if (scratchI.size() < iLen * threads) scratchI.resize(iLen * threads);
  // (the calling thread's buffers: inside the region a thread_local names the team thread's own)
  float* const scratchFp = scratchF.data();
  int32_t* const scratchIp = scratchI.data();
  auto run = [&](int tid, int64_t n0, int64_t n1) {
    float* gyb = scratchFp + fLen * tid;
    float* xbb = gyb + gybLen;
    float* gsa = xbb + xbbLen;
    float* sv = gsa + G * L;
    float* pacc = sv + C * L;
    int32_t* uni = scratchIp + iLen * tid;
    int32_t* pidx = uni + C;
    float* T = needWeight ? Tall.data() + tLen * tid : nullptr;
    if (T) std::memset(T, 0, tLen * sizeof(float));
    for (int64_t n = n0; n < n1; n++) {
      const float* xn = xp + n * C * HW;
      const float* sn = s + n * G * C;
      if (S == 1) copyBordered(gyb, gyp + n * O * OHW, Ob, OH, OW, L);  // (stride 2 reads gy as it is)
      if (part1 && S == 2) {
        K::fold(up + n * C * HW, xn, sn, Cb, HW, gx ? gx + n * C * HW : nullptr, gs ? gs + n * C : nullptr);
      } else if (part1) {
        for (int64_t cb = 0; cb < Cb; cb++) {
          std::fill(gsa, gsa + G * L, 0.f);
          for (int64_t h = 0; h < H; h += 2) {
            const int nr = (int)std::min<int64_t>(2, H - h);
            for (const auto& ch : chunks) {
              const int64_t off = ((cb * H + h) * W + ch.first) * L;
              K::dgrad(nr, ch.second)(Wt.data(), C, cb * L, gyb, Hp, Wp, W, h, ch.first, G, Og, sn + cb * L, xn + off,
                                      gx ? gx + n * C * HW + off : nullptr, gs ? gsa : nullptr, actHi);
            }
          }
          if (gs)
            for (int64_t i = 0; i < G; i++)
              std::memcpy(gs + (n * G + i) * C + cb * L, gsa + i * L, L * sizeof(float));
        }
      }
      if (needWeight && packed) {
        // per head: its selected channels, 16 / Og to a group (the last one's spare slots repeat its last channel and
        // are not added), two groups a pass
        const int64_t slots = 16 / Og;
        for (int64_t i = 0; i < G; i++) {
          int64_t m = 0;
          for (int64_t c = 0; c < C; c++)
            if (sn[i * C + c] != 0.f) uni[(size_t)m++] = (int32_t)c;
          const int64_t ob = i * Og / 16, lane0 = i * Og % 16;
          const float* gyh = gyb + ob * Hp * Wp * 16 + lane0;
          float* To = T + ob * C * 9 * 16 + lane0;
          for (int64_t j0 = 0; j0 < m; j0 += 2 * slots) {
            const int ng = m - j0 > slots ? 2 : 1;
            for (int64_t l = 0; l < ng * 16; l++) {
              const int64_t j = j0 + l / Og;
              const int32_t c = uni[(size_t)std::min(j, m - 1)];
              // (x's vector of channel c: the first source for block 0, the second for block 1)
              pidx[(size_t)l] = (c >> 4) * 16 + (c & 15);
            }
            packedTable[Og == 8][ng - 1](gyh, H, W, xn, Cb, pidx, pacc);
            for (int64_t j = j0; j < std::min(m, j0 + ng * slots); j++) {
              const int32_t c = uni[(size_t)j];
              const float sc = sn[i * C + c];
              const float* a = pacc + ((j - j0) / slots) * 9 * 16 + ((j - j0) % slots) * Og;
              float* t = To + c * 9 * 16;
              for (int k = 0; k < 9; k++)
                for (int64_t o = 0; o < Og; o++) t[k * 16 + o] += sc * a[k * 16 + o];
            }
          }
        }
      } else if (needWeight) {
        if (S == 2) copyBordered(xbb, xn, Cb, H, W, L);
        for (int64_t ob = 0; ob < Ob; ob++) {
          // the block's heads and, per channel any of them selected, its lanes' scales
          const int64_t h0 = ob * L / Og, h1 = (ob * L + L - 1) / Og;
          int64_t k = 0;
          for (int64_t c = 0; c < C; c++) {
            bool any = false;
            for (int64_t i = h0; i <= h1; i++) any |= sn[i * C + c] != 0.f;
            if (!any) continue;
            float* row = sv + c * L;
            for (int64_t i = h0; i <= h1; i++) {
              const float v = sn[i * C + c];
              for (int64_t l = std::max<int64_t>(0, i * Og - ob * L), e = std::min<int64_t>(L, (i + 1) * Og - ob * L); l < e; l++) row[l] = v;
            }
            uni[(size_t)k++] = (int32_t)c;
          }
          float* To = T + ob * C * 9 * L;
          if (S == 2) {
            const float* gyo = gyp + (n * Ob + ob) * OHW * L;
            for (int64_t j = 0; j < k; j += K::maxWC2) {
              const int len = (int)std::min<int64_t>(K::maxWC2, k - j);
              K::wgradS2(len)(gyo, OH, OW, xbb, H + 2, W + 2, uni + j, sv, To);
            }
            continue;
          }
          const float* gyo = gyb + ob * Hp * Wp * L;
          for (int64_t j = 0; j < k; j += K::maxWC) {
            const int len = (int)std::min<int64_t>(K::maxWC, k - j);
            for (int kh = 0; kh < 3; kh++) K::wgrad(len)(gyo, H, W, xn, kh, uni + j, sv, To);
          }
        }
      }
    }
  };
  auto transposeW = [&](int64_t o) {
    for (int64_t c = 0; c < C; c++)
      for (int64_t k = 0; k < 9; k++) Wt[(size_t)((o * 9 + k) * C + c)] = Wsrc[(o * C + c) * 9 + k];
  };
  // gW[o, c, k] = Σ_t T_t[o / L][c][k][o % L], the threads in order
  float* gw = needWeight ? r.weight->data() : nullptr;
  auto reduce = [&](int64_t oc, int nt) {
    const int64_t ob = oc / C, c = oc % C;
    const float* t0 = Tall.data() + oc * 9 * L;
    float v[9 * L];
    std::memcpy(v, t0, sizeof(v));
    for (int t = 1; t < nt; t++)
      for (int j = 0; j < 9 * L; j++) v[j] += t0[tLen * t + j];
    for (int l = 0; l < L; l++)
      for (int k = 0; k < 9; k++) gw[((ob * L + l) * C + c) * 9 + k] = v[k * L + l];
  };
  if (threads > 1) {
    // one region: W's transpose, the samples (static: the same bits from run to run), the accumulators' sum
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
      if (part1 && S == 1) {
#pragma omp for schedule(static)
        for (int64_t o = 0; o < O; o++) transposeW(o);
      }
      run(tid, N * tid / nt, N * (tid + 1) / nt);
      if (needWeight) {
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t oc = 0; oc < Ob * C; oc++) reduce(oc, nt);
      }
    }
  } else {
    if (part1 && S == 1)
      for (int64_t o = 0; o < O; o++) transposeW(o);
    run(0, 0, N);
    if (needWeight)
      for (int64_t oc = 0; oc < Ob * C; oc++) reduce(oc, 1);
  }
  return r;
}
}  // namespace
#endif

MsgcConvGrads msgcConvBackwardSpatial(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                      const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
#if MSGC_GATHER_AVX512
  if (spatialLanes() == 16) return spatialBackward<16>(x, weight, scale, gy, p, needX, needWeight, needScale);
  return spatialBackward<8>(x, weight, scale, gy, p, needX, needWeight, needScale);
#else
  (void)x, (void)weight, (void)scale, (void)gy, (void)p, (void)needX, (void)needWeight, (void)needScale;
  return MsgcConvGrads();
#endif
}

}  // namespace msgc
