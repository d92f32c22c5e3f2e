// addon.cc: module initialisation only; each area registers its own functions.
#include "common.h"
#include "msgc/cuda.h"

namespace msgc {
namespace napi {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  Napi::Function ctor = NativeTensor::Define(env);
  data->tensorConstructor = Napi::Persistent(ctor);
  Napi::Object sentinel = ctor.New({});
  data->disposedHandle = Napi::Persistent(sentinel);
  data->disposedSentinel = NativeTensor::Unwrap(sentinel);
  data->disposedMark = Napi::Persistent(Napi::Symbol::New(env, "msgc.disposed"));
  Napi::Float64Array shapes = Napi::Float64Array::New(env, AddonData::kShapeSlots);
  data->shapeBuffer = Napi::Persistent(shapes);
  data->shapeData = shapes.Data();
  env.SetInstanceData<AddonData>(data);
  exports.Set("NativeTensor", ctor);
  exports.Set("shapeBuffer", shapes);
  registerTensorBindings(env, exports);
  registerConvBindings(env, exports);
  registerLayerBindings(env, exports);
  registerMathBindings(env, exports);
  registerMsgcBindings(env, exports);
  Napi::Object info = Napi::Object::New(env);
  // (a CUDA build says so even where no GPU is usable; cudaInfo() tells whether one is)
  info.Set("backend", cuda::compiled() ? "cpu+cuda" : "cpu");
  info.Set("devices", Napi::Array::New(env, 0));
#if defined(MSGC_WITH_CUDNN)
  info.Set("library", "oneDNN + CUDA + cuDNN");
#elif defined(MSGC_WITH_CUDA)
  info.Set("library", "oneDNN + CUDA (no cuDNN)");
#else
  info.Set("library", "oneDNN");
#endif
  exports.Set("buildInfo", info);
  return exports;
}

}  // namespace napi
}  // namespace msgc

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return msgc::napi::Init(env, exports); }

NODE_API_MODULE(msgc, InitModule)
