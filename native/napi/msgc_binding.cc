// msgc_binding.cc: the MSGC convolution and gate bindings, with their shape checks.
#include <cmath>

#include "common.h"
#include "msgc/cuda.h"
#include "msgc/ops.h"

namespace msgc {
namespace napi {

namespace {
constexpr int64_t kMaxInt = int64_t(1) << 30;

// maskStats of gates on either device (from the GPU: a copy to the host, which waits for the gates' kernels)
MaskStats maskStatsAnywhere(const Tensor& m) {
  if (m.device() == Device::CPU) return maskStats(m);
  TensorPtr host = emptyTensor(m.shape);
  cuda::copyDeviceToHost(host->data(), m.data(), (size_t)m.numel() * sizeof(float));
  return maskStats(*host);
}

struct MsgcArgs {
  TensorPtr x, weight, scale;
  MsgcConvParams p;
  msgc::Shape y;
};

// x, weight, scale, stride[2], padding[2], heads
MsgcArgs readMsgc(const Napi::CallbackInfo& info, const char* op) {
  MsgcArgs a;
  a.x = tensorArg(info, 0, op, "x");
  a.weight = tensorArg(info, 1, op, "weight");
  a.scale = tensorArg(info, 2, op, "scale");
  auto stride = intListArg(info, 3, op, "stride", 2, 1, kMaxInt);
  auto pad = intListArg(info, 4, op, "padding", 2, 0, kMaxInt);
  int64_t G = intArg(info, 5, op, "heads", 1, kMaxInt);
  expectDims(*a.x, 4, op, "x", "[N, C, H, W]");
  expectDims(*a.weight, 4, op, "weight", "[outChannels, inChannels, k, k]");
  expectDims(*a.scale, 3, op, "scale", "[N, heads, inChannels]");
  expectSameDevice(*a.x, *a.weight, op, "x", "weight");
  expectSameDevice(*a.x, *a.scale, op, "x", "scale");
  const msgc::Shape& xs = a.x->shape;
  const msgc::Shape& ws = a.weight->shape;
  // (an empty batch is allowed, as in PyTorch: the handlers return empty outputs and zero weight gradients)
  MSGC_CHECK(xs[1] > 0, op, ": x has an empty channel dimension: ", shapeString(xs));
  MSGC_CHECK(ws[1] == xs[1], op, ": weight has shape ", shapeString(ws), ", expected ", xs[1],
             " input channels in dim 1 (every head sees all inputs) for x of shape ", shapeString(xs));
  MSGC_CHECK(ws[0] > 0 && ws[2] > 0 && ws[3] > 0, op, ": weight has an empty dimension: ", shapeString(ws));
  MSGC_CHECK(ws[0] % G == 0, op, ": outChannels (", ws[0], ") must be divisible by heads (", G, ")");
  expectShape(*a.scale, {xs[0], G, xs[1]}, op, "scale");
  MSGC_CHECK(xs[2] + 2 * pad[0] >= ws[2] && xs[3] + 2 * pad[1] >= ws[3], op, ": the kernel (", ws[2], "x", ws[3],
             ") is larger than the padded input (", xs[2] + 2 * pad[0], "x", xs[3] + 2 * pad[1], ")");
  a.p.strideH = stride[0]; a.p.strideW = stride[1];
  a.p.padH = pad[0]; a.p.padW = pad[1];
  a.p.heads = G;
  expectWorkBound((double)xs[0] * ws[0] * ws[1] * ws[2] * ws[3] * ((double)(xs[2] + 2 * pad[0] - ws[2]) / stride[0] + 1) *
                      ((double)(xs[3] + 2 * pad[1] - ws[3]) / stride[1] + 1),
                  op, "this convolution");
  a.y = {xs[0], ws[0], (xs[2] + 2 * pad[0] - ws[2]) / stride[0] + 1, (xs[3] + 2 * pad[1] - ws[3]) / stride[1] + 1};
  return a;
}
}  // namespace

static Napi::Value MsgcConv2dForward(const Napi::CallbackInfo& info) {
  MsgcArgs a = readMsgc(info, "msgcConv2d");
  if (a.y[0] == 0) return wrapTensor(info.Env(), emptyTensor(a.y, a.x->device()));
  if (implFor(*a.x) == Impl::Cuda) return wrapTensor(info.Env(), cuda::msgcConvForward(*a.x, *a.weight, *a.scale, a.p, false));
  if (implFor(*a.x) == Impl::Emulated)
    return wrapTensor(info.Env(), cuda::emulated::msgcConvForward(*a.x, *a.weight, *a.scale, a.p, false));
  return wrapTensor(info.Env(), msgcConvForward(*a.x, *a.weight, *a.scale, a.p));
}

// the same arguments; runs only the selected channels (forward only, for inference)
// (optional 7th argument outputMask [N, K, outChannels]: only outputs some row selects are computed, the rest are 0)
static Napi::Value MsgcConv2dForwardGathered(const Napi::CallbackInfo& info) {
  const char* op = "msgcConv2d";
  MsgcArgs a = readMsgc(info, op);
  TensorPtr outMask = info.Length() > 6 ? optionalTensorArg(info, 6, op, "outputMask") : nullptr;
  if (outMask) {
    expectDims(*outMask, 3, op, "outputMask", "[N, K, outChannels]");
    expectSameDevice(*a.x, *outMask, op, "x", "outputMask");
    MSGC_CHECK(outMask->shape[0] == a.y[0] && outMask->shape[1] > 0 && outMask->shape[2] == a.y[1], op,
               ": outputMask has shape ", shapeString(outMask->shape), ", expected [", a.y[0], ", K >= 1, ", a.y[1], "]");
  }
  if (a.y[0] == 0) return wrapTensor(info.Env(), emptyTensor(a.y, a.x->device()));
  if (implFor(*a.x) == Impl::Cuda)
    return wrapTensor(info.Env(), cuda::msgcConvForward(*a.x, *a.weight, *a.scale, a.p, true, outMask.get()));
  if (implFor(*a.x) == Impl::Emulated)
    return wrapTensor(info.Env(), cuda::emulated::msgcConvForward(*a.x, *a.weight, *a.scale, a.p, true, outMask.get()));
  return wrapTensor(info.Env(), msgcConvForwardGathered(*a.x, *a.weight, *a.scale, a.p, outMask.get()));
}

namespace {
// An eval BatchNorm + activation: runningMean, runningVar, gamma|null, beta|null, eps, activation at info[first ..
// first + 5], the vectors of C channels beside x (bn.residual left null)
struct BnArgs {
  TensorPtr rm, rv, gm, be;
  FusedBnAct bn;
};
BnArgs readBn(const Napi::CallbackInfo& info, size_t first, const char* op, int64_t C, const Tensor& x) {
  BnArgs b;
  b.rm = tensorArg(info, first, op, "runningMean");
  b.rv = tensorArg(info, first + 1, op, "runningVar");
  b.gm = optionalTensorArg(info, first + 2, op, "gamma");
  b.be = optionalTensorArg(info, first + 3, op, "beta");
  expectChannelVector(b.rm, C, op, "runningMean", x);
  expectChannelVector(b.rv, C, op, "runningVar", x);
  expectChannelVector(b.gm, C, op, "gamma", x);
  expectChannelVector(b.be, C, op, "beta", x);
  const double eps = numberArg(info, first + 4, op, "eps");
  MSGC_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  const int64_t act = intArg(info, first + 5, op, "activation", -1, (int64_t)Activation::ReLU6);
  b.bn.runningMean = b.rm.get();
  b.bn.runningVar = b.rv.get();
  b.bn.weight = b.gm.get();
  b.bn.bias = b.be.get();
  b.bn.eps = (float)eps;
  b.bn.act = (int)act;
  return b;
}

// the fused calls' arguments after readMsgc's six: outputMask|null, runningMean, runningVar, gamma|null,
// beta|null, eps, activation, residual|null, pooled[, masked]
struct MsgcBnArgs {
  MsgcArgs a;
  TensorPtr outMask, r, inMask;
  BnArgs bnArgs;
  FusedBnAct bn;
  Compaction compact;
  bool pooled = false, masked = false;
};

MsgcBnArgs readMsgcBn(const Napi::CallbackInfo& info, const char* op) {
  MsgcBnArgs m;
  m.a = readMsgc(info, op);
  const MsgcArgs& a = m.a;
  m.outMask = optionalTensorArg(info, 6, op, "outputMask");
  if (m.outMask) {
    expectDims(*m.outMask, 3, op, "outputMask", "[N, K, outChannels]");
    expectSameDevice(*a.x, *m.outMask, op, "x", "outputMask");
    MSGC_CHECK(m.outMask->shape[0] == a.y[0] && m.outMask->shape[1] > 0 && m.outMask->shape[2] == a.y[1], op,
               ": outputMask has shape ", shapeString(m.outMask->shape), ", expected [", a.y[0], ", K >= 1, ", a.y[1], "]");
  }
  m.bnArgs = readBn(info, 7, op, a.y[1], *a.x);
  m.r = optionalTensorArg(info, 13, op, "residual");
  if (m.r) {
    expectShape(*m.r, a.y, op, "residual");
    expectSameDevice(*a.x, *m.r, op, "x", "residual");
  }
  m.pooled = boolArg(info, 14, op, "pooled");
  // (optional 16th argument masked: the masked execution instead of the gathered one; no outputMask then)
  m.masked = info.Length() > 15 && boolArg(info, 15, op, "masked");
  MSGC_CHECK(!(m.masked && m.outMask), op, ": the masked execution takes no outputMask");
  // (optional 17th and 18th: compactOutput, inputMask|null; msgc/ops.h Compaction: gathered, on the CPU only)
  m.compact.output = info.Length() > 16 && boolArg(info, 16, op, "compactOutput");
  m.inMask = info.Length() > 17 ? optionalTensorArg(info, 17, op, "inputMask") : nullptr;
  if (m.compact.output || m.inMask) {
    MSGC_CHECK(!m.masked && a.x->device() == Device::CPU, op, ": compacted tensors are for the gathered execution on the CPU");
    MSGC_CHECK(!m.compact.output || (m.outMask && a.p.heads == 1 && !m.r && !m.pooled), op,
               ": a compacted output needs one head and an outputMask, and takes no residual or pooled means");
  }
  if (m.inMask) {
    expectDims(*m.inMask, 3, op, "inputMask", "[N, K, inChannels]");
    expectSameDevice(*a.x, *m.inMask, op, "x", "inputMask");
    MSGC_CHECK(m.inMask->shape[0] == a.x->shape[0] && m.inMask->shape[1] > 0 && m.inMask->shape[2] == a.x->shape[1], op,
               ": inputMask has shape ", shapeString(m.inMask->shape), ", expected [", a.x->shape[0], ", K >= 1, ",
               a.x->shape[1], "]");
    m.compact.inputMask = m.inMask.get();
  }
  m.bn = m.bnArgs.bn;
  m.bn.residual = m.r.get();
  return m;
}
}  // namespace

// msgcConv2dBnActEval(x, weight, scale, stride, padding, heads, outputMask|null, runningMean, runningVar,
//                     gamma|null, beta|null, eps, activation, residual|null, pooled[, masked]) -> y, or [y, means] if
// pooled: act(batchNorm_eval(gathered msgcConv2d) + residual) with the BN fused into the gathered kernels' output
// (masked: the masked execution, the BN applied per sample in cache where it runs per-sample convs)
static Napi::Value MsgcConv2dBnActEval(const Napi::CallbackInfo& info) {
  MsgcBnArgs m = readMsgcBn(info, "msgcConv2dBnAct");
  const MsgcArgs& a = m.a;
  const FusedBnAct& bn = m.bn;
  const bool pooled = m.pooled, masked = m.masked;
  const TensorPtr& outMask = m.outMask;
  TensorPtr means;
  if (a.y[0] == 0) {
    TensorPtr y = emptyTensor(a.y, a.x->device());
    if (!pooled) return wrapTensor(info.Env(), y);
    return tensorList(info.Env(), {y, emptyTensor({0, a.y[1], 1, 1}, a.x->device())});
  }
  const Impl impl = implFor(*a.x);
  TensorPtr y = impl == Impl::Cuda
                   ? cuda::msgcConvForward(*a.x, *a.weight, *a.scale, a.p, !masked, outMask.get(), &bn, pooled ? &means : nullptr)
               : impl == Impl::Emulated
                   ? cuda::emulated::msgcConvForward(*a.x, *a.weight, *a.scale, a.p, !masked, outMask.get(), &bn, pooled ? &means : nullptr)
               : masked ? msgcConvForwardMaskedBn(*a.x, *a.weight, *a.scale, a.p, bn, pooled ? &means : nullptr)
                       : msgcConvForwardGathered(*a.x, *a.weight, *a.scale, a.p, outMask.get(), &bn, pooled ? &means : nullptr,
                                                 m.compact.output || m.compact.inputMask ? &m.compact : nullptr);
  if (!pooled) return wrapTensor(info.Env(), y);
  return tensorList(info.Env(), {y, means});
}

// depthwiseConv2dBnActCompactEval(x, mask, weight, runningMean, runningVar, gamma|null, beta|null, eps, activation,
//                                 stride, padding) -> y: the eval depthwise conv + BN (+ act) over x compacted by mask
// [N, K, C] (msgc/ops.h Compaction), only on the occupied channel slots; y compacted alike
static Napi::Value DepthwiseConv2dBnActCompactEval(const Napi::CallbackInfo& info) {
  const char* op = "depthwiseBnActCompact";
  TensorPtr x = tensorArg(info, 0, op, "x");
  TensorPtr mask = tensorArg(info, 1, op, "mask");
  TensorPtr w = tensorArg(info, 2, op, "weight");
  auto stride = intListArg(info, 9, op, "stride", 2, 1, kMaxInt);
  auto pad = intListArg(info, 10, op, "padding", 2, 0, kMaxInt);
  expectDims(*x, 4, op, "x", "[N, C, H, W]");
  expectDims(*mask, 3, op, "mask", "[N, K, C]");
  expectDims(*w, 4, op, "weight", "[C, 1, kh, kw]");
  MSGC_CHECK(x->device() == Device::CPU, op, ": compacted tensors are for the CPU, got x on ", deviceName(x->device()));
  expectSameDevice(*x, *mask, op, "x", "mask");
  expectSameDevice(*x, *w, op, "x", "weight");
  const msgc::Shape& xs = x->shape;
  const msgc::Shape& ws = w->shape;
  MSGC_CHECK(mask->shape[0] == xs[0] && mask->shape[1] > 0 && mask->shape[2] == xs[1], op, ": mask has shape ",
             shapeString(mask->shape), ", expected [", xs[0], ", K >= 1, ", xs[1], "]");
  MSGC_CHECK(ws[0] == xs[1] && ws[1] == 1 && ws[2] > 0 && ws[3] > 0, op, ": weight has shape ", shapeString(ws),
             ", expected [", xs[1], ", 1, kh, kw] (one filter per channel)");
  MSGC_CHECK(xs[2] + 2 * pad[0] >= ws[2] && xs[3] + 2 * pad[1] >= ws[3], op, ": the kernel (", ws[2], "x", ws[3],
             ") is larger than the padded input (", xs[2] + 2 * pad[0], "x", xs[3] + 2 * pad[1], ")");
  MSGC_CHECK(pad[0] < ws[2] && pad[1] < ws[3], op, ": padding (", pad[0], ", ", pad[1], ") must be smaller than the kernel (",
             ws[2], "x", ws[3], ")");
  const BnArgs b = readBn(info, 3, op, xs[1], *x);
  expectWorkBound((double)xs[0] * xs[1] * ws[2] * ws[3] * ((double)(xs[2] + 2 * pad[0] - ws[2]) / stride[0] + 1) *
                      ((double)(xs[3] + 2 * pad[1] - ws[3]) / stride[1] + 1), op, "this convolution");
  return wrapTensor(info.Env(), depthwiseBnActCompactEval(*x, *mask, *w, b.bn, stride[0], stride[1], pad[0], pad[1]));
}

// msgcConv2dBackward(x, weight, scale, stride, padding, heads, gy, needX, needWeight, needScale[, inputAct]) ->
// [gx, gw, gs]; inputAct (-1 none, 0 ReLU, 1 ReLU6; CPU): x is that activation's output, and gx is taken through it
// (MsgcConvParams::inputAct)
static Napi::Value MsgcConv2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "msgcConv2d backward";
  MsgcArgs a = readMsgc(info, op);
  TensorPtr gy = tensorArg(info, 6, op, "gradOutput");
  expectShape(*gy, a.y, op, "gradOutput");
  const bool needX = boolArg(info, 7, op, "needX"), needW = boolArg(info, 8, op, "needWeight"),
             needS = boolArg(info, 9, op, "needScale");
  if (info.Length() > 10 && !info[10].IsUndefined()) {
    a.p.inputAct = (int)intArg(info, 10, op, "inputAct", -1, 1);
    MSGC_CHECK(a.p.inputAct < 0 || a.x->device() == Device::CPU, op,
               ": inputAct (the input activation's backward fused into gx) runs on the cpu only; x is on ",
               deviceName(a.x->device()));
  }
  MsgcConvGrads g;
  if (a.y[0] == 0) {
    // an empty batch: empty input and scale gradients, a zero weight gradient
    if (needX) g.x = emptyTensor(a.x->shape, a.x->device());
    if (needW) g.weight = zerosTensor(a.weight->shape, a.x->device());
    if (needS) g.scale = emptyTensor(a.scale->shape, a.x->device());
  } else {
    g = msgcConvBackward(*a.x, *a.weight, *a.scale, *gy, a.p, needX, needW, needS);
  }
  Napi::Array out = Napi::Array::New(info.Env(), 3);
  out.Set(0u, wrapTensor(info.Env(), g.x));
  out.Set(1u, wrapTensor(info.Env(), g.weight));
  out.Set(2u, wrapTensor(info.Env(), g.scale));
  return out;
}

// gateForward(logits, temperature, training, seed) -> [mask, soft|null]
static Napi::Value GateForward(const Napi::CallbackInfo& info) {
  const char* op = "gate";
  TensorPtr l = tensorArg(info, 0, op, "logits");
  double t = numberArg(info, 1, op, "temperature");
  MSGC_CHECK(t > 0, op, ": temperature must be positive, got ", t);
  bool training = boolArg(info, 2, op, "training");
  double seed = numberArg(info, 3, op, "seed");
  MSGC_CHECK(seed >= 0 && seed == (double)(uint64_t)seed, op, ": seed must be a non-negative integer, got ", seed);
  GateResult r;
  if (l->device() == Device::CUDA) {
    MSGC_CHECK(!training, op, ": training gates (Gumbel noise) have no cuda kernel yet; use eval mode (model.eval())");
    r.mask = cuda::gateEval(*l);
  } else if (!training && implFor(*l) == Impl::Emulated) {
    r.mask = cuda::emulated::gateEval(*l);
  } else {
    r = gateForward(*l, (float)t, training, (uint64_t)seed);
  }
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, wrapTensor(info.Env(), r.mask));
  out.Set(1u, wrapTensor(info.Env(), r.soft));
  return out;
}

