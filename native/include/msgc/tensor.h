// tensor.h: native tensors. float32, logical NCHW (row-major) shape, storage owned here, never by JavaScript.
// A backend may keep a tensor in an internal layout (oneDNN's blocked nChw16c, say); `layout` names it and is
// null for plain row-major memory. Conversions are the backend's business (see cpu/layout.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace msgc {

enum class Device { CPU, CUDA };
const char* deviceName(Device d);

using Shape = std::vector<int64_t>;
std::string shapeString(const Shape& s);
int64_t shapeNumel(const Shape& s);

struct Layout;  // backend-defined internal layout description; null means plain row-major

// A buffer from the caching allocator. `version` increases on every in-place write so that derived copies
// (e.g. a weight reordered into a convolution's preferred layout) know when they are stale.
struct Storage {
  float* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  uint64_t version = 0;
  const uint64_t id;  // unique for the process's lifetime (addresses are reused)
  struct Derived {
    uint64_t version;
    std::shared_ptr<Storage> copy;
    std::string tag = {};  // what else the copy depends on (e.g. the versions of folded BatchNorm parameters)
  };
  std::unordered_map<std::string, Derived> derived;  // layout key -> copy of this storage in that layout

  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void touch() { ++version; derived.clear(); }
};

struct Tensor {
  Shape shape;
  std::shared_ptr<Storage> storage;
  std::shared_ptr<const Layout> layout;  // null: plain

  Tensor(Shape shape, std::shared_ptr<Storage> storage, std::shared_ptr<const Layout> layout = nullptr);
  ~Tensor();
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  int64_t numel() const { return shapeNumel(shape); }
  int64_t dim() const { return (int64_t)shape.size(); }
  Device device() const { return storage->device; }
  bool isPlain() const { return layout == nullptr; }
  float* data() const { return storage->data; }
};

using TensorPtr = std::shared_ptr<Tensor>;

// New plain tensor, uninitialised or zero-filled.
TensorPtr emptyTensor(const Shape& shape, Device device = Device::CPU);
TensorPtr zerosTensor(const Shape& shape, Device device = Device::CPU);
TensorPtr fullTensor(const Shape& shape, float value, Device device = Device::CPU);
TensorPtr fromHost(const float* src, const Shape& shape);

// Number of native tensors alive (for leak tests), and allocator statistics.
int64_t liveTensorCount();
struct AllocatorStats {
  int64_t liveBuffers;
  int64_t liveBytes;
  int64_t cachedBytes;
  int64_t peakBytes;
  int64_t cacheLimitBytes;  // freed buffers beyond it go back to the system
};
AllocatorStats allocatorStats();
void emptyAllocatorCache();

// Caching allocator (core/allocator.cc): 64-byte aligned host buffers, reused by exact (rounded) size.
void* allocHost(size_t bytes);
void freeHost(void* p, size_t bytes);

// Threads and randomness (core/runtime.cc).
void setNumThreads(int n);
int getNumThreads();
// Denormal floats (|x| < 1.2e-38) cost x86 cores ~100 cycles per operation. With flushing on (the default; off
// with MSGC_FLUSH_DENORMALS=0 or setFlushDenormals(false)), every op runs with FTZ/DAZ: the calling thread only
// for the op's duration (JavaScript keeps IEEE semantics), the OpenMP workers permanently. TensorFlow does the
// same; PyTorch offers it as torch.set_flush_denormal.
bool setFlushDenormals(bool on);  // returns false where the CPU has no such control
bool flushDenormals();
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals();
  ~ScopedFlushDenormals();
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

 private:
  unsigned saved_ = 0;
  bool active_ = false;
};
// Holds asynchronous signals (SIGPROF from `node --cpu-prof`, SIGINT, SIGWINCH, SIGCHLD, ...) back in the calling
// thread while it lives; they are delivered when it ends. oneDNN's JIT GEMM kernels (dnnl_sgemm, and the GEMM-based
// convolutions it picks for some small plain-layout shapes) point the stack pointer at a heap workspace while they
// run (oneDNN issue #4845, fixed in 3.12; Debian 12 ships 2.6), so a signal handled in one writes its frame onto the
// heap: training an MSGC model under --cpu-prof aborted with glibc heap corruption within seconds. cpu::sgemm and
// the executions of such convolutions (cpu::SignalHold) hold signals back; the OpenMP workers do for good (set up
// with their denormal flushing), so that signals sent to the process reach a thread that runs no oneDNN kernel.
// Fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS) stay open.
class ScopedBlockSignals {
 public:
  ScopedBlockSignals();
  ~ScopedBlockSignals();
  ScopedBlockSignals(const ScopedBlockSignals&) = delete;
  ScopedBlockSignals& operator=(const ScopedBlockSignals&) = delete;

 private:
  alignas(16) unsigned char saved_[128];  // the caller's sigset_t (128 bytes on Linux and macOS at most)
  bool active_ = false;
};
void manualSeed(uint64_t seed);
uint64_t nextSeed();  // draws a fresh seed from the global generator
uint64_t rngState();  // the global generator's state (for checkpoints)
void setRngState(uint64_t state);

// Counter-based generator: the same seed gives the same stream on every backend and thread count.
struct Philox {
  uint64_t key;
  uint64_t counter;
  explicit Philox(uint64_t seed) : key(seed), counter(0) {}
  // 4 uniform 32-bit values for block index `block`.
  static void block(uint64_t key, uint64_t block, uint32_t out[4]);
};
void fillUniform(float* out, int64_t n, uint64_t seed, float low, float high);
// Values [i0, i1) of fillUniform(·, ·, seed, 0, 1)'s stream into out[0, i1 - i0); i0 a multiple of 4. avx512: the
// AVX-512 generator (the same values), as uniformAvx512() decides it, once per caller's pass (it reads the
// environment: MSGC_PHILOX_GENERIC=1 forces the generic loop).
bool uniformAvx512();
void uniformRange(float* out, int64_t i0, int64_t i1, uint64_t seed, bool avx512);
void fillNormal(float* out, int64_t n, uint64_t seed, float mean, float std);

}  // namespace msgc
