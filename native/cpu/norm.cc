// norm.cc: 2-D batch normalisation on oneDNN, forward (training: batch statistics + running-stat update; eval:
// running statistics) and backward. y keeps x's layout. Semantics match torch: biased variance normalises the
// batch, the running variance receives the unbiased one, running = (1 - momentum) * running + momentum * batch.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>
#include <sstream>
#include <unordered_map>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;
using flags = dnnl::normalization_flags;

namespace {

// BN sees x as 4-D: [N, C] inputs become [N, C, 1, 1].
Dims dims4(const Shape& s) { return s.size() == 4 ? toDims(s) : Dims{s[0], s[1], 1, 1}; }

dnnl::memory::desc xDesc(const Tensor& x) {
  Dims d = dims4(x.shape);
  // plain NCHW feature maps (e.g. the gathered conv's output for heads narrower than 16 channels) go through
  // nChw16c (nChw8c on CPUs without AVX-512, where oneDNN's batch norm on nChw16c is reference code: 10x slower
  // than on plain NCHW): oneDNN's batch norm for plain layouts (ncsp_bnorm) is not vectorized across channels and
  // took about 2.3 ms per forward + backward on ResNet-20's 16-channel 28² maps at batch 64 (three of them: a
  // quarter of what an MSGC training step spent beyond dense)
  if (x.shape.size() == 4 && x.shape[1] >= 8 && x.shape[2] * x.shape[3] > 1 && channelBlock(x) == 1)
    return blockedDesc(x.shape, nativeChannelBlock());
  dnnl::memory::desc md = currentDesc(x, d);
  return md ? md : plainDesc(d);
}

struct BnPrims {
  dnnl::batch_normalization_forward::primitive_desc fwdPd;
  dnnl::batch_normalization_forward fwd;
  bool haveBwd = false;
  dnnl::batch_normalization_backward::primitive_desc bwdPd;
  dnnl::batch_normalization_backward bwd;
};

std::shared_ptr<BnPrims> prims(const dnnl::memory::desc& md, bool training, float eps) {
  static PrimCache<BnPrims> cache;
  return cache.get(Key().add(descKey(md), training, eps), [&] {
    auto e = std::make_shared<BnPrims>();
    flags f = flags::use_scale | flags::use_shift;
    if (!training) f = f | flags::use_global_stats;
    dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_training, md, eps, f);
    e->fwdPd = dnnl::batch_normalization_forward::primitive_desc(d, engine());
    e->fwd = dnnl::batch_normalization_forward(e->fwdPd);
    return e;
  });
}

// scale/shift default to 1 and 0 when the layer has no affine parameters
dnnl::memory affineOr(const Tensor* t, int64_t C, float fill, TensorPtr& holder) {
  if (t) return asLayout(*t, plainDesc(Dims{C}));
  holder = fullTensor({C}, fill);
  return memoryOf(*holder);
}

}  // namespace

BatchNormResult batchNorm2dForward(const Tensor& x, Tensor& runningMean, Tensor& runningVar, const Tensor* weight,
                                   const Tensor* bias, bool training, float momentum, float eps) {
  int64_t C = x.shape[1];
  dnnl::memory::desc md = xDesc(x);
  const auto cp = prims(md, training, eps);
  BnPrims& c = *cp;
  BatchNormResult r;
  r.y = tensorWithDesc(x.shape, md);
  dnnl::memory src = asLayout(x, md);
  TensorPtr h1, h2;
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src},
                                             {DNNL_ARG_DST, memoryOf(*r.y)},
                                             {DNNL_ARG_SCALE, affineOr(weight, C, 1.f, h1)},
                                             {DNNL_ARG_SHIFT, affineOr(bias, C, 0.f, h2)}};
  if (training) {
    r.mean = emptyTensor({C});
    r.var = emptyTensor({C});
  } else {
    r.mean = toPlain(runningMean);
    r.var = toPlain(runningVar);
  }
  args[DNNL_ARG_MEAN] = memoryOf(*r.mean);
  args[DNNL_ARG_VARIANCE] = memoryOf(*r.var);
  {
    SingleThreaded one(x.numel() < smallOpElements);
    c.fwd.execute(stream(), args);
    stream().wait();
  }
  if (training) {
    int64_t count = x.numel() / C;
    float unbias = count > 1 ? (float)count / (float)(count - 1) : 1.f;
    float* rm = runningMean.data();
    float* rv = runningVar.data();
    const float* m = r.mean->data();
    const float* v = r.var->data();
    for (int64_t i = 0; i < C; i++) {
      rm[i] = (1.f - momentum) * rm[i] + momentum * m[i];
      rv[i] = (1.f - momentum) * rv[i] + momentum * v[i] * unbias;
    }
    runningMean.storage->touch();
    runningVar.storage->touch();
  }
  return r;
}

