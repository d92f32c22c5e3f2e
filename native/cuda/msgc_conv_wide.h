// msgc_conv_wide.h: the MSGC convolution's register-blocked kernel (the "wide" tiles), for the shapes where the
// 64-pixel tile of msgc_conv_tile.h leaves the GPU's arithmetic idle: large feature maps and batches. Same maths,
// same arguments (MsgcConvArgs), same host/device split of a thread's steps, so that core/cuda_emulation.cc runs
// this code too and the tests check it against float64 on machines without a GPU.
//
// A block computes BM output channels of one head × BN output pixels of one sample, each thread a TM × 8
// register tile (pixels tx·4 + 0..3 and BN/2 + tx·4 + 0..3, so that a quarter-warp's 16-byte shared-memory reads
// are contiguous: no bank conflicts). A stage is 8 of the (sample, head)'s channels (selected ones when gathered,
// every one when masked) at one kernel offset (kr, ks), so a thread's input pixel, its bounds check and its offset
// are computed once per stage, not per element; stages go chunk by chunk, the k² offsets of a chunk in a row, so
// that the chunk's input lines are reused from L1 across its taps. Shared memory is double-buffered (one barrier
// per stage) and the next stage's global loads are issued before this stage's arithmetic (register prefetch).
//
// Not the default (MSGC_CUDA_KERNEL=wide selects it). Measured on an H200 (2026-12-04) with the stages ordered
// offset-major instead (every chunk at (0, 0), then every chunk at (0, 1), ...: a channel's 9 taps 9 stages
// apart), it ran at 6-7 TFLOP/s against the 64-pixel tile kernel's 9-10 and won on 10 of 138 layer shapes; the
// chunk-major order here has not run on a GPU yet.
#pragma once
#include "msgc_conv_tile.h"

namespace msgc {
namespace cuda {

constexpr int kWideBK = 8;  // channels per stage

template <int BM_, int BN_>
struct WideConfig {
  static constexpr int BM = BM_, BN = BN_;
};

template <int BM, int BN>
struct MsgcWideThread : MsgcBlockHead {
  static constexpr int TM = BM >= 64 ? 8 : 4, TN = 8;
  static constexpr int RX = BN / TN;  // threads along the pixels
  static constexpr int NT = (BM / TM) * RX;
  // input loading: each thread loads PPT pixels (tid % BN + q·NT) at rows kb + KSTEP·i
  static constexpr int PPT = BN >= NT ? BN / NT : 1;
  static constexpr int KSTEP = NT >= BN ? NT / BN : 1;
  static constexpr int BSlots = kWideBK * BN / NT;
  static constexpr int ASlots = (kWideBK * BM + NT - 1) / NT;
  static constexpr int AStage = kWideBK * BM, BStage = kWideBK * BN;  // floats per shared buffer
  static_assert(BN % NT == 0 || NT % BN == 0, "a thread's input pixels must be fixed");
  static_assert(BSlots % PPT == 0 && BSlots > 0, "whole rows per thread");
  static_assert(RX * 4 * 2 == BN, "two 4-pixel groups per thread");

  int o0, p0, tid, tx, ty, HW, chunks, sBegin, sEnd, kb;
  int ih0[PPT], iw0[PPT];
  bool pOk[PPT];
  float acc[TM][TN];
  float aReg[ASlots], bReg[BSlots];

  // the output pixel (within the tile) of register column j
  MSGC_HD static int col(int tx, int j) { return j < 4 ? tx * 4 + j : BN / 2 + tx * 4 + (j - 4); }

  MSGC_HD void init(const MsgcConvArgs& a, int bx, int by, int bzSplit, int t) {
    locate(a, bzSplit);
    o0 = by * BM;
    p0 = bx * BN;
    tid = t;
    tx = t % RX;
    ty = t / RX;
    HW = a.H * a.W;
    chunks = (count + kWideBK - 1) / kWideBK;
    const int stages = KK * chunks, per = (stages + a.splits - 1) / a.splits;
    sBegin = split * per < stages ? split * per : stages;
    sEnd = (split + 1) * per < stages ? (split + 1) * per : stages;
    kb = NT >= BN ? t / BN : 0;
    MSGC_UNROLL
    for (int q = 0; q < PPT; q++) {
      const int p = p0 + t % BN + q * NT;
      pOk[q] = p < P;
      const int oh = pOk[q] ? p / a.OW : 0, ow = pOk[q] ? p - oh * a.OW : 0;
      ih0[q] = oh * a.strideH - a.padH;
      iw0[q] = ow * a.strideW - a.padW;
    }
    MSGC_UNROLL
    for (int i = 0; i < TM; i++)
      MSGC_UNROLL
      for (int j = 0; j < TN; j++) acc[i][j] = 0.f;
  }

  // stage st = chunk · k² + (kernel offset rs): weights W[o0 + m, c_j, rs] and scaled inputs of channels c_j,
  // j = chunk·8 + 0..7, into registers
  MSGC_HD void fetch(const MsgcConvArgs& a, int st) {
    const int chunk = a.byKK.div(st), rs = st - chunk * KK, j0 = chunk * kWideBK;
    const int kr = a.byKW.div(rs), ks = rs - kr * a.KW;
    MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * NT;
      const int m = e % BM, k = e / BM;
      const int j = j0 + k, o = o0 + m;
      float v = 0.f;
      if (e < kWideBK * BM && j < count && o < a.Og) {
        const int c = idx ? idx[j] : j;
        v = wg[((int64_t)o * a.C + c) * KK + rs];
      }
      aReg[s] = v;
    }
    int off[PPT];
    bool ok[PPT];
    MSGC_UNROLL
    for (int q = 0; q < PPT; q++) {
      const int ih = ih0[q] + kr, iw = iw0[q] + ks;
      ok[q] = pOk[q] && ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
      off[q] = ih * a.W + iw;
    }
    MSGC_UNROLL
    for (int s = 0; s < BSlots; s++) {
      const int q = s % PPT, j = j0 + kb + (s / PPT) * KSTEP;
      float v = 0.f;
      if (ok[q] && j < count) {
        const int c = idx ? idx[j] : j;
        v = sc[c] * xn[(int64_t)c * HW + off[q]];
      }
      bReg[s] = v;
    }
  }

