// msgc_persample.cc: masked MSGC execution as one full-width convolution per sample.
//
// Because the scales are constant over space, head i's conv of the scaled input equals a conv of the raw input
// with a per-sample weight:  y[n] = conv(x[n], W'_n),  W'_n[o, c] = W[o, c] · scale[n, o / (O/G), c].
// So forward, backward-data and backward-weights each cost exactly one dense convolution whatever the number of
// heads, where the batched path (msgc_conv.cc) runs G convolutions with O/G output channels each. Those waste
// most SIMD lanes when O/G is below the vector width (ResNet-20's 16-channel stage has O/G = 4). The gradients
// follow from the same identity:
//   gx[n]          = conv_backward_data(gy[n], W'_n)                  (the scales included)
//   gW'_n          = conv_backward_weights(x[n], gy[n])
//   gW[o, c]       = Σ_n gW'_n[o, c] · scale[n, i(o), c]
//   gscale[n,i,c]  = Σ_{o in head i} Σ_kk gW'_n[o, c, kk] · W[o, c, kk]
//
// Samples run in parallel, one oneDNN batch-1 primitive call each inside an OpenMP loop. The batch-1 primitives
// are created while OpenMP is limited to one thread, so their work split (bwd-weights balances over the threads
// it was created for) matches the single thread they get inside the loop; each thread has its own stream and
// scratchpad. Samples are split statically and the per-thread weight gradients summed in thread order, so
// results are bit-identical from run to run (resume is exact). Per-sample weights are written straight into the
// primitive's blocked weight layout through an index map (blocked element -> scale index i·C + c, or -1 for
// padding), built once per layout.
//
// This file: the primitives and maps, the forward and the backward. The eval forward with the BatchNorm in its
// epilogue is in msgc_persample_bn.cc; what the two share, in msgc_persample.h.
#include <omp.h>
#include <algorithm>
#include <cmath>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc_internal.h"
#include "msgc_gather.h"
#include "msgc_persample.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using namespace persample;

