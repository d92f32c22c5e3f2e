// msgc_conv_tile.h: one thread's part of the MSGC convolution kernel (msgc_conv.cu), written as host-and-device
// steps so that the CPU build can run the very same code: core/cuda_emulation.cc plays the GPU's blocks and
// threads in order (every thread's load, then every thread's compute, as the barriers would order them), and the
// tests compare that against float64 on machines without a GPU.
//   y[n, g·Og + o, p] = Σ_{c, kr, ks} W[g·Og + o, c, kr, ks] · scale[n, g, c] · x[n, c, ih(p, kr), iw(p, ks)]
// A block computes BM output channels of one head × kBN output pixels of one sample; its reduction runs over the
// (channel, kr, ks) triples of that sample and head: every channel (masked, times the scale, zeros included) or
// only the channels with a non-zero scale (gathered: idx/cnt hold them, compacted per (sample, head)).
// Shapes: x [N, C, H, W], weight [O, C, KH, KW], scale [N, G, C] -> y [N, O, OH, OW]; float32, plain layout.
#pragma once
#include <cstdint>

#include "epilogue.h"

#ifdef __CUDA_ARCH__
#define MSGC_UNROLL _Pragma("unroll")
#else
#define MSGC_UNROLL
#endif

namespace msgc {
namespace cuda {

struct MsgcConvArgs {
  const float* x;
  const float* w;
  const float* scale;
  const int* idx;        // [N·G, C] compacted channel indices (gathered), or null (masked: every channel)
  const int* cnt;        // [N·G] how many
  const float* outMask;  // [N, K, O] or null: outputs no row selects are 0 (before the epilogue)
  int outMaskRows;       // K
  float* y;
  int C, H, W, O, G, Og, KH, KW, OH, OW, strideH, strideW, padH, padW;
  Epilogue e;
};

constexpr int kTileBN = 64;  // output pixels per block
constexpr int kTileBK = 8;   // reduction steps per shared-memory stage
constexpr int kTileThreads = 256;

// Channel indices of (sample, head) ng with a non-zero scale, in order (the host's version of the warp-ballot
// compaction in msgc_conv.cu). NaN counts as selected, so that it propagates as in the masked execution.
MSGC_HD int compactChannels(const float* scaleRow, int C, int* out) {
  int n = 0;
  for (int c = 0; c < C; c++)
    if (scaleRow[c] != 0.f) out[n++] = c;
  return n;
}

// BM output channels per block (16, 32 or 64): 16×16 threads, each BM/16 channels × 4 pixels. Shared memory:
// As[kTileBK][BM + 4] (weights; padded against bank conflicts on the transposing store), Bs[kTileBK][kTileBN]
// (scaled input patches).
template <int BM>
struct MsgcTileThread {
  static constexpr int TM = BM / 16, TN = 4;
  static constexpr int ASlots = (kTileBK * BM + kTileThreads - 1) / kTileThreads;
  static constexpr int AStride = BM + 4;
  int n, g, o0, p0, tid, tx, ty, KK, P, R;
  const int* idx;
  const float* sc;
  const float* xn;
  const float* wg;
  // this thread's input pixel (the same for both of its B slots) and reduction rows kb, kb + 4
  int pb, kb, ih0, iw0;
  bool pOk;
  float acc[TM][TN];

