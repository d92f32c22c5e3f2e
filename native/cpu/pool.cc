// pool.cc: max and average pooling (and adaptive average to 1x1 as a full-window average) on oneDNN. Max pooling
// ignores padding (as torch pads with -inf); average pooling counts it (torch's count_include_pad=True).
// Output sizes use torch's floor formula.
#include <sstream>
#include <unordered_map>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

struct PoolPrims {
  dnnl::pooling_forward::primitive_desc fwdPd;
  dnnl::pooling_forward fwd;
  // max pooling only: forward_inference, without the workspace of argmax indices
  dnnl::pooling_forward::primitive_desc inferPd;
  dnnl::pooling_forward infer;
  bool haveBwd = false;
  dnnl::pooling_backward::primitive_desc bwdPd;
  dnnl::pooling_backward bwd;
};

Shape outShape(const Shape& x, const Pool2dParams& p) {
  return {x[0], x[1], (x[2] + 2 * p.padH - p.kernelH) / p.strideH + 1, (x[3] + 2 * p.padW - p.kernelW) / p.strideW + 1};
}

dnnl::algorithm algOf(PoolKind k) {
  return k == PoolKind::Max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_include_padding;
}

std::shared_ptr<PoolPrims> prims(PoolKind kind, const dnnl::memory::desc& src, const Shape& xShape, const Pool2dParams& p) {
  static PrimCache<PoolPrims> cache;
  const Key key = Key().add((int)kind, descKey(src), p.kernelH, p.kernelW, p.strideH, p.strideW, p.padH, p.padW);
  return cache.get(key, [&] {
    auto e = std::make_shared<PoolPrims>();
    Shape y = outShape(xShape, p);
    Dims padR{(y[2] - 1) * p.strideH + p.kernelH - xShape[2] - p.padH, (y[3] - 1) * p.strideW + p.kernelW - xShape[3] - p.padW};
    dnnl::memory::desc dst(toDims(y), dt::f32, tag::any);
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_training, algOf(kind), src, dst, Dims{p.strideH, p.strideW},
                                  Dims{p.kernelH, p.kernelW}, Dims{p.padH, p.padW}, padR);
    e->fwdPd = dnnl::pooling_forward::primitive_desc(d, engine());
    e->fwd = dnnl::pooling_forward(e->fwdPd);
    if (kind == PoolKind::Max) {
      dnnl::pooling_forward::desc di(dnnl::prop_kind::forward_inference, algOf(kind), src, dst, Dims{p.strideH, p.strideW},
                                     Dims{p.kernelH, p.kernelW}, Dims{p.padH, p.padW}, padR);
      e->inferPd = dnnl::pooling_forward::primitive_desc(di, engine());
      e->infer = dnnl::pooling_forward(e->inferPd);
    }
    dnnl::pooling_backward::desc bd(algOf(kind), src, e->fwdPd.dst_desc(), Dims{p.strideH, p.strideW},
                                    Dims{p.kernelH, p.kernelW}, Dims{p.padH, p.padW}, padR);
    e->bwdPd = dnnl::pooling_backward::primitive_desc(bd, engine(), e->fwdPd);
    e->bwd = dnnl::pooling_backward(e->bwdPd);
    return e;
  });
}

// Average pooling over the whole map (the gate heads' contexts, a classifier's pool), written plain [N, C, 1, 1]:
// the heads' GEMMs and the classifier read it as it is, where oneDNN's pooling kept nChw16c and each gate head
// reordered its context to plain first (7-24 µs a head, more right after a parallel op). Sums as laneSums (as the
// eval pool of batchNormActEval); plain, nChw16c and nChw8c inputs (null for other layouts).
TensorPtr globalAverage(const Tensor& x) {
  const int64_t b = channelBlock(x);
  if (b != 1 && b != 8 && b != 16) return nullptr;
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], blocks = (C + b - 1) / b;
  TensorPtr y = emptyTensor({N, C, 1, 1});
  const float* xp = b == 1 ? plainData(x) : x.data();
  float* yp = y->data();
  parallelFor2(N, blocks, N * blocks * HW * b > 32768, [&](int64_t n, int64_t cb) {
    const float* src = xp + (n * blocks + cb) * HW * b;
    double acc[16];
    laneSums(src, HW, b, acc);
    for (int64_t l = 0; l < b && cb * b + l < C; l++) yp[n * C + cb * b + l] = (float)(acc[l] / (double)HW);
  });
  return y;
}

}  // namespace