namespace {

std::vector<MapRun> mapRuns(const std::vector<int32_t>& map) {
  std::vector<MapRun> runs;
  for (size_t j = 0; j < map.size(); j++) {
    const int32_t m = map[j];
    if (!runs.empty()) {
      MapRun& r = runs.back();
      // padding extends padding; an index extends a run of one by k or k + 1 (fixing its step), a longer run
      // by its next index
      const bool extends = r.k < 0 ? m < 0 : m >= 0 && (r.len == 1 ? m == r.k || m == r.k + 1 : m == r.k + r.len * r.step);
      if (extends) {
        if (r.len == 1 && r.k >= 0) r.step = m - r.k;
        r.len++;
        continue;
      }
    }
    runs.push_back({(int64_t)j, 1, m < 0 ? -1 : m, 0});
  }
  return runs;
}

// Which channel block (16, 8 or 1 = plain) a batch-1 activation desc uses; 0 if another layout.
int64_t blockOf(const dnnl::memory::desc& md, const Shape& shape) {
  for (int64_t b : {16, 8, 1})
    if (md == blockedDesc(shape, b)) return b;
  return 0;
}

// index map of a weight layout: reorder the plain [O, C, k, k] array holding i*C + c + 1 into it (exact in
// float for O*C < 2^24; checked by the caller), padding comes out as 0 -> -1
std::vector<int32_t> indexMap(const dnnl::memory::desc& md, const Shape& w, int64_t G) {
  const int64_t O = w[0], C = w[1], kk = w[2] * w[3], Og = O / G;
  std::vector<float> plain((size_t)(O * C * kk));
  for (int64_t o = 0; o < O; o++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t k = 0; k < kk; k++) plain[(o * C + c) * kk + k] = (float)((o / Og) * C + c + 1);
  std::vector<float> blocked(md.get_size() / sizeof(float));
  dnnl::memory src(plainDesc(toDims(w)), engine(), plain.data()), dst(md, engine(), blocked.data());
  dnnl::reorder(src, dst).execute(stream(), src, dst);
  stream().wait();
  std::vector<int32_t> map(blocked.size());
  for (size_t j = 0; j < blocked.size(); j++) map[j] = (int32_t)blocked[j] - 1;
  return map;
}

// A batch-1 conv of x's sample shape with weight shape w: the shapes and parameters of its oneDNN descs (the weight
// layout left to oneDNN, a user scratchpad)
struct SampleConv {
  Shape x1, y1;
  Dims strides, dil, pad, padR;
  dnnl::memory::desc wei;
  dnnl::primitive_attr attr;
  SampleConv(const Shape& x, const Shape& w, const MsgcConvParams& p)
      : x1{1, x[1], x[2], x[3]}, y1(msgcOutputShape(x1, w, p)), strides{p.strideH, p.strideW}, dil{0, 0},
        pad{p.padH, p.padW},
        padR{(y1[2] - 1) * p.strideH + w[2] - x[2] - p.padH, (y1[3] - 1) * p.strideW + w[3] - x[3] - p.padW},
        wei(toDims(w), dt::f32, tag::any) {
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  }
};

// Its forward, in the activation layouts oneDNN picks when they are channel-blocked (srcBlock, dstBlock: 16, 8),
// else plain (1); with srcHint (16, 8 or 1) in that source layout, the one x comes in. Its threading is planned for
// the OpenMP threads of the creating thread.
dnnl::convolution_forward::primitive_desc forwardPd(const SampleConv& c, dnnl::prop_kind kind, int64_t& srcBlock,
                                                    int64_t& dstBlock, int64_t srcHint = 0) {
  auto makeFwd = [&](const dnnl::memory::desc& src, const dnnl::memory::desc& dst) {
    dnnl::convolution_forward::desc d(kind, dnnl::algorithm::convolution_direct, src, c.wei, dst, c.strides, c.dil,
                                      c.pad, c.padR);
    return dnnl::convolution_forward::primitive_desc(d, c.attr, engine());
  };
  // let oneDNN pick the activation layout; keep it if it is one we can slice per sample (channel-blocked)
  auto pd = makeFwd(srcHint ? blockedDesc(c.x1, srcHint) : dnnl::memory::desc(toDims(c.x1), dt::f32, tag::any),
                    dnnl::memory::desc(toDims(c.y1), dt::f32, tag::any));
  srcBlock = blockOf(pd.src_desc(), c.x1);
  dstBlock = blockOf(pd.dst_desc(), c.y1);
  if (srcBlock == 0 || dstBlock == 0) {
    srcBlock = dstBlock = srcHint ? srcHint : 1;
    pd = makeFwd(blockedDesc(c.x1, srcBlock), blockedDesc(c.y1, dstBlock));
  }
  return pd;
}

}  // namespace

namespace persample {
std::shared_ptr<OneSamplePrims> oneSamplePrims(const Shape& x, const Shape& w, const MsgcConvParams& p, int64_t xBlock) {
  static PrimCache<OneSamplePrims> cache;
  return cache.get(Key().add(x, w, p.strideH, p.strideW, p.padH, p.padW, p.heads, xBlock), [&] {
    auto e = std::make_shared<OneSamplePrims>();
    e->pd = forwardPd(SampleConv(x, w, p), dnnl::prop_kind::forward_inference, e->srcBlock, e->dstBlock, xBlock);
    e->fwd = dnnl::convolution_forward(e->pd);
    e->runs = mapRuns(indexMap(e->pd.weights_desc(), w, p.heads));
    e->wLen = e->pd.weights_desc().get_size() / sizeof(float);
    e->scratchFloats = (e->pd.scratchpad_desc().get_size() + sizeof(float) - 1) / sizeof(float);
    e->gemm = runsJitGemm(e->pd);
    return e;
  });
}

TensorPtr oneSampleForward(const Tensor& x, const Tensor& weight, const float* s, const MsgcConvParams& p) {
  // (the index map is exact in float below 2^24 scale indices)
  if (p.heads * weight.shape[1] >= (int64_t(1) << 24))
    return conv2dForward(x, *scaledWeight(weight, s, p.heads), nullptr, convParams(p));
  // (in the layout x comes in when it is channel-blocked or plain: a reorder of x per call cost more than the conv)
  int64_t xb = channelBlock(x);
  if (xb != 16 && xb != 8) xb = 1;
  const auto op = oneSamplePrims(x.shape, weight.shape, p, xb);
  const OneSamplePrims& o = *op;
  const Shape yShape = msgcOutputShape(x.shape, weight.shape, p);
  TensorPtr y = tensorWithDesc(yShape, blockedDesc(yShape, o.dstBlock));
  dnnl::memory xm = asLayout(x, blockedDesc(x.shape, o.srcBlock));
  const float* wb = static_cast<const float*>(asLayout(weight, o.pd.weights_desc()).get_data_handle());
  Workspace& ws = threadWorkspace();
  float* wbuf = ws.weights.get(o.wLen);
  scaleWeights(wbuf, wb, o.runs, s);
  dnnl::memory wm(o.pd.weights_desc(), engine(), wbuf);
  dnnl::memory sm(o.pd.scratchpad_desc(), engine(), ws.scratch.get(o.scratchFloats + 1));
  dnnl::memory src(o.pd.src_desc(), engine(), xm.get_data_handle()), dst(o.pd.dst_desc(), engine(), y->data());
  SignalHold hold(o.gemm);
  o.fwd.execute(stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, sm}});
  stream().wait();
  return y;
}

