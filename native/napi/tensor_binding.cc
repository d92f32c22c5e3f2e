// tensor_binding.cc: the NativeTensor handle and tensor creation, randomness, memory statistics, threads.
#include <mutex>
#include <unordered_set>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "../cpu/layout.h"
#include "common.h"
#include "msgc/cuda.h"
#include "msgc/ops.h"

namespace msgc {
namespace napi {

Napi::Function NativeTensor::Define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {InstanceAccessor<&NativeTensor::Shape>("shape"),
                      InstanceMethod<&NativeTensor::Dims>("dims"),
                      InstanceAccessor<&NativeTensor::Layout>("layout"),
                      InstanceAccessor<&NativeTensor::Device>("device"),
                      InstanceAccessor<&NativeTensor::Disposed>("disposed"),
                      InstanceMethod<&NativeTensor::ToFloat32Array>("toFloat32Array"),
                      InstanceMethod<&NativeTensor::CopyFrom>("copyFrom"),
                      InstanceMethod<&NativeTensor::Item>("item"),
                      InstanceMethod<&NativeTensor::Account>("account"),
                      InstanceMethod<&NativeTensor::Dispose>("dispose")});
}

// Whether v is a handle dispose() released, for the error path of the argument readers (tensorFromValue): live
// handles (and `new NativeTensor()`, which holds no tensor) keep their wrap and are known from the registry of
// handle addresses below. dispose() marks the object with a symbol of this addon after removing the wrap. Until
// 2026-12-06 every handle carried a type tag instead, set in the constructor: a second private property after the
// wrap's, so that removing the wrap deleted a property from the middle of the object's and turned it into a
// dictionary-mode object (a hash table allocated per handle); deleting the last property added rolls the object's
// map back instead. The two builds alternating in one process: creating a handle 1.32-1.36 -> 1.12-1.22 µs;
// disposing of one 0.51-0.54 -> 0.56-0.57 µs (setting the mark costs what the dictionary conversion did, but no hash
// table is left per disposed handle; without the mark, which the error messages need, 0.34-0.56).
bool NativeTensor::Is(const Napi::Value& v) {
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  bool has = false;
  if (napi_has_own_property(v.Env(), o, v.Env().GetInstanceData<AddonData>()->disposedMark.Value(), &has) != napi_ok) {
    // (a Proxy's trap may throw: not a Tensor, and no exception left pending)
    napi_value pending;
    napi_get_and_clear_last_exception(v.Env(), &pending);
    return false;
  }
  return has;
}

NativeTensor* NativeTensor::Unwrap(Napi::Object wrapper) {
  void* raw = nullptr;
  if (napi_unwrap(wrapper.Env(), wrapper, &raw) == napi_ok && raw != nullptr) return static_cast<NativeTensor*>(raw);
  return wrapper.Env().GetInstanceData<AddonData>()->disposedSentinel;
}

Napi::Object NativeTensor::Wrap(Napi::Env env, TensorPtr t) {
  AddonData* data = env.GetInstanceData<AddonData>();
  Napi::Object obj = data->tensorConstructor.New({});
  NativeTensor* self = Unwrap(obj);
  self->tensor_ = std::move(t);
  return obj;
}

// The handle objects alive in the process, by address (every environment's: an address seen here is a NativeTensor
// whatever environment made it); its size is memoryStats().liveHandles. (Never destroyed: a handle's destructor may
// run during the process's exit.)
static std::mutex& handlesMutex() {
  static std::mutex* m = new std::mutex;
  return *m;
}
static std::unordered_set<const void*>& handleSet() {
  static auto* s = new std::unordered_set<const void*>;
  return *s;
}
bool NativeTensor::IsHandle(const void* p) {
  std::lock_guard<std::mutex> lock(handlesMutex());
  return handleSet().count(p) != 0;
}
int64_t NativeTensor::liveHandles() {
  std::lock_guard<std::mutex> lock(handlesMutex());
  return (int64_t)handleSet().size();
}

// Only Wrap() creates working handles; `new NativeTensor()` from JavaScript gives a disposed one.
NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  std::lock_guard<std::mutex> lock(handlesMutex());
  handleSet().insert(this);
}

