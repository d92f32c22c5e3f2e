// elementwise_ops.h: the per-element bodies of elementwise.cu's kernels (one output element each), compiled for the
// GPU and for the host: core/cuda_emulation.cc runs them over every element on the CPU, so the tests check their
// index arithmetic and semantics (broadcasting, padding, NaN) against the CPU backend on machines without a GPU.
#pragma once
#include <cmath>
#include <cstdint>

#include "epilogue.h"  // MSGC_HD
#include "msgc/ops.h"

namespace msgc {
namespace cuda {

MSGC_HD float activationAt(float v, int kind) {
  // (ReLU/ReLU6 send NaN to 0, as the CPU backend's oneDNN eltwise does; the logistic keeps it)
  return kind == (int)Activation::ReLU    ? fmaxf(v, 0.f)
         : kind == (int)Activation::ReLU6 ? fminf(fmaxf(v, 0.f), 6.f)
                                           : 1.f / (1.f + expf(-v));
}

struct BroadcastShape {
  int rank;
  int64_t dims[8];     // a's (and y's) dims
  int64_t bStride[8];  // b's stride per dim, 0 where b broadcasts
};

// b's flat index for y's flat index i
MSGC_HD int64_t broadcastIndex(const BroadcastShape& s, int64_t i) {
  int64_t rest = i, j = 0;
  for (int d = s.rank - 1; d >= 0; d--) {
    const int64_t q = rest / s.dims[d];
    j += (rest - q * s.dims[d]) * s.bStride[d];
    rest = q;
  }
  return j;
}

MSGC_HD float binaryAt(float u, float v, int op) {
  return op == (int)Binary::Add ? u + v : op == (int)Binary::Sub ? u - v : u * v;
}

// b's strides for a's shape (b: the same rank with dims equal to a's or 1, or a single element)
inline BroadcastShape broadcastShape(const Shape& a, const Shape& b) {
  BroadcastShape s{};
  s.rank = (int)a.size();
  const bool scalar = shapeNumel(b) == 1;
  int64_t stride = 1;
  for (int d = s.rank - 1; d >= 0; d--) {
    s.dims[d] = a[d];
    const int64_t bd = scalar ? 1 : b[d];
    s.bStride[d] = bd == 1 ? 0 : stride;
    stride *= bd;
  }
  return s;
}

// pooling output element i of [N, C, OH, OW] from x [N, C, H, W]: max ignores padding, avg counts it
// (count_include_pad, as the CPU backend and torch's default)
MSGC_HD float poolAt(const float* x, int64_t i, int H, int W, int OH, int OW, const Pool2dParams& p, bool isMax) {
  const int ow = (int)(i % OW), oh = (int)((i / OW) % OH);
  const int64_t plane = i / ((int64_t)OW * OH);
  const float* xp = x + plane * H * W;
  const int h0 = oh * (int)p.strideH - (int)p.padH, w0 = ow * (int)p.strideW - (int)p.padW;
  float acc = isMax ? -INFINITY : 0.f;
  for (int kh = 0; kh < (int)p.kernelH; kh++) {
    const int h = h0 + kh;
    if (h < 0 || h >= H) continue;
    for (int kw = 0; kw < (int)p.kernelW; kw++) {
      const int w = w0 + kw;
      if (w < 0 || w >= W) continue;
      const float v = xp[(int64_t)h * W + w];
      acc = isMax ? fmaxf(acc, v) : acc + v;
    }
  }
  return isMax ? acc : acc / (float)(p.kernelH * p.kernelW);
}

// a gate head's middle, element i of h [N, B]: ReLU(h · sc + sh), sc = γ/√(var + eps), sh = β − mean · sc
MSGC_HD float headBnReluAt(float h, int b, const float* mean, const float* var, const float* gamma, const float* beta,
                           float eps) {
  const float sc = (gamma ? gamma[b] : 1.f) / sqrtf(var[b] + eps);
  const float z = h * sc + ((beta ? beta[b] : 0.f) - mean[b] * sc);
  return z > 0.f ? z : 0.f;
}

MSGC_HD float thresholdAt(float z) { return z >= 0.f ? 1.f : 0.f; }  // (NaN: closed, as the CPU's comparison)

// What a row dot product (the linear layer, a gate head's two 1×1 convs) does with its sum s + bias[k] as it
// writes element [r, k]: nothing, the head's BN and ReLU (k is the head's hidden channel), or the gate threshold.
// One kernel per GEMV instead of a GEMV and an elementwise pass: a gate head is 2 launches, not 4.
struct RowDotEpilogue {
  enum Kind { kNone = 0, kHeadBnRelu = 1, kThreshold = 2 };
  int kind = kNone;
  const float *mean = nullptr, *var = nullptr, *gamma = nullptr, *beta = nullptr;
  float eps = 0.f;
  MSGC_HD float apply(float v, int k) const {
    if (kind == kHeadBnRelu) return headBnReluAt(v, k, mean, var, gamma, beta, eps);
    if (kind == kThreshold) return thresholdAt(v);
    return v;
  }
};

inline RowDotEpilogue headEpilogue(const float* mean, const float* var, const float* gamma, const float* beta, float eps) {
  RowDotEpilogue e;
  e.kind = RowDotEpilogue::kHeadBnRelu;
  e.mean = mean;
  e.var = var;
  e.gamma = gamma;
  e.beta = beta;
  e.eps = eps;
  return e;
}

}  // namespace cuda
}  // namespace msgc