// gateBackward(soft, gy, temperature)
static Napi::Value GateBackward(const Napi::CallbackInfo& info) {
  const char* op = "gate backward";
  TensorPtr s = tensorArg(info, 0, op, "soft"), gy = tensorArg(info, 1, op, "gradOutput");
  expectShape(*gy, s->shape, op, "gradOutput");
  MSGC_CHECK(s->isPlain(), op, ": soft must be the plain tensor the forward returned");
  double t = numberArg(info, 2, op, "temperature");
  MSGC_CHECK(t > 0, op, ": temperature must be positive, got ", t);
  return wrapTensor(info.Env(), gateBackward(*s, *gy, (float)t));
}

// out[at..at+2] = sum, unselected, allOnes (1 or 0) of st
static void setMaskStats(Napi::Array& out, uint32_t at, const MaskStats& st) {
  out.Set(at, Napi::Number::New(out.Env(), st.sum));
  out.Set(at + 1, Napi::Number::New(out.Env(), st.unselected));
  out.Set(at + 2, Napi::Number::New(out.Env(), st.allOnes ? 1 : 0));
}

// The head calls' shared checks: ctx [N, Cc, 1, 1], w1 [B, Cc, 1, 1], w2 [K, B, 1, 1] on one device.
static void checkHeadShapes(const char* op, const TensorPtr& ctx, const TensorPtr& w1, const TensorPtr& w2) {
  expectDims(*ctx, 4, op, "ctx", "[N, contextChannels, 1, 1]");
  expectDims(*w1, 4, op, "w1", "[hidden, contextChannels, 1, 1]");
  expectDims(*w2, 4, op, "w2", "[outputs, hidden, 1, 1]");
  const int64_t N = ctx->shape[0], Cc = ctx->shape[1], B = w1->shape[0], K = w2->shape[0];
  // (an empty batch N = 0 is allowed: empty gates)
  MSGC_CHECK(Cc > 0 && B > 0 && K > 0, op, ": empty dimension in ctx ", shapeString(ctx->shape), ", w1 ",
             shapeString(w1->shape), " or w2 ", shapeString(w2->shape));
  expectShape(*ctx, {N, Cc, 1, 1}, op, "ctx");
  expectShape(*w1, {B, Cc, 1, 1}, op, "w1");
  expectShape(*w2, {K, B, 1, 1}, op, "w2");
  expectSameDevice(*ctx, *w1, op, "ctx", "w1");
  expectSameDevice(*ctx, *w2, op, "ctx", "w2");
  expectWorkBound((double)N * (Cc * B + B * K), op, "this head");
}

