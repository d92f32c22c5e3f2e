// layer_binding.cc: batch norm, activations, pooling, linear and cross-entropy bindings with their checks.
#include "common.h"
#include "msgc/cuda.h"
#include "msgc/ops.h"
#include <cmath>

namespace msgc {
namespace napi {

namespace {
void expectNchwOrNc(const Tensor& x, const char* op) {
  MSGC_CHECK(x.dim() == 4 || x.dim() == 2, op, ": x has ", x.dim(), " dims (shape ", shapeString(x.shape),
             "), expected 4 ([N, C, H, W]) or 2 ([N, C])");
  MSGC_CHECK(x.shape[1] > 0, op, ": x has no channels (shape ", shapeString(x.shape), ")");
}
}  // namespace

// batchNorm2dForward(x, runningMean, runningVar, weight|null, bias|null, training, momentum, eps) -> [y, mean, var]
static Napi::Value BatchNorm2dForward(const Napi::CallbackInfo& info) {
  const char* op = "batchNorm2d";
  TensorPtr x = tensorArg(info, 0, op, "x");
  TensorPtr rm = tensorArg(info, 1, op, "runningMean"), rv = tensorArg(info, 2, op, "runningVar");
  TensorPtr w = optionalTensorArg(info, 3, op, "weight"), b = optionalTensorArg(info, 4, op, "bias");
  bool training = boolArg(info, 5, op, "training");
  double momentum = numberArg(info, 6, op, "momentum"), eps = numberArg(info, 7, op, "eps");
  expectNchwOrNc(*x, op);
  int64_t C = x->shape[1];
  expectChannelVector(rm, C, op, "runningMean", *x);
  expectChannelVector(rv, C, op, "runningVar", *x);
  expectChannelVector(w, C, op, "weight", *x);
  expectChannelVector(b, C, op, "bias", *x);
  MSGC_CHECK(rm->isPlain() && rv->isPlain(), op, ": running statistics must be plain tensors");
  MSGC_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum must be in [0, 1], got ", momentum);
  MSGC_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  MSGC_CHECK(!training || x->numel() / C > 1, op, ": training needs more than one value per channel (x has shape ",
             shapeString(x->shape), "); use a batch larger than 1 or eval mode");
  if (x->device() == Device::CUDA) {
    // inference only on the GPU so far: the running statistics, as the CPU's eval forward returns them
    MSGC_CHECK(!training, op, ": training-mode batch norm has no cuda kernel yet; use eval mode (model.eval())");
    TensorPtr y = cuda::batchNormActEval(*x, *rm, *rv, w.get(), b.get(), (float)eps, -1, nullptr);
    TensorPtr mean = emptyTensor({C}, Device::CUDA), var = emptyTensor({C}, Device::CUDA);
    cuda::copyDeviceToDevice(mean->data(), rm->data(), (size_t)C * sizeof(float));
    cuda::copyDeviceToDevice(var->data(), rv->data(), (size_t)C * sizeof(float));
    return tensorList(info.Env(), {y, mean, var});
  }
  if (!training && implFor(*x) == Impl::Emulated)
    return tensorList(info.Env(), {cuda::emulated::batchNormActEval(*x, *rm, *rv, w.get(), b.get(), (float)eps, -1, nullptr),
                                   toPlain(*rm), toPlain(*rv)});
  BatchNormResult r = batchNorm2dForward(*x, *rm, *rv, w.get(), b.get(), training, (float)momentum, (float)eps);
  return tensorList(info.Env(), {r.y, r.mean, r.var});
}

// batchNormActEval(x, runningMean, runningVar, weight|null, bias|null, eps, act, residual|null[, pooled]) -> y, or
// [y, per-channel means of y [N, C, 1, 1]] when pooled
static Napi::Value BatchNormActEval(const Napi::CallbackInfo& info) {
  const char* op = "batchNormAct";
  TensorPtr x = tensorArg(info, 0, op, "x");
  TensorPtr rm = tensorArg(info, 1, op, "runningMean"), rv = tensorArg(info, 2, op, "runningVar");
  TensorPtr w = optionalTensorArg(info, 3, op, "weight"), b = optionalTensorArg(info, 4, op, "bias");
  double eps = numberArg(info, 5, op, "eps");
  int64_t act = intArg(info, 6, op, "activation", -1, (int64_t)Activation::ReLU6);
  TensorPtr r = optionalTensorArg(info, 7, op, "residual");
  MSGC_CHECK(x->dim() == 4, op, ": x has ", x->dim(), " dims (shape ", shapeString(x->shape),
             "), expected 4 ([N, C, H, W])");
  int64_t C = x->shape[1];
  MSGC_CHECK(C > 0, op, ": x has no channels (shape ", shapeString(x->shape), ")");
  expectChannelVector(rm, C, op, "runningMean", *x);
  expectChannelVector(rv, C, op, "runningVar", *x);
  expectChannelVector(w, C, op, "weight", *x);
  expectChannelVector(b, C, op, "bias", *x);
  MSGC_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  if (r) {
    expectShape(*r, x->shape, op, "residual");
    expectSameDevice(*x, *r, op, "x", "residual");
  }
  const bool pooled = info.Length() > 8 && boolArg(info, 8, op, "pooled");
  const Impl impl = implFor(*x);
  const auto run = impl == Impl::Cuda ? cuda::batchNormActEval : impl == Impl::Emulated ? cuda::emulated::batchNormActEval : batchNormActEval;
  if (!pooled) return wrapTensor(info.Env(), run(*x, *rm, *rv, w.get(), b.get(), (float)eps, (int)act, r.get(), nullptr));
  TensorPtr means;
  TensorPtr y = run(*x, *rm, *rv, w.get(), b.get(), (float)eps, (int)act, r.get(), &means);
  return tensorList(info.Env(), {y, means});
}

// batchNorm2dBackward(x, gy, mean, var, weight|null, training, eps, needWeightBias) -> [gx, gw, gb]
static Napi::Value BatchNorm2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "batchNorm2d backward";
  TensorPtr x = tensorArg(info, 0, op, "x"), gy = tensorArg(info, 1, op, "gradOutput");
  TensorPtr mean = tensorArg(info, 2, op, "mean"), var = tensorArg(info, 3, op, "var");
  TensorPtr w = optionalTensorArg(info, 4, op, "weight");
  bool training = boolArg(info, 5, op, "training");
  double eps = numberArg(info, 6, op, "eps");
  bool needWB = boolArg(info, 7, op, "needWeightBias");
  expectNchwOrNc(*x, op);
  int64_t C = x->shape[1];
  expectShape(*gy, x->shape, op, "gradOutput");
  expectChannelVector(mean, C, op, "mean", *x);
  expectChannelVector(var, C, op, "var", *x);
  expectChannelVector(w, C, op, "weight", *x);
  MSGC_CHECK(mean->isPlain() && var->isPlain(), op, ": saved statistics must be plain tensors");
  MSGC_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  BatchNormGrads g = batchNorm2dBackward(*x, *gy, *mean, *var, w.get(), training, (float)eps, needWB);
  return tensorList(info.Env(), {g.x, g.weight, g.bias});
}

static Activation activationArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t k = intArg(info, i, op, "kind", 0, 2);
  return static_cast<Activation>(k);
}