NativeTensor::~NativeTensor() {
  {
    std::lock_guard<std::mutex> lock(handlesMutex());
    handleSet().erase(this);
  }
  // finalizer backstop: the native memory goes with the handle
  if (tensor_) {
    tensor_.reset();
    if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -accounted_);
  }
}

void NativeTensor::release(Napi::Env env) {
  if (!tensor_) return;
  tensor_.reset();
  if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(env, -accounted_);
  accounted_ = 0;
}

static const TensorPtr& live(const TensorPtr& t, const char* what) {
  MSGC_CHECK(t != nullptr, "tensor.", what, ": the tensor was disposed; it can no longer be used");
  return t;
}

static Napi::Value guard(Napi::Env env, const std::function<Napi::Value()>& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value NativeTensor::Shape(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const TensorPtr& t = live(tensor_, "shape");
    Napi::Array a = Napi::Array::New(info.Env(), t->shape.size());
    for (size_t i = 0; i < t->shape.size(); i++) a.Set((uint32_t)i, Napi::Number::New(info.Env(), (double)t->shape[i]));
    return a;
  });
}

// The shape into the addon's shapeBuffer; returns the rank (-1 past kShapeSlots dims: read `shape` then). About
// 0.1 µs against 0.7 for `shape`, which a new JavaScript Tensor read (MobileNetV2 makes ~100 a forward at batch 1).
Napi::Value NativeTensor::Dims(const Napi::CallbackInfo& info) {
  if (!tensor_) throw Napi::Error::New(info.Env(), "tensor.shape: the tensor was disposed; it can no longer be used");
  const msgc::Shape& s = tensor_->shape;
  if (s.size() > AddonData::kShapeSlots) return Napi::Number::New(info.Env(), -1);
  double* d = info.Env().GetInstanceData<AddonData>()->shapeData;
  for (size_t i = 0; i < s.size(); i++) d[i] = (double)s[i];
  return Napi::Number::New(info.Env(), (double)s.size());
}

Napi::Value NativeTensor::Layout(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const TensorPtr& t = live(tensor_, "layout");
    return Napi::String::New(info.Env(), t->layout ? "blocked" : "plain");
  });
}

Napi::Value NativeTensor::Device(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const TensorPtr& t = live(tensor_, "device");
    return Napi::String::New(info.Env(), deviceName(t->device()));
  });
}

Napi::Value NativeTensor::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tensor_ == nullptr);
}

Napi::Value NativeTensor::ToFloat32Array(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const TensorPtr& t = live(tensor_, "toFloat32Array");
    std::lock_guard<std::recursive_mutex> lock(opMutex());  // (a reorder: oneDNN and the process-wide caches)
    int64_t n = t->numel();
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), (size_t)n);
    if (n && t->device() == Device::CUDA)
      cuda::copyDeviceToHost(out.Data(), t->data(), (size_t)n * sizeof(float));
    else if (n)
      std::memcpy(out.Data(), cpu::plainData(*t), (size_t)n * sizeof(float));
    return out;
  });
}

Napi::Value NativeTensor::Item(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const TensorPtr& t = live(tensor_, "item");
    std::lock_guard<std::recursive_mutex> lock(opMutex());  // (a reorder: oneDNN and the process-wide caches)
    MSGC_CHECK(t->numel() == 1, "tensor.item: the tensor has ", t->numel(), " elements (shape ", shapeString(t->shape),
               "), expected exactly 1");
    float v = 0;
    if (t->device() == Device::CUDA)
      cuda::copyDeviceToHost(&v, t->data(), sizeof(float));
    else
      v = cpu::plainData(*t)[0];
    return Napi::Number::New(info.Env(), v);
  });
}

Napi::Value NativeTensor::CopyFrom(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const TensorPtr& t = live(tensor_, "copyFrom");
    std::lock_guard<std::recursive_mutex> lock(opMutex());  // (a reorder: oneDNN and the process-wide caches)
    MSGC_CHECK(info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array,
               "tensor.copyFrom: data must be a Float32Array");
    Napi::Float32Array a = info[0].As<Napi::Float32Array>();
    MSGC_CHECK((int64_t)a.ElementLength() == t->numel(), "tensor.copyFrom: data has ", a.ElementLength(),
               " elements, expected ", t->numel(), " for shape ", shapeString(t->shape));
    if (t->device() == Device::CUDA) {
      cuda::copyHostToDevice(t->data(), a.Data(), (size_t)t->numel() * sizeof(float));
      t->storage->touch();
    } else {
      copyFromHost(*t, a.Data());
    }
    return info.Env().Undefined();
  });
}

