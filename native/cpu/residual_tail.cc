// residual_tail.cc: the training tail of a residual block, y = act(a + r) (a: the BatchNorm's output, r: the
// shortcut), as one pass over the planes instead of an add and an activation (two passes forward; backward the
// activation's pass and a copy of the gradient for the add's second input), optionally with y's global average pool
// (the next MSGC block's gate context) summed in the same pass. Without r, y = act(a) with its pool: a stem's tail
// (its activation and the pool one pass, and backward one pass instead of the pool's broadcast-add and the
// activation's). Its backward takes a channel-broadcast gradient as well (the pool's, gc[n, c] = its gradient / HW at
// every pixel), g = (gy + gc[n, c]) · act'(y), and writes g for a and for r in one pass (the autograd engine hands gc
// to this node instead of adding it into gy in a pass of its own).
//
// act' from y: ReLU y > 0 (as the separate op's x > 0), ReLU6 0 < y < 6 (the separate op also passes x = 6 exactly).
// Layouts: y keeps a's layout when it has channel planes (nChw16c, nChw8c or plain NCHW), r and gy are read in it.
#include <algorithm>
#include <vector>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

namespace {

// the lanes of one plane (sample n, channel block cb): B lanes per pixel; r null: no residual. The activation
// (ACT: -1 none, 0 ReLU, 1 ReLU6), the residual and the pool are template parameters, so that each variant is one
// straight loop over the pixels: with them as run-time values GCC kept the pool's partial sums in a stack slot,
// stored a vector there and read a lane back for every pixel, and tested the activation per pixel. Old and new builds
// alternating in one process, 2 threads, the forward with its pool: the MobileNetV2 stem's [32, 32, 112, 112] 1.85 ->
// 1.73 ms, [32, 64, 14, 14] with a residual 70 -> 48 µs, [32, 24, 56, 56] unchanged. (The backward with the activation
// as a template parameter took 2x the time on [32, 24, 56, 56]: it keeps its run-time act.) Both plane loops are
// compiled for AVX-512 and AVX2 as well (forwardOne, backwardOne; additions, comparisons and selects: the same bits in
// every version).
template <int ACT>
__attribute__((always_inline)) inline float activate(float v) {
  if (ACT == 0) return v > 0.f ? v : 0.f;
  if (ACT == 1) return std::min(6.f, v > 0.f ? v : 0.f);
  return v;
}

template <int B, bool Residual, int ACT, bool Pool>
__attribute__((always_inline)) inline void forwardPlane(float* __restrict y, const float* __restrict a,
                                                        const float* __restrict r, int64_t HW, float* sums) {
  double total[B] = {};
  constexpr int64_t kRun = 64;  // pixels per float partial sum (then added in double)
  for (int64_t p0 = 0; p0 < HW; p0 += kRun) {
    const int64_t p1 = std::min(HW, p0 + kRun);
    float part[B] = {};
    for (int64_t p = p0; p < p1; p++) {
      float v[B];
      for (int l = 0; l < B; l++) v[l] = activate<ACT>(Residual ? a[p * B + l] + r[p * B + l] : a[p * B + l]);
      for (int l = 0; l < B; l++) y[p * B + l] = v[l];
      if (Pool)
        for (int l = 0; l < B; l++) part[l] += v[l];
    }
    if (Pool)
      for (int l = 0; l < B; l++) total[l] += part[l];
  }
  if (Pool)
    for (int l = 0; l < B; l++) sums[l] = (float)(total[l] / (double)HW);
}

template <int B>
__attribute__((always_inline)) inline void backwardPlane(float* ga, float* gr, const float* y, const float* gy,
                                                         const float* gp, int64_t HW, int act) {
  for (int64_t p = 0; p < HW; p++)
    for (int l = 0; l < B; l++) {
      const float yv = y[p * B + l];
      float g = gy[p * B + l] + gp[l];
      if (act == 0) g = yv > 0.f ? g : 0.f;
      else if (act == 1) g = yv > 0.f && yv < 6.f ? g : 0.f;
      if (ga) ga[p * B + l] = g;
      if (gr) gr[p * B + l] = g;
    }
}

template <int B, bool Residual, bool Pool>
__attribute__((always_inline)) inline void forwardAct(float* y, const float* a, const float* r, int64_t HW, int act,
                                                      float* sums) {
  if (act == 0) forwardPlane<B, Residual, 0, Pool>(y, a, r, HW, sums);
  else if (act == 1) forwardPlane<B, Residual, 1, Pool>(y, a, r, HW, sums);
  else forwardPlane<B, Residual, -1, Pool>(y, a, r, HW, sums);
}
template <int B>
__attribute__((always_inline)) inline void forwardBlock(float* y, const float* a, const float* r, int64_t HW, int act,
                                                        float* sums) {
  if (r) sums ? forwardAct<B, true, true>(y, a, r, HW, act, sums) : forwardAct<B, true, false>(y, a, r, HW, act, sums);
  else sums ? forwardAct<B, false, true>(y, a, r, HW, act, sums) : forwardAct<B, false, false>(y, a, r, HW, act, sums);
}
// One plane forward / backward for the layout block (16, 8 or 1), the templates above inlined into each version
// (templates themselves cannot be target clones under clang)
MSGC_SIMD_CLONES void forwardOne(int64_t block, float* y, const float* a, const float* r, int64_t HW, int act,
                                 float* sums) {
  if (block == 16) forwardBlock<16>(y, a, r, HW, act, sums);
  else if (block == 8) forwardBlock<8>(y, a, r, HW, act, sums);
  else forwardBlock<1>(y, a, r, HW, act, sums);
}
MSGC_SIMD_CLONES void backwardOne(int64_t block, float* ga, float* gr, const float* y, const float* gy, const float* gp,
                                  int64_t HW, int act) {
  if (block == 16) backwardPlane<16>(ga, gr, y, gy, gp, HW, act);
  else if (block == 8) backwardPlane<8>(ga, gr, y, gy, gp, HW, act);
  else backwardPlane<1>(ga, gr, y, gy, gp, HW, act);
}

// the planes of a 4-D tensor in layout block B (1: plain NCHW): (sample, channel block) -> its B·HW floats
template <class F>
void forPlanes(const Shape& s, int64_t block, F f) {
  const int64_t N = s[0], C = s[1], HW = s[2] * s[3], Cb = (C + block - 1) / block;
  parallelFor(N * Cb, N * C * HW > 32768, [&](int64_t pl) { f(pl / Cb, (pl % Cb) * block, pl * HW * block); });
}

int64_t tailBlock(const Tensor& t) {
  const int64_t b = channelBlock(t);
  return b == 16 || b == 8 ? b : 1;
}

}  // namespace

