// msgc_gather.h: internals of the gathered MSGC convolution, shared by its files:
//   msgc_gather_pack.cc     selections, input rows (copies, transposes, padding) and weight layouts;
//   msgc_gather_kernels.cc  the AVX-512 micro-kernels (ocvec, pixvec) and their dispatch tables;
//   msgc_gather_job.h       the work plan of one call (scale folds, operands, pixel chunks) and one item's compute;
//   msgc_gather.cc          the entry (selections, kernel, rows and layouts, the BN fold);
//   msgc_gather_run.cc      one call's run (threading, the order of the items, pixvec's rows into nChw16c);
//   msgc_gather_portable.cc the portable sgemm path and the zeroing of outputs a mask leaves out;
//   msgc_gather_pattern.cc  1×1 convs with heads of 16+ outputs sharing broadcasts across heads;
//   msgc_gather_narrow.cc   1×1 convs with heads of 1-8 outputs, vectors of pixels.
// See msgc_gather.cc for the design.
#pragma once
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MSGC_GATHER_AVX512 1
#else
#define MSGC_GATHER_AVX512 0
#endif

#include "layout.h"
#include "msgc/ops.h"
#include "msgc/tensor.h"

namespace msgc {
namespace gather {

constexpr int kMaxPixels = 28;  // ocvec register block: up to 28 accumulators + 1 weight vector (32 zmm)
constexpr int kMaxRows = 4;     // ocvec: output rows per register block

struct Geometry {
  int64_t N, C, H, W, O, G, Og, KH, KW, T, SH, SW, PH, PW, OH, OW, OHW;
};

// Channel c of sample n in x's memory: element (h, w) at plane(n, c)[(h * W + w) * block].
struct Source {
  const float* data;
  int64_t block, Cb;  // channel block (1 = plain NCHW, 8 or 16 = nChw8c / nChw16c), channel blocks per sample
  const float* plane(const Geometry& g, int64_t n, int64_t c) const {
    return data + (n * Cb + c / block) * g.H * g.W * block + c % block;
  }
};

// The selected channels per (sample, head) and their union per sample.
struct Selection {
  std::vector<int32_t> idx;     // selected channels, (n, i)-major, ascending
  std::vector<int64_t> start;   // N*G + 1 offsets into idx
  std::vector<int32_t> uni;     // union channels of each sample, ascending
  std::vector<int64_t> ustart;  // N + 1 offsets into uni
  std::vector<int32_t> upos;    // [N, C]: position of c in sample n's union, -1 if no head selects it
  std::vector<char> unit;       // [N, G]: every selected scale is exactly 1 (a binary gate)
  int64_t G = 1;
  int64_t count(int64_t n, int64_t i) const { return start[n * G + i + 1] - start[n * G + i]; }
  const int32_t* sel(int64_t n, int64_t i) const { return idx.data() + start[n * G + i]; }
  int64_t unionSize(int64_t n) const { return ustart[n + 1] - ustart[n]; }
  const int32_t* unionOf(int64_t n) const { return uni.data() + ustart[n]; }
};

// Fills r (reusing its vectors' storage: a thread_local Selection per caller thread keeps large batches' index
// arrays from being mapped and page-faulted in on every call)
void select(const Geometry& g, const float* s, Selection& r);

// Output selection (producer/consumer skipping): per (sample, head) the outputs o in [0, Og) of the head whose
// mask is non-zero in some row k of outMask [N, K, O]; the others are not computed (they are written as zeros).
struct OutSelection {
  std::vector<int32_t> idx;    // (n, i)-major, ascending, within the head
  std::vector<int64_t> start;  // N*G + 1 offsets
  int64_t G = 1;
  int64_t count(int64_t n, int64_t i) const { return start[n * G + i + 1] - start[n * G + i]; }
  const int32_t* sel(int64_t n, int64_t i) const { return idx.data() + start[n * G + i]; }
};
OutSelection selectOutputs(const Geometry& g, const float* outMask, int64_t K);
bool cpuHasAvx512();
bool cpuHasAvx2Fma();

// The micro-kernels a call runs: AVX-512 (16 outputs per zmm), AVX2 + FMA (16 outputs as two ymm halves,
// msgc_gather_avx2.cc), or none (the portable sgemm path). MSGC_GATHER_ISA=avx2 runs the AVX2 kernels on an
// AVX-512 CPU, =portable the sgemm path (tests and benchmarks).
enum class Isa { Portable, Avx2, Avx512 };
Isa gatherIsa();

// A buffer that grows on demand (from the caching allocator: no page faults in steady state).
struct Buffer {
  std::shared_ptr<Storage> st;
  float* get(size_t floats) {
    if (!st || st->bytes < floats * sizeof(float))
      st = std::make_shared<Storage>(std::max<size_t>(floats, 16) * sizeof(float), Device::CPU);
    return st->data;
  }
};

// ---- the fused eval BatchNorm (+ residual, activation) after the conv ----------------------------------------
// y = act(a[o]·conv + b[o] + residual) with a = γ/√(σ²+ε), b = β − μ·a, applied to each pixel chunk right after its
// kernel wrote it (still in L1), so the separate BN pass over the output disappears; with `partial`, the chunk's
// per-channel sums of y, for the output's global average pool (the next MSGC block's gate context).
struct Post {
  const float* a = nullptr;         // [O]
  const float* b = nullptr;         // [O]
  bool clamp = false;               // an activation: y clamped to [lo, hi] (NaN -> lo, as the separate ops)
  float lo = 0.f, hi = 0.f;
  const float* residual = nullptr;  // in y's layout
  float* partial = nullptr;         // [N, O, chunks]: sums of y over pixel chunk k (every chunk written once)
  int64_t chunks = 0;
  float apply(float v, int64_t o) const {
    v = v * a[o] + b[o];
    return clamp ? std::min(hi, std::max(lo, v)) : v;
  }
};

// The eval BatchNorm of bn as y·a[o] + b[o] for o < O (msgc_gather.cc; also the masked path's per-sample epilogue).
void foldBatchNorm(const FusedBnAct& bn, int64_t O, float* a, float* b);
// The same, cached with the BN tensors until one of them is written: a at [0, O), b at [O, 2·O)
const float* foldedBatchNorm(const FusedBnAct& bn, int64_t O);

// ---- shared broadcasts (msgc_gather_pattern.cc) --------------------------------------------------------------
// Whether runPattern takes the call: AVX-512, a 1×1 stride-1 unpadded conv on an nChw16c x (xBlock), C and O whole
// blocks of 16, two or more heads of at least 16 outputs; unless forced (MSGC_GATHER_KERNEL=pattern), heads of 16
// outputs and at least 4 samples per thread.
bool patternApplies(const Geometry& g, int64_t xBlock, bool forced);
// The gathered 1×1 conv into y (nChw16c) with every channel's broadcasts shared by the heads that selected it; Wt the
// weight as [C][O]; with post the fused BN epilogue, with pooled (and post) the outputs' means [N, O].
void runPattern(const Geometry& g, const float* scale, const Source& src, const float* Wt, const Post* post,
                float* pooled, float* y);

// ---- narrow heads (msgc_gather_narrow.cc) -------------------------------------------------------------------
// Whether runNarrow can take the call: AVX-512, a 1×1 stride-1 unpadded conv on an nChw16c x (xBlock), C a multiple
// of 16, heads of 1 to 8 outputs.
bool narrowApplies(const Geometry& g, int64_t xBlock);
// The gathered 1×1 conv into y (nChw16c, padded to whole blocks of 16 outputs) per head over its own selected
// channels, vectors of 16 pixels; Wt the weight as [C][O]; post and pooled as runPattern's.
void runNarrow(const Geometry& g, const Selection& sel, const float* scale, const Source& src, const float* Wt,
               const Post* post, float* pooled, float* y);

// ---- input rows (msgc_gather_pack.cc) -----------------------------------------------------------------------

enum class Rows { Planes, Direct, Im2col };

struct RowPlan {
  Rows rows;
  bool inPlace = false;            // Planes read x itself
  int64_t pixStride = 1;           // distance between consecutive pixels a kernel reads (Direct: SW)
  int64_t chanStride = 0;          // floats per channel in the row buffer
  int64_t Hp = 0, Wp = 0;          // Direct: padded plane
  std::vector<int64_t> tapOffset;  // per tap (kh, kw), added to a channel's row pointer
  int64_t rowStride = 0;           // Direct: between output rows in the padded plane (SH·Wp)
};

// xBlock: x's channel block; strided: the kernel can read pixels xBlock apart (ocvec on nChw16c; AVX2: nChw8c too)
RowPlan planRows(const Geometry& g, Rows rows, int64_t xBlock, bool strided);
// Splits ascending channels cs[0..count) into runs that share a channel block of x: starts, then count.
void blockRuns(const int32_t* cs, int64_t count, int64_t block, std::vector<int64_t>& starts);
// Fills the rows of channels cs[0..count) of sample n (one run of blockRuns()) into dst[k].
void fillChannels(const Geometry& g, const RowPlan& p, const Source& src, int64_t n, const int32_t* cs, int64_t count,
                  float* const* dst);
// Planes only: columns [p0, p1) of the flattened planes of channels cs[0..count) (one run of blockRuns()).
void fillPlanes(const Geometry& g, const Source& src, int64_t n, const int32_t* cs, int64_t count, float* const* dst,
                int64_t p0, int64_t p1);

// ---- weights (msgc_gather_pack.cc) --------------------------------------------------------------------------
// The weight [O, C, KH, KW] in the order a kernel reads it, cached on the weight's storage until it is written.
// ocvec: [G][B][C][T][16] with B = ceil(O/G / 16) blocks of 16 outputs per head; otherwise [C][T][O].
const float* weightLayout(const Tensor& weight, const Geometry& g, bool ocvec);

// ---- AVX-512 micro-kernels (msgc_gather_kernels.cc) ---------------------------------------------------------
// rows per register block for Q pixels per row
constexpr int ocvecRows(int Q) { return std::max(1, std::min(kMaxRows, kMaxPixels / Q)); }
// ocvec over NB blocks of 16 outputs at once: pixels per register block (NB·pixels accumulators + NB weight
// vectors + 1 broadcast <= 32 zmm), and rows per register block for Q pixels per row
constexpr int ocvecPixels(int NB) { return NB == 1 ? kMaxPixels : NB == 2 ? 14 : NB == 3 ? 9 : NB == 4 ? 6 : 5; }
constexpr int ocvecRows(int Q, int NB) { return std::max(1, std::min(kMaxRows, ocvecPixels(NB) / Q)); }
constexpr int kMaxMR = 8, kMaxNR = 6;
constexpr int pixvecMaxNR(int MR) { return MR <= 4 ? 6 : MR <= 6 ? 4 : 3; }  // MR·NR + NR <= 31 registers
// ---- the portable path (msgc_gather_portable.cc) ------------------------------------------------------------
// Without AVX-512: an im2col of S per (sample, head) and oneDNN's sgemm, from the [C][T][O] weight layout.
void runSgemm(const Geometry& g, const Selection& sel, const Source& src, const float* scale, const float* WT, float* y);
// Paths without output selection (pixvec, sgemm) compute every output; the ones not selected become zeros here.
// (y blocked by yBlock channels: 16, 8, or 1 for plain NCHW)
void zeroUnselected(const Geometry& g, const OutSelection& out, int64_t yBlock, float* y);

#if MSGC_GATHER_AVX512
using OcvecFn = void (*)(const float* const*, const float* const*, int64_t, const int64_t*, int64_t, int64_t, int64_t,
                         int64_t, float*, int64_t);
// 16 output channels × r rows × q pixels, pixels `stride` apart (16: a plain copy of nChw16c), with the 3-wide
// padding edges of `edges` (bit 0: the block starts a row, bit 1: it ends one)
OcvecFn ocvecKernelFor(int64_t stride, int64_t q, int64_t r, int edges);
// This thread's ocvec kernels on nChw16c read in place (1×1 convs) prefetch the pixels of the selected channel
// channelsAhead positions on whenever it starts a new block of 16 channels (0: no input prefetch)
void setInputPrefetch(int channelsAhead);
// and, in the 1×1 kernels, the weights of the selected channel channelsAhead positions on (0: none; runSimd sets it
// where a head's weights serve one sample and come cold)
void setWeightPrefetch(int channelsAhead);
using OcvecNBFn = void (*)(const float* const*, const float* const*, int64_t, const int64_t*, int64_t, int64_t, int64_t,
                           int64_t, float*, int64_t, int64_t, int64_t);
// the same over nb = 2..5 consecutive output blocks (weights wbs floats apart, outputs obs floats apart);
// q <= ocvecPixels(nb), r <= ocvecRows(q, nb); nb = 3 and 5 (pointwise heads of 40 and 80 outputs) only for
// pixels 1 or 16 apart without edges
OcvecNBFn ocvecNBKernelFor(int nb, int64_t stride, int64_t q, int64_t r, int edges);

// The BN epilogue (Post) on nChw16c: r rows of q pixels (rowStep pixels apart) of one 16-channel block, y and the
// residual r (or null) at the block's first pixel: y = act(a·y + b + r); with sums, per-lane sums of the new y into
// sums[16] (null: none; the one running sum a lane is a chain of dependent adds, a third of the pass's time)
void postBlock16(float* y, const float* res, int64_t r, int64_t q, int64_t rowStep, const float* a, const float* b,
                 bool clamp, float lo, float hi, float* sums);

// A head's block of 16 outputs in nChw16c when the head does not start on a 16-channel block (Job::shifted): tile
// lanes [0, valid) are outputs o0 .. o0 + valid - 1 (o0 a multiple of 8), r rows of q pixels from output pixel pos
// (rowStep apart; tile pixel (rr, qq) at (rr·q + qq)·16), stored with lane masks into y (sample n's first block)
// at their channels, which start in block o0 / 16 and run on into the next. With a: the BN epilogue first,
// act(a·v + b + residual) (a, b: the valid lanes' values; res: the residual in y's layout, or null), and with
// sums the per-lane sums of the results (lanes past valid hold nothing meaningful).
void storeShifted16(const float* tile, int64_t valid, int64_t o0, float* y, const float* res, int64_t OHW, int64_t pos,
                    int64_t r, int64_t q, int64_t rowStep, const float* a, const float* b, bool clamp, float lo,
                    float hi, float* sums);

// The same on plain NCHW: `planes` channels planeStride floats apart (BN scale a[c], shift b[c]), r rows of q pixels
// each (rowStep apart); with sums, each channel's sum of the new y into sums[c]
void postPlanes(float* y, const float* res, int64_t planes, int64_t planeStride, int64_t r, int64_t q, int64_t rowStep,
                const float* a, const float* b, bool clamp, float lo, float hi, float* sums);

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 about the unpack intrinsics' internal temporaries
// 16×16 register transpose: t[j] lane i = r[i] lane j
__attribute__((target("avx512f"), always_inline)) inline void transpose16(const __m512 (&r)[16], __m512 (&t)[16]) {
  __m512 a[16], b[16];
  for (int k = 0; k < 8; k++) {
    a[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; k++) {
    b[4 * k + 0] = _mm512_shuffle_ps(a[4 * k], a[4 * k + 2], 0x44);
    b[4 * k + 1] = _mm512_shuffle_ps(a[4 * k], a[4 * k + 2], 0xEE);
    b[4 * k + 2] = _mm512_shuffle_ps(a[4 * k + 1], a[4 * k + 3], 0x44);
    b[4 * k + 3] = _mm512_shuffle_ps(a[4 * k + 1], a[4 * k + 3], 0xEE);
  }
  // b[4k + m], 128-bit lane j: column 4j + m of rows 4k..4k+3
  for (int m = 0; m < 4; m++) {
    const __m512 u0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88), u1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xDD);
    const __m512 u2 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
    const __m512 u3 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xDD);
    t[m] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    t[4 + m] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    t[8 + m] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
    t[12 + m] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
  }
}
#pragma GCC diagnostic pop

