// common.h (cuda): error checks and launch helpers shared by the CUDA backend's files.
#pragma once
#include <cuda_runtime.h>

#include "msgc/errors.h"

#define MSGC_CUDA_CHECK(expr)                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (expr);                                                                    \
    if (e_ != cudaSuccess) ::msgc::fail("cuda: ", #expr, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

// after a kernel launch: a bad configuration shows here; faults in the kernel show at the next synchronisation
#define MSGC_CUDA_LAUNCHED(what)                                                                   \
  do {                                                                                             \
    cudaError_t e_ = cudaGetLastError();                                                           \
    if (e_ != cudaSuccess) ::msgc::fail("cuda: launching ", what, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

namespace msgc {
namespace cuda {
// the device the backend runs on (device 0), made current for the calling thread
void ensureDevice();
inline unsigned blocksFor(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return (unsigned)(b < cap ? b : cap);
}
}  // namespace cuda
}  // namespace msgc
