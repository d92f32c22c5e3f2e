// msgc_conv_mma.h: the MSGC convolution on tensor cores (GPUs of compute capability 8.0 and later), one thread's
// steps written for host and device as in msgc_conv_tile.h, so that core/cuda_emulation.cc runs them on the CPU.
// Same maths and arguments (MsgcConvArgs) as the tile kernel; what differs is how the block's product is formed.
//
// A block computes BM output channels of one head × BN output pixels of one sample as an implicit GEMM
//   acc[m, p] += Σ_k A[m, k] · B[k, p],  A = W[o0 + m, c_k, kr, ks] · scale[n, g, c_k],  B = x[n, c_k, ih, iw]
// with the reduction in stages of 8 of the head's channels (the selected ones when gathered, all when masked) at
// one kernel offset (kr, ks): a thread's input pixel, its bounds check and its offset are computed once per stage,
// and a B element costs a load and a select (the tile kernel decodes (channel, kr, ks) per element). Stages go
// chunk by chunk with the k² offsets of a chunk in a row, so a chunk's input lines stay in L1 across its taps.
// The scale folds into A (BM·8 products a stage, not 8·BN). Each warp multiplies a 16 × 32 piece of the tile
// with the tensor cores (WMMA, m16n16k8, TF32 operands, float32 accumulation): strict float32 numerics by
// "3xTF32" (each operand split into a TF32 part and a TF32 remainder, three products: big·big + big·small +
// small·big, the dropped small·small ~2^-22 relative: float32's rounding level), or plain TF32 (10-bit mantissa
// operands) where the user allowed TF32 (MSGC_CUDA_TF32=1, as for cuDNN's convs: PyTorch's allow_tf32).
// The warps' products go to shared memory, and the block's threads apply the output mask and the epilogue and
// store them (consecutive threads, consecutive pixels). The warp step itself is in msgc_conv.cu (device: WMMA)
// and core/cuda_emulation.cc (host: the same TF32 splitting and sums, element by element).
#pragma once
#include "msgc_conv_tile.h"

namespace msgc {
namespace cuda {

constexpr int kMmaBK = 8;  // channels per stage

// BM output channels (16/32/64: one warp row per 16) × BN pixels (32 per warp column): 2 to 8 warps.
template <int BM_, int BN_>
struct MmaConfig {
  static constexpr int BM = BM_, BN = BN_;
  static constexpr int WarpsM = BM / 16, WarpsN = BN / 32, Warps = WarpsM * WarpsN, NT = 32 * Warps;
  static constexpr int AStride = BM + 4, BStride = BN + 4, CStride = BN + 4;  // (multiples of 4 floats: WMMA's ldm)
  static constexpr int AFloats = kMmaBK * AStride, BFloats = kMmaBK * BStride;
  // shared memory: A and B of a stage, then (reused) the block's products [BM][CStride]
  static constexpr int SmemFloats = AFloats + BFloats > BM * CStride ? AFloats + BFloats : BM * CStride;
  static_assert(NT >= BN && NT % BN == 0 && NT <= 256, "a thread's input pixel is fixed");
};

template <class Cfg>
struct MsgcMmaThread : MsgcBlockHead {
  static constexpr int BM = Cfg::BM, BN = Cfg::BN, NT = Cfg::NT;
  static constexpr int KSTEP = NT / BN;                      // threads per input pixel (rows kb, kb + KSTEP, ...)
  static constexpr int BSlots = kMmaBK / KSTEP > 0 ? kMmaBK / KSTEP : 1;
  static constexpr int ASlots = (kMmaBK * BM + NT - 1) / NT;
  static_assert(KSTEP <= kMmaBK, "every thread loads input rows");

  int o0, p0, tid, HW, stages, sBegin, sEnd, pb, kb, ih0, iw0;
  bool pOk;
  float aReg[ASlots], bReg[BSlots];

  // block (bx: pixel tile, by: output-channel tile within the head, bz: (sample·G + head)·splits + split), thread t
  MSGC_HD void init(const MsgcConvArgs& a, int bx, int by, int bzSplit, int t) {
    locate(a, bzSplit);
    o0 = by * BM;
    p0 = bx * BN;
    tid = t;
    HW = a.H * a.W;
    stages = KK * ((count + kMmaBK - 1) / kMmaBK);
    splitRange(a, stages, sBegin, sEnd);
    pb = t % BN;
    kb = t / BN;
    pixelOrigin(a, p0 + pb, pOk, ih0, iw0);
  }

