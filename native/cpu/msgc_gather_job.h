// msgc_gather_job.h: the gathered MSGC convolution's work plan for the AVX-512 path (used by msgc_gather_run.cc;
// msgc_gather.cc calls runSimd):
// how a head folds its scale, each head's operands (input rows and weights per selected channel), the pixel
// chunks; Job::compute, which runs one item (sample, head, output blocks, pixel chunk) with the micro-kernels, and
// the fused BN epilogue are defined in msgc_gather_job_compute.h.
// See msgc_gather.cc for the design.
#pragma once
#include <memory>

#include "msgc_gather.h"

namespace msgc {
namespace gather {

enum class KernelKind { Ocvec, Pixvec };

// Where head i of sample n folds its scale (see the file comment).
enum class Fold { None, Weights, Rows };


// The original heads of a union of narrow heads (Job::lanes): their scales [N, heads, C], outputs per head
struct LaneScales {
  const float* scale = nullptr;  // null: the heads run apart
  int64_t heads = 0, headOutputs = 0;
};

// One head's operands for the kernels: per selected channel its input rows and its weights.
struct HeadOperands {
  std::vector<const float*> chan, wch;
  int64_t obShift = 0;  // ocvec: added to wch[j] per output block
  int64_t ldw = 16;     // distance between a channel's taps in wch[j]
};

struct Job {
  const Geometry& g;
  const Selection& sel;
  const RowPlan& rp;
  const Source& src;
  const float* scale;  // [N, G, C]
  const float* WL;     // weightLayout()
  KernelKind kind;
  float* y;
  bool forcePack;
  // The union of narrow heads (msgcConvForwardGathered): g and sel describe one head of all O outputs over each
  // sample's union of selected channels, and every channel's packed weights take, lane by lane, the scale of the
  // original head the output belongs to (lanes.scale null: off)
  LaneScales lanes;
  const OutSelection* out = nullptr;  // ocvec only: compute just these outputs (packed 16 to a block)
  // Compacted input (msgcConvForwardGathered's Compaction::inputMask): channel c of sample n is x's channel slot
  // slotOf[n·C + c]; unionSlots holds the slots of each sample's union channels (sel.uni's layout), which the
  // copies read. Null: channel c is channel c.
  const int32_t* slotOf = nullptr;
  const int32_t* unionSlots = nullptr;
  // Compacted output (one head with an output selection): the k-th selected output of sample n goes to channel
  // slot k of y, and the slots past the last selected one hold zeros.
  bool compactOut = false;
  // where the copies read sample n's union channels in x
  const int32_t* readUnion(int64_t n) const { return unionSlots ? unionSlots + sel.ustart[n] : sel.unionOf(n); }
  int pixMR = 8, pixNR = 1;  // pixvec register block
  // pixel chunks (see chunk())
  struct Chunk {
    int64_t inPos, outPos, q, r;  // r rows of q pixels (r = 1 on a flattened grid)
    int64_t t0, nt;               // taps [t0, t0 + nt) (kh-major: a range of kernel rows)
    int edges = 0;                // ocvecKernel's E
  };
  std::vector<Chunk> direct;  // Direct rows: the chunks, precomputed
  // Planes copied from a blocked x, pixel-chunk-major: copied and computed tile by tile (tileChunks chunks), so
  // that the copy is still in cache when the kernels read it
  bool tiled = false;
  int64_t tileChunks = 1;
  // ocvec on Direct rows of a 3-wide stride-1 kernel with one column of padding: blocks at a row's ends skip the
  // taps over the padding columns
  bool edges = false;
  // ocvec with nChw16c output: output blocks per kernel call (2 for heads of 32, 64, 96, 128 outputs), so one
  // broadcast of an input pixel feeds nb FMAs; items then take nb blocks at a time, and pixel chunks shrink to
  // ocvecPixels(nb). (ResNet-18 at density 0.5, 2 threads: layer2/3 efficiency 0.70-0.76 -> 0.81-0.82; nb = 4
  // with 6-pixel chunks read each weight block 3.5x as often and lost on 14² and 7² maps.)
  int nb = 1;
  // the fused BN (+ residual, activation) of the outputs, or null (then y holds the raw conv)
  const Post* post = nullptr;
  // ocvec on nChw16c read in place: prefetch the input this many selected channels ahead (setInputPrefetch)
  int inputPrefetch = 0;
  int weightPrefetch = 0;
  // AVX-512 ocvec with heads of 16k + 8 outputs (MobileNetV2's projections: 24 and 40 a head) and all outputs whole
  // 16-channel blocks: nChw16c output rather than plain NCHW, a head's blocks of 16 outputs starting 0 or 8 lanes
  // into a block of y (two heads share that block; each writes its lanes with masked stores), BN epilogue applied on
  // the kernel's tile (storeShifted16). The next layer then reads the layout oneDNN uses, where a plain output cost
  // its 1×1 conv a reorder, and the tile's transpose to plain rows and the plain epilogue go. (MobileNetV2's
  // 576->96 at 14², batch 1, heads of 24: 62 µs against 60 for 576->128 with heads of 32, whose 33% more work
  // writes nChw16c.) MSGC_GATHER_SHIFT=0 keeps the plain output (tests, benchmarks).
  bool shifted = false;
  // the kernels: AVX-512, or AVX2 (one block of 16 outputs per call as two ymm halves, nb = 1), whose blocked
  // output is nChw8c (yl = 8: oneDNN's layout on those CPUs) rather than nChw16c
  Isa isa = Isa::Avx512;
  int64_t yl = 16;
  // AVX2, blocked output: a head's last 24 outputs in one kernel call of 3 ymm halves (computeAvx2)
  bool triple = true;
  // AVX2, blocked output: 1×1 convs take a head's selected channels in near-equal groups of at most kBlock, each
  // group over the whole chunk before the next adds to its outputs, so that a group's weights (16-24 outputs ×
  // kBlock channels) stay in L1 across the chunk's register blocks. MobileNetV2's projections at batch 1, density
  // 0.5 (2 threads, interleaved): 576->96 at 14² 136 -> 126 µs, 384->96 93 -> 82, 960->160 at 7² 102 -> 95
  // (groups of 48, 64, 128 and 192 channels: no better than 96); 3×3 convs gained nothing
  int64_t kBlock = 96;
  // AVX2, blocked output, 1×1: an item is a head's chunk over all its output blocks (itemBlocks() = 1), rather
  // than one block of it
  bool allBlocks = false;
  // AVX2, blocked output: a chunk that is one row of exactly 7 pixels (7² maps) runs as one register block of 7
  // pixels (kAvx2RowPixels) rather than 4 + 3. ResNet-18's 512-channel 3×3 conv at 7², density 0.5, 4 heads
  // (interleaved): batch 1 2147 -> 1754 µs, batch 32 51.9 -> 48.2 ms. Wider rows keep blocks of at most 6: the
  // 7-pixel kernel loads 15 operands per 14 FMAs and ran 5-15% slower on rows of 14-56 (two blocks of 7 against
  // 5 + 5 + 4)
  bool q7 = true;
  int64_t itemBlocks() const { return allBlocks ? 1 : blocksPerHead() / nb; }
  // pixvec: pixels per vector, the most vectors per register block
  int64_t pixWidth() const { return isa == Isa::Avx2 ? 8 : 16; }
  int pixMaxNR(int mr) const { return isa == Isa::Avx2 ? pixvec2MaxNR(mr) : pixvecMaxNR(mr); }
  // ocvec: pixels per register block, and rows per register block for q pixels per row
  int64_t maxPixels() const { return isa == Isa::Avx2 ? kAvx2Pixels : ocvecPixels(nb); }
  int64_t maxRows(int64_t q) const { return isa == Isa::Avx2 ? avx2Rows((int)q) : ocvecRows((int)q, nb); }
  // AVX2 without output selection into blocked output: pixel chunks of up to kAvx2Span pixels (a whole row of
  // ResNet-18's maps), each run in register blocks of up to 6 pixels (computeAvx2). Against chunks of one register
  // block: 0.80-0.84x the time on ResNet-18's 56² and 28² 3×3 layers, 0.91-0.96x on 14² and 7² (one thread,
  // density 0.5, alternating in one process)
  static constexpr int64_t kAvx2Span = 64;
  bool avx2Spans() const { return isa == Isa::Avx2 && kind == KernelKind::Ocvec && !out && !plainOut(); }
  int64_t chunkPixels() const { return avx2Spans() ? kAvx2Span : maxPixels(); }

