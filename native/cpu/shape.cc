// shape.cc: reshape (a view of plain memory), channel concat/slice and their backward, host copies.
#include <cstring>

#include "layout.h"
#include "msgc/errors.h"
#include "msgc/ops.h"
#include "msgc/parallel.h"

namespace msgc {
using namespace cpu;

TensorPtr reshape(const Tensor& x, const Shape& shape) {
  // a blocked x gets a copy: its plain form is a cache owned by x's storage, which writes through the result
  // (assign, in-place accumulation) would corrupt without x noticing
  if (x.layout) return std::make_shared<Tensor>(shape, toPlain(x)->storage);
  return std::make_shared<Tensor>(shape, plainStorage(x));
}

TensorPtr toPlain(const Tensor& x) {
  TensorPtr y = emptyTensor(x.shape);
  std::memcpy(y->data(), plainData(x), (size_t)x.numel() * sizeof(float));
  return y;
}

TensorPtr cloneTensor(const Tensor& x) {
  auto st = std::make_shared<Storage>(x.storage->bytes, x.device());
  std::memcpy(st->data, x.data(), x.storage->bytes);
  return std::make_shared<Tensor>(x.shape, st, x.layout);
}

void copyFromHost(Tensor& dst, const float* src) {
  if (dst.layout) {  // become plain: a fresh storage, so views of the old one are unaffected
    dst.storage = std::make_shared<Storage>((size_t)dst.numel() * sizeof(float), dst.device());
    dst.layout = nullptr;
  }
  std::memcpy(dst.data(), src, (size_t)dst.numel() * sizeof(float));
  dst.storage->touch();
}

// xs: k tensors [N, C_i, ...rest] -> [N, sum C_i, ...rest]
TensorPtr concatChannels(const std::vector<const Tensor*>& xs) {
  Shape out = xs[0]->shape;
  int64_t totalC = 0;
  for (const Tensor* t : xs) totalC += t->shape[1];
  out[1] = totalC;
  TensorPtr y = emptyTensor(out);
  int64_t N = out[0], inner = shapeNumel(Shape(out.begin() + 2, out.end()));
  float* yp = y->data();
  int64_t offset = 0;
  for (const Tensor* t : xs) {
    const float* xp = plainData(*t);
    int64_t block = t->shape[1] * inner;
    parallelFor(N, N * block > 32768, [&](int64_t n) {
      std::memcpy(yp + n * totalC * inner + offset, xp + n * block, block * sizeof(float));
    });
    offset += block;
  }
  return y;
}

TensorPtr sliceChannels(const Tensor& x, int64_t start, int64_t end) {
  Shape out = x.shape;
  out[1] = end - start;
  TensorPtr y = emptyTensor(out);
  int64_t N = out[0], C = x.shape[1], inner = shapeNumel(Shape(out.begin() + 2, out.end()));
  const float* xp = plainData(x);
  float* yp = y->data();
  int64_t block = (end - start) * inner;
  parallelFor(N, N * block > 32768, [&](int64_t n) {
    std::memcpy(yp + n * block, xp + (n * C + start) * inner, block * sizeof(float));
  });
  return y;
}

TensorPtr sliceChannelsBackward(const Tensor& gy, const Shape& xShape, int64_t start) {
  TensorPtr gx = zerosTensor(xShape);
  int64_t N = xShape[0], C = xShape[1], inner = shapeNumel(Shape(xShape.begin() + 2, xShape.end()));
  const float* gp = plainData(gy);
  float* xp = gx->data();
  int64_t block = gy.shape[1] * inner;
  for (int64_t n = 0; n < N; n++) std::memcpy(xp + (n * C + start) * inner, gp + n * block, block * sizeof(float));
  return gx;
}

}  // namespace msgc