// Tells V8 about the storage this handle holds, so that garbage collection comes sooner when handles that were
// never disposed pile up. JavaScript calls it only for tensors that no tidy scope will dispose: counting the
// short-lived intermediates of a scope made V8 run a full collection on every forward pass (which found nothing
// to free; MobileNetV2 at batch 1 ran 1.6x slower for it).
Napi::Value NativeTensor::Account(const Napi::CallbackInfo& info) {
  if (tensor_ && !accounted_) {
    accounted_ = (int64_t)tensor_->storage->bytes;
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), accounted_);
  }
  return info.Env().Undefined();
}

Napi::Value NativeTensor::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  release(env);
  // (not the sentinel, which stands for every disposed handle and is what a handle without its wrap unwraps to;
  // any other `this` is the wrap of info.This())
  AddonData* data = env.GetInstanceData<AddonData>();
  if (this != data->disposedSentinel && napi_remove_wrap(env, info.This(), nullptr) == napi_ok) {
    napi_set_property(env, info.This(), data->disposedMark.Value(), Napi::Boolean::New(env, true));
    delete this;  // (~ObjectWrap deletes its reference, and with it the weak handle; nothing here runs after)
  }
  return env.Undefined();
}

// ---- module-level functions ----

// fromFloat32(data: Float32Array, shape)
static Napi::Value FromFloat32(const Napi::CallbackInfo& info) {
  const char* op = "tensor";
  MSGC_CHECK(info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array, op,
             ": data must be a Float32Array");
  Napi::Float32Array a = info[0].As<Napi::Float32Array>();
  msgc::Shape s = shapeArg(info, 1, op, "shape");
  MSGC_CHECK((int64_t)a.ElementLength() == shapeNumel(s), op, ": data has ", a.ElementLength(),
             " elements but shape ", shapeString(s), " needs ", shapeNumel(s));
  return wrapTensor(info.Env(), fromHost(a.Data(), s));
}

// full(shape, value)
static Napi::Value Full(const Napi::CallbackInfo& info) {
  msgc::Shape s = shapeArg(info, 0, "full", "shape");
  return wrapTensor(info.Env(), fullTensor(s, (float)numberArg(info, 1, "full", "value")));
}

// randomNormal(shape, seed, mean, std) / randomUniform(shape, seed, low, high); seed < 0 draws from the global
// generator
static uint64_t seedArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  double s = numberArg(info, i, op, "seed");
  MSGC_CHECK(s == std::floor(s) && s < 9007199254740992.0, op, ": seed must be an integer, got ", s);
  return s < 0 ? nextSeed() : (uint64_t)s;
}

static Napi::Value RandomNormal(const Napi::CallbackInfo& info) {
  msgc::Shape s = shapeArg(info, 0, "randn", "shape");
  uint64_t seed = seedArg(info, 1, "randn");
  TensorPtr t = emptyTensor(s);
  fillNormal(t->data(), t->numel(), seed, (float)numberArg(info, 2, "randn", "mean"),
             (float)numberArg(info, 3, "randn", "std"));
  return wrapTensor(info.Env(), t);
}

static Napi::Value RandomUniform(const Napi::CallbackInfo& info) {
  msgc::Shape s = shapeArg(info, 0, "rand", "shape");
  uint64_t seed = seedArg(info, 1, "rand");
  double lo = numberArg(info, 2, "rand", "low"), hi = numberArg(info, 3, "rand", "high");
  MSGC_CHECK(lo <= hi, "rand: low (", lo, ") must not exceed high (", hi, ")");
  TensorPtr t = emptyTensor(s);
  fillUniform(t->data(), t->numel(), seed, (float)lo, (float)hi);
  return wrapTensor(info.Env(), t);
}

static Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  manualSeed(seedArg(info, 0, "manualSeed"));
  return info.Env().Undefined();
}