// dst[l][w] = src[w * 16 + l] for w < W and the lanes l with dst[l] != nullptr (16×16 register transposes):
// a row of one 16-channel block of nChw16c (or a kernel's [pixel][16 lanes] tile) as plain rows
void transposeRow16(const float* src, int64_t W, float* const* dst);
// dst[w * 16 + l] = src[l][w] for w < W, l < 16: 16 plain planes as one 16-channel block of nChw16c
void blockRow16(const float* const* src, int64_t W, float* dst);

// ---- AVX2 + FMA (msgc_gather_avx2.cc) ---------------------------------------------------------------------
// pixels per register block (2 halves × 6 accumulators + 2 weight vectors + 1 broadcast <= 16 ymm), rows for Q;
// with 3 halves (24 outputs) 4 pixels (12 accumulators + 3 weight vectors + 1 broadcast)
constexpr int kAvx2Pixels = 6;
constexpr int avx2Rows(int Q) { return std::max(1, std::min(kMaxRows, kAvx2Pixels / Q)); }
// one row of 7 pixels with 2 halves (14 accumulators + the lower half's weights + 1 broadcast; the upper half's
// weights come as FMA memory operands): rows of 7, 14, 28, 56 pixels fill every register block
constexpr int kAvx2RowPixels = 7;
constexpr int avx2Rows7(int Q) { return Q == kAvx2RowPixels ? 1 : avx2Rows(Q); }
constexpr int kAvx2TriplePixels = 4;
constexpr int avx2TripleRows(int Q) { return std::max(1, std::min(kMaxRows, kAvx2TriplePixels / Q)); }
using Ocvec2Fn = void (*)(const float* const*, const float* const*, int64_t, const int64_t*, int64_t, int64_t, int64_t,
                          int64_t, float*, int64_t, int64_t, int64_t, int64_t, int64_t);