// activationForward(kind, x); kind: 0 relu, 1 relu6, 2 sigmoid
static Napi::Value ActivationForward(const Napi::CallbackInfo& info) {
  Activation a = activationArg(info, 0, "activation");
  TensorPtr x = tensorArg(info, 1, "activation", "x");
  if (implFor(*x) == Impl::Cuda) return wrapTensor(info.Env(), cuda::activationForward(a, *x));
  if (implFor(*x) == Impl::Emulated) return wrapTensor(info.Env(), cuda::emulated::activationForward(a, *x));
  return wrapTensor(info.Env(), activationForward(a, *x));
}

// activationBackward(kind, xOrY, gy)
static Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  const char* op = "activation backward";
  Activation a = activationArg(info, 0, op);
  TensorPtr x = tensorArg(info, 1, op, "saved"), gy = tensorArg(info, 2, op, "gradOutput");
  expectShape(*gy, x->shape, op, "gradOutput");
  return wrapTensor(info.Env(), activationBackward(a, *x, *gy));
}

// residualTailForward(a, r | null, act, pooled) -> [y, means [N, C, 1, 1] | null]: y = act(a + r) (act: -1 none,
// 0 ReLU, 1 ReLU6; without r act(a)), the training tail of a residual block (or of a stem)
static Napi::Value ResidualTailForward(const Napi::CallbackInfo& info) {
  const char* op = "residualTail";
  TensorPtr a = tensorArg(info, 0, op, "x"), r = optionalTensorArg(info, 1, op, "residual");
  const int64_t act = intArg(info, 2, op, "activation", -1, (int64_t)Activation::ReLU6);
  const bool pooled = boolArg(info, 3, op, "pooled");
  expectDims(*a, 4, op, "x", "[N, C, H, W]");
  MSGC_CHECK(a->device() == Device::CPU, op, ": has a CPU kernel only; x is on ", deviceName(a->device()));
  MSGC_CHECK(a->shape[1] > 0 && a->shape[2] > 0 && a->shape[3] > 0, op, ": x is empty (shape ", shapeString(a->shape), ")");
  if (r) {
    expectShape(*r, a->shape, op, "residual");
    expectSameDevice(*a, *r, op, "x", "residual");
  }
  ResidualTail t = residualTailForward(*a, r.get(), (int)act, pooled);
  return tensorList(info.Env(), {t.y, t.pooled});
}

