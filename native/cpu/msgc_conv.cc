// msgc_conv.cc: the MSGC convolution, masked execution. Head i convolves the input scaled per sample and
// channel by scale[:, i, :] with its own contiguous block of output filters. Heads run one after another as
// batched oneDNN convolutions, so only one scaled copy of the input exists at a time (no G x activation blow-up);
// the backward recomputes that copy instead of saving it.
#include <cstring>

#include "layout.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;

namespace {

Conv2dParams convParams(const MsgcConvParams& p) {
  Conv2dParams c;
  c.strideH = p.strideH;
  c.strideW = p.strideW;
  c.padH = p.padH;
  c.padW = p.padW;
  return c;
}

// scale[:, i, :] as a [N, C, 1, 1] tensor
TensorPtr headScale(const float* scale, int64_t N, int64_t G, int64_t C, int64_t i) {
  TensorPtr s = emptyTensor({N, C, 1, 1});
  for (int64_t n = 0; n < N; n++) std::memcpy(s->data() + n * C, scale + (n * G + i) * C, C * sizeof(float));
  return s;
}

// rows [i*O/G, (i+1)*O/G) of weight [O, C, k, k]
TensorPtr headWeight(const float* w, const Shape& ws, int64_t G, int64_t i) {
  int64_t rows = ws[0] / G, row = ws[1] * ws[2] * ws[3];
  return fromHost(w + i * rows * row, {rows, ws[1], ws[2], ws[3]});
}

}  // namespace

TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p) {
  const int64_t N = x.shape[0], C = x.shape[1], O = weight.shape[0], G = p.heads, Og = O / G;
  const float* s = plainData(scale);
  const float* w = plainData(weight);
  Conv2dParams cp = convParams(p);
  TensorPtr y;
  for (int64_t i = 0; i < G; i++) {
    TensorPtr si = headScale(s, N, G, C, i);
    TensorPtr xs = binaryForward(Binary::Mul, x, *si);
    TensorPtr wi = headWeight(w, weight.shape, G, i);
    TensorPtr yi = conv2dForward(*xs, *wi, nullptr, cp);
    const int64_t OH = yi->shape[2], OW = yi->shape[3], block = Og * OH * OW;
    if (!y) y = emptyTensor({N, O, OH, OW});
    const float* src = plainData(*yi);
    float* dst = y->data();
#pragma omp parallel for if (N * block > 32768)
    for (int64_t n = 0; n < N; n++) std::memcpy(dst + (n * O + i * Og) * OH * OW, src + n * block, block * sizeof(float));
  }
  return y;
}

MsgcConvGrads msgcConvBackward(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                               const MsgcConvParams& p, bool needX, bool needWeight, bool needScale) {
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], O = weight.shape[0], G = p.heads,
                Og = O / G;
  const int64_t OH = gy.shape[2], OW = gy.shape[3], kk = weight.shape[2] * weight.shape[3];
  const float* s = plainData(scale);
  const float* w = plainData(weight);
  const float* g = plainData(gy);
  Conv2dParams cp = convParams(p);
  MsgcConvGrads r;
  if (needX) r.x = zerosTensor(x.shape);
  if (needWeight) r.weight = emptyTensor(weight.shape);
  if (needScale) r.scale = emptyTensor(scale.shape);
  const float* xp = (needScale) ? plainData(x) : nullptr;
  for (int64_t i = 0; i < G; i++) {
    TensorPtr gyi = emptyTensor({N, Og, OH, OW});
    const int64_t block = Og * OH * OW;
    for (int64_t n = 0; n < N; n++) std::memcpy(gyi->data() + n * block, g + (n * O + i * Og) * OH * OW, block * sizeof(float));
    TensorPtr wi = headWeight(w, weight.shape, G, i);
    TensorPtr si = headScale(s, N, G, C, i);
    TensorPtr xs = needWeight ? binaryForward(Binary::Mul, x, *si) : nullptr;
    Conv2dGrads cg = conv2dBackward(xs ? *xs : x, *wi, *gyi, cp, needX || needScale, needWeight, false);
    if (needWeight) {
      const float* gw = plainData(*cg.weight);
      std::memcpy(r.weight->data() + i * Og * C * kk, gw, Og * C * kk * sizeof(float));
    }
    if (needX || needScale) {
      // gxs = W_i^T ⋆ gy_i, the gradient w.r.t. the scaled input of head i
      const float* gxs = plainData(*cg.x);
      const float* sp = si->data();
      float* gx = needX ? r.x->data() : nullptr;
      float* gs = needScale ? r.scale->data() : nullptr;
#pragma omp parallel for collapse(2) if (N * C * HW > 32768)
      for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
          const float* a = gxs + (n * C + c) * HW;
          if (gx) {
            float sc = sp[n * C + c];
            float* d = gx + (n * C + c) * HW;
            for (int64_t k = 0; k < HW; k++) d[k] += sc * a[k];
          }
          if (gs) {
            const float* b = xp + (n * C + c) * HW;
            double acc = 0.0;
            for (int64_t k = 0; k < HW; k++) acc += (double)a[k] * b[k];
            gs[(n * G + i) * C + c] = (float)acc;
          }
        }
    }
  }
  return r;
}

}  // namespace msgc
