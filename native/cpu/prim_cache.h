// prim_cache.h: the caches of oneDNN primitives by shape (conv, BN, pools, eltwise, binary, per-sample convs). Each
// keeps at most primitiveCacheCapacity() entries and drops the least recently used beyond that: a conv primitive
// costs ~50 KB (JIT code and descriptors), and a program that runs many input sizes (evaluation at several
// resolutions, variable last batches) grew without bound, 54 MB per 1000 conv shapes. Entries are shared_ptrs, so
// an op keeps the primitives it runs even if a nested op evicts their entry meanwhile. Not thread-safe: the N-API
// boundary runs one op at a time (the per-sample convs' cache also holds a mutex of its own).
//
// The key is the caller's plus the thread count: oneDNN's JIT convolutions split their work for the thread count
// they are created under, so a primitive cached before setNumThreads() kept running with the old count (a conv
// first run under 1 thread stayed on 1 after setNumThreads(2)).
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "msgc/tensor.h"  // getNumThreads

namespace msgc {
namespace cpu {

// entries per cache: $MSGC_PRIMITIVE_CACHE_CAPACITY when set (>= 1), else 1024 (oneDNN's own default)
size_t primitiveCacheCapacity();

// entries in all the caches together (memoryStats().primitiveCacheEntries)
int64_t primitiveCacheEntries();
void countPrimitiveCacheEntries(int64_t delta);

// A cache key from the raw bytes of its fields (keys are only hashed and compared, never shown): formatting them
// with ostringstream cost 2-5 µs per op, a sixth of a small op's time at batch 1 (a ReLU on [1, 16, 1, 1]: 14.7 µs).
class Key {
 public:
  Key() { s_.reserve(128); }
  Key& add(int64_t v) {
    s_.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Key& add(int v) { return add((int64_t)v); }
  Key& add(bool v) { return add((int64_t)v); }
  Key& add(double v) {
    s_.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Key& add(float v) { return add((double)v); }
  Key& add(const Shape& sh) {
    add((int64_t)sh.size());
    for (int64_t d : sh) add(d);
    return *this;
  }
  // a nested key or text, with its length first (so that concatenations stay unambiguous)
  Key& add(const std::string& text) {
    add((int64_t)text.size());
    s_ += text;
    return *this;
  }
  template <class A, class B, class... Rest>
  Key& add(const A& a, const B& b, const Rest&... rest) {
    add(a);
    return add(b, rest...);
  }
  const std::string& str() const { return s_; }
  operator const std::string&() const { return s_; }

 private:
  std::string s_;
};

// A copy derived from several tensors (a folded BatchNorm) records the others' storages and versions in its tag
// (Storage::Derived::tag), so that a write to any of them shows: t's storage id and version, or -1 for none.
inline void addVersionTag(Key& k, const Tensor* t) {
  if (!t) {
    k.add((int64_t)-1);
    return;
  }
  k.add((int64_t)t->storage->id, (int64_t)t->storage->version);
}

template <class V>
class PrimCache {
 public:
  // the entry for key at the current thread count, made by make() (a std::shared_ptr<V>) when absent; nothing is
  // stored when make() throws
  template <class Make>
  std::shared_ptr<V> get(const std::string& callerKey, Make&& make) {
    std::string key;
    key.reserve(callerKey.size() + sizeof(int));
    key = callerKey;
    const int threads = getNumThreads();
    key.append(reinterpret_cast<const char*>(&threads), sizeof threads);
    auto it = index_.find(key);
    if (it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return it->second->second;
    }
    std::shared_ptr<V> v = make();
    order_.emplace_front(key, v);
    index_[key] = order_.begin();
    countPrimitiveCacheEntries(1);
    const size_t cap = primitiveCacheCapacity();
    while (order_.size() > cap) {
      index_.erase(order_.back().first);
      order_.pop_back();
      countPrimitiveCacheEntries(-1);
    }
    return v;
  }

 private:
  using Entry = std::pair<std::string, std::shared_ptr<V>>;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<std::string, typename std::list<Entry>::iterator> index_;
};

}  // namespace cpu
}  // namespace msgc
