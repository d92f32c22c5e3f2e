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
#include <cstdlib>

#include "epilogue.h"

#ifdef __CUDA_ARCH__
#define MSGC_UNROLL _Pragma("unroll")
#else
#define MSGC_UNROLL
#endif

namespace msgc {
namespace cuda {

// n / d and n % d for 0 <= n < 2^31 by a multiply-high and a shift (Granlund-Montgomery, as CUTLASS's FastDivmod):
// the kernel's index arithmetic divides by the kernel's size per element and stage, and a GPU's integer division
// by a runtime value costs about twenty instructions.
struct FastDivmod {
  int d = 1;
  uint32_t mul = 0;
  int shift = 0;
  MSGC_HD static FastDivmod of(int divisor) {
    FastDivmod f;
    f.d = divisor;
    if (divisor == 1) return f;
    int l = 0;
    while ((1LL << l) < divisor) l++;
    const int p = 31 + l;  // mul = ceil(2^p / d) < 2^32
    f.mul = (uint32_t)(((1ULL << p) + (uint64_t)divisor - 1) / (uint64_t)divisor);
    f.shift = p - 32;
    return f;
  }
  MSGC_HD int div(int n) const {
    if (d == 1) return n;
#ifdef __CUDA_ARCH__
    return (int)(__umulhi((uint32_t)n, mul) >> shift);
#else
    return (int)((uint32_t)(((uint64_t)(uint32_t)n * mul) >> 32) >> shift);
#endif
  }
};

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
  FastDivmod byKK, byKW;  // KH·KW and KW (setDivisors)
  Epilogue e;
  // split-K: with splits > 1 each (sample, head)'s reduction is cut into `splits` ranges run by separate blocks
  // (grid z = sample·G·splits + head·splits + split), which write raw partial sums to partial[split][N, O, P];
  // msgcSplitFinish then adds them in split order (deterministic) and applies the output mask and the epilogue.
  // It gives small grids (batch 1, late layers: a few dozen blocks) enough blocks to fill the GPU.
  int splits;
  float* partial;
  int64_t partialStride;  // N·O·P
  // the direct kernel's timing probes (MSGC_CUDA_PROBE, benchmarks only: the results are wrong): 1 = the stages'
  // copies without the products, 2 = the products on the first stage's copies without the later copies
  int probe = 0;
};

// acc += av ⊗ bv: a thread's register tile, one reduction step
template <int TM, int TN>
MSGC_HD void fmaOuter(float (&acc)[TM][TN], const float (&av)[TM], const float (&bv)[TN]) {
  MSGC_UNROLL
  for (int i = 0; i < TM; i++)
    MSGC_UNROLL
    for (int j = 0; j < TN; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
}

// whether some row of the output mask keeps output channel oc of sample n (always, without a mask)
MSGC_HD bool rowKept(const MsgcConvArgs& a, int64_t n, int oc) {
  if (!a.outMask) return true;
  for (int k = 0; k < a.outMaskRows; k++)
    if (a.outMask[(n * a.outMaskRows + k) * a.O + oc] != 0.f) return true;
  return false;
}

// Stores a thread's TN accumulators of output row (sample n, channel oc) at pixels px[j] (those < P): raw partial
// sums under split-K (msgcSplitFinish completes them), else zero where no row of the output mask keeps oc, then
// the epilogue. Shared by both kernels' store steps.
template <int TN>
MSGC_HD void storeOutputRow(const MsgcConvArgs& a, int split, int n, int oc, int P, const int* px, const float* acc) {
  if (a.splits > 1) {
    float* part = a.partial + (int64_t)split * a.partialStride + ((int64_t)n * a.O + oc) * P;
    MSGC_UNROLL
    for (int j = 0; j < TN; j++)
      if (px[j] < P) part[px[j]] = acc[j];
    return;
  }
  const bool keep = rowKept(a, n, oc);
  float mul, add;
  a.e.affine(oc, mul, add);
  const int64_t rowBase = ((int64_t)n * a.O + oc) * P;
  MSGC_UNROLL
  for (int j = 0; j < TN; j++) {
    if (px[j] >= P) continue;
    const int64_t at = rowBase + px[j];
    a.y[at] = a.e.finish((keep ? acc[j] : 0.f) * mul + add, at);
  }
}

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

// What a block of either kernel reads for its (sample, head): grid z = (sample·G + head)·splits + split.
struct MsgcBlockHead {
  int split, n, g, KK, P, count;
  const int* idx;     // the head's selected channels (gathered), or null (masked: every channel)
  const float* sc;    // scale[n, g, :]
  const float* xn;    // x[n]
  const float* wg;    // the head's weight rows
  MSGC_HD void locate(const MsgcConvArgs& a, int bzSplit) {
    const int bz = bzSplit / a.splits;
    split = bzSplit - bz * a.splits;
    n = bz / a.G;
    g = bz - n * a.G;
    KK = a.KH * a.KW;
    P = a.OH * a.OW;
    count = a.idx ? a.cnt[bz] : a.C;
    idx = a.idx ? a.idx + (int64_t)bz * a.C : nullptr;
    sc = a.scale + (int64_t)bz * a.C;
    xn = a.x + (int64_t)n * a.C * a.H * a.W;
    wg = a.w + (int64_t)(g * a.Og) * a.C * KK;
  }
  // this block's share [begin, end) of the (sample, head)'s `stages` reduction stages: whole stages per split
  MSGC_HD void splitRange(const MsgcConvArgs& a, int stages, int& begin, int& end) const {
    const int per = (stages + a.splits - 1) / a.splits;
    begin = split * per < stages ? split * per : stages;
    end = (split + 1) * per < stages ? (split + 1) * per : stages;
  }
  // The tensor-core kernels' last step: the block's products Cs[m][p] (m · cStride + p; BM rows, BN pixels from p0,
  // output rows from o0) through the output mask and the epilogue to the output. Thread tid of NT (a multiple of
  // BN) takes pixel tid % BN and rows tid / BN, + NT / BN, ...: consecutive threads store consecutive pixels.
  template <int BM, int BN, int NT>
  MSGC_HD void storeProducts(const MsgcConvArgs& a, int o0, int p0, int tid, int cStride, const float* Cs) const {
    const int pb = tid % BN, px = p0 + pb;
    if (px >= P) return;
    for (int m = tid / BN; m < BM; m += NT / BN) {
      const int o = o0 + m;
      if (o >= a.Og) break;
      const float v = Cs[m * cStride + pb];
      storeOutputRow<1>(a, split, n, g * a.Og + o, P, &px, &v);
    }
  }
  // output pixel p of the sample: whether it exists, and the input position of its kernel's (0, 0) tap
  MSGC_HD void pixelOrigin(const MsgcConvArgs& a, int p, bool& ok, int& ih0, int& iw0) const {
    ok = p < P;
    const int oh = ok ? p / a.OW : 0, ow = ok ? p - oh * a.OW : 0;
    ih0 = oh * a.strideH - a.padH;
    iw0 = ow * a.strideW - a.padW;
  }
};

// BM output channels per block (16, 32 or 64): 16×16 threads, each BM/16 channels × 4 pixels; BK reduction steps
// per stage (8: 16 measured no faster on an H200, 2026-12-04). Shared memory:
// As[BK][BM + 4] (weights; padded against bank conflicts on the transposing store), Bs[BK][kTileBN] (scaled input
// patches).
template <int BM, int BK = kTileBK>
struct MsgcTileThread : MsgcBlockHead {
  static constexpr int TM = BM / 16, TN = 4;
  static constexpr int BRows = BK * kTileBN / kTileThreads;  // input rows this thread loads per stage
  static constexpr int ASlots = (BK * BM + kTileThreads - 1) / kTileThreads;
  static constexpr int AStride = BM + 4;
  int o0, p0, tid, tx, ty, R;
  // this thread's input pixel (the same for all of its B slots) and reduction rows kb, kb + 4, ...
  int pb, kb, ih0, iw0;
  bool pOk;
  float acc[TM][TN];

  int rBegin, rEnd;  // this block's share [rBegin, rEnd) of the reduction (all of it without split-K)

  // block (bx: pixel tile, by: output-channel tile within the head, bz: (sample·G + head)·splits + split), thread t
  MSGC_HD void init(const MsgcConvArgs& a, int bx, int by, int bzSplit, int t) {
    locate(a, bzSplit);
    o0 = by * BM;
    p0 = bx * kTileBN;
    tid = t;
    tx = t % 16;
    ty = t / 16;
    R = count * KK;
    // whole stages per split, so that every split but the last starts and ends on a stage boundary
    int sBegin, sEnd;
    splitRange(a, (R + BK - 1) / BK, sBegin, sEnd);
    rBegin = sBegin * BK < R ? sBegin * BK : R;
    rEnd = sEnd * BK < R ? sEnd * BK : R;
    pb = t % kTileBN;
    kb = t / kTileBN;
    pixelOrigin(a, p0 + pb, pOk, ih0, iw0);
    MSGC_UNROLL
    for (int i = 0; i < TM; i++)
      MSGC_UNROLL
      for (int j = 0; j < TN; j++) acc[i][j] = 0.f;
  }

  // The stage starting at reduction step r0, in two steps so that its global loads are in flight while the
  // previous stage computes (register prefetch): fetch() reads this thread's slots from global memory into
  // registers, commit() stores them to shared memory. Weight slots e = tid + 256·s go to As[e % BK][e / BK]
  // (consecutive threads read along the reduction: contiguous weights); input slots to Bs[kb + 4s][pb].
  float aReg[ASlots], bReg[BRows];

  MSGC_HD void fetch(const MsgcConvArgs& a, int r0) {
    MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * kTileThreads;
      const int k = e % BK, m = e / BK;
      const int r = r0 + k, o = o0 + m;
      float v = 0.f;
      if (e < BK * BM && r < rEnd && o < a.Og) {
        const int j = a.byKK.div(r), rs = r - j * KK;
        const int c = idx ? idx[j] : j;
        v = wg[((int64_t)o * a.C + c) * KK + rs];
      }
      aReg[s] = v;
    }
    MSGC_UNROLL
    for (int s = 0; s < BRows; s++) {
      const int r = r0 + kb + 4 * s;
      float v = 0.f;
      if (pOk && r < rEnd) {
        const int j = a.byKK.div(r), rs = r - j * KK;
        const int kr = a.byKW.div(rs), ks = rs - kr * a.KW;
        const int c = idx ? idx[j] : j;
        const int ih = ih0 + kr, iw = iw0 + ks;
        if (ih >= 0 && ih < a.H && iw >= 0 && iw < a.W) v = sc[c] * xn[((int64_t)c * a.H + ih) * a.W + iw];
      }
      bReg[s] = v;
    }
  }

  MSGC_HD void commit(float* As, float* Bs) const {
    MSGC_UNROLL
    for (int s = 0; s < ASlots; s++) {
      const int e = tid + s * kTileThreads;
      if (e < BK * BM) As[(e % BK) * AStride + e / BK] = aReg[s];
    }
    MSGC_UNROLL
    for (int s = 0; s < BRows; s++) Bs[(kb + 4 * s) * kTileBN + pb] = bReg[s];
  }

  MSGC_HD void compute(const float* As, const float* Bs) {
MSGC_UNROLL
    for (int k = 0; k < BK; k++) {
      float av[TM], bv[TN];
      MSGC_UNROLL
      for (int i = 0; i < TM; i++) av[i] = As[k * AStride + ty + 16 * i];
      MSGC_UNROLL
      for (int j = 0; j < TN; j++) bv[j] = Bs[k * kTileBN + tx + 16 * j];
      fmaOuter<TM, TN>(acc, av, bv);
    }
  }

  MSGC_HD void store(const MsgcConvArgs& a) const {
    int px[TN];
    MSGC_UNROLL
    for (int j = 0; j < TN; j++) px[j] = p0 + tx + 16 * j;
    MSGC_UNROLL
    for (int i = 0; i < TM; i++) {
      const int o = o0 + ty + 16 * i;
      if (o < a.Og) storeOutputRow<TN>(a, split, n, g * a.Og + o, P, px, acc[i]);
    }
  }
};

// a's sizes for x [N, C, H, W], weight [O, C, KH, KW] and p (the bounds checked by the caller), and the divisors
// the kernel uses
inline void setGeometry(MsgcConvArgs& a, const Shape& x, const Shape& w, const MsgcConvParams& p) {
  a.C = (int)x[1]; a.H = (int)x[2]; a.W = (int)x[3];
  a.O = (int)w[0]; a.KH = (int)w[2]; a.KW = (int)w[3];
  a.G = (int)p.heads; a.Og = a.O / a.G;
  a.strideH = (int)p.strideH; a.strideW = (int)p.strideW; a.padH = (int)p.padH; a.padW = (int)p.padW;
  a.OH = (a.H + 2 * a.padH - a.KH) / a.strideH + 1;
  a.OW = (a.W + 2 * a.padW - a.KW) / a.strideW + 1;
  a.byKK = FastDivmod::of(a.KH * a.KW);
  a.byKW = FastDivmod::of(a.KW);
}

// split-K's second pass for output element i of [N, O, P]: the partial sums in split order, the output mask, the
// epilogue
MSGC_HD void msgcSplitFinish(const MsgcConvArgs& a, int64_t i) {
  const int64_t P = (int64_t)a.OH * a.OW;
  const int64_t row = i / P;
  const int oc = (int)(row % a.O);
  const int64_t n = row / a.O;
  float v = 0.f;
  for (int s = 0; s < a.splits; s++) v += a.partial[(int64_t)s * a.partialStride + i];
  if (!rowKept(a, n, oc)) v = 0.f;
  float mul, add;
  a.e.affine(oc, mul, add);
  a.y[i] = a.e.finish(v * mul + add, i);
}

// How many split-K ranges for a grid of `tiles` blocks over reductions of at most `reduction` steps: enough blocks
// for two waves over the GPU's multiprocessors, each range at least 8 stages long, at most 16 ranges, and the grid's
// z dimension (samples × heads × splits) within 65535. MSGC_CUDA_SPLITK=n forces n (benchmarks, tests).
inline int msgcSplits(int64_t tiles, int64_t reduction, int64_t sampleHeads, int multiprocessors) {
  const char* env = std::getenv("MSGC_CUDA_SPLITK");
  int64_t s = 1;
  if (env && std::atoi(env) > 0) {
    s = std::atoi(env);
  } else {
    const int64_t want = 2 * (int64_t)multiprocessors;
    if (tiles < want) s = (want + tiles - 1) / tiles;
    const int64_t maxByLength = reduction / (8 * kTileBK);
    if (s > maxByLength) s = maxByLength;
    if (s > 16) s = 16;
  }
  if (s > 65535 / sampleHeads) s = 65535 / sampleHeads;
  return s < 1 ? 1 : (int)s;
}

// the tile height for a head of Og output channels
inline int msgcTileRows(int Og) { return Og >= 48 ? 64 : Og >= 24 ? 32 : 16; }

template <int BM_>
struct TileConfig {
  static constexpr int BM = BM_, BK = kTileBK;
};

// f(TileConfig<BM>{}) for a tile kernel of BM rows (16/32/64): the one place the GPU launch and the host emulation
// turn the runtime choice into a template instance. (A register-blocked kernel of 4×8 or 8×8 outputs per thread and
// 64-256 pixels per block, and this kernel with 16 reduction steps per stage, were measured against it on an H200
// on 2026-12-03/04 and removed: the register-blocked one ran at 6-7 TFLOP/s against this one's 7-10 and won on 10
// of 138 layer shapes, occupancy 27% at 96 registers a thread; the 16-step one was within the runs' noise.)
template <class Fn>
void withTileConfig(int BM, Fn&& f) {
  if (BM == 64) f(TileConfig<64>{});
  else if (BM == 32) f(TileConfig<32>{});
  else f(TileConfig<16>{});
}

}  // namespace cuda
}  // namespace msgc