// a fresh seed (< 2^53) from the global generator, for ops that draw noise
static Napi::Value NextSeed(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)(nextSeed() >> 11));
}

// the global generator's state as a decimal string (64-bit), for exact resume from checkpoints
static Napi::Value GetRngState(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), std::to_string(rngState()));
}

static Napi::Value SetRngState(const Napi::CallbackInfo& info) {
  MSGC_CHECK(info[0].IsString(), "setRngState: state must be a decimal string");
  std::string s = info[0].As<Napi::String>().Utf8Value();
  MSGC_CHECK(!s.empty() && s.size() <= 20 && s.find_first_not_of("0123456789") == std::string::npos,
             "setRngState: state must be a decimal string of at most 20 digits, got '", s, "'");
  unsigned long long v = std::stoull(s);
  setRngState((uint64_t)v);
  return info.Env().Undefined();
}

static Napi::Value LiveTensorCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)liveTensorCount());
}

static Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  AllocatorStats s = allocatorStats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("liveTensors", (double)liveTensorCount());
  o.Set("liveBuffers", (double)s.liveBuffers);
  o.Set("liveHandles", (double)NativeTensor::liveHandles());
  o.Set("liveBytes", (double)s.liveBytes);
  o.Set("cachedBytes", (double)s.cachedBytes);
  o.Set("peakBytes", (double)s.peakBytes);
  o.Set("cacheLimitBytes", (double)s.cacheLimitBytes);
  // oneDNN primitives cached by shape, all caches together, and each cache's capacity (cpu/prim_cache.h)
  o.Set("primitiveCacheEntries", (double)cpu::primitiveCacheEntries());
  o.Set("primitiveCacheCapacity", (double)cpu::primitiveCacheCapacity());
  // what the isolate counts as external memory (tensors that outlive every tidy scope, see Account(), plus
  // whatever else the process reports, e.g. Buffers)
  o.Set("externalBytes", (double)Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0));
  // the GPU's caching allocator (zeros in a build or on a machine without CUDA)
  cuda::DeviceMemoryStats d = cuda::deviceMemoryStats();
  o.Set("cudaLiveBuffers", (double)d.liveBuffers);
  o.Set("cudaLiveBytes", (double)d.liveBytes);
  o.Set("cudaCachedBytes", (double)d.cachedBytes);
  o.Set("cudaPeakBytes", (double)d.peakBytes);
  return o;
}

static Device deviceArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  MSGC_CHECK(info[i].IsString(), op, ": device must be 'cpu' or 'cuda'");
  const std::string d = info[i].As<Napi::String>().Utf8Value();
  if (d == "cpu") return Device::CPU;
  MSGC_CHECK(d == "cuda" || d == "cuda:0", op, ": device must be 'cpu' or 'cuda', got '", d, "'");
  MSGC_CHECK(cuda::available(), op, ": cuda is not available: ", cuda::unavailableReason());
  return Device::CUDA;
}

// toDevice(t, device): a copy of t on `device` (plain layout); t itself when it is already there
static Napi::Value ToDevice(const Napi::CallbackInfo& info) {
  const char* op = "to";
  TensorPtr t = tensorArg(info, 0, op, "tensor");
  const Device d = deviceArg(info, 1, op);
  if (t->device() == d) return info[0];
  const size_t bytes = (size_t)t->numel() * sizeof(float);
  if (d == Device::CUDA) {
    TensorPtr plain = t->isPlain() ? t : toPlain(*t);
    TensorPtr out = emptyTensor(t->shape, Device::CUDA);
    cuda::copyHostToDevice(out->data(), plain->data(), bytes);
    return wrapTensor(info.Env(), out);
  }
  TensorPtr out = emptyTensor(t->shape, Device::CPU);
  cuda::copyDeviceToHost(out->data(), t->data(), bytes);
  return wrapTensor(info.Env(), out);
}