BatchNormGrads batchNorm2dBackward(const Tensor& x, const Tensor& gy, const Tensor& mean, const Tensor& var,
                                   const Tensor* weight, bool training, float eps, bool needWeightBias) {
  int64_t C = x.shape[1];
  dnnl::memory::desc md = xDesc(x);
  const auto cp = prims(md, training, eps);
  BnPrims& c = *cp;
  if (!c.haveBwd) {
    flags f = flags::use_scale | flags::use_shift;
    if (!training) f = f | flags::use_global_stats;
    dnnl::batch_normalization_backward::desc d(dnnl::prop_kind::backward, md, md, eps, f);
    c.bwdPd = dnnl::batch_normalization_backward::primitive_desc(d, engine(), c.fwdPd);
    c.bwd = dnnl::batch_normalization_backward(c.bwdPd);
    c.haveBwd = true;
  }
  BatchNormGrads g;
  g.x = tensorWithDesc(x.shape, md);
  TensorPtr gw = emptyTensor({C}), gb = emptyTensor({C}), h1, h2;
  SingleThreaded one(x.numel() < smallOpElements);
  c.bwd.execute(stream(), {{DNNL_ARG_SRC, asLayout(x, md)},
                           {DNNL_ARG_DIFF_DST, asLayout(gy, md)},
                           {DNNL_ARG_MEAN, memoryOf(mean)},
                           {DNNL_ARG_VARIANCE, memoryOf(var)},
                           {DNNL_ARG_SCALE, affineOr(weight, C, 1.f, h1)},
                           {DNNL_ARG_SHIFT, affineOr(nullptr, C, 0.f, h2)},  // required, not read
                           {DNNL_ARG_DIFF_SRC, memoryOf(*g.x)},
                           {DNNL_ARG_DIFF_SCALE, memoryOf(*gw)},
                           {DNNL_ARG_DIFF_SHIFT, memoryOf(*gb)}});
  stream().wait();
  if (needWeightBias) {
    g.weight = gw;
    g.bias = gb;
  }
  return g;
}

// ---- inference: batch norm + residual + activation in one pass ----------------------------------------------
// Memory-bound, so the point is one read of x (and the residual) and one write of y instead of a pass per op, and
// no primitive lookup: at batch 1 the separate BN, add and ReLU calls cost about a third of MobileNetV2's time.
namespace {
// One plane of `pixels` pixels × `block` lanes (block 1: one channel): y = x·a + b [+ r], clamped to [lo, hi] for
// an activation. NaN is treated as the separate ops treat it: oneDNN's ReLU/ReLU6 give 0 (max(lo, NaN) = lo here),
// no activation keeps it.
inline float bnActClamp(float v, float lo, float hi, bool clamp) { return clamp ? std::min(hi, std::max(lo, v)) : v; }

template <int B, bool Clamp>
inline void bnActPlane(const float* __restrict x, const float* __restrict r, float* __restrict y, int64_t pixels,
                       const float* a, const float* b, float lo, float hi) {
  float av[B], bv[B];
  for (int l = 0; l < B; l++) av[l] = a[l], bv[l] = b[l];
  if (r) {
    for (int64_t p = 0; p < pixels; p++)
      for (int l = 0; l < B; l++)
        y[p * B + l] = bnActClamp(x[p * B + l] * av[l] + bv[l] + r[p * B + l], lo, hi, Clamp);
  } else {
    for (int64_t p = 0; p < pixels; p++)
      for (int l = 0; l < B; l++) y[p * B + l] = bnActClamp(x[p * B + l] * av[l] + bv[l], lo, hi, Clamp);
  }
}

template <int B>
inline void bnActPlaneAny(const float* x, const float* r, float* y, int64_t pixels, const float* a, const float* b,
                          float lo, float hi, bool clamp) {
  if (clamp) bnActPlane<B, true>(x, r, y, pixels, a, b, lo, hi);
  else bnActPlane<B, false>(x, r, y, pixels, a, b, lo, hi);
}

MSGC_SIMD_CLONES
void bnActPlanes(const float* x, const float* r, float* y, int64_t p0, int64_t p1, int64_t planesPerSample,
                 int64_t pixels, int64_t block, const float* a, const float* b, float lo, float hi, bool clamp) {
  for (int64_t pl = p0; pl < p1; pl++) {
    const int64_t c0 = (pl % planesPerSample) * block, off = pl * pixels * block;
    const float* rp = r ? r + off : nullptr;
    if (block == 16) {
      bnActPlaneAny<16>(x + off, rp, y + off, pixels, a + c0, b + c0, lo, hi, clamp);
    } else if (block == 8) {
      bnActPlaneAny<8>(x + off, rp, y + off, pixels, a + c0, b + c0, lo, hi, clamp);
    } else {
      bnActPlaneAny<1>(x + off, rp, y + off, pixels, a + c0, b + c0, lo, hi, clamp);
    }
  }
}
// laneSums for B lanes: float sums over chunks of 64 pixels, four a lane (pixels q ≡ k mod 4 in the k-th: one running
// sum a lane was bound by the adds' latency, twice oneDNN's pooling time), each chunk's (s0 + s1) + (s2 + s3) added
// in double. The same order in every compiled version (laneSumsAny: the template inlined into each; templates
// themselves cannot be target clones under clang).
template <int B>
__attribute__((always_inline)) inline void laneSumsOf(const float* y, int64_t pixels, double* acc) {
  for (int l = 0; l < B; l++) acc[l] = 0;
  for (int64_t q0 = 0; q0 < pixels; q0 += 64) {
    const int64_t q1 = std::min(pixels, q0 + 64);
    float s0[B] = {}, s1[B] = {}, s2[B] = {}, s3[B] = {};
    int64_t q = q0;
    for (; q + 4 <= q1; q += 4)
      for (int l = 0; l < B; l++) {
        s0[l] += y[q * B + l];
        s1[l] += y[(q + 1) * B + l];
        s2[l] += y[(q + 2) * B + l];
        s3[l] += y[(q + 3) * B + l];
      }
    for (; q < q1; q++)
      for (int l = 0; l < B; l++) s0[l] += y[q * B + l];
    for (int l = 0; l < B; l++) acc[l] += (double)((s0[l] + s1[l]) + (s2[l] + s3[l]));
  }
}
MSGC_SIMD_CLONES void laneSumsAny(const float* plane, int64_t pixels, int64_t lanes, double* acc) {
  if (lanes == 16) laneSumsOf<16>(plane, pixels, acc);
  else if (lanes == 8) laneSumsOf<8>(plane, pixels, acc);
  else laneSumsOf<1>(plane, pixels, acc);
}
}  // namespace

