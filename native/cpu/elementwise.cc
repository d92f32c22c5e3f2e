// elementwise.cc: add/sub/mul with broadcasting (b's dims equal a's or 1), scaling, reductions and the
// in-place accumulation autograd uses. Same-shape operands in the same layout run on the raw buffers (padding
// stays zero under add/sub/mul); broadcast operands run on oneDNN's binary primitive in a's layout.
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

namespace {

int64_t bufferElems(const Tensor& t) { return (int64_t)(t.storage->bytes / sizeof(float)); }

bool sameDesc(const Tensor& a, const Tensor& b) {
  if (a.shape != b.shape) return false;
  if (!a.layout && !b.layout) return true;
  if (!a.layout || !b.layout) return false;
  return a.layout->md == b.layout->md;
}

dnnl::algorithm binaryAlg(Binary op) {
  switch (op) {
    case Binary::Add: return dnnl::algorithm::binary_add;
    case Binary::Sub: return dnnl::algorithm::binary_sub;
    default: return dnnl::algorithm::binary_mul;
  }
}

template <typename F>
void mapBuffers(float* y, const float* a, const float* b, int64_t n, F f) {
  parallelForSimd(n, n > 32768, [&](int64_t i) { y[i] = f(a[i], b[i]); });
}

}  // namespace

namespace {
// y = f(a, b) for a channel-blocked a (blk lanes per block, padded channels included) and b: [N or 1, C] values
// broadcast over the pixels; the op and the 16-lane block are compile-time in the inner loop, so it vectorizes
// (with the op chosen per element it took 7% of a masked four-head MSGC conv's forward + backward)
template <int B, class F>
void channelBroadcastBlk(float* yp, const float* ap, const float* bp, int64_t N, int64_t C, int64_t HW, int64_t blocks,
                         bool perSample, F f) {
  parallelFor2(N, blocks, N * blocks * B * HW > 32768, [&](int64_t n, int64_t cb) {
    float v[B];
    for (int64_t l = 0; l < B; l++) {
      const int64_t c = cb * B + l;
      v[l] = c < C ? bp[(perSample ? n * C : 0) + c] : 0.f;
    }
    const int64_t base = (n * blocks + cb) * HW * B;
    for (int64_t hw = 0; hw < HW; hw++) {
      const float* src = ap + base + hw * B;
      float* dst = yp + base + hw * B;
      for (int l = 0; l < B; l++) dst[l] = f(src[l], v[l]);
    }
  });
}
template <class F>
void channelBroadcast(float* yp, const float* ap, const float* bp, int64_t N, int64_t C, int64_t HW, int64_t blk,
                      bool perSample, F f) {
  const int64_t blocks = (C + blk - 1) / blk;
  if (blk == 16) channelBroadcastBlk<16>(yp, ap, bp, N, C, HW, blocks, perSample, f);
  else if (blk == 8) channelBroadcastBlk<8>(yp, ap, bp, N, C, HW, blocks, perSample, f);
  else channelBroadcastBlk<1>(yp, ap, bp, N, C, HW, blocks, perSample, f);
}
}  // namespace

