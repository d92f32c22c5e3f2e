// conv.cc: 2-D convolution forward and backward on oneDNN. Primitives are created with format `any`, so oneDNN
// picks its blocked layout and JIT kernels; outputs stay in that layout, inputs are reordered (and cached on
// their storage) only when they arrive in another one. Primitive descriptors are cached by shape.
#include <cmath>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

struct ConvPrims {
  dnnl::convolution_forward::primitive_desc fwdPd;
  dnnl::convolution_forward fwd;
  bool haveBwd = false;
  dnnl::convolution_backward_data::primitive_desc bwdDataPd;
  dnnl::convolution_backward_data bwdData;
  dnnl::convolution_backward_weights::primitive_desc bwdWeightsPd;
  dnnl::convolution_backward_weights bwdWeights;
  Dims weightDims;
  bool fwdGemm = false, bwdDataGemm = false, bwdWeightsGemm = false;  // runsJitGemm
};

Dims weightDimsFor(const Shape& w, int64_t groups) {
  if (groups == 1) return toDims(w);
  return Dims{groups, w[0] / groups, w[1], w[2], w[3]};
}

Shape outputShape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  int64_t oh = (x[2] + 2 * p.padH - p.dilationH * (w[2] - 1) - 1) / p.strideH + 1;
  int64_t ow = (x[3] + 2 * p.padW - p.dilationW * (w[3] - 1) - 1) / p.strideW + 1;
  return {x[0], w[0], oh, ow};
}

// Memory descriptors (format `any`) and geometry shared by every primitive of one conv shape.
struct ConvDescs {
  dnnl::memory::desc src, dst, wei, bia;
  Dims strides, dil, pad, padR;
  ConvDescs(const Shape& x, const Shape& w, const Conv2dParams& p) {
    Shape y = outputShape(x, w, p);
    src = dnnl::memory::desc(toDims(x), dt::f32, tag::any);
    dst = dnnl::memory::desc(toDims(y), dt::f32, tag::any);
    wei = dnnl::memory::desc(weightDimsFor(w, p.groups), dt::f32, tag::any);
    bia = dnnl::memory::desc(Dims{w[0]}, dt::f32, tag::any);
    strides = {p.strideH, p.strideW};
    dil = {p.dilationH - 1, p.dilationW - 1};
    pad = {p.padH, p.padW};
    // right padding so that oneDNN's output size equals the floor formula of outputShape
    padR = {(y[2] - 1) * p.strideH + p.dilationH * (w[2] - 1) + 1 - x[2] - p.padH,
            (y[3] - 1) * p.strideW + p.dilationW * (w[3] - 1) + 1 - x[3] - p.padW};
  }
};

std::string convKey(const Shape& x, const Shape& w, const Conv2dParams& p) {
  return Key().add(x, w, p.strideH, p.strideW, p.padH, p.padW, p.dilationH, p.dilationW, p.groups).str();
}

std::shared_ptr<ConvPrims> prims(const Shape& x, const Shape& w, bool hasBias, const Conv2dParams& p) {
  static PrimCache<ConvPrims> cache;
  const std::string key = Key().add(convKey(x, w, p), hasBias).str();
  return cache.get(key, [&] {
    auto e = std::make_shared<ConvPrims>();
    e->weightDims = weightDimsFor(w, p.groups);
    const ConvDescs d(x, w, p);
    auto fwdDesc = hasBias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                              dnnl::algorithm::convolution_direct, d.src, d.wei, d.bia,
                                                              d.dst, d.strides, d.dil, d.pad, d.padR)
                           : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                              dnnl::algorithm::convolution_direct, d.src, d.wei, d.dst,
                                                              d.strides, d.dil, d.pad, d.padR);
    e->fwdPd = dnnl::convolution_forward::primitive_desc(fwdDesc, engine());
    e->fwd = dnnl::convolution_forward(e->fwdPd);
    e->fwdGemm = runsJitGemm(e->fwdPd);
    return e;
  });
}