  // block (bx: pixel tile, by: output-channel tile within the head, bz: sample·G + head), thread tid
  MSGC_HD void init(const MsgcConvArgs& a, int bx, int by, int bz, int t) {
    n = bz / a.G;
    g = bz - n * a.G;
    o0 = by * BM;
    p0 = bx * kTileBN;
    tid = t;
    tx = t % 16;
    ty = t / 16;
    KK = a.KH * a.KW;
    P = a.OH * a.OW;
    const int count = a.idx ? a.cnt[bz] : a.C;
    idx = a.idx ? a.idx + (int64_t)bz * a.C : nullptr;
    sc = a.scale + (int64_t)bz * a.C;
    xn = a.x + (int64_t)n * a.C * a.H * a.W;
    wg = a.w + (int64_t)(g * a.Og) * a.C * KK;
    R = count * KK;
    pb = t % kTileBN;
    kb = t / kTileBN;
    const int pIdx = p0 + pb;
    pOk = pIdx < P;
    const int oh = pOk ? pIdx / a.OW : 0, ow = pOk ? pIdx - oh * a.OW : 0;
    ih0 = oh * a.strideH - a.padH;
    iw0 = ow * a.strideW - a.padW;
    MSGC_UNROLL
    for (int i = 0; i < TM; i++)
      MSGC_UNROLL
      for (int j = 0; j < TN; j++) acc[i][j] = 0.f;
  }

  // this thread's share of the stage starting at reduction step r0: weight slots e = tid + 256·s as
  // As[e % 8][e / 8] (consecutive threads read along the reduction: contiguous weights), input slots Bs[kb + 4s][pb]
  MSGC_HD void load(const MsgcConvArgs& a, int r0, float* As, float* Bs) const {
MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * kTileThreads;
      if (e < kTileBK * BM) {
        const int k = e % kTileBK, m = e / kTileBK;
        const int r = r0 + k, o = o0 + m;
        float v = 0.f;
        if (r < R && o < a.Og) {
          const int j = r / KK, rs = r - j * KK;
          const int c = idx ? idx[j] : j;
          v = wg[((int64_t)o * a.C + c) * KK + rs];
        }
        As[k * AStride + m] = v;
      }
    }
MSGC_UNROLL
    for (int s = 0; s < 2; s++) {
      const int k = kb + 4 * s, r = r0 + k;
      float v = 0.f;
      if (pOk && r < R) {
        const int j = r / KK, rs = r - j * KK;
        const int kr = rs / a.KW, ks = rs - kr * a.KW;
        const int c = idx ? idx[j] : j;
        const int ih = ih0 + kr, iw = iw0 + ks;
        if (ih >= 0 && ih < a.H && iw >= 0 && iw < a.W) v = sc[c] * xn[((int64_t)c * a.H + ih) * a.W + iw];
      }
      Bs[k * kTileBN + pb] = v;
    }
  }

  MSGC_HD void compute(const float* As, const float* Bs) {
MSGC_UNROLL
    for (int k = 0; k < kTileBK; k++) {
      float av[TM], bv[TN];
      MSGC_UNROLL
      for (int i = 0; i < TM; i++) av[i] = As[k * AStride + ty + 16 * i];
      MSGC_UNROLL
      for (int j = 0; j < TN; j++) bv[j] = Bs[k * kTileBN + tx + 16 * j];
      MSGC_UNROLL
      for (int i = 0; i < TM; i++)
        MSGC_UNROLL
        for (int j = 0; j < TN; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }

  MSGC_HD void store(const MsgcConvArgs& a) const {
    MSGC_UNROLL
    for (int i = 0; i < TM; i++) {
      const int o = o0 + ty + 16 * i;
      if (o >= a.Og) continue;
      const int oc = g * a.Og + o;
      bool keep = true;
      if (a.outMask) {
        keep = false;
        for (int k = 0; k < a.outMaskRows && !keep; k++)
          keep = a.outMask[((int64_t)n * a.outMaskRows + k) * a.O + oc] != 0.f;
      }
      float mul, add;
      a.e.affine(oc, mul, add);
      const int64_t rowBase = ((int64_t)n * a.O + oc) * P;
      MSGC_UNROLL
      for (int j = 0; j < TN; j++) {
        const int p = p0 + tx + 16 * j;
        if (p >= P) continue;
        const int64_t at = rowBase + p;
        a.y[at] = a.e.finish((keep ? acc[i][j] : 0.f) * mul + add, at);
      }
    }
  }
};

// the tile height for a head of Og output channels
inline int msgcTileRows(int Og) { return Og >= 48 ? 64 : Og >= 24 ? 32 : 16; }

}  // namespace cuda
}  // namespace msgc