// residualTailBackward(y, gy, gChannels [N, C, 1, 1] | null, act, needX, needResidual) -> [gx | null, gResidual | null]:
// g = (gy + gChannels broadcast over the pixels) · act'(y)
static Napi::Value ResidualTailBackward(const Napi::CallbackInfo& info) {
  const char* op = "residualTail backward";
  TensorPtr y = tensorArg(info, 0, op, "y"), gy = tensorArg(info, 1, op, "gradOutput");
  TensorPtr gp = optionalTensorArg(info, 2, op, "gradChannels");
  const int64_t act = intArg(info, 3, op, "activation", -1, (int64_t)Activation::ReLU6);
  const bool needA = boolArg(info, 4, op, "needX"), needR = boolArg(info, 5, op, "needResidual");
  expectDims(*y, 4, op, "y", "[N, C, H, W]");
  MSGC_CHECK(y->device() == Device::CPU, op, ": has a CPU kernel only; y is on ", deviceName(y->device()));
  expectShape(*gy, y->shape, op, "gradOutput");
  expectSameDevice(*y, *gy, op, "y", "gradOutput");
  if (gp) {
    expectShape(*gp, {y->shape[0], y->shape[1], 1, 1}, op, "gradChannels");
    expectSameDevice(*y, *gp, op, "y", "gradChannels");
  }
  ResidualTailGrads g = residualTailBackward(*y, *gy, gp.get(), (int)act, needA, needR);
  return tensorList(info.Env(), {g.a, g.r});
}

namespace {
// pool args: kind (0 max, 1 avg), x, kernel[2], stride[2], padding[2]
Pool2dParams readPool(const Napi::CallbackInfo& info, size_t k, const Tensor& x, const char* op) {
  auto kernel = intListArg(info, k, op, "kernelSize", 2, 1, int64_t(1) << 30);
  auto stride = intListArg(info, k + 1, op, "stride", 2, 1, int64_t(1) << 30);
  auto pad = intListArg(info, k + 2, op, "padding", 2, 0, int64_t(1) << 30);
  expectDims(x, 4, op, "x", "[N, C, H, W]");
  // (an empty batch is allowed, as in PyTorch: empty outputs; an empty channel or spatial dimension is not)
  MSGC_CHECK(x.shape[1] > 0 && x.shape[2] > 0 && x.shape[3] > 0, op, ": x is empty (shape ", shapeString(x.shape), ")");
  MSGC_CHECK(pad[0] * 2 <= kernel[0] && pad[1] * 2 <= kernel[1], op, ": padding (", pad[0], ", ", pad[1],
             ") must be at most half the kernel size (", kernel[0], ", ", kernel[1], ")");
  MSGC_CHECK(x.shape[2] + 2 * pad[0] >= kernel[0] && x.shape[3] + 2 * pad[1] >= kernel[1], op, ": kernel ", kernel[0],
             "x", kernel[1], " is larger than the padded input ", x.shape[2] + 2 * pad[0], "x", x.shape[3] + 2 * pad[1]);
  expectWorkBound((double)x.shape[0] * x.shape[1] * kernel[0] * kernel[1] *
                      ((double)(x.shape[2] + 2 * pad[0] - kernel[0]) / stride[0] + 1) *
                      ((double)(x.shape[3] + 2 * pad[1] - kernel[1]) / stride[1] + 1),
                  op, "this pooling");
  return {kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1]};
}

msgc::Shape poolOutShape(const Tensor& x, const Pool2dParams& p) {
  return {x.shape[0], x.shape[1], (x.shape[2] + 2 * p.padH - p.kernelH) / p.strideH + 1,
          (x.shape[3] + 2 * p.padW - p.kernelW) / p.strideW + 1};
}
}  // namespace

