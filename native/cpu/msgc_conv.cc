// msgc_conv.cc: the MSGC convolution, masked execution. Head i convolves the input scaled per sample and
// channel by scale[:, i, :] with its own contiguous block of output filters. Heads run one after another as
// batched oneDNN convolutions, so only one scaled copy of the input exists at a time (no G x activation blow-up);
// the backward recomputes that copy instead of saving it.
//
// Layouts: activations stay in oneDNN's channel-blocked layout (nChw16c / nChw8c) when a head's channel count is
// a multiple of the block, since then a head's channels are one contiguous chunk per sample; otherwise plain NCHW.
// Per-head weight slices are cached on the weight's storage until it is written.
//
// The grouped execution runs the same masked conv as ONE grouped oneDNN convolution (G groups) over the G-fold
// input X'[n, i·C + c] = x[n, c]·scale[n, i, c]: no G narrow convs one after another (each a team start and a
// barrier, with heads of 16 outputs half-filling oneDNN's blocks), at the cost of G copies of the input
// (recomputed in the backward, never saved). Chosen where the batched path would run and the heads' channels fill
// the SIMD blocks (msgcMaskedImpl).
#include <algorithm>
#include <cstring>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"
#include "msgc_internal.h"

namespace msgc {
using namespace cpu;

namespace {

// scale[:, i, :] as a [N, C, 1, 1] tensor
TensorPtr headScale(const float* scale, int64_t N, int64_t G, int64_t C, int64_t i) {
  TensorPtr s = emptyTensor({N, C, 1, 1});
  for (int64_t n = 0; n < N; n++) std::memcpy(s->data() + n * C, scale + (n * G + i) * C, C * sizeof(float));
  return s;
}

// rows [i*O/G, (i+1)*O/G) of weight [O, C, k, k], cached on the weight's storage (with the blocked copies the
// convolution makes of it) until the weight is written
TensorPtr headWeight(const Tensor& weight, int64_t G, int64_t i) {
  const Shape& ws = weight.shape;
  int64_t rows = ws[0] / G, row = ws[1] * ws[2] * ws[3];
  Shape hs{rows, ws[1], ws[2], ws[3]};
  std::string key = "msgc-head:" + std::to_string(G) + ":" + std::to_string(i);
  auto& cache = weight.storage->derived;
  auto it = cache.find(key);
  if (it != cache.end() && it->second.version == weight.storage->version) return std::make_shared<Tensor>(hs, it->second.copy);
  const float* w = plainData(weight);
  auto st = std::make_shared<Storage>((size_t)rows * row * sizeof(float), weight.device());
  std::memcpy(st->data, w + i * rows * row, (size_t)rows * row * sizeof(float));
  cache[key] = Storage::Derived{weight.storage->version, st};
  return std::make_shared<Tensor>(hs, st);
}

// Copies channels [c0, c0 + Cs) of every sample between a full tensor and a head-sized one laid out with the
// same channel block (a contiguous chunk of Cs·H·W per sample).
void copyChannelChunk(float* dst, int64_t dstC, int64_t dstC0, const float* src, int64_t srcC, int64_t srcC0, int64_t N,
                      int64_t Cs, int64_t HW) {
  const int64_t chunk = Cs * HW;
  parallelFor(N, N * chunk > 32768, [&](int64_t n) {
    std::memcpy(dst + (n * dstC + dstC0) * HW, src + (n * srcC + srcC0) * HW, chunk * sizeof(float));
  });
}

// The channel block the grouped execution walks x, X' and their gradients in: x's own when it divides C (then X'
// is G chunks of x per sample, scaled lane-wise), else the native block when that divides C, else plain (1).
int64_t groupedBlock(const Tensor& x) {
  const int64_t C = x.shape[1];
  int64_t b = channelBlock(x);
  if (b > 1 && C % b == 0) return b;
  b = nativeChannelBlock();
  return C % b == 0 ? b : 1;
}

Shape replicatedShape(const Shape& x, int64_t G) { return {x[0], G * x[1], x[2], x[3]}; }

// One channel block of B lanes (16, 8, or 1: plain) over HW pixels, the lane count a compile-time constant so that
// the lane loops vectorize (with a run-time block GCC left them scalar: ResNet-56's 64-channel stage, batch 32, spent
// 12% of the grouped backward in its reduction and 4% in the replication). The templates are inlined into non-template
// SIMD-clone dispatchers (clang cannot clone templates).
template <int B>
__attribute__((always_inline)) inline void scaleBlock(float* dst, const float* src, const float* sc, int64_t HW) {
  for (int64_t hw = 0; hw < HW; hw++)
    for (int l = 0; l < B; l++) dst[hw * B + l] = src[hw * B + l] * sc[l];
}
MSGC_SIMD_CLONES void scaleBlockOne(int64_t block, float* dst, const float* src, const float* sc, int64_t HW) {
  if (block == 16) scaleBlock<16>(dst, src, sc, HW);
  else if (block == 8) scaleBlock<8>(dst, src, sc, HW);
  else if (block == 1) scaleBlock<1>(dst, src, sc, HW);
  else
    for (int64_t hw = 0; hw < HW; hw++)
      for (int64_t l = 0; l < block; l++) dst[hw * block + l] = src[hw * block + l] * sc[l];
}

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF  // (MSGC_NO_CONTRACT is empty under clang)
#endif
// The reduction after the masked backward's dense data gradient, for one channel block of one sample: U (head i's
// gradient w.r.t. its scaled input, at U + i·headStride), s (head i's scales at s + i·C), x; with gx,
// gx = Σ_i s_i ⊙ U_i (heads in order; with `add`, onto what gx holds); with gs, gs[i·C + l] = Σ_hw U_i ⊙ x in double,
// pixels in order. Products and sums are not contracted, so every version gives the same bits (the double products
// of floats are exact).
template <int B>
__attribute__((always_inline)) inline void groupedReduce(const float* U, int64_t headStride, const float* s, int64_t C,
                                                         const float* x, float* gx, bool add, float* gs, int64_t G,
                                                         int64_t HW) {
  if (gx)
    for (int64_t hw = 0; hw < HW; hw++) {
      float v[B];
      const float* a = U + hw * B;
      if (add)
        for (int l = 0; l < B; l++) v[l] = gx[hw * B + l] + s[l] * a[l];
      else
        for (int l = 0; l < B; l++) v[l] = s[l] * a[l];
      for (int64_t i = 1; i < G; i++) {
        const float* ai = a + i * headStride;
        const float* si = s + i * C;
        for (int l = 0; l < B; l++) v[l] += si[l] * ai[l];
      }
      for (int l = 0; l < B; l++) gx[hw * B + l] = v[l];
    }
  if (gs)
    for (int64_t i = 0; i < G; i++) {
      const float* a = U + i * headStride;
      double acc[B];
      for (int l = 0; l < B; l++) acc[l] = 0.0;
      for (int64_t hw = 0; hw < HW; hw++)
        for (int l = 0; l < B; l++) acc[l] += (double)a[hw * B + l] * x[hw * B + l];
      for (int l = 0; l < B; l++) gs[i * C + l] = (float)acc[l];
    }
}
MSGC_SIMD_CLONES MSGC_NO_CONTRACT void groupedReduceOne(int64_t block, const float* U, int64_t headStride,
                                                         const float* s, int64_t C, const float* x, float* gx, bool add,
                                                         float* gs, int64_t G, int64_t HW) {
  if (block == 16) groupedReduce<16>(U, headStride, s, C, x, gx, add, gs, G, HW);
  else if (block == 8) groupedReduce<8>(U, headStride, s, C, x, gx, add, gs, G, HW);
  else groupedReduce<1>(U, headStride, s, C, x, gx, add, gs, G, HW);
}
#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#endif

// X'[n, i·C + c, hw] = x[n, c, hw]·s[n, i, c] in the channel block b: with C a multiple of b, X' holds per sample
// G consecutive copies of x's sample chunk, copy i scaled per lane by head i's scales.
TensorPtr replicatedScaledInput(const Tensor& x, const float* s, int64_t G, int64_t b) {
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], blocks = C / b;
  const Shape rs = replicatedShape(x.shape, G);
  TensorPtr xr = tensorWithDesc(rs, blockedDesc(rs, b));
  const float* xp = static_cast<const float*>(asLayout(x, blockedDesc(x.shape, b)).get_data_handle());
  float* d = xr->data();
  // (n·G + i, cb): head i's copy of x's channel block cb in sample n
  parallelFor2(N * G, blocks, N * G * C * HW > 32768, [&](int64_t ni, int64_t cb) {
    scaleBlockOne(b, d + (ni * blocks + cb) * HW * b, xp + (ni / G * blocks + cb) * HW * b, s + ni * C + cb * b, HW);
  });
  return xr;
}

Conv2dParams groupedParams(const MsgcConvParams& p) {
  Conv2dParams cp = convParams(p);
  cp.groups = p.heads;
  return cp;
}

TensorPtr msgcConvForwardGrouped(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p) {
  TensorPtr xr = replicatedScaledInput(x, plainData(scale), p.heads, groupedBlock(x));
  return conv2dForward(*xr, weight, nullptr, groupedParams(p));
}

MsgcConvGrads msgcConvBackwardGrouped(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                      const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], G = p.heads;
  const int64_t b = groupedBlock(x), blocks = C / b;
  const float* s = plainData(scale);
  const Shape rs = replicatedShape(x.shape, G);
  // the data gradient reads only X''s shape; the weight gradient reads X' itself
  TensorPtr xr = needWeight ? replicatedScaledInput(x, s, G, b) : tensorWithDesc(rs, blockedDesc(rs, b));
  Conv2dGrads cg = conv2dBackward(*xr, weight, gy, groupedParams(p), needX || needScale, needWeight, false);
  MsgcConvGrads r;
  r.weight = cg.weight;
  if (!(needX || needScale)) return r;
  xr.reset();
  // gxs = dL/dX' (head i's chunk: W_i^T ⋆ gy_i); gx = Σ_i s_i ⊙ gxs_i, gs[n, i, c] = Σ_hw gxs_i ⊙ x
  const float* gxs = static_cast<const float*>(asLayout(*cg.x, blockedDesc(rs, b)).get_data_handle());
  const float* xp = needScale ? static_cast<const float*>(asLayout(x, blockedDesc(x.shape, b)).get_data_handle()) : nullptr;
  if (needX) r.x = tensorWithDesc(x.shape, blockedDesc(x.shape, b));
  if (needScale) r.scale = emptyTensor(scale.shape);
  float* gx = needX ? r.x->data() : nullptr;
  float* gs = needScale ? r.scale->data() : nullptr;
  parallelFor2(N, blocks, N * G * C * HW > 32768, [&](int64_t n, int64_t cb) {
    const int64_t base = (n * blocks + cb) * HW * b;
    float* gsn = gs ? gs + n * G * C + cb * b : nullptr;
    groupedReduceOne(b, gxs + (n * G * blocks + cb) * HW * b, blocks * HW * b, s + n * G * C + cb * b, C,
                     xp ? xp + base : nullptr, gx ? gx + base : nullptr, false, gsn, G, HW);
  });
  return r;
}