  // in-place rows: channel c of sample n at src.data + n·sampleFloats + planeOff[c] (no division per channel)
  const int64_t* planeOff = nullptr;
  std::vector<int64_t> ownPlaneOff;  // (where the thread's table of offsets is full)
  int64_t sampleFloats = 0;

  static void fillPlaneOffsets(int64_t* off, int64_t C, int64_t HW, int64_t block) {
    const int64_t blockFloats = HW * block;
    for (int64_t c0 = 0, b = 0; c0 < C; c0 += block, b++)
      for (int64_t l = 0; l < block && c0 + l < C; l++) off[c0 + l] = b * blockFloats + l;
  }
  // (src.plane(g, 0, c) - src.data for c < C, block by block: two divisions per channel were ~3 µs of a 960-channel
  // call), kept per (C, H·W, block) for the thread's lifetime, up to 256 shapes: a vector per call was one of the two
  // allocations of 1.5-7.5 KB each gathered call made, each making glibc consolidate its fast bins first (MobileNetV2
  // at batch 1: 22 such allocations a forward). Null when the table is full.
  static const int64_t* planeOffsets(int64_t C, int64_t HW, int64_t block) {
    struct Key {
      int64_t C, HW, block;
      bool operator==(const Key& o) const { return C == o.C && HW == o.HW && block == o.block; }
    };
    struct Entry {
      Key key;
      std::vector<int64_t> off;
    };
    static thread_local std::vector<std::unique_ptr<Entry>> cache;  // (a network has a few dozen shapes)
    const Key key{C, HW, block};
    for (const auto& e : cache)
      if (e->key == key) return e->off.data();
    if (cache.size() >= 256) return nullptr;
    auto e = std::make_unique<Entry>();
    e->key = key;
    e->off.resize((size_t)C);
    fillPlaneOffsets(e->off.data(), C, HW, block);
    cache.push_back(std::move(e));
    return cache.back()->off.data();
  }