TensorPtr binaryForward(Binary op, const Tensor& a, const Tensor& b) {
  auto f = [op](float u, float v) { return op == Binary::Add ? u + v : op == Binary::Sub ? u - v : u * v; };
  if (a.shape == b.shape) {
    dnnl::memory::desc md = currentDesc(a);
    TensorPtr y = tensorWithDesc(a.shape, md);
    const float* bp = sameDesc(a, b) ? b.data() : static_cast<const float*>(asLayout(b, md).get_data_handle());
    int64_t n = a.layout ? bufferElems(*y) : a.numel();
    float* yp = y->data();
    const float* ap = a.data();
    switch (op) {
      case Binary::Add: mapBuffers(yp, ap, bp, n, [](float u, float v) { return u + v; }); break;
      case Binary::Sub: mapBuffers(yp, ap, bp, n, [](float u, float v) { return u - v; }); break;
      case Binary::Mul: mapBuffers(yp, ap, bp, n, [](float u, float v) { return u * v; }); break;
    }
    return y;
  }
  if (b.numel() == 1) {
    float s = plainData(b)[0];
    TensorPtr y = emptyTensor(a.shape);
    const float* ap = plainData(a);
    float* yp = y->data();
    int64_t n = a.numel();
    parallelFor(n, n > 32768, [&](int64_t i) { yp[i] = f(ap[i], s); });
    return y;
  }
  // per-sample-per-channel operands ([N, C, 1, 1] or [1, C, 1, 1]) against plain or channel-blocked a: our
  // kernel (oneDNN's binary falls back to a slow reference path for this broadcast on blocked layouts)
  const int64_t blk = channelBlock(a);
  if (blk > 0 && b.dim() == 4 && b.shape[2] == 1 && b.shape[3] == 1 && b.shape[1] == a.shape[1] &&
      (b.shape[0] == a.shape[0] || b.shape[0] == 1)) {
    const int64_t N = a.shape[0], C = a.shape[1], HW = a.shape[2] * a.shape[3];
    const bool perSample = b.shape[0] == N && N > 1;
    TensorPtr y = tensorWithDesc(a.shape, currentDesc(a));
    const float* ap = a.data();
    const float* bp = plainData(b);
    float* yp = y->data();
    switch (op) {
      case Binary::Add: channelBroadcast(yp, ap, bp, N, C, HW, blk, perSample, [](float u, float v) { return u + v; }); break;
      case Binary::Sub: channelBroadcast(yp, ap, bp, N, C, HW, blk, perSample, [](float u, float v) { return u - v; }); break;
      case Binary::Mul: channelBroadcast(yp, ap, bp, N, C, HW, blk, perSample, [](float u, float v) { return u * v; }); break;
    }
    return y;
  }
  // other broadcasts through oneDNN binary: src0 in a's layout, src1 plain
  dnnl::memory::desc amd = currentDesc(a);
  dnnl::memory::desc bmd = plainDesc(toDims(b.shape));
  static PrimCache<dnnl::binary> cache;
  const std::string key = Key().add((int)op, descKey(amd), descKey(bmd)).str();
  const std::shared_ptr<dnnl::binary> prim = cache.get(key, [&] {
    dnnl::binary::desc d(binaryAlg(op), amd, bmd, amd);
    return std::make_shared<dnnl::binary>(dnnl::binary::primitive_desc(d, engine()));
  });
  TensorPtr y = tensorWithDesc(a.shape, amd);
  dnnl::memory bm(bmd, engine(), const_cast<float*>(plainData(b)));
  SingleThreaded one(a.numel() < smallOpElements);
  prim->execute(stream(), {{DNNL_ARG_SRC_0, memoryOf(a)}, {DNNL_ARG_SRC_1, bm}, {DNNL_ARG_DST, memoryOf(*y)}});
  stream().wait();
  return y;
}

TensorPtr reduceToShape(const Tensor& g, const Shape& target) {
  const float* gp = plainData(g);
  TensorPtr r = zerosTensor(target);
  float* rp = r->data();
  int64_t n = g.numel(), rank = g.dim();
  if (n == 0) return r;
  // fast path: target keeps a prefix of dims and is 1 on the rest (e.g. [N, C, H, W] -> [N, C, 1, 1])
  int64_t prefix = 0;
  while (prefix < rank && target[prefix] == g.shape[prefix]) prefix++;
  bool tailOnes = true;
  for (int64_t i = prefix; i < rank; i++) tailOnes = tailOnes && target[i] == 1;
  if (tailOnes) {
    int64_t outer = shapeNumel(Shape(g.shape.begin(), g.shape.begin() + prefix));
    int64_t inner = n / outer;
    parallelFor(outer, n > 32768, [&](int64_t o) {
      double s = 0.0;
      for (int64_t i = 0; i < inner; i++) s += gp[o * inner + i];
      rp[o] = (float)s;
    });
    return r;
  }
  // general case: walk g's multi-index, map to the target index (broadcast dims contribute 0)
  std::vector<int64_t> tstride(rank), idx(rank, 0);
  int64_t st = 1;
  for (int64_t i = rank - 1; i >= 0; i--) {
    tstride[i] = target[i] == 1 ? 0 : st;
    st *= target[i];
  }
  std::vector<double> acc(r->numel(), 0.0);
  for (int64_t e = 0; e < n; e++) {
    int64_t t = 0;
    for (int64_t i = 0; i < rank; i++) t += idx[i] * tstride[i];
    acc[t] += gp[e];
    for (int64_t i = rank - 1; i >= 0; i--) {
      if (++idx[i] < g.shape[i]) break;
      idx[i] = 0;
    }
  }
  for (size_t i = 0; i < acc.size(); i++) rp[i] = (float)acc[i];
  return r;
}

