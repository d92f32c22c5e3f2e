// cuda_stub.cc: the CUDA interface in a build without the CUDA backend (CMake found no CUDA toolkit or cuDNN):
// `available()` is false and every other call throws an Error that says how to get a CUDA build.
#ifndef MSGC_WITH_CUDA
#include "msgc/cuda.h"
#include "msgc/errors.h"

namespace msgc {
namespace cuda {
namespace {
const char* kWhy =
    "this build of msgc has no CUDA backend (it was compiled without the CUDA toolkit and cuDNN; install both and "
    "rebuild from source with `npm run build:native`, or install a CUDA prebuilt binary)";
[[noreturn]] void noCuda() { fail("cuda: ", kWhy); }
}  // namespace

bool compiled() { return false; }
bool available() { return false; }
std::string unavailableReason() { return kWhy; }
DeviceInfo deviceInfo() { noCuda(); }
void* allocDevice(size_t) { noCuda(); }
void freeDevice(void*, size_t) {}
DeviceMemoryStats deviceMemoryStats() { return {}; }
void emptyDeviceCache() {}
void copyHostToDevice(void*, const void*, size_t) { noCuda(); }
void copyDeviceToHost(void*, const void*, size_t) { noCuda(); }
void copyDeviceToDevice(void*, const void*, size_t) { noCuda(); }
void fill(float*, int64_t, float) { noCuda(); }
void synchronize() { noCuda(); }
TensorPtr conv2dForward(const Tensor&, const Tensor&, const Tensor*, const Conv2dParams&) { noCuda(); }
TensorPtr batchNormActEval(const Tensor&, const Tensor&, const Tensor&, const Tensor*, const Tensor*, float, int,
                           const Tensor*, TensorPtr*) {
  noCuda();
}
TensorPtr msgcConvForward(const Tensor&, const Tensor&, const Tensor&, const MsgcConvParams&, bool, const Tensor*,
                          const FusedBnAct*, TensorPtr*) {
  noCuda();
}

TensorPtr activationForward(Activation, const Tensor&) { noCuda(); }
TensorPtr scale(const Tensor&, float) { noCuda(); }
TensorPtr binaryForward(Binary, const Tensor&, const Tensor&) { noCuda(); }
TensorPtr pool2dForward(PoolKind, const Tensor&, const Pool2dParams&) { noCuda(); }
TensorPtr linearForward(const Tensor&, const Tensor&, const Tensor*) { noCuda(); }
TensorPtr squeezeHeadEval(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*, const Tensor*, float,
                          const Tensor&, const Tensor&, bool) {
  noCuda();
}
TensorPtr gateEval(const Tensor&) { noCuda(); }
TensorPtr gateSummary(const Tensor&) { noCuda(); }
TensorPtr concatChannels(const std::vector<const Tensor*>&) { noCuda(); }

}  // namespace cuda
}  // namespace msgc
#endif
