// parallel.h: OpenMP loops that leave OpenMP alone when the work is small.
//
// An `#pragma omp parallel ... if (false)` region is not free: libgomp still starts and ends a team of one, and
// the end's barrier wakes a futex, a system call of ~3 µs on this project's VM. That was more than the whole work
// of a small op: F.scale on 16 floats took 5.0 µs a call, 2.0 without the region (`strace -c`: one futex per
// call). These helpers run the loop on the calling thread, outside OpenMP, when `parallel` is false, and as the
// pragma did otherwise; the serial loop visits the indices in order, as the `if (false)` region did, so results
// (reductions included) are unchanged.
#pragma once
#include <omp.h>

#include <cstdint>

// Compiles a function for AVX-512 and AVX2 as well as the baseline, the version picked at load time (GCC / clang
// on x86-64; elsewhere the baseline alone). For loops whose results do not depend on the vector width.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MSGC_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MSGC_SIMD_CLONES
#endif

// With MSGC_SIMD_CLONES: a function whose versions must compute the same bits, its products and sums not contracted
// into fused multiply-adds (GCC; clang has no such attribute: a `#pragma STDC FP_CONTRACT OFF` around the function
// does it there)
#if defined(__clang__)
#define MSGC_NO_CONTRACT
#else
#define MSGC_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#endif

namespace msgc {

// body(i) for i in [0, n), split statically over the team when `parallel`
template <class F>
inline void parallelFor(int64_t n, bool parallel, F&& body) {
  if (parallel) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) body(i);
  } else {
    for (int64_t i = 0; i < n; i++) body(i);
  }
}

// the same for element-wise bodies without dependences between indices (vectorized either way)
template <class F>
inline void parallelForSimd(int64_t n, bool parallel, F&& body) {
  if (parallel) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) body(i);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) body(i);
  }
}

// body(i, j) over [0, n0) x [0, n1), the pairs split statically over the team when `parallel`
template <class F>
inline void parallelFor2(int64_t n0, int64_t n1, bool parallel, F&& body) {
  if (parallel) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n0; i++)
      for (int64_t j = 0; j < n1; j++) body(i, j);
  } else {
    for (int64_t i = 0; i < n0; i++)
      for (int64_t j = 0; j < n1; j++) body(i, j);
  }
}

// Σ term(i) over [0, n) in double: per-thread partial sums when `parallel`, else in index order
template <class F>
inline double parallelSum(int64_t n, bool parallel, F&& term) {
  double s = 0.0;
  if (parallel) {
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < n; i++) s += term(i);
  } else {
    for (int64_t i = 0; i < n; i++) s += term(i);
  }
  return s;
}

// While alive (when `on`), OpenMP regions opened by this thread, oneDNN's among them, run on this thread alone:
// oneDNN splits an eltwise, pooling, batch norm or reorder over every thread whatever its size, and starting the
// team cost more than a small op's work (a ReLU of 16 floats: 10 µs on 2 threads, 4 on one). For primitives on
// fewer than smallOpElements elements.
constexpr int64_t smallOpElements = 32768;
class SingleThreaded {
 public:
  explicit SingleThreaded(bool on) : threads_(on ? omp_get_max_threads() : 1) {
    if (threads_ > 1) omp_set_num_threads(1);
  }
  ~SingleThreaded() {
    if (threads_ > 1) omp_set_num_threads(threads_);
  }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  int threads_;
};

}  // namespace msgc