// squeezeHeadEval(ctx [N, Cc, 1, 1], w1 [B, Cc, 1, 1], mean [B], var [B], gamma [B]|null, beta [B]|null, eps,
//                 w2 [K, B, 1, 1], b2 [K], threshold[, heads[, withStats]]) -> [N, K]; with heads G: [N, G, K / G],
// and with threshold also the gates' statistics: [gates, sum, unselected, allOnes (1 or 0)] (as maskStats, in one
// call; on the GPU a copy to the host, which waits for the head's kernels), unless withStats is false (the gates
// alone: gateSummary gives their statistics without waiting)
static Napi::Value SqueezeHeadEval(const Napi::CallbackInfo& info) {
  const char* op = "squeezeHeadEval";
  TensorPtr ctx = tensorArg(info, 0, op, "ctx"), w1 = tensorArg(info, 1, op, "w1"), mean = tensorArg(info, 2, op, "runningMean"),
            var = tensorArg(info, 3, op, "runningVar");
  TensorPtr gamma = optionalTensorArg(info, 4, op, "bnWeight"), beta = optionalTensorArg(info, 5, op, "bnBias");
  double eps = numberArg(info, 6, op, "eps");
  MSGC_CHECK(eps >= 0, op, ": eps must be non-negative, got ", eps);
  TensorPtr w2 = tensorArg(info, 7, op, "w2"), b2 = tensorArg(info, 8, op, "b2");
  bool threshold = boolArg(info, 9, op, "threshold");
  checkHeadShapes(op, ctx, w1, w2);
  const int64_t N = ctx->shape[0], B = w1->shape[0], K = w2->shape[0];
  for (auto* t : {&mean, &var, &gamma, &beta})
    if (*t) expectShape(**t, {B}, op, "batch-norm statistics and affine parameters");
  expectShape(*b2, {K}, op, "b2");
  for (auto* t : {&mean, &var, &gamma, &beta, &b2})
    if (*t) expectSameDevice(*ctx, **t, op, "ctx", "head parameters");
  const int64_t G = info.Length() > 10 && !info[10].IsUndefined() ? intArg(info, 10, op, "heads", 1, K) : 0;
  MSGC_CHECK(G == 0 || K % G == 0, op, ": ", K, " outputs are not divisible by ", G, " heads");
  const Impl impl = implFor(*ctx);
  TensorPtr y = impl == Impl::Cuda
                    ? cuda::squeezeHeadEval(*ctx, *w1, *mean, *var, gamma.get(), beta.get(), (float)eps, *w2, *b2, threshold)
                : impl == Impl::Emulated
                    ? cuda::emulated::squeezeHeadEval(*ctx, *w1, *mean, *var, gamma.get(), beta.get(), (float)eps, *w2, *b2, threshold)
                    : squeezeHeadEval(*ctx, *w1, *mean, *var, gamma.get(), beta.get(), (float)eps, *w2, *b2, threshold);
  if (G == 0) return wrapTensor(info.Env(), y);
  TensorPtr m = std::make_shared<Tensor>(Shape{N, G, K / G}, y->storage);  // the same plain floats
  const bool withStats = info.Length() > 11 && !info[11].IsUndefined() ? boolArg(info, 11, op, "withStats") : true;
  if (!threshold || !withStats) return wrapTensor(info.Env(), m);
  Napi::Array out = Napi::Array::New(info.Env(), 4);
  out.Set(0u, wrapTensor(info.Env(), m));
  setMaskStats(out, 1, maskStatsAnywhere(*m));
  return out;
}

