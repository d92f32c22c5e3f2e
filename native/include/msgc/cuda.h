// cuda.h: the CUDA backend's interface (native/cuda/, built when CMake finds the CUDA toolkit and cuDNN; without
// them native/core/cuda_stub.cc answers `available() == false` and every other call throws a clear error).
// Device memory holds plain row-major float32 (no internal layouts on the GPU). All work runs on one stream in
// issue order; copies to the host wait for it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "msgc/ops.h"
#include "msgc/tensor.h"

namespace msgc {
namespace cuda {

// Whether this binary has the CUDA backend (compiled in), and whether a usable GPU is present (driver loaded,
// at least one device). `unavailableReason()` says why not, for errors and skipped tests.
bool compiled();
bool available();
std::string unavailableReason();
struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;      // compute capability
  int multiprocessors = 0;
  size_t totalBytes = 0;
  int runtimeVersion = 0, driverVersion = 0, cudnnVersion = 0;  // 0: not linked / unknown
};
DeviceInfo deviceInfo();

// Caching device allocator (as the host one: freed buffers are kept per rounded size and reused).
void* allocDevice(size_t bytes);
void freeDevice(void* p, size_t bytes);
struct DeviceMemoryStats {
  int64_t liveBuffers = 0, liveBytes = 0, cachedBytes = 0, peakBytes = 0;
};
DeviceMemoryStats deviceMemoryStats();
void emptyDeviceCache();

void copyHostToDevice(void* dst, const void* src, size_t bytes);
void copyDeviceToHost(void* dst, const void* src, size_t bytes);  // waits for the work before it
void copyDeviceToDevice(void* dst, const void* src, size_t bytes);
void fill(float* dst, int64_t n, float value);
void synchronize();  // waits for all queued GPU work; reports an asynchronous kernel error as an Error

// ---- ops (the CPU ones' contracts in ops.h; tensors on the GPU, plain) ----------------------------------------
// cuDNN, strict float32 (no TF32: the same numerics as the CPU backend), algorithm found once per shape.
TensorPtr conv2dForward(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p);
// act(BN_eval(x) + residual) per channel; means (optional): y's per-channel spatial means [N, C, 1, 1].
TensorPtr batchNormActEval(const Tensor& x, const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                           const Tensor* bias, float eps, int act, const Tensor* residual, TensorPtr* means = nullptr);
// MSGC convolution by our implicit-GEMM kernel. gathered: each (sample, head) reduces over only its channels with
// a non-zero scale (their indices compacted on the GPU, no host round trip); masked: over all channels, times the
// scale. outMask [N, K, O] (gathered only): outputs that no row selects are written as 0 (before the epilogue).
// bn (optional): the eval BatchNorm, residual and activation applied in the kernel's epilogue.
// MSGC_CUDA_MASKED=cudnn (read per call): masked runs as cuDNN's convolution in G groups over the G scaled copies
// of x (the dense multiply-adds at cuDNN's speed, for large batches; not yet measured on a GPU).
TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                          bool gathered, const Tensor* outMask = nullptr, const FusedBnAct* bn = nullptr,
                          TensorPtr* means = nullptr);

// elementwise.cu: a model's eval forward around its convolutions
TensorPtr activationForward(Activation a, const Tensor& x);
TensorPtr scale(const Tensor& x, float alpha);
TensorPtr binaryForward(Binary op, const Tensor& a, const Tensor& b);
TensorPtr pool2dForward(PoolKind kind, const Tensor& x, const Pool2dParams& p);  // (no workspace: inference)
TensorPtr linearForward(const Tensor& x, const Tensor& weight, const Tensor* bias);
TensorPtr squeezeHeadEval(const Tensor& ctx, const Tensor& w1, const Tensor& mean, const Tensor& var, const Tensor* gamma,
                          const Tensor* beta, float eps, const Tensor& w2, const Tensor& b2, bool threshold);
TensorPtr gateEval(const Tensor& logits);  // 1[logits >= 0]
TensorPtr gateSummary(const Tensor& m);    // as msgc::gateSummary, on the GPU (no copy to the host)
TensorPtr concatChannels(const std::vector<const Tensor*>& xs);  // along dim 1 (one strided copy per input)

// ---- testing without a GPU ---------------------------------------------------------------------------------
// With MSGC_CUDA_EMULATE=1 (read per call; tests), the ops the GPU runs take CPU tensors and run the GPU kernels'
// own per-element and per-thread code on the host (cuda/msgc_conv_tile.h block by block and thread by thread in
// barrier order, cuda/elementwise_ops.h and cuda/epilogue.h element by element), instead of the CPU backend's
// kernels; cuDNN's convolutions, which are not ours, run as the CPU backend's. Present in every build, so that
// CPU-only CI checks the GPU path's arithmetic, indexing and semantics, down to whole models' eval forward.
bool emulating();
// MSGC_CUDA_TF32=1 (read per call): TF32 tensor-core math allowed in the convolutions (PyTorch's allow_tf32), in
// cuDNN's and in the MSGC kernel's; otherwise strict float32 numerics
bool tf32Allowed();
namespace emulated {
TensorPtr batchNormActEval(const Tensor& x, const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                           const Tensor* bias, float eps, int act, const Tensor* residual, TensorPtr* means = nullptr);
TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                          bool gathered, const Tensor* outMask = nullptr, const FusedBnAct* bn = nullptr,
                          TensorPtr* means = nullptr);
TensorPtr activationForward(Activation a, const Tensor& x);
TensorPtr binaryForward(Binary op, const Tensor& a, const Tensor& b);
TensorPtr pool2dForward(PoolKind kind, const Tensor& x, const Pool2dParams& p);
TensorPtr linearForward(const Tensor& x, const Tensor& weight, const Tensor* bias);
TensorPtr squeezeHeadEval(const Tensor& ctx, const Tensor& w1, const Tensor& mean, const Tensor& var, const Tensor* gamma,
                          const Tensor* beta, float eps, const Tensor& w2, const Tensor& b2, bool threshold);
TensorPtr gateEval(const Tensor& logits);
}  // namespace emulated

}  // namespace cuda
}  // namespace msgc