std::shared_ptr<PerSamplePrims> perSamplePrims(const Shape& x, const Shape& w, const MsgcConvParams& p) {
  static PrimCache<PerSamplePrims> cache;
  return cache.get(Key().add(x, w, p.strideH, p.strideW, p.padH, p.padW, p.heads), [&] {
    SingleThreaded one(true);  // (OpenMP limited to one thread while the batch-1 primitives are created)
    auto e = std::make_shared<PerSamplePrims>();
    const SampleConv c(x, w, p);
    e->fwdPd = forwardPd(c, dnnl::prop_kind::forward_training, e->srcBlock, e->dstBlock);
    dnnl::memory::desc src = blockedDesc(c.x1, e->srcBlock), dst = blockedDesc(c.y1, e->dstBlock);
    e->fwd = dnnl::convolution_forward(e->fwdPd);
    dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, src, c.wei, dst, c.strides, c.dil,
                                             c.pad, c.padR);
    e->bwdDataPd = dnnl::convolution_backward_data::primitive_desc(bd, c.attr, engine(), e->fwdPd);
    e->bwdData = dnnl::convolution_backward_data(e->bwdDataPd);
    dnnl::convolution_backward_weights::desc bw(dnnl::algorithm::convolution_direct, src, c.wei, dst, c.strides, c.dil,
                                                c.pad, c.padR);
    e->bwdWeightsPd = dnnl::convolution_backward_weights::primitive_desc(bw, c.attr, engine(), e->fwdPd);
    e->bwdWeights = dnnl::convolution_backward_weights(e->bwdWeightsPd);
    const std::vector<int32_t> mapFwd = indexMap(e->fwdPd.weights_desc(), w, p.heads);
    e->runsFwd = mapRuns(mapFwd);
    e->runsBwdData = e->bwdDataPd.weights_desc() == e->fwdPd.weights_desc()
                         ? e->runsFwd
                         : mapRuns(indexMap(e->bwdDataPd.weights_desc(), w, p.heads));
    e->runsBwdWeights = e->bwdWeightsPd.diff_weights_desc() == e->fwdPd.weights_desc()
                            ? e->runsFwd
                            : mapRuns(indexMap(e->bwdWeightsPd.diff_weights_desc(), w, p.heads));
    e->wLen = e->fwdPd.weights_desc().get_size() / sizeof(float);
    e->wdLen = e->bwdDataPd.weights_desc().get_size() / sizeof(float);
    e->wgLen = e->bwdWeightsPd.diff_weights_desc().get_size() / sizeof(float);
    e->gemm = runsJitGemm(e->fwdPd) || runsJitGemm(e->bwdDataPd) || runsJitGemm(e->bwdWeightsPd);
    e->scratchFloats = (std::max({e->fwdPd.scratchpad_desc().get_size(), e->bwdDataPd.scratchpad_desc().get_size(),
                                  e->bwdWeightsPd.scratchpad_desc().get_size()}) + sizeof(float) - 1) / sizeof(float);
    return e;
  });
}

