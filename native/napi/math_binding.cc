// math_binding.cc: elementwise ops, reductions, shape ops and the optimiser update, with their checks.
#include <cmath>

#include "common.h"
#include "msgc/cuda.h"
#include "msgc/ops.h"

namespace msgc {
namespace napi {

namespace {
const char* binaryName(Binary op) { return op == Binary::Add ? "add" : op == Binary::Sub ? "sub" : "mul"; }

void expectBroadcastable(const Tensor& a, const Tensor& b, const char* op) {
  if (b.numel() == 1 && b.dim() <= a.dim()) return;
  MSGC_CHECK(a.dim() == b.dim(), op, ": b has shape ", shapeString(b.shape), " and cannot broadcast to a's shape ",
             shapeString(a.shape), " (ranks differ; b needs ", a.dim(), " dims, each equal to a's or 1)");
  for (int64_t i = 0; i < a.dim(); i++)
    MSGC_CHECK(b.shape[i] == a.shape[i] || b.shape[i] == 1, op, ": b has shape ", shapeString(b.shape),
               " and cannot broadcast to a's shape ", shapeString(a.shape), " (dim ", i, " is ", b.shape[i],
               ", expected ", a.shape[i], " or 1)");
}
}  // namespace

// binary(kind, a, b); kind 0 add, 1 sub, 2 mul
static Napi::Value BinaryOp(const Napi::CallbackInfo& info) {
  Binary kind = static_cast<Binary>(intArg(info, 0, "binary", "kind", 0, 2));
  const char* op = binaryName(kind);
  TensorPtr a = tensorArg(info, 1, op, "a"), b = tensorArg(info, 2, op, "b");
  expectSameDevice(*a, *b, op, "a", "b");
  expectBroadcastable(*a, *b, op);
  if (implFor(*a) == Impl::Cuda) return wrapTensor(info.Env(), cuda::binaryForward(kind, *a, *b));
  if (implFor(*a) == Impl::Emulated) return wrapTensor(info.Env(), cuda::emulated::binaryForward(kind, *a, *b));
  return wrapTensor(info.Env(), binaryForward(kind, *a, *b));
}

// reduceToShape(g, shape): sums g over the dims where shape is 1
static Napi::Value ReduceToShape(const Napi::CallbackInfo& info) {
  const char* op = "reduceToShape";
  TensorPtr g = tensorArg(info, 0, op, "g");
  msgc::Shape s = shapeArg(info, 1, op, "shape");
  MSGC_CHECK((int64_t)s.size() == g->dim(), op, ": shape ", shapeString(s), " must have ", g->dim(), " dims");
  for (int64_t i = 0; i < g->dim(); i++)
    MSGC_CHECK(s[i] == g->shape[i] || s[i] == 1, op, ": shape ", shapeString(s), " does not broadcast to ",
               shapeString(g->shape));
  return wrapTensor(info.Env(), reduceToShape(*g, s));
}

static Napi::Value Scale(const Napi::CallbackInfo& info) {
  TensorPtr x = tensorArg(info, 0, "scale", "x");
  const float alpha = (float)numberArg(info, 1, "scale", "alpha");
  if (x->device() == Device::CUDA) return wrapTensor(info.Env(), cuda::scale(*x, alpha));
  return wrapTensor(info.Env(), scale(*x, alpha));
}

static Napi::Value SumAll(const Napi::CallbackInfo& info) {
  return wrapTensor(info.Env(), sumAll(*tensorArg(info, 0, "sum", "x")));
}

// broadcastScalar(s, shape, alpha)
static Napi::Value BroadcastScalar(const Napi::CallbackInfo& info) {
  const char* op = "broadcastScalar";
  TensorPtr s = tensorArg(info, 0, op, "scalar");
  MSGC_CHECK(s->numel() == 1, op, ": scalar has ", s->numel(), " elements, expected 1");
  return wrapTensor(info.Env(), broadcastScalar(*s, shapeArg(info, 1, op, "shape"), (float)numberArg(info, 2, op, "alpha")));
}

// addInPlace(dst, src, alpha)
static Napi::Value AddInPlace(const Napi::CallbackInfo& info) {
  const char* op = "addInPlace";
  TensorPtr d = tensorArg(info, 0, op, "dst"), s = tensorArg(info, 1, op, "src");
  expectShape(*s, d->shape, op, "src");
  expectSameDevice(*d, *s, op, "dst", "src");
  addInPlace(*d, *s, (float)numberArg(info, 2, op, "alpha"));
  return info.Env().Undefined();
}

// big is [N, C, H, W] and src [N, C, 1, 1] on big's device
static void expectChannelBroadcast(const Tensor& big, const char* bigName, const Tensor& src, const char* op) {
  expectDims(big, 4, op, bigName, "[N, C, H, W]");
  expectShape(src, {big.shape[0], big.shape[1], 1, 1}, op, "src");
  expectSameDevice(big, src, op, bigName, "src");
}

// expandChannels(src [N, C, 1, 1], like [N, C, H, W], alpha) -> alpha·src broadcast to like's shape and layout
static Napi::Value ExpandChannels(const Napi::CallbackInfo& info) {
  const char* op = "expandChannels";
  TensorPtr s = tensorArg(info, 0, op, "src"), like = tensorArg(info, 1, op, "like");
  expectChannelBroadcast(*like, "like", *s, op);
  return wrapTensor(info.Env(), expandChannels(*s, *like, (float)numberArg(info, 2, op, "alpha")));
}

// addChannelsInPlace(dst [N, C, H, W], src [N, C, 1, 1], alpha): dst += alpha·src broadcast over H, W
static Napi::Value AddChannelsInPlace(const Napi::CallbackInfo& info) {
  const char* op = "addChannelsInPlace";
  TensorPtr d = tensorArg(info, 0, op, "dst"), s = tensorArg(info, 1, op, "src");
  expectChannelBroadcast(*d, "dst", *s, op);
  addChannelsInPlace(*d, *s, (float)numberArg(info, 2, op, "alpha"));
  return info.Env().Undefined();
}

static Napi::Value Reshape(const Napi::CallbackInfo& info) {
  const char* op = "reshape";
  TensorPtr x = tensorArg(info, 0, op, "x");
  msgc::Shape s = shapeArg(info, 1, op, "shape");
  MSGC_CHECK(shapeNumel(s) == x->numel(), op, ": cannot reshape ", shapeString(x->shape), " (", x->numel(),
             " elements) to ", shapeString(s), " (", shapeNumel(s), " elements)");
  return wrapTensor(info.Env(), reshape(*x, s));
}

static Napi::Value ToPlain(const Napi::CallbackInfo& info) {
  TensorPtr x = tensorArg(info, 0, "clone", "x");
  if (x->device() == Device::CUDA) {
    TensorPtr y = emptyTensor(x->shape, Device::CUDA);
    cuda::copyDeviceToDevice(y->data(), x->data(), (size_t)x->numel() * sizeof(float));
    return wrapTensor(info.Env(), y);
  }
  return wrapTensor(info.Env(), toPlain(*x));
}

static Napi::Value Clone(const Napi::CallbackInfo& info) {
  return wrapTensor(info.Env(), cloneTensor(*tensorArg(info, 0, "clone", "x")));
}

// concatChannels([tensors])
static Napi::Value ConcatChannels(const Napi::CallbackInfo& info) {
  const char* op = "concat";
  MSGC_CHECK(info[0].IsArray(), op, ": expected an array of tensors");
  Napi::Array a = info[0].As<Napi::Array>();
  MSGC_CHECK(a.Length() >= 1, op, ": needs at least one tensor");
  std::vector<TensorPtr> hold;
  std::vector<const Tensor*> xs;
  for (uint32_t i = 0; i < a.Length(); i++) {
    std::string entry = "entry " + std::to_string(i);
    TensorPtr t = tensorFromValue(info.Env(), a.Get(i), op, entry.c_str());
    MSGC_CHECK(t->dim() >= 2, op, ": entry ", i, " has shape ", shapeString(t->shape), "; concat along channels needs >= 2 dims");
    if (i > 0) {
      const msgc::Shape& s0 = hold[0]->shape;
      bool ok = t->dim() == (int64_t)s0.size();
      for (size_t d = 0; ok && d < s0.size(); d++) ok = d == 1 || t->shape[d] == s0[d];
      MSGC_CHECK(ok, op, ": entry ", i, " has shape ", shapeString(t->shape), ", which differs from entry 0's ",
                 shapeString(s0), " outside dim 1");
      expectSameDevice(*hold[0], *t, op, "entry 0", "another entry");
    }
    hold.push_back(t);
    xs.push_back(t.get());
  }
  if (hold[0]->device() == Device::CUDA) return wrapTensor(info.Env(), cuda::concatChannels(xs));
  return wrapTensor(info.Env(), concatChannels(xs));
}

// sliceChannels(x, start, end)
static Napi::Value SliceChannels(const Napi::CallbackInfo& info) {
  const char* op = "slice";
  TensorPtr x = tensorArg(info, 0, op, "x");
  MSGC_CHECK(x->dim() >= 2, op, ": x has shape ", shapeString(x->shape), "; slicing channels needs >= 2 dims");
  int64_t start = intArg(info, 1, op, "start", 0, x->shape[1]);
  int64_t end = intArg(info, 2, op, "end", start, x->shape[1]);
  return wrapTensor(info.Env(), sliceChannels(*x, start, end));
}

// sliceChannelsBackward(gy, xShape, start)
static Napi::Value SliceChannelsBackward(const Napi::CallbackInfo& info) {
  const char* op = "slice backward";
  TensorPtr gy = tensorArg(info, 0, op, "gradOutput");
  msgc::Shape xs = shapeArg(info, 1, op, "xShape");
  MSGC_CHECK((int64_t)xs.size() == gy->dim() && xs.size() >= 2, op, ": xShape ", shapeString(xs), " does not match gradOutput ", shapeString(gy->shape));
  int64_t start = intArg(info, 2, op, "start", 0, xs[1]);
  MSGC_CHECK(start + gy->shape[1] <= xs[1], op, ": slice [", start, ", ", start + gy->shape[1], ") exceeds ", xs[1], " channels");
  for (size_t d = 0; d < xs.size(); d++)
    MSGC_CHECK(d == 1 || xs[d] == gy->shape[d], op, ": xShape ", shapeString(xs), " does not match gradOutput ", shapeString(gy->shape));
  return wrapTensor(info.Env(), sliceChannelsBackward(*gy, xs, start));
}

// sgdStep(param, grad, buffer|null, lr, momentum, weightDecay, nesterov)
static Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  const char* op = "sgd";
  TensorPtr p = tensorArg(info, 0, op, "param"), g = tensorArg(info, 1, op, "grad");
  TensorPtr buf = optionalTensorArg(info, 2, op, "momentumBuffer");
  double lr = numberArg(info, 3, op, "lr"), m = numberArg(info, 4, op, "momentum"), wd = numberArg(info, 5, op, "weightDecay");
  bool nesterov = boolArg(info, 6, op, "nesterov");
  expectShape(*g, p->shape, op, "grad");
  expectSameDevice(*p, *g, op, "param", "grad");
  MSGC_CHECK(lr >= 0, op, ": lr must be >= 0, got ", lr);
  MSGC_CHECK(m >= 0 && m < 1, op, ": momentum must be in [0, 1), got ", m);
  MSGC_CHECK(wd >= 0, op, ": weightDecay must be >= 0, got ", wd);
  MSGC_CHECK(!nesterov || m > 0, op, ": Nesterov momentum requires momentum > 0");
  MSGC_CHECK(m == 0 || buf, op, ": momentum > 0 needs a momentum buffer");
  if (buf) {
    expectShape(*buf, p->shape, op, "momentumBuffer");
    MSGC_CHECK(buf->isPlain() == p->isPlain() && (p->isPlain() || buf->storage->bytes == p->storage->bytes), op,
               ": momentumBuffer must have the parameter's layout");
  }
  sgdStep(*p, *g, buf.get(), (float)lr, (float)m, (float)wd, nesterov);
  return info.Env().Undefined();
}

// sumSquares(x) -> Σ x² (float64)
static Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), sumSquares(*tensorArg(info, 0, "sumSquares", "x")));
}