// The first ten arguments of squeezeHeadTrainForward and gateHeadTrainForward, checked: ctx, w1, runningMean [B],
// runningVar [B], gamma [B]|null, beta [B]|null, momentum, eps, w2, b2 [K]
struct HeadTrainArgs {
  TensorPtr ctx, w1, rm, rv, gamma, beta, w2, b2;
  float momentum = 0, eps = 0;
};
static HeadTrainArgs headTrainArgs(const Napi::CallbackInfo& info, const char* op) {
  HeadTrainArgs a;
  a.ctx = tensorArg(info, 0, op, "ctx");
  a.w1 = tensorArg(info, 1, op, "w1");
  a.rm = tensorArg(info, 2, op, "runningMean");
  a.rv = tensorArg(info, 3, op, "runningVar");
  a.gamma = optionalTensorArg(info, 4, op, "bnWeight");
  a.beta = optionalTensorArg(info, 5, op, "bnBias");
  double momentum = numberArg(info, 6, op, "momentum"), eps = numberArg(info, 7, op, "eps");
  a.w2 = tensorArg(info, 8, op, "w2");
  a.b2 = tensorArg(info, 9, op, "b2");
  checkHeadShapes(op, a.ctx, a.w1, a.w2);
  const int64_t N = a.ctx->shape[0], B = a.w1->shape[0], K = a.w2->shape[0];
  MSGC_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum must be in [0, 1], got ", momentum);
  MSGC_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  MSGC_CHECK(N > 1, op, ": training normalises over the batch and needs more than one sample (ctx has shape ",
             shapeString(a.ctx->shape), "); use a batch larger than 1 or eval mode");
  for (TensorPtr* t : {&a.rm, &a.rv, &a.gamma, &a.beta})
    if (*t) {
      expectShape(**t, {B}, op, "batch-norm statistics and affine parameters");
      expectSameDevice(*a.ctx, **t, op, "ctx", "batch-norm statistics and affine parameters");
    }
  MSGC_CHECK(a.rm->isPlain() && a.rv->isPlain(), op, ": running statistics must be plain tensors");
  expectShape(*a.b2, {K}, op, "b2");
  expectSameDevice(*a.ctx, *a.b2, op, "ctx", "b2");
  a.momentum = (float)momentum;
  a.eps = (float)eps;
  return a;
}

