// msgc_gather_run.cc: the gathered MSGC convolution's run on the AVX-512 / AVX2 kernels (runSimd): the row plan,
// the work plan's options, the fused epilogue, and the threading and order of the items: whole samples per thread,
// or groups of samples shared by all threads. msgcConvForwardGathered (msgc_gather.cc) chooses the kernel, rows and
// layouts and calls it. See msgc_gather.cc for the design.
#include <cmath>

#include "msgc_gather.h"
#include "msgc_gather_job.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;

namespace gather {

namespace {

// Whether ocvec on Direct rows reads an nChw16c x in place: 3×3, stride 1 or 2, padding 1, nb <= 2. Saves the padded
// copy of the selected channels and the taps over the padding rows; every pixel chunk is then one output row
// (Job::plan), so narrow maps lose the blocks of several rows the copies allow, and still gain (2 threads, density
// 0.5, ResNet-18's shapes, in-place time ÷ copy time: batch 1: 0.94 on 56², 0.85 on 28², 0.83 on 14², 0.90 on 7²,
// 0.69 on 8² with 64 channels, 0.75-0.83 on 2²-4²; batch 32: 0.89 on 28² and 14², 0.98 on 7², 0.92 on 8², 0.9-1.03
// on 4²; stride 2, ResNet-18/50's downsampling 3×3 convs: batch 1 0.71-0.77 on 56² and 28² inputs, 0.91-0.95 on
// 14²; batch 32 0.79 / 0.86-0.92 / 1.03-1.05). MSGC_GATHER_DIRECT=copy keeps the copy (tests and benchmarks).
// AVX2 reads nChw8c in place as well (pixels 8 or 16 apart).
bool directInPlace(const Geometry& g, const RowPlan& rp, int64_t xBlock, int nb, Isa isa) {
  if (rp.rows != Rows::Direct || nb > 2 || !(xBlock == 16 || (isa == Isa::Avx2 && xBlock == 8))) return false;
  if (g.KH != 3 || g.KW != 3 || g.PH != 1 || g.PW != 1 || g.SH != g.SW || (g.SW != 1 && g.SW != 2)) return false;
  const char* e = std::getenv("MSGC_GATHER_DIRECT");
  return !(e && std::string(e) == "copy");
}

}  // namespace

void runSimd(Isa isa, const Geometry& g, const Selection& sel, const Source& src, const float* scale, const float* WL,
             KernelKind kind, Rows rows, bool forcePack, const OutSelection* out, const Post* postSpec, float* pooled,
             float* y, const LaneScales& lanes, const int32_t* slotOf, const int32_t* unionSlots, bool compactOut,
             bool shifted, float* yBlocked) {
  // ocvec reads a blocked x in place with pixels one block apart: nChw16c, and nChw8c with the AVX2 kernels
  const bool strided = kind == KernelKind::Ocvec && (src.block == 16 || (isa == Isa::Avx2 && src.block == 8));
  RowPlan rp = planRows(g, rows, src.block, strided);
  Job job{g, sel, rp, src, scale, WL, kind, y, forcePack};
  job.out = out;  // (zeros first: outputs that are not selected are not written)
  job.isa = isa;
  job.yl = isa == Isa::Avx2 ? 8 : 16;
  job.lanes = lanes;
  job.slotOf = slotOf;
  job.unionSlots = unionSlots;
  job.compactOut = compactOut;
  job.shifted = shifted;
  if (const char* e = std::getenv("MSGC_GATHER_TRIPLE")) job.triple = std::string(e) != "0";  // (tests, benchmarks)
  if (const char* e = std::getenv("MSGC_GATHER_KC")) job.kBlock = std::atoi(e);  // (tests, benchmarks; 0: off)
  if (const char* e = std::getenv("MSGC_GATHER_Q7")) job.q7 = std::string(e) != "0";  // (tests, benchmarks)
  if (kind == KernelKind::Ocvec && !out && isa == Isa::Avx512) {
    const int64_t B = job.blocksPerHead();
    const char* nbEnv = std::getenv("MSGC_GATHER_NB");  // (tests and benchmarks: 1..5 at most)
    const int64_t most = nbEnv ? std::atoi(nbEnv) : 2;  // 4 (6-pixel chunks) re-read the weights too often
    job.nb = most >= 4 && B % 4 == 0 ? 4 : most >= 2 && B % 2 == 0 ? 2 : 1;
    // pointwise heads of 3 or 5 blocks (MobileNetV2's 40 and 80 outputs) in one call: with one block per call
    // each broadcast fed one FMA
    if (rp.rows == Rows::Planes && (B == 3 || B == 5) && (!nbEnv || most >= B)) job.nb = (int)B;
  }
  if (kind == KernelKind::Ocvec && directInPlace(g, rp, src.block, job.nb, isa)) {
    // 3×3 convs of stride 1 or 2 on nChw16c: the kernels read x in place (pixels 16·stride apart), with no padded
    // copy of the selected channels; the taps over the padding rows are skipped (Job::plan: chunks of the first
    // output row take kernel rows 1-2, of the last one reaching the padding rows 0-1), those over the padding
    // columns too (edges)
    rp.inPlace = true;
    rp.pixStride = src.block * g.SW;
    rp.rowStride = src.block * g.W * g.SH;
    rp.chanStride = g.H * g.W;
    for (int64_t kh = 0; kh < 3; kh++)
      for (int64_t kw = 0; kw < 3; kw++) rp.tapOffset[kh * 3 + kw] = ((kh - 1) * g.W + (kw - 1)) * src.block;
  }
  job.plan();
  // the fused BN epilogue; with `pooled`, per-chunk sums of its outputs, added up at the end (finish())
  Post post;
  // (the thread's buffer, grown as needed: a vector per call was the other allocation of Job::plan's comment)
  static thread_local std::vector<float> partialStore;
  std::vector<float>& partial = partialStore;
  if (postSpec) {
    post = *postSpec;
    if (pooled) {
      post.chunks = job.chunkCount();
      partial.assign((size_t)(g.N * g.O * post.chunks), 0.f);
      post.partial = partial.data();
    }
    job.post = yBlocked ? nullptr : &post;  // (yBlocked: applied in toBlocked)
  }
  // yBlocked (pixvec, nChw16c output): the kernels write the raw conv into y, plain; block cb of sample n is then
  // transposed into yBlocked, the epilogue applied there (its sums: chunk 0's share of the pooled means)
  auto toBlocked = [&](int64_t n, int64_t cb) {
    const int64_t Ob = g.O / 16;
    const float* planes[16];
    for (int l = 0; l < 16; l++) planes[l] = y + (n * g.O + cb * 16 + l) * g.OHW;
    float* yb = yBlocked + (n * Ob + cb) * g.OHW * 16;
    blockRow16(planes, g.OHW, yb);
    if (!postSpec) return;
    alignas(64) float sums[16];
    postBlock16(yb, post.residual ? post.residual + (n * Ob + cb) * g.OHW * 16 : nullptr, 1, g.OHW, 0,
                post.a + cb * 16, post.b + cb * 16, post.clamp, post.lo, post.hi, pooled ? sums : nullptr);
    if (pooled)
      for (int l = 0; l < 16; l++) partial[(size_t)((n * g.O + cb * 16 + l) * post.chunks)] = sums[l];
  };
  auto finish = [&]() {
    if (!pooled) return;
    for (int64_t no = 0; no < g.N * g.O; no++) {
      double acc = 0;
      for (int64_t k = 0; k < post.chunks; k++) acc += partial[no * post.chunks + k];
      pooled[no] = (float)(acc / (double)g.OHW);
    }
  };
  // Small calls run on one thread: starting the team, its dynamic schedule and barrier cost about 8 µs a call on
  // 2 threads (a 16→16 1×1 at 2², batch 1: 20.1 µs on 2 threads, 11.6 on one), which the split pays back only
  // above about 1.5 M gathered multiply-adds (batch 1, density 0.5, 2 threads, AMD Zen 5: MobileNetV2's 384→64 at
  // 14², 1.2 M: 54.0 µs either way; 576→96 at 14², 2.8 M: 93 against 107 on one thread). MSGC_GATHER_SERIAL_MACS
  // sets the bound (tests, benchmarks; 0: never).
  int threads = omp_get_max_threads();
  if (threads > 1) {
    int64_t macs = 0;
    for (int64_t ng = 0; ng < g.N * g.G; ng++) macs += sel.count(ng / g.G, ng % g.G);
    macs *= g.Og * g.OHW * g.T;
    const char* e = std::getenv("MSGC_GATHER_SERIAL_MACS");
    if (macs < (e ? std::atoll(e) : int64_t(1500000))) threads = 1;
  }
  const bool forceShared = std::getenv("MSGC_GATHER_SHARED") != nullptr;
  const bool wholeSamples = !forceShared && (threads == 1 || g.N >= 4 * threads);  // (see below)
  // AVX2 1×1 convs into blocked output: items of a head's chunk over all its output blocks, when there are enough
  // of them to share (whole samples per thread, or G·chunks >= 2 per thread); 2 threads, density 0.5, Zen 3,
  // interleaved: batch 32 1024->256 at 14² (one head) 28.6 -> 22.7 ms, 2048->512 at 7² 27.3 -> 21.5, 256->1024
  // 17.3 -> 13.9, MobileNetV2's 960->320 at 7² 7.0 -> 5.3, 960->160 4.2 -> 3.4; batch 1 128->512 at 28² 550 ->
  // 533 µs, 960->160 at 7² 140 -> 133; with too few items (2048->512 at 7², batch 1: one chunk) one thread idles
  if (isa == Isa::Avx2 && kind == KernelKind::Ocvec && !out && !job.plainOut() && g.T == 1) {
    job.allBlocks = wholeSamples || g.G * job.chunkCount() >= 2 * threads;
    if (const char* e = std::getenv("MSGC_GATHER_ALLBLOCKS")) job.allBlocks = std::string(e) == "1";  // (tests, benchmarks)
  }
  // items take a head's output blocks nb at a time (allBlocks: all of them)
  const int64_t chunks = job.chunkCount(), blocks = job.itemBlocks(), G = g.G;
  auto rowsFloats = [&](int64_t n) { return rp.inPlace ? (size_t)0 : (size_t)(sel.unionSize(n) * rp.chanStride); };
  auto foldFloats = [&](int64_t n) {
    size_t f = 0;
    for (int64_t i = 0; i < G; i++) f += job.foldFloats(n, i);
    return f;
  };
  // pixel-chunk-major when the heads read fewer weights than input rows (see the file comment)
  int64_t weightFloats = 0, inputFloats = 0;
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t i = 0; i < G; i++) weightFloats += sel.count(n, i) * g.Og * g.T;
    inputFloats += sel.unionSize(n) * (rp.inPlace ? g.H * g.W : rp.chanStride);
  }
  const bool pixelMajor = weightFloats <= inputFloats;
  // 1×1 convs reading nChw16c in place: prefetch the input some selected channels ahead, so that a block's lines
  // come from L2 ahead of use:
  //  * 12 ahead when the lines one kernel call reads (its channels' blocks × its pixels, 64 bytes each) outgrow the
  //    48 KB L1. ResNet-50's input-gated 1024->256 at 14² (batch 32, density 0.5): 9.0 -> 6.7 ms, 2048->512 at
  //    7²: 8.2 -> 7.1 ms (24 ahead: within 3% of that).
  //  * 24 ahead when they fit but there are at least as many inputs as outputs: each line feeds few output blocks,
  //    and in a network x comes cold from the layer before. 2 threads, Zen 5, density 0.5, ÷ the dense conv,
  //    caches flushed before each call: MobileNetV2's 960->320 at 7², batch 32, 1.37 -> 0.86 (hot 0.94 -> 0.83),
  //    its other projections 1.15-1.39 -> 0.96-1.08, at batch 1 1.11-1.25 -> 0.92-1.06; ResNet-50's one-head
  //    256->64 at 56² and 512->128 at 28² 0.96 -> 0.73 and 0.86 -> 0.66 (the README's stop-34 paragraph has the
  //    rest); the models' time 0.95-0.99x.
  //  * none where the lines serve many output blocks from L1: more outputs than inputs (256->1024, 512->2048,
  //    128->512 at 28²: the prefetches cost 4-12%), or heads of more than 4 kernel calls a pixel chunk (ResNet-50's
  //    2048->512 at 7², batch 1, 16 calls: 0.89-0.91x dense with 24, 12 or none).
  if (kind == KernelKind::Ocvec && rp.inPlace && rp.pixStride == 16 && isa == Isa::Avx512) {
    int64_t maxSel = 0;
    for (int64_t n = 0; n < g.N; n++)
      for (int64_t i = 0; i < G; i++) maxSel = std::max(maxSel, sel.count(n, i));
    const int64_t lines = std::min(maxSel, src.Cb) * job.maxPixels();
    job.inputPrefetch = lines * 64 > (48 << 10) ? 12 : g.T == 1 && g.C >= g.O && job.itemBlocks() <= 4 ? 24 : 0;
    if (const char* e = std::getenv("MSGC_GATHER_PREFETCH_INPUT")) job.inputPrefetch = std::atoi(e);  // (benchmarks)
  }
  // 1×1 convs whose samples share the threads (batches below 4 per thread): prefetch the weights 12 selected
  // channels ahead. Each head's weights serve one sample there, so they come cold from memory, in the scattered
  // runs of its selected channels, which the hardware prefetchers do not follow. (With whole samples per thread a
  // head's weights stay in L2 from one sample to the next, and the prefetches crowded the load ports.)
  if (kind == KernelKind::Ocvec && g.T == 1 && !wholeSamples) job.weightPrefetch = 12;
  if (const char* e = std::getenv("MSGC_GATHER_PREFETCH_WEIGHTS")) job.weightPrefetch = std::atoi(e);  // (benchmarks)
  if (rp.rows == Rows::Planes && !rp.inPlace && pixelMajor) {
    int64_t maxUnion = 1;
    for (int64_t n = 0; n < g.N; n++) maxUnion = std::max(maxUnion, sel.unionSize(n));
    job.tiled = true;  // tiles of about 128 KB of copied planes
    job.tileChunks = std::max<int64_t>(1, (32768 / maxUnion) / std::max<int64_t>(1, g.OHW / chunks));
  }

  if (wholeSamples) {
    // whole samples per thread (their copies stay in the thread's cache; measured faster than sharing samples
    // even when a sample's weights outweigh its rows), items pixel-chunk-major or head-major within the sample
    size_t maxRows = 0, maxFold = 0;
    for (int64_t n = 0; n < g.N; n++) {
      maxRows = std::max(maxRows, rowsFloats(n));
      maxFold = std::max(maxFold, foldFloats(n));
    }
    struct PerThread {
      Buffer rows, fold;
      std::vector<HeadOperands> src0, h;
      std::vector<int64_t> runs;
    };
    // Head-major (a sample's weights outweigh its rows, e.g. 7² maps): a thread takes S samples at a time and
    // runs the items (head, output block, sample, chunk), so each block of weights comes from memory once per S
    // samples and serves the others from cache. S: as many samples' rows as fit ~384 KB next to the weight block
    // in a 1-2 MB L2, at most 4, keeping >= 2 groups per thread. Results do not depend on S.
    int64_t S = 1;
    if (!pixelMajor && !job.tiled && !std::getenv("MSGC_GATHER_NOGROUP")) {
      const size_t rowBytes = std::max<size_t>(1, maxRows * sizeof(float));
      S = std::max<int64_t>(1, std::min<int64_t>({4, (int64_t)((384 << 10) / rowBytes), g.N / (2 * threads)}));
    }
    std::vector<PerThread> pt(threads);
    for (auto& t : pt) {
      t.rows.get(maxRows * S);
      t.fold.get(maxFold * S);
      t.src0.resize(G * S);
      t.h.resize(G * S);
    }
    const int64_t items = G * blocks * chunks, groups = (g.N + S - 1) / S;
    auto group = [&](int64_t gi) {
      PerThread& t = pt[omp_get_thread_num()];
      const int64_t n0 = gi * S, gn = std::min(S, g.N - n0);
      float* fold = t.fold.st->data;
      for (int64_t m = 0; m < gn; m++) {
        const int64_t n = n0 + m;
        float* buf = t.rows.st->data + m * maxRows;
        if (out) job.fillOut(n);
        if (!rp.inPlace) {
          blockRuns(job.readUnion(n), sel.unionSize(n), src.block, t.runs);
          if (!job.tiled)
            for (size_t r = 0; r + 1 < t.runs.size(); r++) job.fillUnion(n, t.runs[r], t.runs[r + 1], buf);
        }
        for (int64_t i = 0; i < G; i++) {
          if (sel.count(n, i) == 0) {
            if (!out) job.emptyHead(n, i);
            continue;
          }
          job.operands(n, i, buf, t.src0[m * G + i], t.h[m * G + i], fold);
          job.foldPart(n, i, t.src0[m * G + i], fold, 0, 1);
          fold += job.foldFloats(n, i);
        }
      }
      if (gn == 1) {
        const int64_t n = n0;
        float* buf = t.rows.st->data;
        for (int64_t a = 0; a < items; a++) {
          const int64_t k = pixelMajor ? a / (G * blocks) : a % chunks;
          const int64_t i = pixelMajor ? a / blocks % G : a / (blocks * chunks);
          const int64_t ob = pixelMajor ? a % blocks : a / chunks % blocks;
          if (job.tiled && a % (G * blocks * job.tileChunks) == 0) job.fillTile(n, k / job.tileChunks, t.runs, buf);
          if (job.active(n, i, ob)) job.compute(n, i, ob, k, t.h[i]);
        }
      } else {
        for (int64_t i = 0; i < G; i++)
          for (int64_t ob = 0; ob < blocks; ob++)
            for (int64_t m = 0; m < gn; m++)
              for (int64_t k = 0; k < chunks; k++)
                if (job.active(n0 + m, i, ob)) job.compute(n0 + m, i, ob, k, t.h[m * G + i]);
      }
      if (yBlocked)  // (the group's planes are still in this thread's cache)
        for (int64_t m = 0; m < gn; m++)
          for (int64_t cb = 0; cb < g.O / 16; cb++) toBlocked(n0 + m, cb);
    };
    // (one thread: no OpenMP region at all, whose end alone costs a futex system call; see msgc/parallel.h)
    if (threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int64_t gi = 0; gi < groups; gi++) group(gi);
    } else {
      for (int64_t gi = 0; gi < groups; gi++) group(gi);
    }
    finish();
    return;
  }

  // Groups of samples shared by all threads: copies and folds, one barrier, then the items in contiguous guided
  // runs. Pixel-chunk-major: one sample per group (its rows stay in cache). Head-major: as many samples as fit
  // kGroupFloats of rows and folds, with the items ordered (head, output block, sample, chunk), so that each
  // block of weights is read from memory once per group rather than once per sample.
  constexpr size_t kGroupFloats = size_t(16) << 20;
  Buffer rowsBuf, foldBuf;
  // Kept from call to call by the calling thread, capacity and all (a batch-1 call allocated and freed them, and its
  // heads' operand tables, every time). Named through references, so that the team's threads, which read them in
  // the region below, see this thread's instances and not their own.
  struct Shared {
    std::vector<HeadOperands> src0, h;
    std::vector<size_t> roff, foff;
    std::vector<std::pair<int64_t, int64_t>> fills;  // (sample, start of a run in its union)
    std::vector<int64_t> runs;
  };
  static thread_local Shared shared;
  auto& src0 = shared.src0;
  auto& h = shared.h;
  auto& roff = shared.roff;
  auto& foff = shared.foff;
  auto& fills = shared.fills;
  auto& runs = shared.runs;
  const int64_t parts = std::max<int64_t>(1, (2 * threads + G - 1) / G);
  for (int64_t n0 = 0; n0 < g.N;) {
    int64_t n1 = n0 + 1;
    size_t total = rowsFloats(n0) + foldFloats(n0);
    while (!pixelMajor && n1 < g.N && total + rowsFloats(n1) + foldFloats(n1) <= kGroupFloats) {
      total += rowsFloats(n1) + foldFloats(n1);
      n1++;
    }
    const int64_t gn = n1 - n0;
    roff.assign(gn + 1, 0);
    foff.assign(gn * G + 1, 0);
    for (int64_t m = 0; m < gn; m++) {
      roff[m + 1] = roff[m] + rowsFloats(n0 + m);
      for (int64_t i = 0; i < G; i++) foff[m * G + i + 1] = foff[m * G + i] + job.foldFloats(n0 + m, i);
    }
    float* buf = rowsBuf.get(roff[gn]);
    float* fbuf = foldBuf.get(foff[gn * G]);
    src0.resize(gn * G);
    h.resize(gn * G);
    fills.clear();
    bool rowFolds = false;
    for (int64_t m = 0; m < gn; m++) {
      const int64_t n = n0 + m;
      for (int64_t i = 0; i < G; i++) {
        job.operands(n, i, buf + roff[m], src0[m * G + i], h[m * G + i], fbuf + foff[m * G + i]);
        rowFolds = rowFolds || job.fold(n, i) == Fold::Rows;
      }
      if (!rp.inPlace) {
        blockRuns(job.readUnion(n), sel.unionSize(n), src.block, runs);  // tiled: gn == 1, runs kept for the tiles
        if (!job.tiled)
          for (size_t r = 0; r + 1 < runs.size(); r++) fills.push_back({m, (int64_t)r});
      }
    }
    // runs of every sample: recompute per task (cheap) rather than store them all
    const int64_t nf = (int64_t)fills.size(), folds = gn * G * parts, items = gn * G * blocks * chunks;
    // whether the copies / folds / empty heads' zeros loop has anything to do: binary gates on rows read in place
    // (1×1 convs at batch 1) have none, and the loop's barrier then only cost time: batch 1, 2 threads, density 0.5,
    // alternating calls, 384->64 at 14² 41.0 -> 39.2 µs, 576->96 72.0 -> 69.8, 960->160 at 7² 52.8 -> 51.1
    // (MSGC_GATHER_PREP=1 runs it anyway: benchmarks)
    bool prep = nf > 0 || rowFolds;
    for (int64_t mi = 0; mi < gn * G && !prep; mi++) {
      const int64_t n = n0 + mi / G, i = mi % G;
      prep = (sel.count(n, i) == 0 && !out) || job.fold(n, i) != Fold::None;
    }
    if (const char* e = std::getenv("MSGC_GATHER_PREP")) prep = prep || e[0] == '1';
    // (the worksharing loops below bind to the team when there is one, else run on this thread alone)
    auto region = [&]() {
      static thread_local std::vector<int64_t> myRuns;
      if (out) {
#pragma omp for schedule(static)
        for (int64_t m = 0; m < gn; m++) job.fillOut(n0 + m);
      }
      // copies, weight folds and the zeros of empty heads; row folds wait for the copies (skipped by every thread
      // alike when there is none: even an empty worksharing loop ends in a barrier)
      if (prep)
#pragma omp for schedule(dynamic, 1)
      for (int64_t a = 0; a < nf + folds; a++) {
        if (a < nf) {
          const int64_t m = fills[a].first, r = fills[a].second, n = n0 + m;
          blockRuns(job.readUnion(n), sel.unionSize(n), src.block, myRuns);
          job.fillUnion(n, myRuns[r], myRuns[r + 1], buf + roff[m]);
          continue;
        }
        const int64_t f = a - nf, mi = f / parts, part = f % parts, n = n0 + mi / G, i = mi % G;
        if (sel.count(n, i) == 0) {
          if (part == 0 && !out) job.emptyHead(n, i);
        } else if (job.fold(n, i) == Fold::Weights) {
          job.foldPart(n, i, src0[mi], fbuf + foff[mi], part, parts);
        }
      }
      if (rowFolds) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t f = 0; f < folds; f++) {
          const int64_t mi = f / parts, part = f % parts, n = n0 + mi / G, i = mi % G;
          if (job.fold(n, i) == Fold::Rows) job.foldPart(n, i, src0[mi], fbuf + foff[mi], part, parts);
        }
      }
      if (job.tiled) {
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t tile = 0; tile < job.tileCount(); tile++) {
          job.fillTile(n0, tile, runs, buf);
          for (int64_t k = tile * job.tileChunks; k < std::min(chunks, (tile + 1) * job.tileChunks); k++)
            for (int64_t i = 0; i < G; i++)
              for (int64_t ob = 0; ob < blocks; ob++)
                if (job.active(n0, i, ob)) job.compute(n0, i, ob, k, h[i]);
        }
      } else {
#pragma omp for schedule(guided) nowait
      for (int64_t a = 0; a < items; a++) {
        int64_t m, i, ob, k;
        if (pixelMajor) {  // gn == 1
          m = 0;
          k = a / (G * blocks);
          i = a / blocks % G;
          ob = a % blocks;
        } else {
          i = a / (blocks * gn * chunks);
          ob = a / (gn * chunks) % blocks;
          m = a / chunks % gn;
          k = a % chunks;
        }
        if (job.active(n0 + m, i, ob)) job.compute(n0 + m, i, ob, k, h[m * G + i]);
      }
      }
      if (yBlocked) {
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t mb = 0; mb < gn * (g.O / 16); mb++) toBlocked(n0 + mb / (g.O / 16), mb % (g.O / 16));
      }
    };
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
      region();
    } else {
      region();
    }
    n0 = n1;
  }
  finish();
}

}  // namespace gather
}  // namespace msgc