// scaleInPlace(x, alpha)
static Napi::Value ScaleInPlace(const Napi::CallbackInfo& info) {
  const char* op = "scaleInPlace";
  TensorPtr x = tensorArg(info, 0, op, "x");
  double a = numberArg(info, 1, op, "alpha");
  MSGC_CHECK(std::isfinite(a), op, ": alpha must be finite, got ", a);
  scaleInPlace(*x, (float)a);
  return info.Env().Undefined();
}

void registerMathBindings(Napi::Env env, Napi::Object exports) {
  exportFunction(env, exports, "sumSquares", SumSquares);
  exportFunction(env, exports, "scaleInPlace", ScaleInPlace);
  exportFunction(env, exports, "binary", BinaryOp, true);
  exportFunction(env, exports, "reduceToShape", ReduceToShape);
  exportFunction(env, exports, "scale", Scale, true);
  exportFunction(env, exports, "sumAll", SumAll);
  exportFunction(env, exports, "broadcastScalar", BroadcastScalar);
  exportFunction(env, exports, "addInPlace", AddInPlace);
  exportFunction(env, exports, "expandChannels", ExpandChannels);
  exportFunction(env, exports, "addChannelsInPlace", AddChannelsInPlace);
  exportFunction(env, exports, "reshape", Reshape, true);  // (a view: device-agnostic for plain tensors)
  exportFunction(env, exports, "toPlain", ToPlain, true);
  exportFunction(env, exports, "clone", Clone);
  exportFunction(env, exports, "concatChannels", ConcatChannels, true);
  exportFunction(env, exports, "sliceChannels", SliceChannels);
  exportFunction(env, exports, "sliceChannelsBackward", SliceChannelsBackward);
  exportFunction(env, exports, "sgdStep", SgdStep);
}

}  // namespace napi
}  // namespace msgc