  void plan() {
    if (rp.inPlace) {
      planeOff = planeOffsets(g.C, g.H * g.W, src.block);
      if (!planeOff) {
        ownPlaneOff.resize((size_t)g.C);
        fillPlaneOffsets(ownPlaneOff.data(), g.C, g.H * g.W, src.block);
        planeOff = ownPlaneOff.data();
      }
      sampleFloats = src.Cb * g.H * g.W * src.block;
    }
    if (kind == KernelKind::Pixvec) {
      // (AVX2: 4 outputs × 2 vectors load fewer operands per FMA than 8 × 1, so narrower register blocks first)
      pixMR = 0;
      for (int mr : isa == Isa::Avx2 ? std::array<int, 3>{4, 3, 2} : std::array<int, 3>{8, 6, 4})
        if (g.Og % mr == 0) {
          pixMR = mr;
          break;
        }
      if (!pixMR) pixMR = g.Og < kMaxMR ? (int)g.Og : 4;
      // near-equal chunks of whole vectors
      const int64_t maxNR = pixMaxNR(pixMR), VW = pixWidth();
      if (rp.rows == Rows::Direct) {
        // stride 1 on padded rows: each output row in near-equal pieces of whole vectors, or rows narrower than
        // half a register block several to a chunk (near-equal groups of rows; ResNet-20 16-channel conv at batch
        // 1: 2 vectors of one row per block -> 3 rows, 6 vectors)
        const int64_t vectors = (g.OW + VW - 1) / VW, pieces = (vectors + maxNR - 1) / maxNR;
        if (maxNR / vectors >= 2 && g.OH > 1) {
          const int64_t per = maxNR / vectors, groups = (g.OH + per - 1) / per;
          for (int64_t k = 0, oh = 0; k < groups; k++) {
            Chunk c;
            c.r = g.OH / groups + (k < g.OH % groups ? 1 : 0);
            c.q = g.OW;
            c.inPos = oh * rp.rowStride;
            c.outPos = oh * g.OW;
            c.t0 = 0;
            c.nt = g.T;
            direct.push_back(c);
            oh += c.r;
          }
          return;
        }
        pixNR = (int)((vectors + pieces - 1) / pieces);
        for (int64_t oh = 0; oh < g.OH; oh++)
          for (int64_t ow0 = 0; ow0 < g.OW; ow0 += VW * pixNR) {
            Chunk c;
            c.q = std::min<int64_t>(VW * pixNR, g.OW - ow0);
            c.r = 1;
            c.inPos = oh * rp.rowStride + ow0;
            c.outPos = oh * g.OW + ow0;
            c.t0 = 0;
            c.nt = g.T;
            direct.push_back(c);
          }
        return;
      }
      const int64_t vectors = (g.OHW + VW - 1) / VW;
      const int64_t chunks = (vectors + maxNR - 1) / maxNR;
      pixNR = (int)((vectors + chunks - 1) / chunks);
    } else if (rp.rows == Rows::Direct) {
      edges = g.KW == 3 && g.PW == 1 && (g.SW == 1 || rp.inPlace);
      // A row in near-equal pieces of at most 28 pixels; on padded copies a row that is one piece joins others in
      // blocks of up to 28/Q rows. Pieces at a row's ends skip the taps over the padding columns (edges); the taps
      // over the padding rows above and below are computed on copies (splitting off the border rows to skip them
      // cost more in register blocking than it saved on 7² and 14² maps) and skipped when x is read in place
      // (one row per chunk: runAvx512's directInPlace).
      const int64_t P = chunkPixels();
      const int64_t pieces = (g.OW + P - 1) / P, base = g.OW / pieces, extra = g.OW % pieces;
      const int64_t maxR = pieces == 1 && !rp.inPlace ? maxRows(base) : 1, groups = (g.OH + maxR - 1) / maxR;
      for (int64_t k = 0, oh = 0; k < groups; k++) {
        const int64_t r = g.OH / groups + (k < g.OH % groups ? 1 : 0);
        for (int64_t piece = 0; piece < pieces; piece++) {
          const int64_t ow0 = piece * base + std::min(piece, extra);
          Chunk c;
          c.q = base + (piece < extra ? 1 : 0);
          c.r = r;
          c.inPos = oh * rp.rowStride + ow0 * rp.pixStride;
          c.outPos = oh * g.OW + ow0;
          c.t0 = 0;
          c.nt = g.T;
          if (rp.inPlace) {
            // x read in place (runAvx512: one output row per chunk, 3×3, padding 1): no padding rows to read
            // (the last output row of a stride-2 conv reaches the bottom padding only when H is odd)
            if (oh == 0) c.t0 = 3, c.nt -= 3;
            if (oh + r == g.OH && (g.OH - 1) * g.SH + 1 >= g.H) c.nt -= 3;
          }
          // (the right padding column likewise, at a row's end)
          if (edges) c.edges = (ow0 == 0 ? 1 : 0) | (ow0 + c.q == g.OW && (g.OW - 1) * g.SW + 1 >= g.W ? 2 : 0);
          direct.push_back(c);
        }
        oh += r;
      }
    }
  }

