// norm.cc: 2-D batch normalisation on oneDNN, forward (training: batch statistics + running-stat update; eval:
// running statistics) and backward. y keeps x's layout. Semantics match torch: biased variance normalises the
// batch, the running variance receives the unbiased one, running = (1 - momentum) * running + momentum * batch.
#include <cmath>
#include <sstream>
#include <unordered_map>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;
using flags = dnnl::normalization_flags;

namespace {

// BN sees x as 4-D: [N, C] inputs become [N, C, 1, 1].
Dims dims4(const Shape& s) { return s.size() == 4 ? toDims(s) : Dims{s[0], s[1], 1, 1}; }

dnnl::memory::desc xDesc(const Tensor& x) {
  Dims d = dims4(x.shape);
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

BnPrims& prims(const dnnl::memory::desc& md, bool training, float eps) {
  static std::unordered_map<std::string, std::unique_ptr<BnPrims>> cache;
  std::ostringstream os;
  os << descKey(md) << training << ':' << eps;
  auto it = cache.find(os.str());
  if (it != cache.end()) return *it->second;
  auto e = std::make_unique<BnPrims>();
  flags f = flags::use_scale | flags::use_shift;
  if (!training) f = f | flags::use_global_stats;
  dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_training, md, eps, f);
  e->fwdPd = dnnl::batch_normalization_forward::primitive_desc(d, engine());
  e->fwd = dnnl::batch_normalization_forward(e->fwdPd);
  auto& ref = *e;
  cache[os.str()] = std::move(e);
  return ref;
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
  BnPrims& c = prims(md, training, eps);
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
  c.fwd.execute(stream(), args);
  stream().wait();
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
  BnPrims& c = prims(md, training, eps);
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

}  // namespace msgc