// the masked forward by the implementation msgcMaskedImpl chose
TensorPtr maskedForward(MaskedImpl impl, const Tensor& x, const Tensor& weight, const Tensor& scale,
                        const MsgcConvParams& p) {
  if (impl == MaskedImpl::PerSample) return msgcConvForwardPerSample(x, weight, scale, p);
  if (impl == MaskedImpl::Grouped) return msgcConvForwardGrouped(x, weight, scale, p);
  const int64_t N = x.shape[0], C = x.shape[1], O = weight.shape[0], G = p.heads, Og = O / G;
  const float* s = plainData(scale);
  Conv2dParams cp = convParams(p);
  TensorPtr y;
  int64_t block = 0;
  for (int64_t i = 0; i < G; i++) {
    TensorPtr si = headScale(s, N, G, C, i);
    TensorPtr xs = binaryForward(Binary::Mul, x, *si);
    // one head (the companion input gates): the conv of the scaled input is the output, no per-head copies
    if (G == 1) {
      TensorPtr y1 = conv2dForward(*xs, weight, nullptr, cp);
      if (channelBlock(*y1) != 0) return y1;
    }
    TensorPtr yi = conv2dForward(*xs, *headWeight(weight, G, i), nullptr, cp);
    const int64_t OH = yi->shape[2], OW = yi->shape[3];
    if (!y) {
      block = channelBlock(*yi);
      if (block == 0 || Og % block != 0) block = 1;  // assemble in plain NCHW
      y = tensorWithDesc({N, O, OH, OW}, blockedDesc({N, O, OH, OW}, block));
    }
    const float* src = block == 1 ? plainData(*yi) : static_cast<const float*>(asLayout(*yi, blockedDesc(yi->shape, block)).get_data_handle());
    copyChannelChunk(y->data(), O, i * Og, src, Og, 0, N, Og, OH * OW);
  }
  return y;
}

}  // namespace

TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p) {
  return maskedForward(msgcMaskedImpl(x, weight, p), x, weight, scale, p);
}

TensorPtr msgcConvForwardMaskedBn(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                                  const FusedBnAct& bn, TensorPtr* means) {
  // (MobileNetV2's 1×1 projections on 28²-112² maps at batch 32: the separate BN pass over their outputs took as
  // long as the BN passes of the dense model's 17 projections together)
  const MaskedImpl impl = msgcMaskedImpl(x, weight, p);
  if (impl == MaskedImpl::PerSample)
    if (TensorPtr y = msgcConvForwardPerSampleBn(x, weight, scale, p, bn, means)) return y;
  TensorPtr raw = maskedForward(impl, x, weight, scale, p);
  return batchNormActEval(*raw, *bn.runningMean, *bn.runningVar, bn.weight, bn.bias, bn.eps, bn.act, bn.residual, means);
}

MSGC_SIMD_CLONES void inputActBackward(float* __restrict g, const float* __restrict x, int64_t n, float hi) {
  for (int64_t i = 0; i < n; i++) g[i] = (x[i] > 0.f) & (x[i] < hi) ? g[i] : 0.f;
}

namespace {
// gx ·= act'(x) (act: MsgcConvParams::inputAct), in gx's layout, for the paths that do not apply it themselves
void applyInputAct(const Tensor& x, Tensor& gx, int act) {
  const dnnl::memory::desc md = currentDesc(gx);
  const float* xv = static_cast<const float*>(asLayout(x, md).get_data_handle());
  float* g = gx.data();
  const int64_t n = (int64_t)(md.get_size() / sizeof(float));
  const float hi = inputActHi(act);
  // chunks of 16K floats (inputActBackward: a loop written here, its pointers captured by reference, ran scalar
  // with a reload per element, 1.3 ms on ResNet-20's [32, 16, 32, 32])
  constexpr int64_t kChunk = 16384;
  parallelFor((n + kChunk - 1) / kChunk, n >= smallOpElements, [&](int64_t c) {
    const int64_t i0 = c * kChunk;
    inputActBackward(g + i0, xv + i0, std::min(kChunk, n - i0), hi);
  });
}
}  // namespace

