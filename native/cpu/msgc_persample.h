// msgc_persample.h: what the per-sample masked MSGC convolution's files share (msgc_persample.cc: the primitives,
// the forward and the backward; msgc_persample_bn.cc: the eval forward with its BatchNorm): the batch-1 oneDNN
// primitives and the weight layouts' scale maps, each thread's buffers, the per-sample weight W ⊙ scale[n], and the
// loop over the samples. See msgc_persample.cc for the design.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "layout.h"
#include "msgc/ops.h"

namespace msgc {
namespace persample {

// [j0, j0 + len) of a blocked weight layout where element j0 + l takes scale index k + l·step (step 0: one head's
// outputs innermost, as in OIhw16i16o; step 1: consecutive input channels innermost, as in OIhw16o16i); k = -1
// (step 0): padding
struct MapRun {
  int64_t j0, len;
  int32_t k, step;
};

struct PerSamplePrims {
  int64_t srcBlock = 1, dstBlock = 1;
  dnnl::convolution_forward::primitive_desc fwdPd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data::primitive_desc bwdDataPd;
  dnnl::convolution_backward_data bwdData;
  dnnl::convolution_backward_weights::primitive_desc bwdWeightsPd;
  dnnl::convolution_backward_weights bwdWeights;
  // blocked weight element -> scale index i*C + c (or -1 for padding), for the fwd / bwd-data / bwd-weights weight
  // layouts, as runs (mapRuns); and the layouts' sizes in floats
  std::vector<MapRun> runsFwd, runsBwdData, runsBwdWeights;
  size_t wLen = 0, wdLen = 0, wgLen = 0;
  size_t scratchFloats = 0;
  bool gemm = false;  // some of the three runsJitGemm (each thread holds signals back while it executes them)
};

// The batch-1 primitives (and maps) for x's sample shape and the weight, cached by shape (called outside parallel
// regions, under the N-API layer's op lock, as every primitive cache).
std::shared_ptr<PerSamplePrims> perSamplePrims(const Shape& x, const Shape& w, const MsgcConvParams& p);

// W'_n = W ⊙ scale[n] in a blocked weight layout (run by run: one scale per run, vectorizable; a per-element
// index lookup cost about 3% of a MobileNetV2 training step)
inline void scaleWeights(float* dst, const float* w, const std::vector<MapRun>& runs, const float* sn) {
  for (const MapRun& r : runs) {
    float* d = dst + r.j0;
    if (r.k < 0) {
      std::memset(d, 0, (size_t)r.len * sizeof(float));
      continue;
    }
    const float* a = w + r.j0;
    if (r.step) {
      const float* sr = sn + r.k;
      for (int64_t l = 0; l < r.len; l++) d[l] = a[l] * sr[l];
    } else {
      const float sc = sn[r.k];
      for (int64_t l = 0; l < r.len; l++) d[l] = a[l] * sc;
    }
  }
}

// A buffer that only grows, left uninitialised (every user writes it before reading it; under MSGC_POISON, as in the
// tests, it starts as NaN like new tensors, so that a read of unwritten memory shows)
struct GrowBuffer {
  std::unique_ptr<float[]> p;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      p.reset(new float[n]);
      cap = n;
      static const bool poison = std::getenv("MSGC_POISON") != nullptr;
      if (poison) std::fill(p.get(), p.get() + n, std::numeric_limits<float>::quiet_NaN());
    }
    return p.get();
  }
};

// Each thread's buffers for the per-sample loops, kept from call to call (OpenMP's threads persist). Allocated per
// call, these multi-MB buffers came fresh from mmap and were zero-filled page by page, and their release flushed
// the other threads' TLBs: MobileNetV2's 960→160 projection on 7² maps (batch 32) spent ~20% of its backward in
// those page faults.
struct Workspace {
  GrowBuffer weights, scratch, gradWeights, acc;
  std::vector<double> gscale;
};
Workspace& threadWorkspace();

// Batch 1: the per-sample weight as a plain tensor, for the library's ordinary (multi-threaded) convolution.
TensorPtr scaledWeight(const Tensor& weight, const float* s, int64_t G);

// Batch 1 eval: one forward primitive planned for the calling thread's OpenMP team (perSamplePrims' are planned for
// one thread each), in the activation layouts oneDNN picks, and its weight layout's map for scaleWeights.
struct OneSamplePrims {
  int64_t srcBlock = 1, dstBlock = 1;
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward fwd;
  std::vector<MapRun> runs;
  size_t wLen = 0, scratchFloats = 0;
  bool gemm = false;
};
// (xBlock: x's channel block, 16, 8 or 1, the source layout the primitive takes)
std::shared_ptr<OneSamplePrims> oneSamplePrims(const Shape& x, const Shape& w, const MsgcConvParams& p, int64_t xBlock);

// y = conv(x, W ⊙ scale[0]) for a batch of one, W ⊙ scale written straight into the primitive's weight layout from
// the weight's cached copy in it (scaleWeights), x read in the layout it comes in. Until 2026-12-06 a plain
// W ⊙ scale (scaledWeight, scalar) went to conv2dForward, which reordered it into that layout on every call:
// MobileNetV2's six masked projections at batch 1, cold in the model, 568 -> 531 µs a forward (144->32 and 192->32
// at 28² 64-80 -> 58-61 µs a call); the model's forward 1.0-2.3% faster (both builds side by side, both orders).
TensorPtr oneSampleForward(const Tensor& x, const Tensor& weight, const float* s, const MsgcConvParams& p);

// y[n] = conv(x[n], W'_n) for every sample, threads splitting the samples statically, then post(n, thread) on the
// thread that computed it (thread: its index, for per-thread buffers) while y[n] is in its cache
template <class Post>
inline void forEachSampleForward(PerSamplePrims& ps, const Tensor& x, const Tensor& weight, const Tensor& scale,
                                 int64_t G, float* yp, Post&& post) {
  const int64_t N = x.shape[0], C = x.shape[1];
  const float* xp =
      static_cast<const float*>(cpu::asLayout(x, cpu::blockedDesc(x.shape, ps.srcBlock)).get_data_handle());
  const float* wb = static_cast<const float*>(cpu::asLayout(weight, ps.fwdPd.weights_desc()).get_data_handle());
  const float* s = cpu::plainData(scale);
  const int64_t xStride = ps.fwdPd.src_desc().get_size() / sizeof(float), yStride = ps.fwdPd.dst_desc().get_size() / sizeof(float);
  const size_t wLen = ps.wLen;
#pragma omp parallel
  {
    cpu::SignalHold hold(ps.gemm);
    dnnl::stream st(cpu::engine());
    Workspace& ws = threadWorkspace();
    float* wbuf = ws.weights.get(wLen);
    dnnl::memory wm(ps.fwdPd.weights_desc(), cpu::engine(), wbuf);
    dnnl::memory sm(ps.fwdPd.scratchpad_desc(), cpu::engine(), ws.scratch.get(ps.scratchFloats + 1));
    dnnl::memory xm(ps.fwdPd.src_desc(), cpu::engine(), nullptr), ym(ps.fwdPd.dst_desc(), cpu::engine(), nullptr);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      scaleWeights(wbuf, wb, ps.runsFwd, s + n * G * C);
      xm.set_data_handle(const_cast<float*>(xp + n * xStride));
      ym.set_data_handle(yp + n * yStride);
      ps.fwd.execute(st, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}, {DNNL_ARG_SCRATCHPAD, sm}});
      post(n, omp_get_thread_num());
    }
  }
}

}  // namespace persample
}  // namespace msgc
