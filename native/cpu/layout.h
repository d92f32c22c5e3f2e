// layout.h: the CPU backend's view of tensors as oneDNN memory. A tensor is either plain row-major or in the
// blocked layout a oneDNN primitive chose (Layout::md). Ops that run on oneDNN accept any layout and keep the
// one their primitive prefers; our own kernels read plain data through plainData(), which reorders once and
// caches the plain copy on the storage until the storage is written again.
#pragma once
#include <dnnl.hpp>
#include <memory>
#include <string>

#include "msgc/tensor.h"
#include "prim_cache.h"

namespace msgc {

struct Layout {
  dnnl::memory::desc md;
  explicit Layout(dnnl::memory::desc m) : md(std::move(m)) {}
};

namespace cpu {

dnnl::engine& engine();
dnnl::stream& stream();

using Dims = dnnl::memory::dims;

Dims toDims(const Shape& s);
dnnl::memory::desc plainDesc(const Dims& dims);
std::string descKey(const dnnl::memory::desc& md);

// The tensor's memory described with `dims` (same element count and row-major order as its shape). Returns a
// zero desc if the tensor is in a blocked layout whose dims differ.
dnnl::memory::desc currentDesc(const Tensor& t, const Dims& dims);
inline dnnl::memory::desc currentDesc(const Tensor& t) { return currentDesc(t, toDims(t.shape)); }

// Memory holding `t` in layout `want` (same logical content): the tensor's own buffer when it already is in
// that layout, otherwise a reordered copy cached on the storage.
dnnl::memory asLayout(const Tensor& t, const dnnl::memory::desc& want);

// Plain row-major float data of `t` (a cached reorder when t is blocked). Valid while t's storage lives and is
// not written.
const float* plainData(const Tensor& t);
std::shared_ptr<Storage> plainStorage(const Tensor& t);

// A new tensor with logical shape `shape` whose memory is laid out as `md` (plain when md is plain).
TensorPtr tensorWithDesc(const Shape& shape, const dnnl::memory::desc& md);
dnnl::memory memoryOf(const Tensor& t);  // the tensor's own memory in its own layout

// Channel block of a 4-D tensor's layout: 1 for plain NCHW, 16 / 8 for nChw16c / nChw8c, 0 otherwise. In these
// layouts element (n, c, hw) sits at ((n*(Cp/b) + c/b)*HW + hw)*b + c%b, with Cp = C rounded up to b.
int64_t channelBlock(const Tensor& t);
// Per-lane sums over one plane of those layouts: `pixels` pixels of `lanes` (1, 8 or 16) floats each, into
// acc[0..lanes) in double. Every global average uses it (pool2dForward's, and the means batchNormActEval pools for
// the next gate), so a context pooled in training and the same one pooled in eval are summed alike.
void laneSums(const float* plane, int64_t pixels, int64_t lanes, double* acc);
// The desc of `shape` (4-D) in the channel-blocked layout with block b (1 = plain).
dnnl::memory::desc blockedDesc(const Shape& shape, int64_t block);
// The channel block oneDNN's vectorized kernels use on this CPU: 16 with AVX-512, else 8 (its AVX2 batch norm and
// pooling on nChw16c fall back to reference code, 10-40x slower).
int64_t nativeChannelBlock();

// Writes src (any layout) into dst's own layout.
void reorderInto(const Tensor& src, Tensor& dst);

// C = alpha·op(A)·op(B) + beta·C (row-major; op: 'N' or 'T') on oneDNN's sgemm, with asynchronous signals held
// back while it runs: its JIT kernels point the stack pointer at a heap workspace (ScopedBlockSignals, tensor.h).
// Throws on a oneDNN error, naming `op`.
void sgemm(const char* op, char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// Whether a primitive runs on oneDNN's GEMM-based implementation (e.g. "x64:gemm:jit" convolutions on small plain
// maps), whose execution must hold asynchronous signals back like sgemm's (SignalHold).
bool runsJitGemm(const dnnl::primitive_desc_base& pd);
// ScopedBlockSignals when `on` (a primitive that runsJitGemm), nothing otherwise: a signal mask change costs two
// system calls (about 1 µs here), too much for every op of a batch-1 forward pass.
class SignalHold {
 public:
  explicit SignalHold(bool on) {
    if (on) hold_ = std::make_unique<ScopedBlockSignals>();
  }

 private:
  std::unique_ptr<ScopedBlockSignals> hold_;
};

}  // namespace cpu
}  // namespace msgc