Workspace& threadWorkspace() {
  static thread_local Workspace ws;
  return ws;
}

TensorPtr scaledWeight(const Tensor& weight, const float* s, int64_t G) {
  const int64_t O = weight.shape[0], C = weight.shape[1], kk = weight.shape[2] * weight.shape[3], Og = O / G;
  const float* w = plainData(weight);
  TensorPtr ws = emptyTensor(weight.shape);
  float* d = ws->data();
  for (int64_t o = 0; o < O; o++) {
    const float* so = s + (o / Og) * C;
    for (int64_t c = 0; c < C; c++)
      for (int64_t k = 0; k < kk; k++) d[(o * C + c) * kk + k] = w[(o * C + c) * kk + k] * so[c];
  }
  return ws;
}
}  // namespace persample

namespace {
// Σ a[l]·b[l] over a run: eight float partial sums (vectorizable), added up in double
inline double dotRun(const float* a, const float* b, int64_t len) {
  float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t l = 0;
  for (; l + 8 <= len; l += 8)
    for (int u = 0; u < 8; u++) s[u] += a[l + u] * b[l + u];
  double acc = 0;
  for (int u = 0; u < 8; u++) acc += s[u];
  for (; l < len; l++) acc += (double)a[l] * b[l];
  return acc;
}

bool perSampleByShape(const Tensor& x, const Tensor& weight, const MsgcConvParams& p) {
  const int64_t N = x.shape[0], Og = weight.shape[0] / p.heads;
  if (N == 1) return true;  // one conv at dense speed with W ⊙ scale[0] (the batched path runs G narrow convs)
  if (N < omp_get_max_threads() || weight.shape[0] * weight.shape[1] * p.heads >= (1 << 24)) return false;
  // One head (the companion input gates, spec §2.6): the batched path is then ONE dense conv over the scaled input
  // x ⊙ s, and its backward one dense conv backward plus a pass for gx = s ⊙ U and gs = Σ x ⊙ U. Against it the
  // per-sample path saves those passes over the input (∝ C·H·W a sample) and pays per sample the folded weight
  // and the weight-gradient fold (∝ O·C·k²) and a batch-1 primitive call each way. So per-sample while
  // O·k² <= H·W (the input's map). Backward ms, G = 1, density 0.5, the paths alternating in one process (per-sample
  // / batched; 2 threads, AVX-512): per-sample ahead below the line, 16→16 3×3 at 32² (batch 64) 2.02 / 2.10,
  // 64→128 3×3 stride 2 at 56² (batch 32) 25.4 / 27.7, 128→512 1×1 at 28² 17.9 / 18.9, 512→256 1×1 at 28²
  // 35.8 / 40.3, 256→128 1×1 at 56² 36.0 / 45.5; batched ahead above it, 32→32 3×3 at 16² (batch 64) 2.16 / 2.04,
  // 128→128 3×3 at 28² 47.5 / 46.7, 256→1024 1×1 at 14² 21.0 / 19.1, 1024→512 1×1 at 14² 42.0 / 38.7 (1024→256:
  // 21.7 / 21.3); the masked forward agrees (32→32 at 16²: 0.99 / 0.87, 256→1024 at 14²: 9.4 / 8.3). The rule below,
  // made for heads of G > 1, had sent all of these per-sample.
  if (p.heads == 1) return weight.shape[0] * weight.shape[2] * weight.shape[3] <= x.shape[2] * x.shape[3];
  const Shape y = msgcOutputShape(x.shape, weight.shape, p);
  const int64_t outPixels = y[2] * y[3];
  // 1×1 convs: W'_n costs O·C per sample against O·C·outPixels multiply-adds; per-sample wins on any map while
  // the weight stays within ~1.5 MB (MobileNetV2's projections; backward at batch 32 on 7², per-sample against
  // batched: 960→320 7.7 against 8.5 ms, 576→160 2.4 against 3.9), not for ResNet-50's 512×2048 on 7² maps (1.8x
  // dense time there, where one conv over the scaled input runs at 1.05x) nor 1280→320 (13.5 against 12.2 ms)
  if (weight.shape[2] * weight.shape[3] == 1 && (outPixels >= 14 * 14 || weight.shape[0] * weight.shape[1] <= (3 << 17)))
    return true;
  // k×k (the rule decides the masked forward as well as the backward). Measured with the paths alternating in one
  // process (bench/msgc_backward.js; 2 threads, AVX-512, G = 4): the batched path wastes SIMD lanes when a head has
  // fewer than 16 output channels (0.24-0.40x dense backward at heads of 4-8 on ResNet-20's maps, per-sample
  // 0.82-0.92x), and its G small convs lose on large maps (64 channels at 56²: 0.76x, per-sample 0.98x). Per-sample
  // pays W'_n and the weight-gradient reduction per sample, O·C·k² work that is 1/outPixels of the conv, and loses
  // on small maps with wide heads (512 channels at 7²: 0.48x against 0.88x). Heads of 16 and 32 run per-sample from
  // 14² up (64 channels at 14², batch 64, backward 5.8 against 6.8 ms, forward even; 128 at 28²: 40.4 / 43.5); below
  // 14² heads of 16 are even in the backward at batch 32 (7²: 1.09 per-sample against 1.20 batched) and lose at
  // batch 64 (1.95 / 1.78) and in the forward (7²: 0.85 / 0.76 at batch 64), so they stay batched; heads of 64 and
  // more run batched below 28² (256 channels at 14²: 45.1 per-sample against 41.6).
  if (Og < 16) return outPixels >= 16;
  if (outPixels >= 28 * 28) return true;
  return outPixels >= 14 * 14 && Og < 64;
}
}  // namespace