void cpu::laneSums(const float* plane, int64_t pixels, int64_t lanes, double* acc) {
  laneSumsAny(plane, pixels, lanes, acc);
}

TensorPtr batchNormActEval(const Tensor& x, const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                           const Tensor* bias, float eps, int act, const Tensor* residual, TensorPtr* means) {
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3];
  int64_t block = channelBlock(x);
  const float* xd;
  TensorPtr y;
  if (block == 8 || block == 16) {
    xd = x.data();
    y = tensorWithDesc(x.shape, blockedDesc(x.shape, block));
  } else {
    block = 1;
    xd = plainData(x);
    y = tensorWithDesc(x.shape, plainDesc(toDims(x.shape)));
  }
  const int64_t Cp = (C + block - 1) / block * block;  // padded lanes get a = b = 0 (and keep zeros)
  std::vector<float> a(Cp, 0.f), b(Cp, 0.f);
  const float* mean = plainData(runningMean);
  const float* var = plainData(runningVar);
  const float* g = weight ? plainData(*weight) : nullptr;
  const float* be = bias ? plainData(*bias) : nullptr;
  for (int64_t c = 0; c < C; c++) {
    a[c] = (g ? g[c] : 1.f) / std::sqrt(var[c] + eps);
    b[c] = (be ? be[c] : 0.f) - mean[c] * a[c];
  }
  const float* rd = nullptr;
  dnnl::memory rmem;
  if (residual) {
    const dnnl::memory::desc want = block == 1 ? plainDesc(toDims(x.shape)) : blockedDesc(x.shape, block);
    rmem = asLayout(*residual, want);
    rd = static_cast<const float*>(rmem.get_data_handle());
  }
  float* yd = y->data();
  const float lo = act >= 0 ? 0.f : -INFINITY;
  const float hi = act == (int)Activation::ReLU6 ? 6.f : INFINITY;
  const int64_t planes = N * (Cp / block);
  const float* ap = a.data();
  const float* bp = b.data();
  float* md = nullptr;
  if (means) {
    *means = emptyTensor({N, C, 1, 1});
    md = (*means)->data();
  }
  // the plane just written is still in cache: its per-channel means cost a read from there
  auto pool = [&](int64_t p0, int64_t p1) {
    if (!md) return;
    for (int64_t pl = p0; pl < p1; pl++) {
      const int64_t n = pl / (Cp / block), c0 = (pl % (Cp / block)) * block;
      double acc[16];
      laneSums(yd + pl * HW * block, HW, block, acc);
      for (int64_t l = 0; l < block && c0 + l < C; l++) md[n * C + c0 + l] = (float)(acc[l] / (double)HW);
    }
  };
  if (planes * HW * block < 65536) {
    bnActPlanes(xd, rd, yd, 0, planes, Cp / block, HW, block, ap, bp, lo, hi, act >= 0);
    pool(0, planes);
  } else {
#pragma omp parallel
    {
      const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
      bnActPlanes(xd, rd, yd, planes * t / T, planes * (t + 1) / T, Cp / block, HW, block, ap, bp, lo, hi, act >= 0);
      pool(planes * t / T, planes * (t + 1) / T);
    }
  }
  return y;
}

}  // namespace msgc