void ensureBackward(ConvPrims& c, const Shape& x, const Shape& w, bool hasBias, const Conv2dParams& p) {
  if (c.haveBwd) return;
  const ConvDescs d(x, w, p);
  dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, d.src, d.wei, d.dst, d.strides, d.dil,
                                           d.pad, d.padR);
  c.bwdDataPd = dnnl::convolution_backward_data::primitive_desc(bd, engine(), c.fwdPd);
  c.bwdData = dnnl::convolution_backward_data(c.bwdDataPd);
  c.bwdDataGemm = runsJitGemm(c.bwdDataPd);
  auto bwDesc = hasBias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, d.src, d.wei,
                                                                     d.bia, d.dst, d.strides, d.dil, d.pad, d.padR)
                        : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, d.src, d.wei,
                                                                     d.dst, d.strides, d.dil, d.pad, d.padR);
  c.bwdWeightsPd = dnnl::convolution_backward_weights::primitive_desc(bwDesc, engine(), c.fwdPd);
  c.bwdWeights = dnnl::convolution_backward_weights(c.bwdWeightsPd);
  c.bwdWeightsGemm = runsJitGemm(c.bwdWeightsPd);
  c.haveBwd = true;
}

// Inference primitives with a bias and an activation post-op (act: -1 none, 0 ReLU, 1 ReLU6).
struct EvalPrims {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward fwd;
  bool gemm = false;  // runsJitGemm
};

std::shared_ptr<EvalPrims> evalPrims(const Shape& x, const Shape& w, const Conv2dParams& p, int act) {
  static PrimCache<EvalPrims> cache;
  const std::string key = convKey(x, w, p) + ":act" + std::to_string(act);
  return cache.get(key, [&] {
    auto e = std::make_shared<EvalPrims>();
    const ConvDescs cd(x, w, p);
    // (forward_training, as the other convs: with forward_inference oneDNN picks NHWC kernels here, and every
    // neighbouring op would pay a reorder from and to the blocked layout)
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, cd.src,
                                      cd.wei, cd.bia, cd.dst, cd.strides, cd.dil, cd.pad, cd.padR);
    dnnl::primitive_attr attr;
    if (act >= 0) {
      dnnl::post_ops po;
      if (act == (int)Activation::ReLU) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      else po.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, 6.f);
      attr.set_post_ops(po);
    }
    e->pd = dnnl::convolution_forward::primitive_desc(d, attr, engine());
    e->fwd = dnnl::convolution_forward(e->pd);
    e->gemm = runsJitGemm(e->pd);
    return e;
  });
}

}  // namespace

TensorPtr conv2dBnActEval(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p,
                          const Tensor& runningMean, const Tensor& runningVar, const Tensor* gamma, const Tensor* beta,
                          float eps, int act) {
  // folded weight w'[o] = w[o]·a[o] and bias b'[o] = beta[o] + (bias[o] - mean[o])·a[o], a = gamma / sqrt(var + eps),
  // cached on the weight's storage (dropped when the weight is written; rebuilt when a BN parameter is)
  Key tagKey;
  for (const Tensor* t : {bias, &runningMean, &runningVar, gamma, beta}) addVersionTag(tagKey, t);
  tagKey.add(eps);
  const std::string& tagStr = tagKey.str();
  auto& cache = weight.storage->derived;
  auto wIt = cache.find("bnfold:weight");
  auto bIt = cache.find("bnfold:bias");
  const uint64_t version = weight.storage->version;
  if (wIt == cache.end() || bIt == cache.end() || wIt->second.version != version || wIt->second.tag != tagStr ||
      bIt->second.version != version || bIt->second.tag != tagStr) {
    const int64_t O = weight.shape[0], per = weight.numel() / O;
    const float* w = plainData(weight);
    const float* mu = plainData(runningMean);
    const float* var = plainData(runningVar);
    const float* g = gamma ? plainData(*gamma) : nullptr;
    const float* b = beta ? plainData(*beta) : nullptr;
    const float* cb = bias ? plainData(*bias) : nullptr;
    auto ws = std::make_shared<Storage>((size_t)(O * per) * sizeof(float), weight.device());
    auto bs = std::make_shared<Storage>((size_t)O * sizeof(float), weight.device());
    for (int64_t o = 0; o < O; o++) {
      const float a = (g ? g[o] : 1.f) / std::sqrt(var[o] + eps);
      for (int64_t k = 0; k < per; k++) ws->data[o * per + k] = w[o * per + k] * a;
      bs->data[o] = (b ? b[o] : 0.f) + ((cb ? cb[o] : 0.f) - mu[o]) * a;
    }
    cache["bnfold:weight"] = Storage::Derived{version, ws, tagStr};
    cache["bnfold:bias"] = Storage::Derived{version, bs, tagStr};
    wIt = cache.find("bnfold:weight");
    bIt = cache.find("bnfold:bias");
  }
  const Tensor wf(weight.shape, wIt->second.copy), bf(Shape{weight.shape[0]}, bIt->second.copy);
  const auto cp = evalPrims(x.shape, weight.shape, p, act);
  EvalPrims& c = *cp;
  TensorPtr y = tensorWithDesc(outputShape(x.shape, weight.shape, p), c.pd.dst_desc());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, asLayout(x, c.pd.src_desc())},
                                             {DNNL_ARG_WEIGHTS, asLayout(wf, c.pd.weights_desc())},
                                             {DNNL_ARG_BIAS, asLayout(bf, c.pd.bias_desc())},
                                             {DNNL_ARG_DST, memoryOf(*y)}};
  SignalHold hold(c.gemm);
  c.fwd.execute(stream(), args);
  stream().wait();
  return y;
}

