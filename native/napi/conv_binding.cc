// conv_binding.cc: conv2dForward / conv2dBackward, with every shape rule checked before the kernel runs.
#include "common.h"
#include "msgc/cuda.h"
#include "msgc/ops.h"

namespace msgc {
namespace napi {

namespace {
constexpr int64_t kMaxInt = int64_t(1) << 30;

// args: x, weight, bias|null, stride[2], padding[2], dilation[2], groups
struct ConvArgs {
  TensorPtr x, weight, bias;
  Conv2dParams p;
  msgc::Shape y;
};

ConvArgs readConv(const Napi::CallbackInfo& info, const char* op, bool withBias) {
  ConvArgs a;
  a.x = tensorArg(info, 0, op, "x");
  a.weight = tensorArg(info, 1, op, "weight");
  if (withBias) a.bias = optionalTensorArg(info, 2, op, "bias");
  size_t k = withBias ? 3 : 2;
  auto stride = intListArg(info, k, op, "stride", 2, 1, kMaxInt);
  auto pad = intListArg(info, k + 1, op, "padding", 2, 0, kMaxInt);
  auto dil = intListArg(info, k + 2, op, "dilation", 2, 1, kMaxInt);
  int64_t groups = intArg(info, k + 3, op, "groups", 1, kMaxInt);
  expectDims(*a.x, 4, op, "x", "[N, C, H, W]");
  expectDims(*a.weight, 4, op, "weight", "[outChannels, inChannels/groups, kH, kW]");
  expectSameDevice(*a.x, *a.weight, op, "x", "weight");
  const msgc::Shape& xs = a.x->shape;
  const msgc::Shape& ws = a.weight->shape;
  MSGC_CHECK(xs[1] % groups == 0, op, ": input channels (", xs[1], ") must be divisible by groups (", groups, ")");
  MSGC_CHECK(ws[0] % groups == 0, op, ": weight's outChannels (", ws[0], ") must be divisible by groups (", groups, ")");
  MSGC_CHECK(ws[1] == xs[1] / groups, op, ": weight has shape ", shapeString(ws), ", expected inChannels/groups = ",
             xs[1] / groups, " in dim 1 for x of shape ", shapeString(xs), " and groups=", groups);
  MSGC_CHECK(ws[0] > 0 && ws[2] > 0 && ws[3] > 0, op, ": weight has an empty dimension: ", shapeString(ws));
  // (an empty batch is allowed, as in PyTorch: the handlers return empty outputs and zero parameter gradients)
  MSGC_CHECK(xs[1] > 0, op, ": x has an empty channel dimension: ", shapeString(xs));
  if (a.bias) {
    expectShape(*a.bias, {ws[0]}, op, "bias");
    expectSameDevice(*a.x, *a.bias, op, "x", "bias");
  }
  a.p.strideH = stride[0]; a.p.strideW = stride[1];
  a.p.padH = pad[0]; a.p.padW = pad[1];
  a.p.dilationH = dil[0]; a.p.dilationW = dil[1];
  a.p.groups = groups;
  int64_t effH = dil[0] * (ws[2] - 1) + 1, effW = dil[1] * (ws[3] - 1) + 1;
  MSGC_CHECK(xs[2] + 2 * pad[0] >= effH && xs[3] + 2 * pad[1] >= effW, op, ": the kernel (", effH, "x", effW,
             " with dilation) is larger than the padded input (", xs[2] + 2 * pad[0], "x", xs[3] + 2 * pad[1], ")");
  expectWorkBound((double)xs[0] * ws[0] * ws[1] * ws[2] * ws[3] * ((double)(xs[2] + 2 * pad[0] - effH) / stride[0] + 1) *
                      ((double)(xs[3] + 2 * pad[1] - effW) / stride[1] + 1),
                  op, "this convolution");
  a.y = {xs[0], ws[0], (xs[2] + 2 * pad[0] - effH) / stride[0] + 1, (xs[3] + 2 * pad[1] - effW) / stride[1] + 1};
  return a;
}
}  // namespace

static Napi::Value Conv2dForward(const Napi::CallbackInfo& info) {
  ConvArgs a = readConv(info, "conv2d", true);
  if (a.y[0] == 0) return wrapTensor(info.Env(), emptyTensor(a.y, a.x->device()));
  if (a.x->device() == Device::CUDA) return wrapTensor(info.Env(), cuda::conv2dForward(*a.x, *a.weight, a.bias.get(), a.p));
  return wrapTensor(info.Env(), conv2dForward(*a.x, *a.weight, a.bias.get(), a.p));
}

// conv2dBnActEval(x, weight, bias|null, stride, padding, dilation, groups, runningMean, runningVar, gamma|null,
//                 beta|null, eps, activation (-1 none, 0 ReLU, 1 ReLU6)) -> y
static Napi::Value Conv2dBnActEval(const Napi::CallbackInfo& info) {
  const char* op = "conv2dBnActEval";
  ConvArgs a = readConv(info, op, true);
  const int64_t O = a.weight->shape[0];
  TensorPtr rm = tensorArg(info, 7, op, "runningMean"), rv = tensorArg(info, 8, op, "runningVar");
  TensorPtr g = optionalTensorArg(info, 9, op, "gamma"), b = optionalTensorArg(info, 10, op, "beta");
  double eps = numberArg(info, 11, op, "eps");
  int64_t act = intArg(info, 12, op, "activation", -1, (int64_t)Activation::ReLU6);
  for (auto [t, name] : {std::pair<TensorPtr, const char*>{rm, "runningMean"}, {rv, "runningVar"}, {g, "gamma"}, {b, "beta"}}) {
    if (!t) continue;
    expectShape(*t, {O}, op, name);
    expectSameDevice(*a.x, *t, op, "x", name);
  }
  MSGC_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  if (a.y[0] == 0) return wrapTensor(info.Env(), emptyTensor(a.y, a.x->device()));
  const Impl impl = implFor(*a.x);
  if (impl == Impl::Cuda) {
    // cuDNN's conv, then one epilogue pass (BatchNorm and activation; the conv added the bias)
    TensorPtr y = cuda::conv2dForward(*a.x, *a.weight, a.bias.get(), a.p);
    return wrapTensor(info.Env(), cuda::batchNormActEval(*y, *rm, *rv, g.get(), b.get(), (float)eps, (int)act, nullptr));
  }
  if (impl == Impl::Emulated) {  // (the conv as the CPU backend's: cuDNN is not ours to emulate)
    TensorPtr y = conv2dForward(*a.x, *a.weight, a.bias.get(), a.p);
    return wrapTensor(info.Env(), cuda::emulated::batchNormActEval(*y, *rm, *rv, g.get(), b.get(), (float)eps, (int)act, nullptr));
  }
  return wrapTensor(info.Env(), conv2dBnActEval(*a.x, *a.weight, a.bias.get(), a.p, *rm, *rv, g.get(), b.get(),
                                                (float)eps, (int)act));
}

// conv2dBackward(x, weight, gy, stride, padding, dilation, groups, needX, needWeight, needBias) -> [gx, gw, gb]
static Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "conv2d backward";
  ConvArgs a = readConv(info, op, false);
  // the gradient sits after the 6 conv arguments (x, weight, stride, padding, dilation, groups)
  TensorPtr gy = tensorArg(info, 6, op, "gradOutput");
  expectShape(*gy, a.y, op, "gradOutput");
  bool needX = boolArg(info, 7, op, "needX"), needW = boolArg(info, 8, op, "needWeight"),
       needB = boolArg(info, 9, op, "needBias");
  Conv2dGrads g;
  if (a.y[0] == 0) {
    // an empty batch: an empty input gradient, zero parameter gradients
    if (needX) g.x = emptyTensor(a.x->shape, a.x->device());
    if (needW) g.weight = zerosTensor(a.weight->shape, a.x->device());
    if (needB) g.bias = zerosTensor({a.weight->shape[0]}, a.x->device());
  } else {
    g = conv2dBackward(*a.x, *a.weight, *gy, a.p, needX, needW, needB);
  }
  Napi::Array out = Napi::Array::New(info.Env(), 3);
  out.Set(0u, wrapTensor(info.Env(), g.x));
  out.Set(1u, wrapTensor(info.Env(), g.weight));
  out.Set(2u, wrapTensor(info.Env(), g.bias));
  return out;
}

void registerConvBindings(Napi::Env env, Napi::Object exports) {
  exportFunction(env, exports, "conv2dForward", Conv2dForward, true);
  exportFunction(env, exports, "conv2dBackward", Conv2dBackward);
  exportFunction(env, exports, "conv2dBnActEval", Conv2dBnActEval, true);
}

}  // namespace napi
}  // namespace msgc
