// msgc_persample_bn.cc: the masked MSGC convolution's eval forward with its BatchNorm, residual and activation
// (and the pooled means) applied to each sample's output right after its conv, while it is in cache; at batch 1 one
// multi-threaded conv, then the epilogue over its output split over the threads. See msgc_persample.cc.
#include <cmath>
#include <vector>

#include "msgc_gather.h"
#include "msgc_internal.h"
#include "msgc_persample.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;
using namespace persample;

#if MSGC_GATHER_AVX512
namespace {
// The eval BatchNorm, residual and activation of bn, act(a·y + b + r), over a conv's output of shape yShape in the
// channel-blocked layout `block` (16: nChw16c with AVX-512, 8: nChw8c with AVX2, 1: plain), a piece at a time with
// the gathered kernels' epilogues; with sums, each piece's per-lane sums of the results (for the pooled means)
struct BnEpilogue {
  int64_t block, O, OHW;
  std::vector<float> a, b;  // (zeros past O: the padding lanes of a blocked layout stay 0)
  bool clamp, avx512;
  float hi;
  dnnl::memory rmem;
  const float* res = nullptr;  // the residual in the output's layout, or null
  BnEpilogue(const FusedBnAct& bn, const Shape& yShape, int64_t block, bool avx512)
      : block(block), O(yShape[1]), OHW(yShape[2] * yShape[3]), a((size_t)((O + 15) / 16 * 16), 0.f), b(a.size(), 0.f),
        clamp(bn.act >= 0), avx512(avx512), hi(bn.act == (int)Activation::ReLU6 ? 6.f : INFINITY) {
    gather::foldBatchNorm(bn, O, a.data(), b.data());
    if (bn.residual) {
      rmem = asLayout(*bn.residual, blockedDesc(yShape, block));
      res = static_cast<const float*>(rmem.get_data_handle());
    }
  }
  // the output's channel blocks (planes when plain)
  int64_t units() const { return (O + block - 1) / block; }
  // pixels [p0, p0 + len) of unit u of one sample's output yn (its residual rn, or null); sums: `block` floats
  void apply(float* yn, const float* rn, int64_t u, int64_t p0, int64_t len, float* sums) const {
    const int64_t off = (u * OHW + p0) * block;
    float* y = yn + off;
    const float* r = rn ? rn + off : nullptr;
    const float *au = a.data() + u * block, *bu = b.data() + u * block;
    if (block == 16)
      gather::postBlock16(y, r, 1, len, 0, au, bu, clamp, 0.f, hi, sums);
    else if (block == 8)
      gather::postBlock8(y, r, 1, len, 0, au, bu, clamp, 0.f, hi, sums);
    else
      (avx512 ? gather::postPlanes : gather::postPlanes2)(y, r, 1, OHW, 1, len, 0, au, bu, clamp, 0.f, hi, sums);
  }
};

// Batch 1: one multi-threaded conv with W ⊙ scale[0] (oneSampleForward), then the epilogue in one
// pass over its output in pixel chunks split over the threads. The composition ran the same conv and then the
// generic BatchNorm pass over plain planes: MobileNetV2's projections with heads of 4-8 outputs at batch 1 (masked
// at 28²-112²), 32->16 at 112²: 122 µs against 54 for the conv alone and 84 for dense conv + BN.
TensorPtr oneSampleBn(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                      const FusedBnAct& bn, TensorPtr* means, bool avx512) {
  TensorPtr y = oneSampleForward(x, weight, plainData(scale), p);
  // a layout the epilogues do not take: the generic pass
  const int64_t block = channelBlock(*y);
  if (!(block == 1 || block == (avx512 ? 16 : 8)))
    return batchNormActEval(*y, *bn.runningMean, *bn.runningVar, bn.weight, bn.bias, bn.eps, bn.act, bn.residual, means);
  const BnEpilogue ep(bn, y->shape, block, avx512);
  float* yp = y->data();
  // items: (unit, chunk of pixels); their sums added per channel in chunk order
  constexpr int64_t kChunk = 2048;
  const int64_t chunks = (ep.OHW + kChunk - 1) / kChunk, items = ep.units() * chunks;
  std::vector<float> part(means ? (size_t)(items * block) : 0);
  parallelFor(items, ep.O * ep.OHW >= 32768, [&](int64_t it) {
    const int64_t p0 = it % chunks * kChunk;
    ep.apply(yp, ep.res, it / chunks, p0, std::min(kChunk, ep.OHW - p0), means ? part.data() + it * block : nullptr);
  });
  if (means) {
    TensorPtr pooled = emptyTensor({1, ep.O, 1, 1});
    float* mp = pooled->data();
    for (int64_t o = 0; o < ep.O; o++) {
      double acc = 0;
      for (int64_t k = 0; k < chunks; k++) acc += part[(size_t)(((o / block) * chunks + k) * block + o % block)];
      mp[o] = (float)(acc / (double)ep.OHW);
    }
    *means = pooled;
  }
  return y;
}
}  // namespace
#endif

TensorPtr msgcConvForwardPerSampleBn(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                                     const FusedBnAct& bn, TensorPtr* means) {
#if MSGC_GATHER_AVX512
  const int64_t N = x.shape[0], O = weight.shape[0];
  // AVX-512 epilogues on nChw16c or plain outputs; AVX2 ones on nChw8c (oneDNN's layout there) or plain
  const bool avx512 = gather::cpuHasAvx512(), avx2 = !avx512 && gather::cpuHasAvx2Fma();
  if (!(avx512 || avx2)) return nullptr;
  if (N == 1) return oneSampleBn(x, weight, scale, p, bn, means, avx512);
  const auto psp = perSamplePrims(x.shape, weight.shape, p);
  PerSamplePrims& ps = *psp;
  if (ps.dstBlock != (avx512 ? 16 : 8) && ps.dstBlock != 1) return nullptr;
  const Shape yShape = msgcOutputShape(x.shape, weight.shape, p);
  const BnEpilogue ep(bn, yShape, ps.dstBlock, avx512);
  TensorPtr y = tensorWithDesc(yShape, blockedDesc(yShape, ps.dstBlock));
  TensorPtr pooled = means ? emptyTensor({N, O, 1, 1}) : nullptr;
  const int64_t yStride = ps.fwdPd.dst_desc().get_size() / sizeof(float);
  float* yp = y->data();
  float* mp = pooled ? pooled->data() : nullptr;
  std::vector<std::vector<float>> sums((size_t)omp_get_max_threads(), std::vector<float>(ep.a.size()));
  forEachSampleForward(ps, x, weight, scale, p.heads, yp, [&](int64_t n, int thread) {
    // the epilogue on this sample's output, still in cache
    float* yn = yp + n * yStride;
    const float* rn = ep.res ? ep.res + n * yStride : nullptr;
    float* sn = sums[(size_t)thread].data();
    for (int64_t u = 0; u < ep.units(); u++) ep.apply(yn, rn, u, 0, ep.OHW, mp ? sn + u * ep.block : nullptr);
    if (mp)
      for (int64_t o = 0; o < O; o++) mp[n * O + o] = sn[o] / (float)ep.OHW;
  });
  if (means) *means = pooled;
  return y;
#else
  (void)x, (void)weight, (void)scale, (void)p, (void)bn, (void)means;
  return nullptr;
#endif
}

}  // namespace msgc