  float* headOut(int64_t n, int64_t i) const { return y + (n * g.O + i * g.Og) * g.OHW; }  // both layouts
  int64_t blocksPerHead() const { return kind == KernelKind::Ocvec ? (g.Og + 15) / 16 : 1; }
  // output blocks head i of sample n computes (with an output selection: its selected outputs, 16 to a block)
  int64_t blocks(int64_t n, int64_t i) const { return out ? (out->count(n, i) + 15) / 16 : blocksPerHead(); }
  // ob: an item's block, or its group of nb blocks
  bool active(int64_t n, int64_t i, int64_t ob) const { return sel.count(n, i) && ob < blocks(n, i) / nb; }
  // a blocked output needs whole blocks per head: 16 outputs (nChw16c), or 8 with the AVX2 kernels (nChw8c: heads of
  // 16k + 8 outputs end on a half block)
  bool plainOut() const { return kind != KernelKind::Ocvec || (g.Og % (isa == Isa::Avx2 ? 8 : 16) != 0 && !shifted); }

  // the rows of union channels [u0, u1) of sample n (one run of blockRuns()) into buf
  void fillUnion(int64_t n, int64_t u0, int64_t u1, float* buf) const {
    float* dst[16];
    for (int64_t u = u0; u < u1; u++) dst[u - u0] = buf + u * rp.chanStride;
    fillChannels(g, rp, src, n, readUnion(n) + u0, u1 - u0, dst);
  }