// squeezeHeadTrainForward(ctx, w1, runningMean [B], runningVar [B], gamma [B]|null, beta [B]|null, momentum, eps,
// w2, b2 [K]) -> [z [N, K], h1 [N, B], mean [B], invStd [B], h [N, B]]; updates the running statistics in place
static Napi::Value SqueezeHeadTrainForward(const Napi::CallbackInfo& info) {
  HeadTrainArgs a = headTrainArgs(info, "squeezeHeadTrain");
  SqueezeHeadTrain r = squeezeHeadTrainForward(*a.ctx, *a.w1, *a.rm, *a.rv, a.gamma.get(), a.beta.get(), a.momentum,
                                               a.eps, *a.w2, *a.b2);
  return tensorList(info.Env(), {r.z, r.h1, r.mean, r.invStd, r.h});
}

// gateHeadTrainForward(the ten arguments of squeezeHeadTrainForward, heads, temperature, invSigma, seed)
// -> [mask [N, heads, K / heads], soft (the same shape), h1, mean, invStd, h, sum, unselected, allOnes (1 or 0)]:
// a GateHead's training forward in one call (see msgc::gateHeadTrainForward)
static Napi::Value GateHeadTrainForward(const Napi::CallbackInfo& info) {
  const char* op = "gateHeadTrain";
  HeadTrainArgs a = headTrainArgs(info, op);
  MSGC_CHECK(a.ctx->device() == Device::CPU, op, ": training gates (Gumbel noise) have no cuda kernel yet; ",
             "use eval mode (model.eval())");
  const int64_t K = a.w2->shape[0];
  const int64_t heads = intArg(info, 10, op, "heads", 1, K);
  MSGC_CHECK(K % heads == 0, op, ": ", K, " outputs are not divisible by ", heads, " heads");
  const double t = numberArg(info, 11, op, "temperature"), invSigma = numberArg(info, 12, op, "invSigma");
  MSGC_CHECK(t > 0, op, ": temperature must be positive, got ", t);
  MSGC_CHECK(invSigma > 0 && std::isfinite(invSigma), op, ": invSigma (1 / noise scale) must be positive and finite, got ", invSigma);
  const double seed = numberArg(info, 13, op, "seed");
  MSGC_CHECK(seed >= 0 && seed == (double)(uint64_t)seed, op, ": seed must be a non-negative integer, got ", seed);
  GateHeadTrain r = gateHeadTrainForward(*a.ctx, *a.w1, *a.rm, *a.rv, a.gamma.get(), a.beta.get(), a.momentum, a.eps,
                                         *a.w2, *a.b2, heads, (float)t, (float)invSigma, (uint64_t)seed);
  Napi::Array out = tensorList(info.Env(), {r.mask, r.soft, r.head.h1, r.head.mean, r.head.invStd, r.head.h});
  setMaskStats(out, 6, r.stats);
  return out;
}