// pool2dForward(kind (0 max, 1 avg), x, kernel, stride, padding[, training = true]) -> [y, workspace|null];
// max pooling without training (no backward to follow) writes no workspace
static Napi::Value Pool2dForward(const Napi::CallbackInfo& info) {
  const char* op = "pool2d";
  PoolKind kind = intArg(info, 0, op, "kind", 0, 1) == 0 ? PoolKind::Max : PoolKind::Avg;
  TensorPtr x = tensorArg(info, 1, op, "x");
  Pool2dParams p = readPool(info, 2, *x, kind == PoolKind::Max ? "maxPool2d" : "avgPool2d");
  const bool training = info.Length() > 5 && !info[5].IsUndefined() ? boolArg(info, 5, op, "training") : true;
  if (x->shape[0] == 0) return tensorList(info.Env(), {emptyTensor(poolOutShape(*x, p), x->device()), nullptr});
  if (x->device() == Device::CUDA) return tensorList(info.Env(), {cuda::pool2dForward(kind, *x, p), nullptr});
  if (!training && implFor(*x) == Impl::Emulated) return tensorList(info.Env(), {cuda::emulated::pool2dForward(kind, *x, p), nullptr});
  PoolResult r = pool2dForward(kind, *x, p, training);
  return tensorList(info.Env(), {r.y, r.workspace});
}

// pool2dBackward(kind, x, kernel, stride, padding, gy, workspace|null)
static Napi::Value Pool2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "pool2d backward";
  PoolKind kind = intArg(info, 0, op, "kind", 0, 1) == 0 ? PoolKind::Max : PoolKind::Avg;
  TensorPtr x = tensorArg(info, 1, op, "x");
  Pool2dParams p = readPool(info, 2, *x, op);
  TensorPtr gy = tensorArg(info, 5, op, "gradOutput");
  TensorPtr ws = optionalTensorArg(info, 6, op, "workspace");
  expectShape(*gy, poolOutShape(*x, p), op, "gradOutput");
  if (x->shape[0] == 0) return wrapTensor(info.Env(), emptyTensor(x->shape, x->device()));
  MSGC_CHECK(kind == PoolKind::Avg || ws, op, ": max pooling needs the workspace from its forward");
  return wrapTensor(info.Env(), pool2dBackward(kind, *x, *gy, ws.get(), p));
}

namespace {
void readLinear(const Napi::CallbackInfo& info, const char* op, TensorPtr& x, TensorPtr& w) {
  x = tensorArg(info, 0, op, "x");
  w = tensorArg(info, 1, op, "weight");
  expectDims(*x, 2, op, "x", "[N, inFeatures]");
  expectDims(*w, 2, op, "weight", "[outFeatures, inFeatures]");
  expectSameDevice(*x, *w, op, "x", "weight");
  MSGC_CHECK(x->shape[1] == w->shape[1], op, ": x has ", x->shape[1], " features (shape ", shapeString(x->shape),
             ") but weight expects ", w->shape[1], " (shape ", shapeString(w->shape), ")");
}
}  // namespace

// linearForward(x, weight, bias|null)
static Napi::Value LinearForward(const Napi::CallbackInfo& info) {
  const char* op = "linear";
  TensorPtr x, w;
  readLinear(info, op, x, w);
  TensorPtr b = optionalTensorArg(info, 2, op, "bias");
  if (b) expectShape(*b, {w->shape[0]}, op, "bias");
  if (implFor(*x) == Impl::Cuda) return wrapTensor(info.Env(), cuda::linearForward(*x, *w, b.get()));
  if (implFor(*x) == Impl::Emulated) return wrapTensor(info.Env(), cuda::emulated::linearForward(*x, *w, b.get()));
  return wrapTensor(info.Env(), linearForward(*x, *w, b.get()));
}

// linearBackward(x, weight, gy, needX, needWeight, needBias) -> [gx, gw, gb]
static Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  const char* op = "linear backward";
  TensorPtr x, w;
  readLinear(info, op, x, w);
  TensorPtr gy = tensorArg(info, 2, op, "gradOutput");
  expectShape(*gy, {x->shape[0], w->shape[0]}, op, "gradOutput");
  // read in argument order (the order of evaluation of function arguments is unspecified)
  bool needX = boolArg(info, 3, op, "needX"), needW = boolArg(info, 4, op, "needWeight"),
       needB = boolArg(info, 5, op, "needBias");
  LinearGrads g = linearBackward(*x, *w, *gy, needX, needW, needB);
  return tensorList(info.Env(), {g.x, g.weight, g.bias});
}

namespace {
const int32_t* labelsArg(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t N, int64_t K) {
  MSGC_CHECK(info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array, op,
             ": labels must be an Int32Array");
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  MSGC_CHECK((int64_t)a.ElementLength() == N, op, ": labels has ", a.ElementLength(), " entries, expected ", N,
             " (one per row of logits)");
  const int32_t* p = a.Data();
  for (int64_t n = 0; n < N; n++)
    MSGC_CHECK(p[n] >= 0 && p[n] < K, op, ": labels[", n, "] = ", p[n], " is outside [0, ", K, ")");
  return p;
}
}  // namespace

