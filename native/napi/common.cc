// common.cc: argument readers and the exception guard for all bindings.
#include "common.h"
#include "msgc/cuda.h"

#include <dnnl.hpp>
#include <cmath>
#include <new>

namespace msgc {
namespace napi {

namespace {
// whether the handler running on this thread accepts GPU tensors (set by dispatch, restored after nested calls)
thread_local bool tCudaHandler = false;
bool cudaHandler() { return tCudaHandler; }

std::string argLabel(const char* op, const char* name) { return std::string(op) + ": " + name; }

std::string typeName(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "a boolean";
    case napi_number: return "a number";
    case napi_string: return "a string";
    case napi_function: return "a function";
    default: return v.IsArray() ? "an array" : "an object";
  }
}
}  // namespace

TensorPtr tensorArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return tensorFromValue(info.Env(), info[i], op, name);
}

TensorPtr tensorFromValue(Napi::Env env, const Napi::Value& v, const char* op, const char* name) {
  // What napi_unwrap gives is one of this addon's handles (the registry of handle addresses) in the common case.
  // Otherwise (not a handle, a disposed one, another addon's wrapped object) NativeTensor::Is says whether it is a
  // handle dispose() released. (Until 2026-12-05 a type tag was checked on every argument, a private property read and
  // a BigInt comparison: ~0.5 µs an argument inside MobileNetV2 at batch 1, whose gate heads take 11 tensors a call.)
  NativeTensor* t = nullptr;
  void* raw = nullptr;
  if (napi_unwrap(env, v, &raw) == napi_ok && raw != nullptr && NativeTensor::IsHandle(raw)) {
    t = static_cast<NativeTensor*>(raw);
  } else {
    MSGC_CHECK(NativeTensor::Is(v), argLabel(op, name), " must be a Tensor, got ", typeName(v));
    // (a handle whose wrap dispose() removed unwraps to the disposed sentinel, which holds no tensor either)
    t = NativeTensor::Unwrap(v.As<Napi::Object>());
  }
  MSGC_CHECK(t->tensor() != nullptr, argLabel(op, name), " was disposed; it can no longer be used");
  MSGC_CHECK(t->tensor()->device() == Device::CPU || cudaHandler(), argLabel(op, name),
             " is on cuda, but this op runs on the CPU only so far (on cuda: ", kCudaOps,
             "); move it with .to('cpu')");
  return t->tensor();
}

TensorPtr optionalTensorArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Value v = info[i];
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return tensorArg(info, i, op, name);
}

double numberArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Value v = info[i];
  MSGC_CHECK(v.IsNumber(), argLabel(op, name), " must be a number, got ", typeName(v));
  double d = v.As<Napi::Number>().DoubleValue();
  MSGC_CHECK(std::isfinite(d), argLabel(op, name), " must be finite, got ", d);
  return d;
}

int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t min, int64_t max) {
  double d = numberArg(info, i, op, name);
  MSGC_CHECK(d == std::floor(d), argLabel(op, name), " must be an integer, got ", d);
  MSGC_CHECK(d >= (double)min && d <= (double)max, argLabel(op, name), " must be in [", min, ", ", max, "], got ",
             (int64_t)d);
  return (int64_t)d;
}

bool boolArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Value v = info[i];
  MSGC_CHECK(v.IsBoolean(), argLabel(op, name), " must be a boolean, got ", typeName(v));
  return v.As<Napi::Boolean>().Value();
}

Shape shapeArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Value v = info[i];
  MSGC_CHECK(v.IsArray(), argLabel(op, name), " must be an array of dimensions, got ", typeName(v));
  Napi::Array a = v.As<Napi::Array>();
  MSGC_CHECK(a.Length() <= 8, argLabel(op, name), " has ", a.Length(), " dims; at most 8 are supported");
  Shape s;
  double total = 1;
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value d = a.Get(k);
    MSGC_CHECK(d.IsNumber(), argLabel(op, name), "[", k, "] must be a number, got ", typeName(d));
    double x = d.As<Napi::Number>().DoubleValue();
    MSGC_CHECK(std::isfinite(x) && x == std::floor(x) && x >= 0, argLabel(op, name), "[", k,
               "] must be a non-negative integer, got ", x);
    total *= x;
    s.push_back((int64_t)x);
  }
  MSGC_CHECK(total <= 4e9, argLabel(op, name), " ", shapeString(s), " has ", total,
             " elements; at most 4e9 are supported");
  return s;
}