  Fold fold(int64_t n, int64_t i) const {
    const int64_t ns = sel.count(n, i);
    if (ns == 0 || (out && out->count(n, i) == 0)) return Fold::None;
    if (lanes.scale) return Fold::Weights;  // a scale per output lane: only the weights can carry it
    if (out) return Fold::Weights;  // the selected outputs' weights, packed into blocks
    if (sel.unit[n * g.G + i] && !forcePack) return Fold::None;
    // planes may be copied tile by tile; rows read in place are x itself
    if (forcePack || rp.rows == Rows::Planes || rp.inPlace) return Fold::Weights;
    const int64_t packed = (kind == KernelKind::Ocvec ? blocksPerHead() * 16 : g.Og) * g.T;  // per channel
    return rp.chanStride < packed ? Fold::Rows : Fold::Weights;
  }
  size_t foldFloats(int64_t n, int64_t i) const {
    switch (fold(n, i)) {
      case Fold::Weights:  // ocvec packs whole blocks of 16 outputs
        return (size_t)(sel.count(n, i) * (kind == KernelKind::Ocvec ? blocks(n, i) * 16 : g.Og) * g.T);
      case Fold::Rows: return (size_t)(sel.count(n, i) * rp.chanStride);
      default: return 0;
    }
  }
  // Points the operands at the input rows and the cached weights; then, if the head folds its scale, at the
  // fold buffer dst (filled by foldPart). src0 gets the unfolded operands foldPart reads (only when it folds).
  void operands(int64_t n, int64_t i, const float* rows, HeadOperands& src0, HeadOperands& h, float* dst) const {
    const int64_t ns = sel.count(n, i);
    const int32_t* s = sel.sel(n, i);
    const Fold f = fold(n, i);
    // the unfolded operands into h (then copied to src0 for a fold to read)
    h.chan.resize(ns);
    h.wch.resize(ns);
    const float** chan = h.chan.data();
    const float** wch = h.wch.data();
    if (rp.inPlace) {
      const float* base = src.data + n * sampleFloats;
      if (slotOf) {
        const int32_t* slot = slotOf + n * g.C;
        for (int64_t j = 0; j < ns; j++) chan[j] = base + planeOff[slot[s[j]]];
      } else {
        for (int64_t j = 0; j < ns; j++) chan[j] = base + planeOff[s[j]];
      }
    } else {
      const int32_t* up = sel.upos.data() + n * g.C;
      for (int64_t j = 0; j < ns; j++) chan[j] = rows + up[s[j]] * rp.chanStride;
    }
    if (kind == KernelKind::Ocvec) {
      const float* w0 = WL + i * blocksPerHead() * g.C * g.T * 16;
      for (int64_t j = 0; j < ns; j++) wch[j] = w0 + s[j] * g.T * 16;
    } else {
      const float* w0 = WL + i * g.Og;
      for (int64_t j = 0; j < ns; j++) wch[j] = w0 + s[j] * g.T * g.O;
    }
    h.obShift = g.C * g.T * 16;
    h.ldw = kind == KernelKind::Ocvec ? 16 : g.O;
    if (f == Fold::None) return;
    src0 = h;
    if (f == Fold::Rows) {
      for (int64_t j = 0; j < ns; j++) h.chan[j] = dst + j * rp.chanStride;
    } else if (f == Fold::Weights) {
      const int64_t run = g.T * (kind == KernelKind::Ocvec ? 16 : g.Og);
      for (int64_t j = 0; j < ns; j++) h.wch[j] = dst + j * run;
      h.obShift = ns * run;
      h.ldw = kind == KernelKind::Ocvec ? 16 : g.Og;
    }
  }
  // Part `part` of `parts` (a range of selected channels) of head i's fold into dst.
  void foldPart(int64_t n, int64_t i, const HeadOperands& src0, float* dst, int64_t part, int64_t parts) const {
    const int64_t ns = sel.count(n, i);
    const int32_t* s = sel.sel(n, i);
    const float* srow = scale + (n * g.G + i) * g.C;
    const int64_t j0 = ns * part / parts, j1 = ns * (part + 1) / parts;
    const Fold f = fold(n, i);
    if (f == Fold::Rows) {
      for (int64_t j = j0; j < j1; j++) {
        const float sc = srow[s[j]];
        const float* a = src0.chan[j];
        float* d = dst + j * rp.chanStride;
        for (int64_t k = 0; k < rp.chanStride; k++) d[k] = a[k] * sc;
      }
    } else if (f == Fold::Weights) {
      const int64_t run = g.T * (kind == KernelKind::Ocvec ? 16 : g.Og);
      for (int64_t ob = 0; ob < blocks(n, i); ob++)
        for (int64_t j = j0; j < j1; j++) {
          const float sc = srow[s[j]];
          float* d = dst + (ob * ns + j) * run;
          if (out) {
            // lane l of packed block ob: selected output osel[ob·16 + l] (zero weights past the last one)
            const int64_t nout = out->count(n, i);
            const int32_t* osel = out->sel(n, i);
            for (int64_t l = 0; l < 16; l++) {
              const int64_t k = ob * 16 + l;
              if (k >= nout) {
                for (int64_t t = 0; t < g.T; t++) d[t * 16 + l] = 0.f;
                continue;
              }
              const float* a = src0.wch[j] + (osel[k] / 16) * src0.obShift + osel[k] % 16;
              for (int64_t t = 0; t < g.T; t++) d[t * 16 + l] = a[t * 16] * sc;
            }
          } else if (kind == KernelKind::Ocvec && lanes.scale) {
            // lane l is output ob·16 + l, of original head (ob·16 + l) / headOutputs (lanes past the last output
            // hold zero weights)
            const float* a = src0.wch[j] + ob * src0.obShift;
            float ls[16];
            for (int64_t l = 0; l < 16; l++) {
              const int64_t head = std::min(lanes.heads - 1, (ob * 16 + l) / lanes.headOutputs);
              ls[l] = lanes.scale[(n * lanes.heads + head) * g.C + s[j]];
            }
            for (int64_t k = 0; k < run; k++) d[k] = a[k] * ls[k % 16];
          } else if (kind == KernelKind::Ocvec) {
            const float* a = src0.wch[j] + ob * src0.obShift;
            for (int64_t k = 0; k < run; k++) d[k] = a[k] * sc;
          } else {
            for (int64_t t = 0; t < g.T; t++)
              for (int64_t o = 0; o < g.Og; o++) d[t * g.Og + o] = src0.wch[j][t * g.O + o] * sc;
          }
        }
    }
  }