TensorPtr scale(const Tensor& x, float alpha) {
  dnnl::memory::desc md = currentDesc(x);
  TensorPtr y = tensorWithDesc(x.shape, md);
  int64_t n = x.layout ? bufferElems(*y) : x.numel();
  const float* xp = x.data();
  float* yp = y->data();
  parallelForSimd(n, n > 32768, [&](int64_t i) { yp[i] = alpha * xp[i]; });
  return y;
}

TensorPtr sumAll(const Tensor& x) {
  const float* xp = plainData(x);
  int64_t n = x.numel();
  const double s = parallelSum(n, n > 32768, [&](int64_t i) { return (double)xp[i]; });
  return fullTensor({}, (float)s);
}

TensorPtr broadcastScalar(const Tensor& scalar, const Shape& shape, float alpha) {
  return fullTensor(shape, alpha * plainData(scalar)[0]);
}

void addInPlace(Tensor& dst, const Tensor& src, float alpha) {
  dnnl::memory::desc md = currentDesc(dst);
  const float* sp = sameDesc(dst, src) ? src.data() : static_cast<const float*>(asLayout(src, md).get_data_handle());
  float* dp = dst.data();
  int64_t n = dst.layout ? bufferElems(dst) : dst.numel();
  parallelForSimd(n, n > 32768, [&](int64_t i) { dp[i] += alpha * sp[i]; });
  dst.storage->touch();
}

// ---- channel broadcasts: [N, C, 1, 1] over [N, C, H, W] (the gradient of a global average pool) ---------------
namespace {
// calls f(plane pointer, values of its `block` lanes) for every (sample, channel block) of t in its own layout
// (plain, nChw8c or nChw16c); padded lanes past C get 0
template <typename F>
void forChannelPlanes(Tensor& t, const float* v, float alpha, int64_t block, F f) {
  const int64_t N = t.shape[0], C = t.shape[1], HW = t.shape[2] * t.shape[3];
  const int64_t Cb = (C + block - 1) / block;
  float* d = t.data();
  parallelFor(N * Cb, N * C * HW > 32768, [&](int64_t pl) {
    const int64_t n = pl / Cb, c0 = (pl % Cb) * block;
    float lanes[16];
    for (int64_t l = 0; l < block; l++) lanes[l] = c0 + l < C ? alpha * v[n * C + c0 + l] : 0.f;
    f(d + pl * HW * block, lanes, HW);
  });
}
template <int B>
void fillPlane(float* p, const float* v, int64_t HW) {
  for (int64_t q = 0; q < HW; q++)
    for (int l = 0; l < B; l++) p[q * B + l] = v[l];
}
template <int B>
void addPlane(float* p, const float* v, int64_t HW) {
  for (int64_t q = 0; q < HW; q++)
    for (int l = 0; l < B; l++) p[q * B + l] += v[l];
}
int64_t planeBlock(const Tensor& t) {
  const int64_t b = channelBlock(t);
  return b == 8 || b == 16 || b == 1 ? b : 0;
}
}  // namespace

TensorPtr expandChannels(const Tensor& src, const Tensor& like, float alpha) {
  int64_t block = planeBlock(like);
  if (block == 0) block = 1;  // other layouts: plain
  TensorPtr out = tensorWithDesc(like.shape, blockedDesc(like.shape, block));
  const float* v = plainData(src);
  forChannelPlanes(*out, v, alpha, block, [block](float* p, const float* lanes, int64_t HW) {
    if (block == 16) fillPlane<16>(p, lanes, HW);
    else if (block == 8) fillPlane<8>(p, lanes, HW);
    else std::fill_n(p, HW, lanes[0]);
  });
  return out;
}

void addChannelsInPlace(Tensor& dst, const Tensor& src, float alpha) {
  const int64_t block = planeBlock(dst);
  if (block == 0) {  // a layout without channel planes: through a materialised copy
    TensorPtr e = expandChannels(src, dst, alpha);
    addInPlace(dst, *e, 1.f);
    return;
  }
  const float* v = plainData(src);
  forChannelPlanes(dst, v, alpha, block, [block](float* p, const float* lanes, int64_t HW) {
    if (block == 16) addPlane<16>(p, lanes, HW);
    else if (block == 8) addPlane<8>(p, lanes, HW);
    else addPlane<1>(p, lanes, HW);
  });
  dst.storage->touch();
}

}  // namespace msgc
