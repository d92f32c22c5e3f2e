// depthwise_compact.cc: the eval depthwise convolution + BatchNorm (+ ReLU / ReLU6) over a compacted tensor
// (msgc/ops.h, Compaction): MobileNetV2's hidden channels that no head of the block's projection selects are not
// computed (spec §2.10, the "bonus"). Channel slot k of sample n holds the k-th channel the mask selects, so a
// slot block of 8 or 16 lanes mixes channels: each lane takes its channel's taps and BN, gathered once per (sample,
// block), and the blocks past the last occupied one are zeros. In nChw16c (or nChw8c) the blocks are vectors of
// lanes, and a vector of the lanes' weights per tap feeds one FMA per output pixel, as in a dense depthwise kernel.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"
#include "msgc_gather.h"
#include "msgc/parallel.h"

// (the vector helpers are inlined into their ISA's kernels: no vector crosses a call boundary)
#pragma GCC diagnostic ignored "-Wpsabi"

namespace msgc {
using namespace cpu;
namespace {

typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
template <int L> struct Vec;
template <> struct Vec<16> { using T = V16; };
template <> struct Vec<8> { using T = V8; };

struct DwGeometry {
  int64_t H, W, OH, OW, KH, KW, SH, SW, PH, PW;
};

// One slot block of one sample: x [H][W][L] -> y [OH][OW][L], taps w [KH·KW][L], y = clamp(a·conv + b).
template <int L, int KH, int KW>
__attribute__((always_inline)) inline void dwBlock(const DwGeometry& d, const float* x, float* y, const float* w,
                                                   const float* a, const float* b, bool clamp, float lo, float hi) {
  using V = typename Vec<L>::T;
  const int64_t kh = KH > 0 ? KH : d.KH, kw = KW > 0 ? KW : d.KW;
  auto load = [](const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  };
  V wv[KH > 0 ? KH * KW : 1];
  if constexpr (KH > 0)
    for (int t = 0; t < KH * KW; t++) wv[t] = load(w + t * L);
  const V av = load(a), bv = load(b);
  V lov, hiv;
  for (int l = 0; l < L; l++) lov[l] = lo, hiv[l] = hi;
  // the output columns whose taps all fall inside the row: [ow0, ow1)
  int64_t ow0 = 0, ow1 = 0;
  while (ow0 < d.OW && ow0 * d.SW - d.PW < 0) ow0++;
  ow1 = ow0;
  while (ow1 < d.OW && ow1 * d.SW - d.PW + kw <= d.W) ow1++;
  for (int64_t oh = 0; oh < d.OH; oh++) {
    const int64_t ih0 = oh * d.SH - d.PH;
    const int64_t r0 = std::max<int64_t>(0, -ih0), r1 = std::min<int64_t>(kh, d.H - ih0);
    float* yr = y + oh * d.OW * L;
    auto pixel = [&](int64_t ow, bool checked) {
      const int64_t iw0 = ow * d.SW - d.PW;
      const int64_t c0 = checked ? std::max<int64_t>(0, -iw0) : 0, c1 = checked ? std::min<int64_t>(kw, d.W - iw0) : kw;
      V acc = {};
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = x + ((ih0 + r) * d.W + iw0) * L;
        for (int64_t c = c0; c < c1; c++) {
          const V wt = KH > 0 ? wv[r * kw + c] : load(w + (r * kw + c) * L);
          acc += wt * load(xr + c * L);
        }
      }
      V v = acc * av + bv;
      if (clamp) {
        v = v > lov ? v : lov;  // (NaN -> lo, as the separate activation)
        v = v < hiv ? v : hiv;
      }
      std::memcpy(yr + ow * L, &v, sizeof(V));
    };
    // interior runs of P pixels: P independent accumulators per tap (one chain per pixel was bound by the FMA
    // latency)
    auto run = [&](int64_t owStart, auto pc) {
      constexpr int P = decltype(pc)::value;
      const int64_t iw0 = owStart * d.SW - d.PW;
      V acc[P] = {};
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = x + ((ih0 + r) * d.W + iw0) * L;
        for (int64_t c = 0; c < kw; c++) {
          const V wt = KH > 0 ? wv[r * kw + c] : load(w + (r * kw + c) * L);
#pragma GCC unroll 8
          for (int p = 0; p < P; p++) acc[p] += wt * load(xr + (p * d.SW + c) * L);
        }
      }
#pragma GCC unroll 8
      for (int p = 0; p < P; p++) {
        V v = acc[p] * av + bv;
        if (clamp) {
          v = v > lov ? v : lov;
          v = v < hiv ? v : hiv;
        }
        std::memcpy(yr + (owStart + p) * L, &v, sizeof(V));
      }
    };
    for (int64_t ow = 0; ow < std::min(ow0, d.OW); ow++) pixel(ow, true);
    int64_t ow = ow0;
    for (; ow + 8 <= ow1; ow += 8) run(ow, std::integral_constant<int, 8>());
    for (; ow + 4 <= ow1; ow += 4) run(ow, std::integral_constant<int, 4>());
    for (; ow + 2 <= ow1; ow += 2) run(ow, std::integral_constant<int, 2>());
    for (; ow < ow1; ow++) pixel(ow, false);
    for (ow = ow1; ow < d.OW; ow++) pixel(ow, true);
  }
}

template <int L>
__attribute__((always_inline)) inline void dwAny(const DwGeometry& d, const float* x, float* y, const float* w,
                                                 const float* a, const float* b, bool clamp, float lo, float hi) {
  if (d.KH == 3 && d.KW == 3) {
    dwBlock<L, 3, 3>(d, x, y, w, a, b, clamp, lo, hi);
  } else {
    dwBlock<L, 0, 0>(d, x, y, w, a, b, clamp, lo, hi);
  }
}