PoolResult pool2dForward(PoolKind kind, const Tensor& x, const Pool2dParams& p, bool training) {
  if (kind == PoolKind::Avg && p.padH == 0 && p.padW == 0 && p.kernelH == x.shape[2] && p.kernelW == x.shape[3]) {
    PoolResult r;
    r.y = globalAverage(x);
    if (r.y) return r;
  }
  dnnl::memory::desc src = currentDesc(x);
  const auto cp = prims(kind, src, x.shape, p);
  PoolPrims& c = *cp;
  PoolResult r;
  if (!training && kind == PoolKind::Max) {
    // (ResNet's 3×3 max pool over the stem's 64×112² output at batch 1, AVX2: 1.0 ms with the indices, 0.37 without)
    r.y = tensorWithDesc(outShape(x.shape, p), c.inferPd.dst_desc());
    SingleThreaded one(x.numel() < smallOpElements);
    c.infer.execute(stream(), {{DNNL_ARG_SRC, memoryOf(x)}, {DNNL_ARG_DST, memoryOf(*r.y)}});
    stream().wait();
    return r;
  }
  r.y = tensorWithDesc(outShape(x.shape, p), c.fwdPd.dst_desc());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, memoryOf(x)}, {DNNL_ARG_DST, memoryOf(*r.y)}};
  if (kind == PoolKind::Max) {
    dnnl::memory::desc ws = c.fwdPd.workspace_desc();
    int64_t words = (int64_t)((ws.get_size() + 3) / 4);
    r.workspace = emptyTensor({words > 0 ? words : 1});
    args[DNNL_ARG_WORKSPACE] = dnnl::memory(ws, engine(), r.workspace->data());
  }
  SingleThreaded one(x.numel() < smallOpElements);
  c.fwd.execute(stream(), args);
  stream().wait();
  return r;
}

TensorPtr pool2dBackward(PoolKind kind, const Tensor& x, const Tensor& gy, const Tensor* workspace,
                         const Pool2dParams& p) {
  if (kind == PoolKind::Avg && p.padH == 0 && p.padW == 0 && p.kernelH == x.shape[2] && p.kernelW == x.shape[3])
    return expandChannels(gy, x, 1.f / (float)(x.shape[2] * x.shape[3]));  // a broadcast at memory speed (oneDNN's
                                                                           // backward took ~20x longer on these)
  // the same primitive as the forward (keyed on x's layout), so the workspace matches
  const Shape& xShape = x.shape;
  dnnl::memory::desc src = currentDesc(x);
  const auto cp = prims(kind, src, xShape, p);
  PoolPrims& c = *cp;
  TensorPtr gx = tensorWithDesc(xShape, c.bwdPd.diff_src_desc());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_DIFF_DST, asLayout(gy, c.bwdPd.diff_dst_desc())},
                                             {DNNL_ARG_DIFF_SRC, memoryOf(*gx)}};
  if (kind == PoolKind::Max) {
    dnnl::memory::desc ws = c.fwdPd.workspace_desc();
    MSGC_CHECK(workspace && (size_t)workspace->numel() * 4 >= ws.get_size(),
               "maxPool2d backward: workspace does not match this pooling");
    args[DNNL_ARG_WORKSPACE] = dnnl::memory(ws, engine(), workspace->data());
  }
  SingleThreaded one(x.numel() < smallOpElements);
  c.bwd.execute(stream(), args);
  stream().wait();
  return gx;
}

}  // namespace msgc