MaskedImpl msgcMaskedImpl(const Tensor& x, const Tensor& weight, const MsgcConvParams& p) {
  const char* force = std::getenv("MSGC_MASKED_IMPL");  // for benchmarks and tests: batched | grouped | persample
  if (force && std::strcmp(force, "batched") == 0) return MaskedImpl::Batched;
  if (force && std::strcmp(force, "grouped") == 0) return MaskedImpl::Grouped;
  if (force && std::strcmp(force, "persample") == 0) return MaskedImpl::PerSample;
  // The grouped conv needs every head's input and output channels to fill 16-lane blocks (oneDNN's grouped kernels
  // then run near dense speed) and G copies of the input (recomputed in the backward), kept within 128 MB.
  // Measured forward + backward, batch 32, density 0.5, the paths alternating in one process
  // (bench/msgc_backward.js; 2 threads, AVX-512), ms:
  //   64 channels at 8² (ResNet-20/56's last stage)  grouped 0.46+1.02, batched 0.55+1.26, per-sample 0.56+1.30
  //   128 at 14²                                     grouped 5.26+11.33, batched 5.53+11.56, per-sample 5.53+11.91
  //   64 at 14²                                      grouped 1.42+3.10, per-sample 1.40+3.02 (batch 64: 3.04+6.74
  //                                                  against 2.84+6.32)
  //   256 at 14², 512 at 7² (ResNet-18/50)           grouped even with batched (23.2+49.6 / 24.8+49.4;
  //                                                  21.9+49.4 / 21.5+48.8)
  // so it replaces the batched path wherever it fits, and per-sample for heads of 32+ outputs on 14²-27² maps.
  const int64_t G = p.heads, C = x.shape[1], Og = weight.shape[0] / G;
  const bool groupedFits = G > 1 && C % 16 == 0 && Og % 16 == 0 && 4.0 * x.numel() * G <= 128.0 * (1 << 20);
  if (groupedFits && Og >= 32 && weight.shape[2] * weight.shape[3] > 1) {
    const Shape y = msgcOutputShape(x.shape, weight.shape, p);
    if (y[2] * y[3] >= 14 * 14 && y[2] * y[3] < 28 * 28 && x.shape[0] >= omp_get_max_threads()) return MaskedImpl::Grouped;
  }
  if (perSampleByShape(x, weight, p)) return MaskedImpl::PerSample;
  return groupedFits ? MaskedImpl::Grouped : MaskedImpl::Batched;
}

