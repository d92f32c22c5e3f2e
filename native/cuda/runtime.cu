// runtime.cu: the CUDA backend's device, its caching allocator, copies and fills. Everything runs on the legacy
// default stream of device 0, in issue order, so a buffer freed into the cache can be handed to the next op at
// once: its earlier readers are queued before the new writer.
#include <cuda_runtime.h>
#ifdef MSGC_WITH_CUDNN
#include <cudnn.h>
#endif

#include <map>
#include <mutex>
#include <vector>

#include "common.h"
#include "msgc/cuda.h"

namespace msgc {
namespace cuda {
namespace {

struct DeviceState {
  bool ok = false;
  std::string reason;
  DeviceState() {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      // (with no NVIDIA driver installed at all, CUDA says the driver is "insufficient")
      reason = std::string("no usable NVIDIA GPU and driver (CUDA reports: ") + cudaGetErrorString(e) + ")";
      cudaGetLastError();  // clear the sticky error of the failed query
      return;
    }
    if (n == 0) {
      reason = "no CUDA device is present";
      return;
    }
    ok = true;
  }
};

DeviceState& state() {
  static DeviceState* s = new DeviceState();
  return *s;
}

struct DeviceCache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;
  DeviceMemoryStats stats;
  void releaseAllLocked() {
    for (auto& kv : free)
      for (void* p : kv.second) cudaFree(p);
    free.clear();
    stats.cachedBytes = 0;
  }
};

DeviceCache& cache() {
  static DeviceCache* c = new DeviceCache();  // never destroyed: tensors may be freed during static teardown
  return *c;
}

size_t roundSize(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t small = 1 << 20;
  if (bytes <= small) return (bytes + 511) / 512 * 512;
  return (bytes + small - 1) / small * small;  // large buffers in whole MiB, as training repeats them
}

__global__ void fillKernel(float* p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) p[i] = v;
}

}  // namespace

bool compiled() { return true; }
bool available() { return state().ok; }
std::string unavailableReason() { return state().ok ? std::string() : state().reason; }

void ensureDevice() {
  MSGC_CHECK(state().ok, "cuda: not available: ", state().reason);
  static thread_local bool set = false;
  if (!set) {
    MSGC_CUDA_CHECK(cudaSetDevice(0));
    set = true;
  }
}

DeviceInfo deviceInfo() {
  ensureDevice();
  cudaDeviceProp prop;
  MSGC_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  DeviceInfo d;
  d.name = prop.name;
  d.major = prop.major;
  d.minor = prop.minor;
  d.multiprocessors = prop.multiProcessorCount;
  d.totalBytes = prop.totalGlobalMem;
  cudaRuntimeGetVersion(&d.runtimeVersion);
  cudaDriverGetVersion(&d.driverVersion);
#ifdef MSGC_WITH_CUDNN
  d.cudnnVersion = (int)cudnnGetVersion();
#endif
  return d;
}

void* allocDevice(size_t bytes) {
  ensureDevice();
  const size_t size = roundSize(bytes);
  DeviceCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.free.find(size);
  void* p = nullptr;
  if (it != c.free.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    c.stats.cachedBytes -= (int64_t)size;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      cudaGetLastError();
      c.releaseAllLocked();  // cached buffers of other sizes go back, then one more try
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t freeB = 0, totalB = 0;
      cudaMemGetInfo(&freeB, &totalB);
      fail("out of memory: could not allocate ", bytes, " bytes on cuda (", freeB >> 20, " MiB free of ", totalB >> 20,
           " MiB; ", c.stats.liveBytes >> 20, " MiB held by live tensors)");
    }
  }
  c.stats.liveBuffers++;
  c.stats.liveBytes += (int64_t)size;
  if (c.stats.liveBytes > c.stats.peakBytes) c.stats.peakBytes = c.stats.liveBytes;
  return p;
}

void freeDevice(void* p, size_t bytes) {
  if (!p) return;
  const size_t size = roundSize(bytes);
  DeviceCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.liveBuffers--;
  c.stats.liveBytes -= (int64_t)size;
  c.free[size].push_back(p);
  c.stats.cachedBytes += (int64_t)size;
}

DeviceMemoryStats deviceMemoryStats() {
  DeviceCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void emptyDeviceCache() {
  if (!state().ok) return;
  DeviceCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  cudaDeviceSynchronize();
  c.releaseAllLocked();
}

void copyHostToDevice(void* dst, const void* src, size_t bytes) {
  ensureDevice();
  if (bytes) MSGC_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void copyDeviceToHost(void* dst, const void* src, size_t bytes) {
  ensureDevice();
  if (bytes) MSGC_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void copyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  ensureDevice();
  if (bytes) MSGC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}

void fill(float* dst, int64_t n, float value) {
  ensureDevice();
  if (n <= 0) return;
  fillKernel<<<blocksFor(n, 256), 256>>>(dst, n, value);
  MSGC_CUDA_LAUNCHED("fill");
}

TensorPtr concatChannels(const std::vector<const Tensor*>& xs) {
  ensureDevice();
  Shape shape = xs[0]->shape;
  int64_t C = 0;
  for (const Tensor* t : xs) C += t->shape[1];
  shape[1] = C;
  TensorPtr y = emptyTensor(shape, Device::CUDA);
  const int64_t N = shape[0];
  const int64_t inner = C ? shapeNumel(shape) / (N * C > 0 ? N * C : 1) : 0;  // H·W (1 for [N, C])
  int64_t at = 0;
  for (const Tensor* t : xs) {
    const size_t width = (size_t)(t->shape[1] * inner) * sizeof(float);
    // one row per sample: this input's [C_i, H, W] block into the output's channels [at, at + C_i)
    if (N > 0 && width > 0)
      MSGC_CUDA_CHECK(cudaMemcpy2DAsync(y->data() + at * inner, (size_t)(C * inner) * sizeof(float), t->data(), width, width,
                                        (size_t)N, cudaMemcpyDeviceToDevice, 0));
    at += t->shape[1];
  }
  return y;
}

void synchronize() {
  ensureDevice();
  MSGC_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace cuda
}  // namespace msgc
