// msgc_conv_direct.h: the MSGC convolution on tensor cores with the input read once per block, not once per
// kernel offset (GPUs of compute capability 8.0+). One thread's and one lane's steps, written for host and device
// as in msgc_conv_tile.h, so that core/cuda_emulation.cc runs them on the CPU.
//
// A block computes BM output channels of one head × BN consecutive output pixels of one sample. A stage is 8 of
// the (sample, head)'s channels (selected ones when gathered): its "patch" (the input rows those BN pixels read,
// every column, zero padding included, for the 8 channels), the 8 channels' weights at every kernel offset and
// their 8 scales go to shared memory by asynchronous copies (cp.async, zero-filled where out of range), double
// buffered, so the next stage's copies run during this stage's arithmetic. Then each warp, for each kernel offset
// (kr, ks), multiplies A = W[m, c_k, kr, ks] · scale[c_k] (16 × 8 fragments) by B[k, n] = patch[k][row(n) + kr]
// [col(n) + ks] (8 × 8 fragments read straight from the patch at the pixel's offset: no im2col, so an input value
// is copied to shared memory once per stage instead of k² times) with mma.sync m16n8k8 in TF32: "3xTF32" (each
// operand split into a TF32 part and a TF32 remainder, three products, float32's accuracy), or one product where
// TF32 is allowed (MSGC_CUDA_TF32=1). The products go through shared memory to the threads' epilogue and stores.
//
// The fragment layout is PTX's for mma.m16n8k8 .tf32 (lane = 4·g + t): A (16 × 8) a0 (g, t), a1 (g + 8, t),
// a2 (g, t + 4), a3 (g + 8, t + 4); B (8 × 8) b0 (t, g), b1 (t + 4, g); C (16 × 8) c0 (g, 2t), c1 (g, 2t + 1),
// c2 (g + 8, 2t), c3 (g + 8, 2t + 1). The host emulation multiplies the fragments as laid out here, so a lane that
// loads the wrong element fails the CPU tests; the GPU tests check the layout itself.
#pragma once
#include <algorithm>
#include <cstring>

#include "msgc/errors.h"
#include "msgc_conv_mma.h"
#include "msgc_conv_tile.h"

namespace msgc {
namespace cuda {

constexpr int kDirectBK = 8;  // channels per stage

// BM output channels × BN pixels; a warp computes min(BM, 32) × 32 (MT m16 tiles × 4 n8 tiles)
template <int BM_, int BN_>
struct DirectConfig {
  static constexpr int BM = BM_, BN = BN_;
  static constexpr int WM = BM < 32 ? BM : 32, MT = WM / 16;
  static constexpr int WarpsM = BM / WM, WarpsN = BN / 32, NT = 32 * WarpsM * WarpsN;
  static constexpr int AS = BM + 8;  // A's row stride (k·AS + m: the lanes' (t, g) in distinct banks)
  static constexpr int CStride = BN + 4;
  static_assert(NT <= 256, "at most 8 warps");
};

// The shared-memory layout of a convolution's stages (host-computed, passed to the kernel): per buffer the patch
// [8][CS] (rows × cols, CS ≡ 8 mod 32: the lanes' (t, g) in distinct banks), A [KK][8][AS], the 8 scales.
struct DirectGeom {
  int cols, inRows, CS, aFloats, bufFloats, smemFloats;
};

template <class Cfg>
inline DirectGeom directGeom(int W, int KH, int KW, int OH, int OW, int strideH, int padW) {
  DirectGeom d;
  d.cols = W + 2 * padW;
  const int outRows = std::min(OH, (Cfg::BN - 1) / OW + 2);
  d.inRows = (outRows - 1) * strideH + KH;
  d.CS = (d.inRows * d.cols + 31) / 32 * 32 + 8;
  d.aFloats = KH * KW * kDirectBK * Cfg::AS;
  d.bufFloats = (kDirectBK * d.CS + d.aFloats + kDirectBK + 3) / 4 * 4;
  d.smemFloats = std::max(2 * d.bufFloats, Cfg::BM * Cfg::CStride);
  return d;
}

template <class Cfg>
struct MsgcDirectThread : MsgcBlockHead {
  static constexpr int BM = Cfg::BM, BN = Cfg::BN, NT = Cfg::NT, MT = Cfg::MT;
  int o0, p0, tid, lane, wm, wn, HW, stages, sBegin, sEnd, ohFirst, ihMin, rows;
  FastDivmod byRows;
  int off[4];  // this lane's pixels (n-tiles 0..3, column g) as patch offsets (kernel offset (0, 0))