TensorPtr msgcConvForwardPerSample(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p) {
  const int64_t N = x.shape[0], G = p.heads;
  if (N == 1) return oneSampleForward(x, weight, plainData(scale), p);
  const auto psp = perSamplePrims(x.shape, weight.shape, p);
  PerSamplePrims& ps = *psp;
  const Shape yShape = msgcOutputShape(x.shape, weight.shape, p);
  TensorPtr y = tensorWithDesc(yShape, blockedDesc(yShape, ps.dstBlock));
  forEachSampleForward(ps, x, weight, scale, G, y->data(), [](int64_t, int) {});
  return y;
}

MsgcConvGrads msgcConvBackwardPerSample(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                                        const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  const int64_t N = x.shape[0], C = x.shape[1], G = p.heads;
  if (N == 1) {
    // gx = conv_backward_data(gy, W'), gW' = conv_backward_weights(x, gy); gW = gW' ⊙ scale, gscale = Σ gW'·W
    const float* s = plainData(scale);
    Conv2dGrads cg = conv2dBackward(x, *scaledWeight(weight, s, G), gy, convParams(p), needX, needWeight || needScale, false);
    MsgcConvGrads r;
    r.x = cg.x;
    if (needWeight || needScale) {
      const int64_t O = weight.shape[0], kk = weight.shape[2] * weight.shape[3], Og = O / G;
      const float* gwp = plainData(*cg.weight);
      const float* w = plainData(weight);
      if (needWeight) r.weight = emptyTensor(weight.shape);
      std::vector<double> gs(needScale ? G * C : 0, 0.0);
      for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < C; c++) {
          const float sc = s[(o / Og) * C + c];
          double acc = 0;
          for (int64_t k = 0; k < kk; k++) {
            const int64_t j = (o * C + c) * kk + k;
            if (needWeight) r.weight->data()[j] = gwp[j] * sc;
            acc += (double)gwp[j] * w[j];
          }
          if (needScale) gs[(o / Og) * C + c] += acc;
        }
      if (needScale) {
        r.scale = emptyTensor(scale.shape);
        for (int64_t k = 0; k < G * C; k++) r.scale->data()[k] = (float)gs[k];
      }
    }
    return r;
  }
  const auto psp = perSamplePrims(x.shape, weight.shape, p);
  PerSamplePrims& ps = *psp;
  MsgcConvGrads r;
  const float* s = plainData(scale);
  const float* gyp = static_cast<const float*>(asLayout(gy, blockedDesc(gy.shape, ps.dstBlock)).get_data_handle());
  const int64_t xStride = ps.fwdPd.src_desc().get_size() / sizeof(float), yStride = ps.fwdPd.dst_desc().get_size() / sizeof(float);
  const float* xp = nullptr;
  const float* wData = nullptr;  // W in the bwd-data weights layout
  const float* wGrad = nullptr;  // W in the bwd-weights diff-weights layout (for the scale gradient)
  float* gxp = nullptr;
  if (needX) {
    r.x = tensorWithDesc(x.shape, blockedDesc(x.shape, ps.srcBlock));
    gxp = r.x->data();
    wData = static_cast<const float*>(asLayout(weight, ps.bwdDataPd.weights_desc()).get_data_handle());
  }
  const bool needWGrad = needWeight || needScale;
  // the input activation's derivative (p.inputAct) on each sample's gx right after its data gradient, while the
  // sample's gx is in cache (and its x comes into cache for the weight gradient that follows)
  const bool act = needX && p.inputAct >= 0;
  const float actHi = inputActHi(p.inputAct);
  if (needWGrad || act) {
    xp = static_cast<const float*>(asLayout(x, blockedDesc(x.shape, ps.srcBlock)).get_data_handle());
    if (needScale) wGrad = static_cast<const float*>(asLayout(weight, ps.bwdWeightsPd.diff_weights_desc()).get_data_handle());
  }
  if (needScale) r.scale = emptyTensor(scale.shape);
  const size_t wdLen = ps.wdLen, wgLen = ps.wgLen;
  const int nthr = omp_get_max_threads();
  std::vector<float*> accs(needWeight ? nthr : 0, nullptr);  // each thread's weight-gradient sum (its workspace)
  float* gsp = needScale ? r.scale->data() : nullptr;