TensorPtr conv2dForward(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p) {
  const auto cp = prims(x.shape, weight.shape, bias != nullptr, p);
  ConvPrims& c = *cp;
  Shape yShape = outputShape(x.shape, weight.shape, p);
  TensorPtr y = tensorWithDesc(yShape, c.fwdPd.dst_desc());
  dnnl::memory src = asLayout(x, c.fwdPd.src_desc());
  dnnl::memory wei = asLayout(weight, c.fwdPd.weights_desc());
  dnnl::memory dst = memoryOf(*y);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  if (bias) args[DNNL_ARG_BIAS] = asLayout(*bias, c.fwdPd.bias_desc());
  SignalHold hold(c.fwdGemm);
  c.fwd.execute(stream(), args);
  stream().wait();
  return y;
}

Conv2dGrads conv2dBackward(const Tensor& x, const Tensor& weight, const Tensor& gy, const Conv2dParams& p,
                           bool needX, bool needWeight, bool needBias) {
  Conv2dGrads g;
  const auto cp = prims(x.shape, weight.shape, needBias, p);
  ConvPrims& c = *cp;
  ensureBackward(c, x.shape, weight.shape, needBias, p);
  if (needX) {
    g.x = tensorWithDesc(x.shape, c.bwdDataPd.diff_src_desc());
    dnnl::memory dd = asLayout(gy, c.bwdDataPd.diff_dst_desc());
    dnnl::memory w = asLayout(weight, c.bwdDataPd.weights_desc());
    SignalHold hold(c.bwdDataGemm);
    c.bwdData.execute(stream(), {{DNNL_ARG_DIFF_DST, dd}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, memoryOf(*g.x)}});
  }
  if (needWeight || needBias) {
    TensorPtr gw = tensorWithDesc(weight.shape, c.bwdWeightsPd.diff_weights_desc());
    dnnl::memory src = asLayout(x, c.bwdWeightsPd.src_desc());
    dnnl::memory dd = asLayout(gy, c.bwdWeightsPd.diff_dst_desc());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dd}, {DNNL_ARG_DIFF_WEIGHTS, memoryOf(*gw)}};
    TensorPtr gb;
    if (needBias) {
      gb = tensorWithDesc({weight.shape[0]}, c.bwdWeightsPd.diff_bias_desc());
      args[DNNL_ARG_DIFF_BIAS] = memoryOf(*gb);
    }
    {
      SignalHold hold(c.bwdWeightsGemm);
      c.bwdWeights.execute(stream(), args);
    }
    if (needWeight) g.weight = gw;
    g.bias = gb;
  }
  stream().wait();
  return g;
}

}  // namespace msgc