  // Pixel chunks: ocvec on Direct rows takes blocks of output rows (plan()), ocvec on other rows pieces of at
  // most 28 pixels of the flattened OH·OW grid, pixvec near-equal runs of NR vectors.
  int64_t chunkCount() const {
    if (rp.rows == Rows::Direct) return (int64_t)direct.size();
    if (kind == KernelKind::Pixvec) {
      const int64_t span = pixWidth() * pixNR;
      return (g.OHW + span - 1) / span;
    }
    return (g.OHW + chunkPixels() - 1) / chunkPixels();
  }
  Chunk chunk(int64_t k) const {
    if (rp.rows == Rows::Direct) return direct[k];
    Chunk c;
    c.r = 1;
    c.t0 = 0;
    c.nt = g.T;
    if (kind == KernelKind::Pixvec) {
      c.inPos = c.outPos = k * pixWidth() * pixNR;
      c.q = std::min<int64_t>(pixWidth() * pixNR, g.OHW - c.outPos);
    } else {
      const int64_t chunks = chunkCount(), base = g.OHW / chunks, extra = g.OHW % chunks;
      c.outPos = k * base + std::min(k, extra);
      c.inPos = c.outPos * rp.pixStride;
      c.q = base + (k < extra ? 1 : 0);
    }
    return c;
  }

  int64_t tileCount() const { return (chunkCount() + tileChunks - 1) / tileChunks; }
  // copies the pixels of tile `tile` of sample n's union channels (runs: blockRuns() of the union) into buf
  void fillTile(int64_t n, int64_t tile, const std::vector<int64_t>& runs, float* buf) const {
    const int64_t k0 = tile * tileChunks, k1 = std::min(chunkCount(), k0 + tileChunks);
    const Chunk last = chunk(k1 - 1);
    const int64_t p0 = chunk(k0).outPos, p1 = last.outPos + last.q;
    float* dst[16];
    for (size_t r = 0; r + 1 < runs.size(); r++) {
      for (int64_t u = runs[r]; u < runs[r + 1]; u++) dst[u - runs[r]] = buf + u * rp.chanStride;
      fillPlanes(g, src, n, readUnion(n) + runs[r], runs[r + 1] - runs[r], dst, p0, p1);
    }
  }