// The first eight arguments of squeezeHeadTrainBackward and gateHeadTrainBackward, checked: ctx, w1, gamma|null,
// w2 and the saved h1, mean, invStd, h
struct HeadBackwardArgs {
  TensorPtr ctx, w1, gamma, w2;
  SqueezeHeadTrain saved;
};
static HeadBackwardArgs headBackwardArgs(const Napi::CallbackInfo& info, const char* op, const char* forwardName) {
  HeadBackwardArgs a;
  a.ctx = tensorArg(info, 0, op, "ctx");
  a.w1 = tensorArg(info, 1, op, "w1");
  a.gamma = optionalTensorArg(info, 2, op, "bnWeight");
  a.w2 = tensorArg(info, 3, op, "w2");
  a.saved.h1 = tensorArg(info, 4, op, "h1");
  a.saved.mean = tensorArg(info, 5, op, "mean");
  a.saved.invStd = tensorArg(info, 6, op, "invStd");
  a.saved.h = tensorArg(info, 7, op, "h");
  checkHeadShapes(op, a.ctx, a.w1, a.w2);
  const int64_t N = a.ctx->shape[0], B = a.w1->shape[0];
  if (a.gamma) expectShape(*a.gamma, {B}, op, "bnWeight");
  expectShape(*a.saved.h1, {N, B}, op, "h1");
  expectShape(*a.saved.h, {N, B}, op, "h");
  expectShape(*a.saved.mean, {B}, op, "mean");
  expectShape(*a.saved.invStd, {B}, op, "invStd");
  MSGC_CHECK(a.saved.h1->isPlain() && a.saved.h->isPlain() && a.saved.mean->isPlain() && a.saved.invStd->isPlain(), op,
             ": the saved tensors must be the plain ones ", forwardName, " returned");
  for (const TensorPtr& t : {a.saved.h1, a.saved.mean, a.saved.invStd, a.saved.h})
    expectSameDevice(*a.ctx, *t, op, "ctx", "saved tensors");
  return a;
}