// crossEntropyForward(logits, labels: Int32Array, labelSmoothing) -> [loss, probs]
static Napi::Value CrossEntropyForward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy";
  TensorPtr z = tensorArg(info, 0, op, "logits");
  expectDims(*z, 2, op, "logits", "[N, numClasses]");
  MSGC_CHECK(z->shape[1] > 0, op, ": logits need at least one class");
  const int32_t* labels = labelsArg(info, 1, op, z->shape[0], z->shape[1]);
  double eps = numberArg(info, 2, op, "labelSmoothing");
  MSGC_CHECK(eps >= 0 && eps <= 1, op, ": labelSmoothing must be in [0, 1], got ", eps);
  CrossEntropyResult r = crossEntropyForward(*z, labels, (float)eps);
  return tensorList(info.Env(), {r.loss, r.probs});
}

// crossEntropyBackward(probs, labels, labelSmoothing, gLoss)
static Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy backward";
  TensorPtr p = tensorArg(info, 0, op, "probs");
  expectDims(*p, 2, op, "probs", "[N, numClasses]");
  const int32_t* labels = labelsArg(info, 1, op, p->shape[0], p->shape[1]);
  double eps = numberArg(info, 2, op, "labelSmoothing");
  MSGC_CHECK(eps >= 0 && eps <= 1, op, ": labelSmoothing must be in [0, 1], got ", eps);
  return wrapTensor(info.Env(), crossEntropyBackward(*p, labels, (float)eps, (float)numberArg(info, 3, op, "gradLoss")));
}

// distillationForward(student, teacher, temperature) -> [loss, softmax(s/T) - softmax(t/T)]
static Napi::Value DistillationForward(const Napi::CallbackInfo& info) {
  const char* op = "distillation";
  TensorPtr s = tensorArg(info, 0, op, "student logits");
  expectDims(*s, 2, op, "student logits", "[N, numClasses]");
  TensorPtr t = tensorArg(info, 1, op, "teacher logits");
  expectDims(*t, 2, op, "teacher logits", "[N, numClasses]");
  MSGC_CHECK(s->shape[1] > 0, op, ": logits need at least one class");
  MSGC_CHECK(t->shape == s->shape, op, ": teacher logits have shape ", shapeString(t->shape),
             ", expected the student's ", shapeString(s->shape));
  double T = numberArg(info, 2, op, "temperature");
  MSGC_CHECK(T > 0 && std::isfinite(T), op, ": temperature must be a positive finite number, got ", T);
  DistillationResult r = distillationForward(*s, *t, (float)T);
  return tensorList(info.Env(), {r.loss, r.diff});
}

// distillationBackward(diff, temperature, gLoss)
static Napi::Value DistillationBackward(const Napi::CallbackInfo& info) {
  const char* op = "distillation backward";
  TensorPtr d = tensorArg(info, 0, op, "diff");
  expectDims(*d, 2, op, "diff", "[N, numClasses]");
  double T = numberArg(info, 1, op, "temperature");
  MSGC_CHECK(T > 0 && std::isfinite(T), op, ": temperature must be a positive finite number, got ", T);
  return wrapTensor(info.Env(), distillationBackward(*d, (float)T, (float)numberArg(info, 2, op, "gradLoss")));
}

void registerLayerBindings(Napi::Env env, Napi::Object exports) {
  exportFunction(env, exports, "batchNorm2dForward", BatchNorm2dForward, true);
  exportFunction(env, exports, "batchNorm2dBackward", BatchNorm2dBackward);
  exportFunction(env, exports, "batchNormActEval", BatchNormActEval, true);
  exportFunction(env, exports, "activationForward", ActivationForward, true);
  exportFunction(env, exports, "activationBackward", ActivationBackward);
  exportFunction(env, exports, "residualTailForward", ResidualTailForward);
  exportFunction(env, exports, "residualTailBackward", ResidualTailBackward);
  exportFunction(env, exports, "pool2dForward", Pool2dForward, true);
  exportFunction(env, exports, "pool2dBackward", Pool2dBackward);
  exportFunction(env, exports, "linearForward", LinearForward, true);
  exportFunction(env, exports, "linearBackward", LinearBackward);
  exportFunction(env, exports, "crossEntropyForward", CrossEntropyForward);
  exportFunction(env, exports, "crossEntropyBackward", CrossEntropyBackward);
  exportFunction(env, exports, "distillationForward", DistillationForward);
  exportFunction(env, exports, "distillationBackward", DistillationBackward);
}

}  // namespace napi
}  // namespace msgc
