// common.h: the N-API boundary's shared pieces: the NativeTensor handle class, argument readers that check
// everything that could crash a kernel, and the guard that turns C++ exceptions into JavaScript Errors.
#pragma once
#include <napi.h>

#include <mutex>
#include <string>
#include <vector>

#include "msgc/errors.h"
#include "msgc/tensor.h"

namespace msgc {
namespace napi {

// A JavaScript handle to a native tensor. dispose() frees now; the finalizer is only a backstop.
// dispose() also removes the wrap and deletes this object, so that the handle leaves nothing for the garbage
// collector: a wrapped object holds a weak V8 handle, which each scavenge visits and, once the object is dead,
// finalizes. MobileNetV2 at batch 1 makes ~70-90 tensors a forward pass; their weak handles were 3.4 ms of a 3.9 ms
// scavenge (--trace-gc-nvp: heap.external_weak_global_handles, scavenge.weak_global_handles.process).
class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, TensorPtr t);
  static bool Is(const Napi::Value& v);  // a handle dispose() released (its mark); live ones: IsHandle
  // Hides ObjectWrap::Unwrap, which node-addon-api's method and accessor callbacks call: for a handle whose wrap
  // dispose() removed (or an object with no wrap), the environment's disposed sentinel instead of an exception, so
  // that the handle's methods answer as for any disposed handle ("the tensor was disposed", disposed: true).
  static NativeTensor* Unwrap(Napi::Object wrapper);
  // whether p is a handle object of this addon (alive): what napi_unwrap gave for a value is one of ours
  static bool IsHandle(const void* p);
  // handle objects alive in the process (wrapped; a disposed one is deleted at once, an undisposed one when its
  // JavaScript object is collected): memoryStats().liveHandles
  static int64_t liveHandles();
  explicit NativeTensor(const Napi::CallbackInfo& info);
  ~NativeTensor() override;
  const TensorPtr& tensor() const { return tensor_; }
  void release(Napi::Env env);

 private:
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dims(const Napi::CallbackInfo& info);
  Napi::Value Layout(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ToFloat32Array(const Napi::CallbackInfo& info);
  Napi::Value CopyFrom(const Napi::CallbackInfo& info);
  Napi::Value Account(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Item(const Napi::CallbackInfo& info);
  TensorPtr tensor_;
  int64_t accounted_ = 0;
};

struct AddonData {
  Napi::FunctionReference tensorConstructor;
  // a handle that holds no tensor and keeps its wrap: what NativeTensor::Unwrap answers for disposed handles
  Napi::ObjectReference disposedHandle;
  NativeTensor* disposedSentinel = nullptr;
  // set on a handle by dispose(), after its wrap is removed: tells a disposed handle from an object that only
  // shares the class's prototype (NativeTensor::Is)
  Napi::Reference<Napi::Symbol> disposedMark;
  // exports.shapeBuffer: NativeTensor.dims() writes the shape here (a Float64Array of kShapeSlots), so that a new
  // JavaScript Tensor reads its shape without the `shape` accessor building an array through N-API element by element
  static constexpr size_t kShapeSlots = 16;
  Napi::Reference<Napi::Float64Array> shapeBuffer;
  double* shapeData = nullptr;
};

// ---- argument readers; each throws msgc::Error naming the op and the argument ----
TensorPtr tensorArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
TensorPtr tensorFromValue(Napi::Env env, const Napi::Value& v, const char* op, const char* name);
TensorPtr optionalTensorArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
double numberArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t min, int64_t max);
bool boolArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
Shape shapeArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
std::vector<int64_t> intListArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name,
                                size_t length, int64_t min, int64_t max);

// rejects ops whose work (multiply-adds or window reads) is beyond any sane size, before sizes overflow
void expectWorkBound(double work, const char* op, const std::string& what);
void expectDims(const Tensor& t, int64_t dims, const char* op, const char* name, const char* meaning);
void expectShape(const Tensor& t, const Shape& shape, const char* op, const char* name);
void expectSameDevice(const Tensor& a, const Tensor& b, const char* op, const char* nameA, const char* nameB);

Napi::Value wrapTensor(Napi::Env env, const TensorPtr& t);  // null -> JavaScript null
Napi::Array tensorList(Napi::Env env, std::initializer_list<TensorPtr> ts);
// t (when given) has shape [C] and x's device
void expectChannelVector(const TensorPtr& t, int64_t C, const char* op, const char* name, const Tensor& x);

// One native op at a time in the process. Each JavaScript thread (the main one, every worker_threads Worker) that
// loads the addon calls it directly; the native caches (primitives by shape, weight folds) are process-wide and not
// safe for concurrent use, and oneDNN's JIT convolutions run their OpenMP team to barriers of their own, which
// hung when two threads' teams competed for the cores. Every op already uses all the cores it is given, so
// serialising costs the threads nothing but their overlap; uncontended, the lock costs tens of nanoseconds.
// (Recursive: an argument reader can run JavaScript, a getter or a Proxy, that calls another op.)
std::recursive_mutex& opMutex();

using Handler = Napi::Value (*)(const Napi::CallbackInfo&);
// Registers `fn` on `exports` behind the exception guard and the op lock. Only handlers registered with
// `cuda = true` accept tensors on the GPU (they dispatch to native/cuda themselves); every other handler's tensor
// arguments are checked to be on the CPU, so a GPU pointer never reaches a CPU kernel.
void exportFunction(Napi::Env env, Napi::Object exports, const char* name, Handler fn, bool cuda = false);
// what the GPU runs so far, for the error a CPU-only op gives
extern const char* const kCudaOps;

// Which implementation a GPU-capable op runs for its tensors: the GPU's (tensors on cuda), the GPU kernels' code
// emulated on the host (CPU tensors with MSGC_CUDA_EMULATE=1: tests), or the CPU backend's.
enum class Impl { Cpu, Cuda, Emulated };
Impl implFor(const Tensor& x);

// Registration of each binding area (one file each).
void registerTensorBindings(Napi::Env env, Napi::Object exports);
void registerConvBindings(Napi::Env env, Napi::Object exports);
void registerLayerBindings(Napi::Env env, Napi::Object exports);
void registerMathBindings(Napi::Env env, Napi::Object exports);
void registerMsgcBindings(Napi::Env env, Napi::Object exports);

}  // namespace napi
}  // namespace msgc