  MSGC_HD void init(const MsgcConvArgs& a, const DirectGeom& d, int bx, int by, int bzSplit, int t) {
    locate(a, bzSplit);
    o0 = by * BM;
    p0 = bx * BN;
    tid = t;
    lane = t % 32;
    const int warp = t / 32;
    wm = warp % Cfg::WarpsM;
    wn = warp / Cfg::WarpsM;
    HW = a.H * a.W;
    stages = (count + kDirectBK - 1) / kDirectBK;
    splitRange(a, stages, sBegin, sEnd);
    ohFirst = p0 / a.OW;
    const int pLast = (p0 + BN < P ? p0 + BN : P) - 1;
    ihMin = ohFirst * a.strideH - a.padH;
    rows = (pLast / a.OW - ohFirst) * a.strideH + a.KH;  // (≤ d.inRows)
    byRows = FastDivmod::of(rows);
    const int col = lane / 4;
    MSGC_UNROLL
    for (int nt = 0; nt < 4; nt++) {
      const int p = p0 + wn * 32 + nt * 8 + col;
      if (p < P) {
        const int oh = p / a.OW, ow = p - oh * a.OW;
        off[nt] = (oh - ohFirst) * a.strideH * d.cols + ow * a.strideW;
      } else {
        off[nt] = 0;
      }
    }
  }

  // Stage st's copies into buffer buf (patch, then A, then the scales), this thread's share: copy(dst, src, ok)
  // copies one float from global memory, or writes 0 where !ok (cp.async with a zero source size on the GPU).
  // The patch goes row by row (a (channel, input row) pair per group of lanes, the lanes along its columns: the
  // channel's index, the row's bounds and address once per row, not per element), A by (output, channel) pairs,
  // each thread copying a pair's k² contiguous weights.
  template <class Copy>
  MSGC_HD void issue(const MsgcConvArgs& a, const DirectGeom& d, int st, float* buf, Copy&& copy) const {
    const int j0 = st * kDirectBK;
    const int lanesPerRow = d.cols > 16 ? 32 : d.cols > 8 ? 16 : 8, rowsPerStep = (NT / 32) * (32 / lanesPerRow);
    const int sub = (tid / 32) * (32 / lanesPerRow) + lane / lanesPerRow, q0 = lane % lanesPerRow;
    for (int pr = sub; pr < kDirectBK * rows; pr += rowsPerStep) {
      const int k = byRows.div(pr), r = pr - k * rows;
      const int j = j0 + k, ih = ihMin + r;
      const bool rowOk = j < count && ih >= 0 && ih < a.H;
      const float* src = xn + (rowOk ? (int64_t)(idx ? idx[j] : j) * HW + ih * a.W : 0) - a.padW;
      float* dst = buf + k * d.CS + r * d.cols;
      for (int q = q0; q < d.cols; q += lanesPerRow) {
        const bool ok = rowOk && q >= a.padW && q < a.W + a.padW;
        copy(dst + q, ok ? src + q : xn, ok);
      }
    }
    float* As = buf + kDirectBK * d.CS;
    for (int pair = tid; pair < kDirectBK * BM; pair += NT) {
      const int k = pair % kDirectBK, m = pair / kDirectBK;
      const int j = j0 + k, o = o0 + m;
      const bool ok = j < count && o < a.Og;
      const float* src = wg + (ok ? ((int64_t)o * a.C + (idx ? idx[j] : j)) * KK : 0);
      float* dst = As + k * Cfg::AS + m;
      for (int tap = 0; tap < KK; tap++) copy(dst + tap * kDirectBK * Cfg::AS, src + (ok ? tap : 0), ok);
    }
    if (tid < kDirectBK) {
      const int j = j0 + tid;
      const bool ok = j < count;
      copy(As + d.aFloats + tid, sc + (ok ? (idx ? idx[j] : j) : 0), ok);
    }
  }

  // What a lane reads of one stage's buffer, resolved once per stage so that a kernel offset's fragment loads are
  // a few adds and loads with constant offsets: its A row (k = t, m = g of m-tile 0) and the two scales its A
  // elements take, its 4 pixels' patch addresses (k = t), and the distance to k = t + 4.
  struct LaneStage {
    const float* a;
    float s0, s4;
    const float* b[4];
    int b4;
  };
  MSGC_HD LaneStage stage(const DirectGeom& d, const float* buf) const {
    LaneStage ls;
    const int t = lane % 4;
    const float* As = buf + kDirectBK * d.CS;
    ls.a = As + t * Cfg::AS + wm * Cfg::WM + lane / 4;
    ls.s0 = As[d.aFloats + t];
    ls.s4 = As[d.aFloats + t + 4];
    MSGC_UNROLL
    for (int nt = 0; nt < 4; nt++) ls.b[nt] = buf + off[nt] + t * d.CS;
    ls.b4 = 4 * d.CS;
    return ls;
  }

  // this lane's raw (float32, scaled) A fragment of m-tile mt at kernel offset tap, and B fragment of n-tile nt at
  // patch offset tapOff (kr · cols + ks)
  MSGC_HD static void fragA(const LaneStage& ls, int tap, int mt, float (&v)[4]) {
    const float* at = ls.a + tap * (kDirectBK * Cfg::AS) + mt * 16;
    v[0] = at[0] * ls.s0;
    v[1] = at[8] * ls.s0;
    v[2] = at[4 * Cfg::AS] * ls.s4;
    v[3] = at[4 * Cfg::AS + 8] * ls.s4;
  }
  MSGC_HD static void fragB(const LaneStage& ls, int tapOff, int nt, float (&v)[2]) {
    const float* at = ls.b[nt] + tapOff;
    v[0] = at[0];
    v[1] = at[ls.b4];
  }