ResidualTail residualTailForward(const Tensor& a, const Tensor* r, int act, bool pooled) {
  const int64_t N = a.shape[0], C = a.shape[1], HW = a.shape[2] * a.shape[3];
  const int64_t block = tailBlock(a), Cp = (C + block - 1) / block * block;  // (channels padded to whole blocks)
  const dnnl::memory::desc md = blockedDesc(a.shape, block);
  dnnl::memory am = asLayout(a, md), rm = r ? asLayout(*r, md) : dnnl::memory();  // (held: may be reordered copies)
  const float* ap = static_cast<const float*>(am.get_data_handle());
  const float* rp = r ? static_cast<const float*>(rm.get_data_handle()) : nullptr;
  ResidualTail out;
  out.y = tensorWithDesc(a.shape, md);
  float* yp = out.y->data();
  std::vector<float> sums;
  if (pooled) {
    out.pooled = emptyTensor({N, C, 1, 1});
    sums.assign((size_t)(N * Cp), 0.f);
  }
  forPlanes(a.shape, block, [&](int64_t n, int64_t c0, int64_t off) {
    float* s = pooled ? sums.data() + n * Cp + c0 : nullptr;
    forwardOne(block, yp + off, ap + off, rp ? rp + off : nullptr, HW, act, s);
  });
  if (pooled) {
    float* pp = out.pooled->data();
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = 0; c < C; c++) pp[n * C + c] = sums[n * Cp + c];
  }
  return out;
}

ResidualTailGrads residualTailBackward(const Tensor& y, const Tensor& gy, const Tensor* gChannels, int act, bool needA,
                                       bool needR) {
  const int64_t C = y.shape[1], HW = y.shape[2] * y.shape[3];
  const int64_t block = tailBlock(y);
  const dnnl::memory::desc md = blockedDesc(y.shape, block);
  dnnl::memory ym = asLayout(y, md), gm = asLayout(gy, md);  // (held: either may be a reordered copy)
  const float* yp = static_cast<const float*>(ym.get_data_handle());
  const float* gyp = static_cast<const float*>(gm.get_data_handle());
  const float* gcp = gChannels ? plainData(*gChannels) : nullptr;
  ResidualTailGrads out;
  if (needA) out.a = tensorWithDesc(y.shape, md);
  if (needR) out.r = tensorWithDesc(y.shape, md);
  float* gap = needA ? out.a->data() : nullptr;
  float* grp = needR ? out.r->data() : nullptr;
  forPlanes(y.shape, block, [&](int64_t n, int64_t c0, int64_t off) {
    float lanes[16] = {};
    if (gcp)
      for (int64_t l = 0; l < block; l++) lanes[l] = c0 + l < C ? gcp[n * C + c0 + l] : 0.f;
    float* ga = gap ? gap + off : nullptr;
    float* gr = grp ? grp + off : nullptr;
    backwardOne(block, ga, gr, yp + off, gyp + off, lanes, HW, act);
  });
  return out;
}

}  // namespace msgc