// squeezeHeadTrainBackward(ctx, w1, gamma|null, w2, h1, mean, invStd, h, gz [N, K], needCtx, needParams)
// -> [gctx|null, gw1|null, ggamma|null, gbeta|null, gw2|null, gb2|null]
static Napi::Value SqueezeHeadTrainBackward(const Napi::CallbackInfo& info) {
  const char* op = "squeezeHeadTrainBackward";
  HeadBackwardArgs a = headBackwardArgs(info, op, "squeezeHeadTrainForward");
  TensorPtr gz = tensorArg(info, 8, op, "gz");
  bool needCtx = boolArg(info, 9, op, "needCtx"), needParams = boolArg(info, 10, op, "needParams");
  const int64_t N = a.ctx->shape[0], K = a.w2->shape[0];
  MSGC_CHECK(gz->numel() == N * K, op, ": gz must hold ", N * K, " values ([N, K] = [", N, ", ", K, "]), got shape ",
             shapeString(gz->shape));
  expectSameDevice(*a.ctx, *gz, op, "ctx", "gz");
  SqueezeHeadGrads g = squeezeHeadTrainBackward(*a.ctx, *a.w1, a.gamma.get(), *a.w2, a.saved, *gz, needCtx, needParams);
  return tensorList(info.Env(), {g.ctx, g.w1, g.gamma, g.beta, g.w2, g.b2});
}

