// activation.cc: relu, relu6, sigmoid forward and backward on oneDNN eltwise primitives; outputs keep the
// input's layout.
#include <sstream>
#include <unordered_map>

#include "layout.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;
using alg = dnnl::algorithm;

namespace {

struct EltPrims {
  dnnl::eltwise_forward::primitive_desc fwdPd;
  dnnl::eltwise_forward fwd;
  bool haveBwd = false;
  dnnl::eltwise_backward bwd;
};

void algorithmFor(Activation a, alg& fwd, alg& bwd, float& alpha, float& beta) {
  alpha = 0.f;
  beta = 0.f;
  switch (a) {
    case Activation::ReLU: fwd = bwd = alg::eltwise_relu; break;
    case Activation::ReLU6: fwd = bwd = alg::eltwise_clip_v2; beta = 6.f; break;
    case Activation::Sigmoid: fwd = bwd = alg::eltwise_logistic_use_dst_for_bwd; break;
  }
}

std::shared_ptr<EltPrims> prims(Activation a, const dnnl::memory::desc& md) {
  static PrimCache<EltPrims> cache;
  const std::string key = Key().add((int)a, descKey(md)).str();
  return cache.get(key, [&] {
    auto e = std::make_shared<EltPrims>();
    alg f, b;
    float alpha, beta;
    algorithmFor(a, f, b, alpha, beta);
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, f, md, alpha, beta);
    e->fwdPd = dnnl::eltwise_forward::primitive_desc(d, engine());
    e->fwd = dnnl::eltwise_forward(e->fwdPd);
    dnnl::eltwise_backward::desc bd(b, md, md, alpha, beta);
    e->bwd = dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc(bd, engine(), e->fwdPd));
    e->haveBwd = true;
    return e;
  });
}

}  // namespace

TensorPtr activationForward(Activation a, const Tensor& x) {
  dnnl::memory::desc md = currentDesc(x);
  const auto cp = prims(a, md);
  EltPrims& c = *cp;
  TensorPtr y = tensorWithDesc(x.shape, md);
  SingleThreaded one(x.numel() < smallOpElements);
  c.fwd.execute(stream(), {{DNNL_ARG_SRC, memoryOf(x)}, {DNNL_ARG_DST, memoryOf(*y)}});
  stream().wait();
  return y;
}

TensorPtr activationBackward(Activation a, const Tensor& xOrY, const Tensor& gy) {
  dnnl::memory::desc md = currentDesc(xOrY);
  const auto cp = prims(a, md);
  EltPrims& c = *cp;
  TensorPtr gx = tensorWithDesc(xOrY.shape, md);
  int dataArg = a == Activation::Sigmoid ? DNNL_ARG_DST : DNNL_ARG_SRC;
  SingleThreaded one(xOrY.numel() < smallOpElements);
  c.bwd.execute(stream(), {{dataArg, memoryOf(xOrY)},
                           {DNNL_ARG_DIFF_DST, asLayout(gy, md)},
                           {DNNL_ARG_DIFF_SRC, memoryOf(*gx)}});
  stream().wait();
  return gx;
}

}  // namespace msgc