  MSGC_HD void commit(float* As, float* Bs) const {
    MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * NT;
      if (e < kWideBK * BM) As[e] = aReg[s];  // As[k][m], e = k·BM + m
    }
    MSGC_UNROLL
    for (int s = 0; s < BSlots; s++) {
      const int q = s % PPT, k = kb + (s / PPT) * KSTEP;
      Bs[k * BN + tid % BN + q * NT] = bReg[s];
    }
  }

  MSGC_HD void compute(const float* As, const float* Bs) {
    MSGC_UNROLL
    for (int k = 0; k < kWideBK; k++) {
      float av[TM], bv[TN];
#ifdef __CUDA_ARCH__
      MSGC_UNROLL
      for (int i = 0; i < TM; i += 4) {
        const float4 v = *reinterpret_cast<const float4*>(As + k * BM + ty * TM + i);
        av[i] = v.x; av[i + 1] = v.y; av[i + 2] = v.z; av[i + 3] = v.w;
      }
      const float4 b0 = *reinterpret_cast<const float4*>(Bs + k * BN + tx * 4);
      const float4 b1 = *reinterpret_cast<const float4*>(Bs + k * BN + BN / 2 + tx * 4);
      bv[0] = b0.x; bv[1] = b0.y; bv[2] = b0.z; bv[3] = b0.w;
      bv[4] = b1.x; bv[5] = b1.y; bv[6] = b1.z; bv[7] = b1.w;
#else
      for (int i = 0; i < TM; i++) av[i] = As[k * BM + ty * TM + i];
      for (int j = 0; j < TN; j++) bv[j] = Bs[k * BN + col(tx, j)];
#endif
      fmaOuter<TM, TN>(acc, av, bv);
    }
  }

  MSGC_HD void store(const MsgcConvArgs& a) const {
    int px[TN];
    MSGC_UNROLL
    for (int j = 0; j < TN; j++) px[j] = p0 + col(tx, j);
    MSGC_UNROLL
    for (int i = 0; i < TM; i++) {
      const int o = o0 + ty * TM + i;
      if (o < a.Og) storeOutputRow<TN>(a, split, n, g * a.Og + o, P, px, acc[i]);
    }
  }
};

// Which kernel and tile a convolution gets: the 64-pixel tile kernel of msgc_conv_tile.h by default (`tile16`:
// with 16 reduction steps per stage);
// MSGC_CUDA_KERNEL=wide the wide kernel with BM output channels (msgcTileRows) × BN pixels, BN chosen for the least
// padding in the last pixel tile with larger tiles preferred (more arithmetic per load); `wide64`, `wide128`,
// `wide256` force its pixel tile (benchmarks, tests).
struct MsgcKernelPlan {
  bool wide;
  int BM, BN;
  int BK;  // the tile kernel's reduction steps per stage (8, or 16 with MSGC_CUDA_KERNEL=tile16)
  // the longest reduction a block runs (for msgcSplits): the wide kernel's is whole 8-channel chunks per offset
  int64_t reduction(int64_t C, int64_t KK) const { return wide ? KK * ((C + kWideBK - 1) / kWideBK) * kWideBK : C * KK; }
};

inline MsgcKernelPlan msgcKernelPlan(int Og, int64_t P) {
  MsgcKernelPlan k{true, msgcTileRows(Og), 256, kTileBK};
  const char* env = std::getenv("MSGC_CUDA_KERNEL");
  if (!env || env[0] != 'w') {
    k.wide = false;
    k.BN = kTileBN;
    if (env && std::atoi(env + (env[0] == 't' ? 4 : 0)) == 16) k.BK = 16;
    return k;
  }
  if (env && env[0] == 'w' && std::atoi(env + 4) > 0) {
    const int bn = std::atoi(env + 4);
    k.BN = bn >= 256 ? 256 : bn >= 128 ? 128 : 64;
    return k;
  }
  double best = -1;
  for (int bn : {256, 128, 64}) {
    const double fill = (double)P / (double)(((P + bn - 1) / bn) * bn);
    const double score = fill * (bn == 256 ? 1.0 : bn == 128 ? 0.95 : 0.8);
    if (score > best + 1e-9) {
      best = score;
      k.BN = bn;
    }
  }
  return k;
}

// threads per block of a wide tile
inline int msgcWideThreads(int BM, int BN) { return (BM / (BM >= 64 ? 8 : 4)) * (BN / 8); }

// f(WideConfig<BM, BN>{}) for the plan's tile (BM in 16/32/64, BN in 64/128/256)
template <class Fn>
void withWideConfig(int BM, int BN, Fn&& f) {
  if (BM == 64) {
    if (BN == 256) f(WideConfig<64, 256>{});
    else if (BN == 128) f(WideConfig<64, 128>{});
    else f(WideConfig<64, 64>{});
  } else if (BM == 32) {
    if (BN == 256) f(WideConfig<32, 256>{});
    else if (BN == 128) f(WideConfig<32, 128>{});
    else f(WideConfig<32, 64>{});
  } else {
    if (BN == 256) f(WideConfig<16, 256>{});
    else if (BN == 128) f(WideConfig<16, 128>{});
    else f(WideConfig<16, 64>{});
  }
}

}  // namespace cuda
}  // namespace msgc