  // stage st = chunk · k² + rs: A[m, k] = W[o0 + m, c_j, rs] · scale[c_j] and B[k, pb] = x[c_j, ih, iw],
  // j = chunk · 8 + k, into registers (zeros past the head's channels, its outputs and the image's border)
  MSGC_HD void fetch(const MsgcConvArgs& a, int st) {
    const int chunk = a.byKK.div(st), rs = st - chunk * KK, j0 = chunk * kMmaBK;
    const int kr = a.byKW.div(rs), ks = rs - kr * a.KW;
    MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * NT;
      const int m = e % BM, k = e / BM;
      const int j = j0 + k, o = o0 + m;
      float v = 0.f;
      if (e < kMmaBK * BM && j < count && o < a.Og) {
        const int c = idx ? idx[j] : j;
        v = wg[((int64_t)o * a.C + c) * KK + rs] * sc[c];
      }
      aReg[s] = v;
    }
    const int ih = ih0 + kr, iw = iw0 + ks;
    const bool ok = pOk && ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
    const int off = ih * a.W + iw;
    MSGC_UNROLL
    for (int s = 0; s < BSlots; s++) {
      const int j = j0 + kb + s * KSTEP;
      float v = 0.f;
      if (ok && j < count) {
        const int c = idx ? idx[j] : j;
        v = xn[(int64_t)c * HW + off];
      }
      bReg[s] = v;
    }
  }

  // As[k][m] (k·AStride + m), Bs[k][p] (k·BStride + p)
  MSGC_HD void commit(float* As, float* Bs) const {
    MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * NT;
      if (e < kMmaBK * BM) As[(e / BM) * Cfg::AStride + e % BM] = aReg[s];
    }
    MSGC_UNROLL
    for (int s = 0; s < BSlots; s++) Bs[(kb + s * KSTEP) * Cfg::BStride + pb] = bReg[s];
  }

  // the block's products Cs[m][p] (m·CStride + p) to the output (MsgcBlockHead::storeProducts)
  MSGC_HD void store(const MsgcConvArgs& a, const float* Cs) const {
    storeProducts<BM, BN, NT>(a, o0, p0, tid, Cfg::CStride, Cs);
  }
};

// The pixel tile for a head of Og output channels (BM = msgcTileRows(Og)) on P output pixels: 32 to 256 pixels
// (at most 8 warps a block), the best of the last tile's fill times a preference for larger tiles (a block's
// weights, loaded and scaled once a stage, serve BN pixels; a one-warp block loads 4 of them per thread a stage).
inline int msgcMmaPixels(int BM, int64_t P) {
  const int maxBN = BM == 16 ? 256 : BM == 32 ? 128 : 64;
  int best = 32;
  double bestScore = -1;
  for (int bn = 32; bn <= maxBN; bn *= 2) {
    const double fill = (double)P / (double)(((P + bn - 1) / bn) * bn);
    const double score = fill * (bn == 256 ? 1.0 : bn == 128 ? 0.97 : bn == 64 ? 0.9 : 0.75);
    if (score > bestScore + 1e-9) {
      bestScore = score;
      best = bn;
    }
  }
  return best;
}

// f(MmaConfig<BM, BN>{}) for the tile BM × BN (BM 16/32/64, BN 32..256 as msgcMmaPixels gives)
template <class Fn>
void withMmaConfig(int BM, int BN, Fn&& f) {
  if (BM == 64) {
    if (BN == 64) f(MmaConfig<64, 64>{});
    else f(MmaConfig<64, 32>{});
  } else if (BM == 32) {
    if (BN == 128) f(MmaConfig<32, 128>{});
    else if (BN == 64) f(MmaConfig<32, 64>{});
    else f(MmaConfig<32, 32>{});
  } else {
    if (BN == 256) f(MmaConfig<16, 256>{});
    else if (BN == 128) f(MmaConfig<16, 128>{});
    else if (BN == 64) f(MmaConfig<16, 64>{});
    else f(MmaConfig<16, 32>{});
  }
}

}  // namespace cuda
}  // namespace msgc