  // the block's products Cs[m][p] (m·CStride + p) to the output (MsgcBlockHead::storeProducts)
  MSGC_HD void store(const MsgcConvArgs& a, const float* Cs) const {
    storeProducts<BM, BN, NT>(a, o0, p0, tid, Cfg::CStride, Cs);
  }
};

// where lane's accumulator element q of tile (mt, nt) sits in the block's products (row m, pixel column n)
template <class Cfg>
MSGC_HD void accPosition(int wm, int wn, int lane, int mt, int nt, int q, int& m, int& n) {
  m = wm * Cfg::WM + mt * 16 + lane / 4 + (q >> 1) * 8;
  n = wn * 32 + nt * 8 + (lane % 4) * 2 + (q & 1);
}

constexpr int kDirectMaxSmemBytes = 100 * 1024;  // dynamic shared memory a block may use

// The pixel tile of the direct kernel for BM (msgcTileRows) on a conv's geometry: 64 to 256 (128 at BM 64), the
// best of the last tile's fill times a preference for larger tiles among those whose stages fit in shared memory;
// 0 if none fits (the caller runs the other tensor-core kernel).
inline int msgcDirectPixels(int BM, int W, int KH, int KW, int OH, int OW, int strideH, int padW);

template <class Fn>
void withDirectConfig(int BM, int BN, Fn&& f) {
  if (BM == 64) {
    if (BN == 128) f(DirectConfig<64, 128>{});
    else f(DirectConfig<64, 64>{});
  } else if (BM == 32) {
    if (BN == 256) f(DirectConfig<32, 256>{});
    else if (BN == 128) f(DirectConfig<32, 128>{});
    else f(DirectConfig<32, 64>{});
  } else {
    if (BN == 256) f(DirectConfig<16, 256>{});
    else if (BN == 128) f(DirectConfig<16, 128>{});
    else f(DirectConfig<16, 64>{});
  }
}

inline int msgcDirectPixels(int BM, int W, int KH, int KW, int OH, int OW, int strideH, int padW) {
  const int64_t P = (int64_t)OH * OW;
  int best = 0;
  double bestScore = -1;
  for (int bn = 64; bn <= (BM == 64 ? 128 : 256); bn *= 2) {
    int bytes = 0;
    withDirectConfig(BM, bn, [&](auto cfg) {
      bytes = directGeom<decltype(cfg)>(W, KH, KW, OH, OW, strideH, padW).smemFloats * 4;
    });
    if (bytes > kDirectMaxSmemBytes) continue;
    const double fill = (double)P / (double)(((P + bn - 1) / bn) * bn);
    const double score = fill * (bn == 256 ? 1.0 : bn == 128 ? 0.97 : 0.9);
    if (score > bestScore + 1e-9) {
      bestScore = score;
      best = bn;
    }
  }
  return best;
}

// Which kernel runs a convolution: on GPUs of compute capability 8.0+ the direct kernel for k × k convs (k > 1)
// where its stages fit in shared memory, else the WMMA one (msgc_conv_mma.h); before 8.0 the FMA tile kernel
// (msgc_conv_tile.h).
// MSGC_CUDA_KERNEL=tile|mma|direct forces one (benchmarks, tests; direct falls back to mma where it cannot run).
struct MsgcKernel {
  enum Kind { Tile, Mma, Direct } kind;
  int BN;  // output pixels per block
  // the longest reduction a block runs, in steps (msgcSplits): the tensor-core kernels' go by whole 8-channel chunks
  int64_t reduction(int64_t C, int64_t KK) const { return kind == Tile ? C * KK : KK * ((C + 7) / 8 * 8); }
};

inline MsgcKernel msgcKernel(bool tensorCores, const MsgcConvArgs& a) {
  const char* env = std::getenv("MSGC_CUDA_KERNEL");
  const bool forced = env && env[0];
  MSGC_CHECK(!forced || std::strcmp(env, "tile") == 0 || std::strcmp(env, "mma") == 0 || std::strcmp(env, "direct") == 0,
             "MSGC_CUDA_KERNEL must be tile, mma or direct (or unset: the default for the GPU), got '", env, "'");
  if (forced ? std::strcmp(env, "tile") == 0 : !tensorCores) return {MsgcKernel::Tile, kTileBN};
  const int BM = msgcTileRows(a.Og);
  // (1×1 convs: nothing to share between kernel offsets, and the WMMA kernel measured faster on an H200's
  // MobileNetV2 projections, 2026-12-04)
  if (forced ? std::strcmp(env, "direct") == 0 : a.KH * a.KW > 1) {
    const int bn = msgcDirectPixels(BM, a.W, a.KH, a.KW, a.OH, a.OW, a.strideH, a.padW);
    if (bn > 0) return {MsgcKernel::Direct, bn};
  }
  return {MsgcKernel::Mma, msgcMmaPixels(BM, (int64_t)a.OH * a.OW)};
}

}  // namespace cuda
}  // namespace msgc