std::vector<int64_t> intListArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name,
                                size_t length, int64_t min, int64_t max) {
  Napi::Value v = info[i];
  MSGC_CHECK(v.IsArray(), argLabel(op, name), " must be an array of ", length, " integers, got ", typeName(v));
  Napi::Array a = v.As<Napi::Array>();
  MSGC_CHECK(a.Length() == length, argLabel(op, name), " must have ", length, " entries, got ", a.Length());
  std::vector<int64_t> out;
  for (uint32_t k = 0; k < length; k++) {
    Napi::Value d = a.Get(k);
    MSGC_CHECK(d.IsNumber(), argLabel(op, name), "[", k, "] must be a number, got ", typeName(d));
    double x = d.As<Napi::Number>().DoubleValue();
    MSGC_CHECK(std::isfinite(x) && x == std::floor(x) && x >= (double)min && x <= (double)max, argLabel(op, name), "[",
               k, "] must be an integer in [", min, ", ", max, "], got ", x);
    out.push_back((int64_t)x);
  }
  return out;
}

void expectWorkBound(double work, const char* op, const std::string& what) {
  MSGC_CHECK(work <= 1e13, op, ": ", what, " needs ", work, " multiply-adds; at most 1e13 are supported (check sizes, padding and dilation)");
}

void expectDims(const Tensor& t, int64_t dims, const char* op, const char* name, const char* meaning) {
  MSGC_CHECK(t.dim() == dims, op, ": ", name, " has ", t.dim(), " dims (shape ", shapeString(t.shape), "), expected ",
             dims, " (", meaning, ")");
}

void expectShape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  MSGC_CHECK(t.shape == shape, op, ": ", name, " has shape ", shapeString(t.shape), ", expected ", shapeString(shape));
}

void expectSameDevice(const Tensor& a, const Tensor& b, const char* op, const char* nameA, const char* nameB) {
  MSGC_CHECK(a.device() == b.device(), op, ": ", nameA, " is on ", deviceName(a.device()), " but ", nameB, " is on ",
             deviceName(b.device()), "; move both to the same device");
}

Napi::Value wrapTensor(Napi::Env env, const TensorPtr& t) {
  if (!t) return env.Null();
  return NativeTensor::Wrap(env, t);
}

Napi::Array tensorList(Napi::Env env, std::initializer_list<TensorPtr> ts) {
  Napi::Array a = Napi::Array::New(env, ts.size());
  uint32_t i = 0;
  for (const TensorPtr& t : ts) a.Set(i++, wrapTensor(env, t));
  return a;
}

void expectChannelVector(const TensorPtr& t, int64_t C, const char* op, const char* name, const Tensor& x) {
  if (!t) return;
  expectShape(*t, {C}, op, name);
  expectSameDevice(x, *t, op, "x", name);
}

std::recursive_mutex& opMutex() {
  static std::recursive_mutex mu;
  return mu;
}

Impl implFor(const Tensor& x) {
  if (x.device() == Device::CUDA) return Impl::Cuda;
  return cuda::emulating() ? Impl::Emulated : Impl::Cpu;
}

const char* const kCudaOps =
    "the eval forward of models: tensor copies, conv2d (+ eval BatchNorm), eval BatchNorm (+ activation), "
    "activations, add/sub/mul, scale, pooling, linear, concat, the gate heads and eval gates, and the MSGC convolution's "
    "forward, masked and gathered, with its fused BatchNorm";

namespace {
struct Registered {
  Handler fn;
  bool cuda;
};

struct CudaHandlerScope {
  bool saved;
  explicit CudaHandlerScope(bool on) : saved(tCudaHandler) { tCudaHandler = on; }
  ~CudaHandlerScope() { tCudaHandler = saved; }
};

Napi::Value dispatch(const Napi::CallbackInfo& info) {
  const Registered* r = static_cast<const Registered*>(info.Data());
  Handler fn = r->fn;
  CudaHandlerScope cudaScope(r->cuda);
  try {
    std::lock_guard<std::recursive_mutex> lock(opMutex());
    ScopedFlushDenormals flush;  // restored before JavaScript runs again
    return fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    throw Napi::Error::New(info.Env(), std::string("msgc native (oneDNN): ") + e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), "msgc native: out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}
}  // namespace

void exportFunction(Napi::Env env, Napi::Object exports, const char* name, Handler fn, bool cuda) {
  // one small record per exported function, for the process's lifetime (as the functions themselves)
  Registered* r = new Registered{fn, cuda};
  exports.Set(name, Napi::Function::New(env, dispatch, name, r));
}

}  // namespace napi
}  // namespace msgc