using DwFn = void (*)(const DwGeometry&, const float*, float*, const float*, const float*, const float*, bool, float,
                      float);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f"))) void dw16Avx512(const DwGeometry& d, const float* x, float* y, const float* w,
                                                   const float* a, const float* b, bool clamp, float lo, float hi) {
  dwAny<16>(d, x, y, w, a, b, clamp, lo, hi);
}
__attribute__((target("avx2,fma"))) void dw16Avx2(const DwGeometry& d, const float* x, float* y, const float* w,
                                                  const float* a, const float* b, bool clamp, float lo, float hi) {
  dwAny<16>(d, x, y, w, a, b, clamp, lo, hi);
}
__attribute__((target("avx2,fma"))) void dw8Avx2(const DwGeometry& d, const float* x, float* y, const float* w,
                                                 const float* a, const float* b, bool clamp, float lo, float hi) {
  dwAny<8>(d, x, y, w, a, b, clamp, lo, hi);
}
#endif
void dw16Base(const DwGeometry& d, const float* x, float* y, const float* w, const float* a, const float* b, bool clamp,
              float lo, float hi) {
  dwAny<16>(d, x, y, w, a, b, clamp, lo, hi);
}
void dw8Base(const DwGeometry& d, const float* x, float* y, const float* w, const float* a, const float* b, bool clamp,
             float lo, float hi) {
  dwAny<8>(d, x, y, w, a, b, clamp, lo, hi);
}

DwFn dwKernel(int64_t L) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (L == 16 && gather::cpuHasAvx512()) return dw16Avx512;
  if (gather::cpuHasAvx2Fma()) return L == 16 ? dw16Avx2 : dw8Avx2;
#endif
  return L == 16 ? dw16Base : dw8Base;
}

}  // namespace

TensorPtr depthwiseBnActCompactEval(const Tensor& x, const Tensor& mask, const Tensor& weight, const FusedBnAct& bn,
                                    int64_t strideH, int64_t strideW, int64_t padH, int64_t padW) {
  const int64_t N = x.shape[0], C = x.shape[1];
  DwGeometry d;
  d.H = x.shape[2], d.W = x.shape[3], d.KH = weight.shape[2], d.KW = weight.shape[3];
  d.SH = strideH, d.SW = strideW, d.PH = padH, d.PW = padW;
  d.OH = (d.H + 2 * d.PH - d.KH) / d.SH + 1;
  d.OW = (d.W + 2 * d.PW - d.KW) / d.SW + 1;
  const int64_t L = channelBlock(x);
  MSGC_CHECK(L == 8 || L == 16, "depthwiseBnActCompact: x must be in a blocked layout of 8 or 16 channels (nChw8c / ",
             "nChw16c, as a compacted conv output is), got a channel block of ", L);
  const Shape ys{N, C, d.OH, d.OW};
  TensorPtr y = tensorWithDesc(ys, blockedDesc(ys, L));
  if (N == 0 || C == 0 || d.OH <= 0 || d.OW <= 0) return y;
  // each sample's channels in slot order: mask's union, ascending
  gather::Geometry gm{};
  gm.N = N, gm.C = C, gm.G = mask.shape[1];
  // (kept by the calling thread from call to call; named through a reference, so that the team's threads below
  // read this thread's instance and not their own)
  static thread_local gather::Selection selStore;
  gather::Selection& sel = selStore;
  gather::select(gm, plainData(mask), sel);
  std::vector<float> a(C), b(C);
  gather::foldBatchNorm(bn, C, a.data(), b.data());
  const float* w = plainData(weight);
  const float* xd = x.data();
  float* yd = y->data();
  const bool clamp = bn.act >= 0;
  const float lo = 0.f, hi = bn.act == (int)Activation::ReLU6 ? 6.f : INFINITY;
  const int64_t Cb = (C + L - 1) / L, T = d.KH * d.KW, inBlock = d.H * d.W * L, outBlock = d.OH * d.OW * L;
  // the occupied slot blocks of every sample, and zeros in the others
  std::vector<std::pair<int64_t, int64_t>> items;
  for (int64_t n = 0; n < N; n++) {
    const int64_t used = (sel.unionSize(n) + L - 1) / L;
    for (int64_t j = 0; j < used; j++) items.push_back({n, j});
    std::memset(yd + (n * Cb + used) * outBlock, 0, (Cb - used) * outBlock * sizeof(float));
  }
  const DwFn fn = dwKernel(L);
  auto item = [&](int64_t it) {
    const int64_t n = items[it].first, j = items[it].second;
    const int32_t* chans = sel.unionOf(n);
    const int64_t count = std::min<int64_t>(L, sel.unionSize(n) - j * L);
    alignas(64) float wl[64 * 16], al[16] = {}, bl[16] = {};
    std::vector<float> wbig;
    float* wp = wl;
    if (T > 64) {
      wbig.assign(T * L, 0.f);
      wp = wbig.data();
    } else {
      std::fill_n(wl, T * L, 0.f);
    }
    for (int64_t l = 0; l < count; l++) {
      const int64_t c = chans[j * L + l];
      for (int64_t t = 0; t < T; t++) wp[t * L + l] = w[c * T + t];
      al[l] = a[c], bl[l] = b[c];
    }
    fn(d, xd + (n * Cb + j) * inBlock, yd + (n * Cb + j) * outBlock, wp, al, bl, clamp, lo, hi);
  };
  // (items of equal cost: contiguous ranges per thread; a dynamic schedule of single items cost more than they)
  const int64_t nItems = (int64_t)items.size();
  parallelFor(nItems, nItems * outBlock * T >= 200000, item);
  return y;
}

}  // namespace msgc