// gateHeadTrainBackward(ctx, w1, gamma|null, w2, h1, mean, invStd, h, soft, gm (the gates' gradient), temperature,
// needCtx, needParams) -> [gctx|null, gw1|null, ggamma|null, gbeta|null, gw2|null, gb2|null]
static Napi::Value GateHeadTrainBackward(const Napi::CallbackInfo& info) {
  const char* op = "gateHeadTrainBackward";
  HeadBackwardArgs a = headBackwardArgs(info, op, "gateHeadTrainForward");
  TensorPtr soft = tensorArg(info, 8, op, "soft"), gm = tensorArg(info, 9, op, "gradMask");
  const double t = numberArg(info, 10, op, "temperature");
  MSGC_CHECK(t > 0, op, ": temperature must be positive, got ", t);
  bool needCtx = boolArg(info, 11, op, "needCtx"), needParams = boolArg(info, 12, op, "needParams");
  const int64_t N = a.ctx->shape[0], K = a.w2->shape[0];
  MSGC_CHECK(soft->isPlain() && soft->numel() == N * K, op, ": soft must be the plain [N, heads, K / heads] tensor ",
             "gateHeadTrainForward returned (", N * K, " values), got shape ", shapeString(soft->shape));
  expectShape(*gm, soft->shape, op, "gradMask");
  expectSameDevice(*a.ctx, *soft, op, "ctx", "soft");
  expectSameDevice(*a.ctx, *gm, op, "ctx", "gradMask");
  SqueezeHeadGrads g = gateHeadTrainBackward(*a.ctx, *a.w1, a.gamma.get(), *a.w2, a.saved, *soft, *gm, (float)t, needCtx,
                                             needParams);
  return tensorList(info.Env(), {g.ctx, g.w1, g.gamma, g.beta, g.w2, g.b2});
}

// maskStats(m [N, G, C]) -> [sum, unselected, allOnes (1 or 0)] (see MaskStats)
static Napi::Value MaskStatsJs(const Napi::CallbackInfo& info) {
  const char* op = "maskStats";
  TensorPtr m = tensorArg(info, 0, op, "mask");
  expectDims(*m, 3, op, "mask", "[N, heads, channels]");
  Napi::Array out = Napi::Array::New(info.Env(), 3);
  setMaskStats(out, 0, maskStatsAnywhere(*m));
  return out;
}

// gateSummary(m [N, G, C]) -> Tensor [3 + G] on m's device (see msgc::gateSummary)
static Napi::Value GateSummaryJs(const Napi::CallbackInfo& info) {
  const char* op = "gateSummary";
  TensorPtr m = tensorArg(info, 0, op, "mask");
  expectDims(*m, 3, op, "mask", "[N, heads, channels]");
  expectWorkBound((double)m->numel(), op, "these gates");
  return wrapTensor(info.Env(), m->device() == Device::CUDA ? cuda::gateSummary(*m) : gateSummary(*m));
}

void registerMsgcBindings(Napi::Env env, Napi::Object exports) {
  exportFunction(env, exports, "maskStats", MaskStatsJs, true);
  exportFunction(env, exports, "gateSummary", GateSummaryJs, true);
  exportFunction(env, exports, "squeezeHeadEval", SqueezeHeadEval, true);
  exportFunction(env, exports, "squeezeHeadTrainForward", SqueezeHeadTrainForward);
  exportFunction(env, exports, "squeezeHeadTrainBackward", SqueezeHeadTrainBackward);
  exportFunction(env, exports, "gateHeadTrainForward", GateHeadTrainForward);
  exportFunction(env, exports, "gateHeadTrainBackward", GateHeadTrainBackward);
  exportFunction(env, exports, "msgcConv2dForward", MsgcConv2dForward, true);
  exportFunction(env, exports, "msgcConv2dForwardGathered", MsgcConv2dForwardGathered, true);
  exportFunction(env, exports, "msgcConv2dBnActEval", MsgcConv2dBnActEval, true);
  exportFunction(env, exports, "depthwiseConv2dBnActCompactEval", DepthwiseConv2dBnActCompactEval);
  exportFunction(env, exports, "msgcConv2dBackward", MsgcConv2dBackward);
  exportFunction(env, exports, "gateForward", GateForward, true);
  exportFunction(env, exports, "gateBackward", GateBackward);
}

}  // namespace napi
}  // namespace msgc