MsgcConvGrads msgcConvBackward(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                               const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  MsgcConvGrads r = msgcConvBackwardPaths(x, weight, scale, gy, p, needX, needWeight, needScale);
  if (p.inputAct >= 0 && r.x && !r.actApplied) applyInputAct(x, *r.x, p.inputAct);
  r.actApplied = false;
  return r;
}

MsgcConvGrads msgcConvBackwardPaths(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                    const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  if (pointwiseBackwardApplies(x, weight, p)) return msgcConvBackwardPointwise(x, weight, scale, gy, p, needX, needWeight, needScale);
  if (spatialBackwardApplies(x, weight, p)) return msgcConvBackwardSpatial(x, weight, scale, gy, p, needX, needWeight, needScale);
  const MaskedImpl impl = msgcMaskedImpl(x, weight, p);
  if (impl == MaskedImpl::PerSample) return msgcConvBackwardPerSample(x, weight, scale, gy, p, needX, needWeight, needScale);
  if (impl == MaskedImpl::Grouped) return msgcConvBackwardGrouped(x, weight, scale, gy, p, needX, needWeight, needScale);
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], O = weight.shape[0], G = p.heads,
                Og = O / G;
  const int64_t OH = gy.shape[2], OW = gy.shape[3], kk = weight.shape[2] * weight.shape[3];
  const float* s = plainData(scale);
  Conv2dParams cp = convParams(p);
  MsgcConvGrads r;
  if (needWeight) r.weight = emptyTensor(weight.shape);
  if (needScale) r.scale = emptyTensor(scale.shape);
  // the output gradient, sliced per head in its own channel-blocked layout when possible
  int64_t gyBlock = channelBlock(gy);
  if (gyBlock == 0 || Og % gyBlock != 0) gyBlock = 1;
  const float* g = G == 1 ? nullptr : gyBlock == 1 ? plainData(gy) : gy.data();  // (one head: gy itself)
  // x and the input gradients are walked in one channel-blocked layout (b lanes per block, Cp padded channels)
  int64_t xBlock = 0;
  const float* xp = nullptr;
  int64_t Cp = C;
  for (int64_t i = 0; i < G; i++) {
    // head i's slice of the output gradient and of the weight (one head: the tensors themselves)
    TensorPtr gyi, wi;
    if (G > 1) {
      gyi = tensorWithDesc({N, Og, OH, OW}, blockedDesc({N, Og, OH, OW}, gyBlock));
      copyChannelChunk(gyi->data(), Og, 0, g, O, i * Og, N, Og, OH * OW);
      wi = headWeight(weight, G, i);
    }
    TensorPtr si = headScale(s, N, G, C, i);
    TensorPtr xs = needWeight ? binaryForward(Binary::Mul, x, *si) : nullptr;
    Conv2dGrads cg = conv2dBackward(xs ? *xs : x, G > 1 ? *wi : weight, G > 1 ? *gyi : gy, cp, needX || needScale,
                                    needWeight, false);
    if (needWeight) {
      const float* gw = plainData(*cg.weight);
      std::memcpy(r.weight->data() + i * Og * C * kk, gw, Og * C * kk * sizeof(float));
    }
    if (!(needX || needScale)) continue;
    // gxs = W_i^T ⋆ gy_i, the gradient w.r.t. head i's scaled input
    if (i == 0) {
      xBlock = channelBlock(*cg.x);
      if (xBlock == 0) xBlock = 1;
      dnnl::memory::desc md = blockedDesc(x.shape, xBlock);
      Cp = xBlock == 1 ? C : (C + xBlock - 1) / xBlock * xBlock;
      if (needX) {
        r.x = tensorWithDesc(x.shape, md);
        if (G > 1) std::memset(r.x->data(), 0, r.x->storage->bytes);  // (one head writes every element once)
      }
      if (needScale) xp = static_cast<const float*>(asLayout(x, md).get_data_handle());
    }
    const float* gxs = static_cast<const float*>(asLayout(*cg.x, blockedDesc(x.shape, xBlock)).get_data_handle());
    const float* sp = si->data();
    float* gx = needX ? r.x->data() : nullptr;
    float* gs = needScale ? r.scale->data() : nullptr;
    const int64_t b = xBlock, blocks = Cp / b;
    parallelFor2(N, blocks, N * Cp * HW > 32768, [&](int64_t n, int64_t cb) {
      // element (n, c = cb*b + lane, hw) sits at ((n*blocks + cb)*HW + hw)*b + lane; lanes past C (padding) take
      // scale 0 and write no scale gradient
      const int64_t base = (n * blocks + cb) * HW * b;
      float sc[16];
      float gsl[16];
      for (int64_t lane = 0; lane < b; lane++) {
        int64_t c = cb * b + lane;
        sc[lane] = c < C ? sp[n * C + c] : 0.f;
      }
      groupedReduceOne(b, gxs + base, 0, sc, 0, gs ? xp + base : nullptr, gx ? gx + base : nullptr, G > 1,
                       gs ? gsl : nullptr, 1, HW);
      if (gs)
        for (int64_t lane = 0; lane < b; lane++) {
          int64_t c = cb * b + lane;
          if (c < C) gs[(n * G + i) * C + c] = gsl[lane];
        }
    });
  }
  return r;
}

}  // namespace msgc
