// allocator.cc: the caching host allocator. Training repeats the same buffer sizes every step, so freed buffers
// are kept in per-size free lists and handed out again instead of going back to the system. The cache is bounded
// (MSGC_CACHE_LIMIT_MB, default 2048) and can be emptied explicitly.
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "msgc/errors.h"
#include "msgc/tensor.h"

namespace msgc {
namespace {

struct HostCache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;  // rounded size -> buffers
  int64_t liveBuffers = 0, liveBytes = 0, cachedBytes = 0, peakBytes = 0;
  int64_t limit = 0;
  HostCache() {
    const char* env = std::getenv("MSGC_CACHE_LIMIT_MB");
    limit = (env ? std::atoll(env) : 2048) * (int64_t)1024 * 1024;
  }
  void releaseAllLocked() {
    for (auto& kv : free)
      for (void* p : kv.second) std::free(p);
    free.clear();
    cachedBytes = 0;
  }
};

HostCache& cache() {
  static HostCache* c = new HostCache();  // never destroyed: buffers may be freed during static teardown
  return *c;
}

size_t roundSize(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t small = 4096;
  if (bytes <= small) return (bytes + 63) / 64 * 64;
  return (bytes + small - 1) / small * small;
}

}  // namespace

void* allocHost(size_t bytes) {
  size_t size = roundSize(bytes);
  HostCache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free.find(size);
    if (it != c.free.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.cachedBytes -= (int64_t)size;
      c.liveBuffers++;
      c.liveBytes += (int64_t)size;
      if (c.liveBytes > c.peakBytes) c.peakBytes = c.liveBytes;
      return p;
    }
  }
  void* p = std::aligned_alloc(64, size);
  if (!p) {
    std::lock_guard<std::mutex> lock(c.mu);
    c.releaseAllLocked();
    p = std::aligned_alloc(64, size);
  }
  MSGC_CHECK(p != nullptr, "out of memory: could not allocate ", bytes, " bytes on the CPU");
  std::lock_guard<std::mutex> lock(c.mu);
  c.liveBuffers++;
  c.liveBytes += (int64_t)size;
  if (c.liveBytes > c.peakBytes) c.peakBytes = c.liveBytes;
  return p;
}

void freeHost(void* p, size_t bytes) {
  if (!p) return;
  size_t size = roundSize(bytes);
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.liveBuffers--;
  c.liveBytes -= (int64_t)size;
  if (c.cachedBytes + (int64_t)size > c.limit) {
    std::free(p);
    return;
  }
  c.free[size].push_back(p);
  c.cachedBytes += (int64_t)size;
}

AllocatorStats allocatorStats() {
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.liveBuffers, c.liveBytes, c.cachedBytes, c.peakBytes};
}

void emptyAllocatorCache() {
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.releaseAllLocked();
}

}  // namespace msgc