// 8·halves output channels (ymm halves) × r rows × q pixels, pixels `stride` apart (1, 2: copies; 8, 16, 32: a
// blocked x read in place, one row); output pixel p of row r at out + (r·ors + p)·ol, half h at + h·ho.
// halves 2: a block of 16 outputs; 1: its lower 8 (a head's last block when it has 16k + 8 outputs); 3: a block and
// the lower 8 of the next one, whose weights are wnext floats on (the next-to-last argument; a head's last 24
// outputs, one broadcast feeding 3 FMAs instead of the half block's 1). The last argument, when nonzero, adds the
// sums to what out holds (a later group of selected channels) instead of overwriting it.
Ocvec2Fn ocvec2KernelFor(int64_t stride, int64_t q, int64_t r, int edges, int halves = 2);
// postBlock16 on one 8-channel block of nChw8c (a, b, sums: 8 lanes)
void postBlock8(float* y, const float* res, int64_t r, int64_t q, int64_t rowStep, const float* a, const float* b,
                bool clamp, float lo, float hi, float* sums);
// pixvec with vectors of 8 pixels (pixvecKernelFor's arguments): MR·NR accumulators + NR pixel vectors + NR masks
// + 1 broadcast <= 16 ymm registers
constexpr int pixvec2MaxNR(int MR) { return MR <= 2 ? 3 : MR <= 4 ? 2 : 1; }
using PixvecFn = void (*)(const float* const*, const float* const*, int64_t, const int64_t*, int64_t, int64_t, int64_t,
                          int64_t, int64_t, float*, int64_t, int64_t, int64_t, int64_t, int64_t);
PixvecFn pixvec2KernelFor(int mr, int nr);
// postPlanes with AVX2
void postPlanes2(float* y, const float* res, int64_t planes, int64_t planeStride, int64_t r, int64_t q, int64_t rowStep,
                 const float* a, const float* b, bool clamp, float lo, float hi, float* sums);

// mr output channels × nr vectors of 16 pixels (input position pos, output position ypos): rows of up to 16·vr
// pixels, vr vectors each, rowIn / rowOut apart (one row: vr = nr)
PixvecFn pixvecKernelFor(int mr, int nr);
#endif

}  // namespace gather
}  // namespace msgc