  // ---- the fused BN epilogue (post): on the chunk just written, still in L1 --------------------------------
  // output rows of chunk c: r rows of q pixels, g.OW apart on a Direct plan (otherwise r = 1)
  int64_t rowStep() const { return rp.rows == Rows::Direct ? g.OW : 0; }
  // nChw8c / nChw16c (yl lanes): yl-channel blocks [b0, b0 + count) of sample n over chunk k
  void postBlocks(int64_t n, int64_t b0, int64_t count, const Chunk& c, int64_t k) const;
  // 16-channel blocks [blk0, blk0 + nblk) of sample n over chunk k (two nChw8c blocks each with yl = 8)
  void postBlocked(int64_t n, int64_t blk0, int64_t nblk, const Chunk& c, int64_t k) const;
  // the residual rows postPlain(n, o0, o1, c, ·) will read, fetched while the kernels run: a few short rows per
  // plane, too scattered for the hardware prefetcher (the epilogue stalled on them: 16% of ResNet-20's forward at
  // batch 32 on AVX2, 7% with this)
  void prefetchResidualPlain(int64_t n, int64_t o0, int64_t o1, const Chunk& c) const;
  // plain NCHW: channels [o0, o1) of sample n over chunk k (kMaxPlain at a time)
  static constexpr int64_t kMaxPlain = 64;
  void postPlain(int64_t n, int64_t o0, int64_t o1, const Chunk& c, int64_t k) const;
  // a head with no selected channel: its zeros through the epilogue, every chunk
  void postEmpty(int64_t n, int64_t i) const;
  // a head with no selected channel, without an output selection: its outputs, zeros (or act(BN(0)) with post)
  void emptyHead(int64_t n, int64_t i) const;
  // `shifted`: block b of head i (valid lanes of its [pixel][16] tile) to y, through the epilogue when there is one
  void storeShifted(int64_t n, int64_t i, int64_t b, int64_t valid, const float* tile, const Chunk& c, int64_t k) const;
  // output selection (no residual, no pooling): sample n's outputs start as act(b[o]), BN of a zero output
  void fillPosted(int64_t n) const;
  // with an output selection, before sample n's items: the outputs it leaves out (fillPosted, or zeros); compacted,
  // the zeros of the slots past the last selected output's block
  void fillOut(int64_t n) const;

  // AVX2, blocked output: selected channels [j0, j1) of chunk c into block ob's `halves` halves (out: the block's
  // first channel), adding to what earlier channels left there when j0 > 0
  void avx2Chunk(const HeadOperands& h, const Chunk& c, int64_t ob, int halves, int64_t j0, int64_t j1, float* out) const;

  // AVX2, blocked output: the halves block ob of a head computes (0: none). A head of 16k + 8 outputs ends on a half
  // block (the lower half, one nChw8c block); with k >= 1 and `triple`, block B - 2 computes its last 24 outputs
  int avx2Halves(int64_t ob) const;

  // AVX2: block ob of head i (two ymm halves per call; see `triple`), or with `allBlocks` (ob = 0) every block
  void computeAvx2(int64_t n, int64_t i, int64_t ob, int64_t k, const HeadOperands& h) const;

  void compute(int64_t n, int64_t i, int64_t ob, int64_t k, const HeadOperands& h) const;
};

// One call on the AVX-512 / AVX2 kernels (msgc_gather_run.cc): rows, kind and weights as msgcConvForwardGathered
// chose them; with postSpec the fused BN epilogue (and with pooled the outputs' means), with out an output
// selection, lanes the union of narrow heads, slotOf / unionSlots a compacted input, compactOut a compacted output,
// shifted heads of 16k + 8 outputs into nChw16c; with yBlocked, pixvec's plain rows (y) transposed into yBlocked
// (nChw16c) with the epilogue.
void runSimd(Isa isa, const Geometry& g, const Selection& sel, const Source& src, const float* scale, const float* WL,
             KernelKind kind, Rows rows, bool forcePack, const OutSelection* out, const Post* postSpec, float* pooled,
             float* y, const LaneScales& lanes, const int32_t* slotOf, const int32_t* unionSlots, bool compactOut,
             bool shifted, float* yBlocked);

}  // namespace gather
}  // namespace msgc

#include "msgc_gather_job_compute.h"  // (Job's per-item work: the BN epilogue and compute)