#pragma omp parallel num_threads(nthr)
  {
    const int t = omp_get_thread_num();
    SignalHold hold(ps.gemm);
    dnnl::stream st(engine());
    Workspace& ws = threadWorkspace();
    float* scratch = ws.scratch.get(ps.scratchFloats + 1);
    dnnl::memory smD(ps.bwdDataPd.scratchpad_desc(), engine(), scratch);
    dnnl::memory smW(ps.bwdWeightsPd.scratchpad_desc(), engine(), scratch);
    dnnl::memory xm(ps.fwdPd.src_desc(), engine(), nullptr), gym(ps.fwdPd.dst_desc(), engine(), nullptr),
        gxm(ps.fwdPd.src_desc(), engine(), nullptr);
    dnnl::memory wm, gwm;
    float* wbuf = nullptr;
    float* gw = nullptr;
    if (needX) {
      wbuf = ws.weights.get(wdLen);
      wm = dnnl::memory(ps.bwdDataPd.weights_desc(), engine(), wbuf);
    }
    if (needWGrad) {
      gw = ws.gradWeights.get(wgLen);
      gwm = dnnl::memory(ps.bwdWeightsPd.diff_weights_desc(), engine(), gw);
    }
    float* a = nullptr;
    if (needWeight) {
      a = accs[t] = ws.acc.get(wgLen);
      std::memset(a, 0, wgLen * sizeof(float));
    }
    if (needScale) ws.gscale.resize(G * C);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float* sn = s + n * G * C;
      gym.set_data_handle(const_cast<float*>(gyp + n * yStride));
      if (needX) {
        scaleWeights(wbuf, wData, ps.runsBwdData, sn);
        gxm.set_data_handle(gxp + n * xStride);
        ps.bwdData.execute(st, {{DNNL_ARG_DIFF_DST, gym}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, gxm},
                                {DNNL_ARG_SCRATCHPAD, smD}});
        if (act) inputActBackward(gxp + n * xStride, xp + n * xStride, xStride, actHi);
      }
      if (needWGrad) {
        xm.set_data_handle(const_cast<float*>(xp + n * xStride));
        ps.bwdWeights.execute(st, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, gym}, {DNNL_ARG_DIFF_WEIGHTS, gwm},
                                   {DNNL_ARG_SCRATCHPAD, smW}});
        // one pass over gW'_n, run by run (a run's values are still in L1 for its second use): the weight
        // gradient's sum and the scale gradient
        double* gs = needScale ? ws.gscale.data() : nullptr;
        if (gs) std::fill(ws.gscale.begin(), ws.gscale.end(), 0.0);
        for (const MapRun& run : ps.runsBwdWeights) {
          if (run.k < 0) continue;
          const float* gr = gw + run.j0;
          if (run.step) {
            if (a) {
              float* ar = a + run.j0;
              const float* sr = sn + run.k;
              for (int64_t l = 0; l < run.len; l++) ar[l] += gr[l] * sr[l];
            }
            if (gs) {
              const float* wr = wGrad + run.j0;
              double* gk = gs + run.k;
              for (int64_t l = 0; l < run.len; l++) gk[l] += (double)gr[l] * wr[l];
            }
          } else {
            if (a) {
              float* ar = a + run.j0;
              const float sc = sn[run.k];
              for (int64_t l = 0; l < run.len; l++) ar[l] += gr[l] * sc;
            }
            if (gs) gs[run.k] += dotRun(gr, wGrad + run.j0, run.len);
          }
        }
        if (gs)
          for (int64_t k = 0; k < G * C; k++) gsp[n * G * C + k] = (float)gs[k];
      }
    }
  }
  r.actApplied = act;
  if (needWeight) {
    r.weight = tensorWithDesc(weight.shape, ps.bwdWeightsPd.diff_weights_desc());
    float* gw = r.weight->data();
    std::memcpy(gw, accs[0], wgLen * sizeof(float));
    for (int t = 1; t < nthr; t++) {
      const float* a = accs[t];
      if (!a) continue;  // (a thread the team did not get)
      for (size_t j = 0; j < wgLen; j++) gw[j] += a[j];
    }
  }
  return r;
}

}  // namespace msgc