// cudaInfo() -> { compiled, available, reason, name?, computeCapability?, multiprocessors?, memoryBytes?,
// runtimeVersion?, driverVersion?, cudnnVersion? }
static Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("compiled", cuda::compiled());
  o.Set("available", cuda::available());
  o.Set("reason", cuda::unavailableReason());
  if (cuda::available()) {
    cuda::DeviceInfo d = cuda::deviceInfo();
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("multiprocessors", d.multiprocessors);
    o.Set("memoryBytes", (double)d.totalBytes);
    o.Set("runtimeVersion", d.runtimeVersion);
    o.Set("driverVersion", d.driverVersion);
    o.Set("cudnnVersion", d.cudnnVersion);
  }
  return o;
}

// cudaSynchronize(): waits for the GPU's queued work (benchmarks; errors of earlier kernels surface here)
static Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  cuda::synchronize();
  return info.Env().Undefined();
}

static Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  emptyAllocatorCache();
  cuda::emptyDeviceCache();
  return info.Env().Undefined();
}

static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  setNumThreads((int)intArg(info, 0, "setNumThreads", "threads", 1, 1024));
  return info.Env().Undefined();
}

static Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), getNumThreads());
}

static Napi::Value GatheredKernels(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), gatheredKernelIsa());
}

static Napi::Value SetFlushDenormals(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), setFlushDenormals(boolArg(info, 0, "setFlushDenormals", "on")));
}

static Napi::Value GetFlushDenormals(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), flushDenormals());
}

// setEnv(name, value | null): sets (or, with null, removes) an MSGC_* variable in the process environment that
// the native code reads (test and benchmark switches). Inside jest, assigning process.env changes only a copy, so
// tests set the native switches through this.
static Napi::Value SetEnv(const Napi::CallbackInfo& info) {
  const char* op = "setEnv";
  MSGC_CHECK(info.Length() >= 2, op, ": expected (name, value | null)");
  MSGC_CHECK(info[0].IsString(), op, ": name must be a string");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  MSGC_CHECK(name.size() > 5 && name.compare(0, 5, "MSGC_") == 0 && name.find('=') == std::string::npos, op,
             ": name must be an MSGC_* variable, got '", name, "'");
  if (info[1].IsNull() || info[1].IsUndefined()) {
    unsetenv(name.c_str());
  } else {
    MSGC_CHECK(info[1].IsString(), op, ": value must be a string or null");
    setenv(name.c_str(), info[1].As<Napi::String>().Utf8Value().c_str(), 1);
  }
  return info.Env().Undefined();
}

// getEnv(name) -> the value the native code sees, or null
static Napi::Value GetEnv(const Napi::CallbackInfo& info) {
  MSGC_CHECK(info.Length() >= 1 && info[0].IsString(), "getEnv: name must be a string");
  const char* v = std::getenv(info[0].As<Napi::String>().Utf8Value().c_str());
  if (!v) return info.Env().Null();
  return Napi::String::New(info.Env(), v);
}

void registerTensorBindings(Napi::Env env, Napi::Object exports) {
  exportFunction(env, exports, "setEnv", SetEnv);
  exportFunction(env, exports, "getEnv", GetEnv);
  exportFunction(env, exports, "fromFloat32", FromFloat32);
  exportFunction(env, exports, "full", Full);
  exportFunction(env, exports, "randomNormal", RandomNormal);
  exportFunction(env, exports, "randomUniform", RandomUniform);
  exportFunction(env, exports, "manualSeed", ManualSeed);
  exportFunction(env, exports, "liveTensorCount", LiveTensorCount);
  exportFunction(env, exports, "nextSeed", NextSeed);
  exportFunction(env, exports, "getRngState", GetRngState);
  exportFunction(env, exports, "setRngState", SetRngState);
  exportFunction(env, exports, "memoryStats", MemoryStats);
  exportFunction(env, exports, "emptyCache", EmptyCache);
  exportFunction(env, exports, "setNumThreads", SetNumThreads);
  exportFunction(env, exports, "getNumThreads", GetNumThreads);
  exportFunction(env, exports, "gatheredKernels", GatheredKernels);
  exportFunction(env, exports, "setFlushDenormals", SetFlushDenormals);
  exportFunction(env, exports, "getFlushDenormals", GetFlushDenormals);
  exportFunction(env, exports, "toDevice", ToDevice, true);
  exportFunction(env, exports, "cudaInfo", CudaInfo);
  exportFunction(env, exports, "cudaSynchronize", CudaSynchronize);
}

}  // namespace napi
}  // namespace msgc
