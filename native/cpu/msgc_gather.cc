// msgc_gather.cc: the MSGC convolution, gathered execution (forward only, for inference). For sample n and
// head i only the channels S = {c : scale[n, i, c] != 0} take part:
//   y[n, group i] = W_i[:, S] ⋆ (scale[n, i, S] ⊙ x[n, S])
// so the multiply-adds shrink with the gate density, unlike the masked path (msgc_conv.cc), which multiplies by
// zeros. Results equal the masked path's up to float rounding.
//
// Design (x86-64 with AVX-512):
//  * Input rows. The kernels read "rows of pixels", channel j's tap t at chan[j] + tapOffset[t]:
//      Planes  1×1 stride-1 unpadded convs read x itself (plain NCHW, or nChw16c with a pixel stride of 16), or
//              for the pixvec kernel a plain copy of nChw16c made tile by tile (so it is still in cache);
//      Direct  other convs with horizontal stride 1 or 2 (pixvec: 1): per sample, a zero-padded copy of each channel
//              that some head selects (the union of the heads' selections; channels no head needs are never read);
//              ocvec's 3×3 convs of stride 1 or 2 on nChw16c read x in place instead (pixels 16 or 32 apart, one
//              output row per pixel chunk; chunks at the borders skip the taps over the padding rows and columns);
//      Im2col  the rest (pixvec with stride 2, other strides): one row of OH·OW pixels per (channel, tap).
//    Copies from nChw16c transpose a row of 16 channels in registers, straight into the channels' rows.
//  * Kernel "ocvec": 16 output channels in a zmm register × R output rows × Q pixels (R·Q <= 28 accumulators);
//    per (channel, tap) one weight vector load and R·Q broadcast-FMAs, the inner loop of a direct convolution,
//    over the selected channels only, prefetching the weights a few channels ahead (they come in scattered runs
//    and are cold in a network). With a head width O/G that is a multiple of 16 it writes oneDNN's nChw16c
//    layout, which the masked path and the following batch norm use (a head's channels are one contiguous chunk
//    there); with O/G = 24 or 40 (MobileNetV2) its last block is partly empty, and it writes nChw16c from inside
//    its blocks with lane masks when O is a multiple of 16 (Job::shifted), plain NCHW otherwise.
//  * Kernel "pixvec" (narrow heads, O/G = 4, 6, 8: MobileNetV2's first projections, ResNet-20/56's 3×3 heads of 8,
//    and of 4 when their union is wide): 16 consecutive output pixels per register × up to 8 output channels,
//    writing plain NCHW rows; with AVX-512, a blocked x and whole 16-channel blocks of outputs, those rows are a
//    scratch that each sample's blocks are transposed from into nChw16c, the BN epilogue applied there.
//  * Kernel "narrow" (msgc_gather_narrow.cc): 1×1 convs with heads of 1-8 outputs on nChw16c, each head over its own
//    selected channels: per tile of pixels the input transposed into plain rows in L1 once for all heads, vectors of
//    16 pixels × the head's outputs, the output transposed back into nChw16c with the epilogue. Where it applies it
//    replaces pixvec and the union of narrow heads below (which compute 94% of the dense multiply-adds at 4 heads
//    and density 0.5).
//  * Scales. Binary gates (every selected scale is 1) need no copy: the kernels read a cached, reordered weight
//    through per-channel pointers. Real scales (attention) are folded into a packed copy of the head's selected
//    weights, or into a scaled copy of its input rows when that is smaller (7² maps with wide heads).
//  * Order and threads. Calls of fewer than 1.5 M gathered multiply-adds run on one thread (the team's start and
//    barrier cost more than the split saves). Work items are (head, 16 outputs, pixel chunk); when the weights a
//    sample's heads read are smaller than its input rows, items run pixel-chunk-major so a chunk of input serves
//    every head from cache, otherwise head-major so a head's weights do. With batch >= 4 × threads each thread
//    takes whole samples (dynamic schedule, as |S| varies); otherwise all threads share a group of samples
//    (copies and folds, one barrier, then the items in contiguous guided runs).
//  * Padding: for 3×3 stride-1 convs the blocks at a row's ends skip the taps over the padding columns; the taps
//    over the padding rows are computed on padded copies (a direct convolution skips them: 9.5% of a 7² map's 3×3
//    taps), skipped when x is read in place.
//  * Epilogue (msgcConv2dBnAct): the eval BatchNorm after the conv, a residual and ReLU/ReLU6 are applied to each
//    block of outputs right after its kernel call, while it is in L1 (Job::postBlocked / postPlain), with the
//    block's per-channel sums for the output's global average pool (the next block's gate context); the separate
//    BN pass over the output disappears (ResNet-18 / ResNet-50 at batch 1: about 4% of the MSGC model's time).
// Elsewhere (no AVX-512, or not x86-64) the portable path (msgc_gather_portable.cc) packs an im2col of S per
// (sample, head) and calls oneDNN's sgemm.
// For tests and benchmarks: MSGC_GATHER_KERNEL=auto|direct|im2col|ocvec|pixvec|sgemm|pattern|narrow forces a variant,
// MSGC_GATHER_FOLD=weights forces weight packing, MSGC_GATHER_SHARED=1 forces threads to share samples,
// MSGC_GATHER_NB=n caps the output blocks per ocvec call, MSGC_GATHER_PREFETCH_INPUT=d sets the 1×1 input prefetch,
// MSGC_GATHER_DIRECT=copy keeps the padded copies where 3×3 convs would read x in place, MSGC_GATHER_TRIPLE=0 keeps
// the AVX2 kernels to 16 outputs per call (Job::triple), MSGC_GATHER_KC=k sets the AVX2 1×1 channel groups
// (Job::kBlock; 0: none), MSGC_GATHER_Q7=0 keeps rows of 7 pixels in blocks of 4 + 3 (Job::q7),
// MSGC_GATHER_ALLBLOCKS=1|0 forces AVX2 1×1 items of all of a head's blocks or of one (Job::allBlocks),
// MSGC_GATHER_SERIAL_MACS=m runs calls of fewer than m gathered multiply-adds on one thread (default 1.5 M; 0: never),
// MSGC_GATHER_PIXBLOCK=0 leaves pixvec's output plain NCHW, MSGC_GATHER_NARROW=0 keeps auto off the narrow kernel.
#include <cmath>

#include "msgc_gather.h"
#include "msgc_gather_job.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
using namespace cpu;
using namespace gather;

namespace gather {
void foldBatchNorm(const FusedBnAct& bn, int64_t O, float* a, float* b) {
  const float* mean = plainData(*bn.runningMean);
  const float* var = plainData(*bn.runningVar);
  const float* gm = bn.weight ? plainData(*bn.weight) : nullptr;
  const float* be = bn.bias ? plainData(*bn.bias) : nullptr;
  for (int64_t o = 0; o < O; o++) {
    a[o] = (gm ? gm[o] : 1.f) / std::sqrt(var[o] + bn.eps);
    b[o] = (be ? be[o] : 0.f) - mean[o] * a[o];
  }
}

const float* foldedBatchNorm(const FusedBnAct& bn, int64_t O) {
  // cached on the running mean's storage, tagged with the storages and versions of the variance, γ and β and with
  // eps (its bits), so that a write to any of them rebuilds it (a rebuild per call, a scalar square root and
  // division per channel, was ~1.5 µs of MobileNetV2's 960->320 projection at batch 1)
  Key tagKey;
  for (const Tensor* p : {bn.runningVar, bn.weight, bn.bias}) addVersionTag(tagKey, p);
  tagKey.add(bn.eps);
  const std::string& tag = tagKey.str();
  auto& cache = bn.runningMean->storage->derived;
  const uint64_t version = bn.runningMean->storage->version;
  auto it = cache.find("gather:bnfold");
  if (it != cache.end() && it->second.version == version && it->second.tag == tag &&
      it->second.copy->bytes == (size_t)(2 * O) * sizeof(float))
    return it->second.copy->data;
  auto st = std::make_shared<Storage>((size_t)(2 * O) * sizeof(float), Device::CPU);
  foldBatchNorm(bn, O, st->data, st->data + O);
  cache["gather:bnfold"] = Storage::Derived{version, st, tag};
  return st->data;
}
}  // namespace gather

const char* gatheredKernelIsa() {
  switch (gatherIsa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "portable";
  }
}

TensorPtr msgcConvForwardGathered(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                                  const Tensor* outMask, const FusedBnAct* bn, TensorPtr* means,
                                  const Compaction* compact) {
  Geometry g;
  g.N = x.shape[0], g.C = x.shape[1], g.H = x.shape[2], g.W = x.shape[3];
  g.O = weight.shape[0], g.KH = weight.shape[2], g.KW = weight.shape[3], g.T = g.KH * g.KW;
  g.G = p.heads, g.Og = g.O / g.G;
  g.SH = p.strideH, g.SW = p.strideW, g.PH = p.padH, g.PW = p.padW;
  g.OH = (g.H + 2 * g.PH - g.KH) / g.SH + 1;
  g.OW = (g.W + 2 * g.PW - g.KW) / g.SW + 1;
  g.OHW = g.OH * g.OW;

  const Shape ys{g.N, g.O, g.OH, g.OW};
  // the fused eval BatchNorm (+ residual, activation, pooled means) for an output in layout block yb
  auto fusedPost = [&](int64_t yb, Post& post, dnnl::memory& rmem, TensorPtr& pooled) {
    const float* ab = foldedBatchNorm(*bn, g.O);
    post.a = ab;
    post.b = ab + g.O;
    post.clamp = bn->act >= 0;
    post.lo = 0.f;
    post.hi = bn->act == (int)Activation::ReLU6 ? 6.f : INFINITY;
    if (bn->residual) {
      rmem = asLayout(*bn->residual, blockedDesc(ys, yb));
      post.residual = static_cast<const float*>(rmem.get_data_handle());
    }
    if (means) pooled = emptyTensor({g.N, g.O, 1, 1});
  };
  // a kernel run(post or null, pooled means or null, y) writing nChw16c, with the fused epilogue when bn is given
  auto blocked16 = [&](auto&& run) {
    TensorPtr y = tensorWithDesc(ys, blockedDesc(ys, 16));
    Post post;
    dnnl::memory rmem;
    TensorPtr pooled;
    if (bn) fusedPost(16, post, rmem, pooled);
    run(bn ? &post : nullptr, pooled ? pooled->data() : nullptr, y->data());
    if (means) *means = pooled;
    return y;
  };
  const float* s = plainData(scale);
  static thread_local Selection selStore;
  select(g, s, selStore);
  const char* kernelEnv = std::getenv("MSGC_GATHER_KERNEL");
  const std::string force = kernelEnv ? kernelEnv : "auto";
  // Narrow heads (1-8 outputs) of 1×1 convs on nChw16c, each over its own selected channels with vectors of pixels
  // (msgc_gather_narrow.cc): by auto wherever it applies, or forced by MSGC_GATHER_KERNEL=narrow (an error where
  // it cannot run); any other forced kernel keeps it off
  const int64_t xBlock = channelBlock(x);
  const bool narrowCan = !outMask && !compact && narrowApplies(g, xBlock);
  MSGC_CHECK(force != "narrow" || narrowCan, "msgcConv2d: MSGC_GATHER_KERNEL=narrow needs AVX-512, a 1×1 stride-1 ",
             "unpadded conv on a channel-blocked (nChw16c) input with channels in whole blocks of 16, heads of 1 to 8 ",
             "outputs, and no output mask or compaction");
  const char* narrowEnv = std::getenv("MSGC_GATHER_NARROW");
  if (narrowCan && (force == "narrow" || (force == "auto" && !(narrowEnv && narrowEnv[0] == '0')))) {
    const Source xs{x.data(), 16, g.C / 16};
    return blocked16([&](const Post* post, float* pooled, float* y) {
      runNarrow(g, selStore, s, xs, weightLayout(weight, g, false), post, pooled, y);
    });
  }
  const Isa isa = force == "sgemm" ? Isa::Portable : gatherIsa();
  // Narrow heads (fewer than 16 outputs, not a whole vector of them: ResNet-20/56's 16-channel stage, O/G = 4,
  // and AVX-512's 32-channel one, 8) run as one head of all O outputs over each sample's union of selected
  // channels, every channel's weight vector scaled lane by lane with the scale of the head its output belongs to
  // (zero where that head did not select the channel). The ocvec kernel then fills whole vectors and writes the
  // blocked layout, where the per-head pixvec kernel fills 4-8 lanes of 16 and writes plain NCHW; it computes the
  // union's multiply-adds rather than each head's own. With AVX-512, k×k convs unite only heads of fewer than 8
  // outputs, and only while the union is below 0.85 of the (sample, channel) pairs: heads of 8 (ResNet-20/56's
  // 32-channel stage) ran 8-30% faster apart at unions of 0.6-0.94, heads of 4 4-8% faster apart at 0.94 and slower
  // at 0.6-0.75 (the measurements are in lib/ops/msgc_rules.ts, narrowHeadsUnite, whose rule this is). MSGC_GATHER_UNION=0
  // keeps the heads apart, =1 unites them wherever they are narrow (tests, benchmarks).
  const char* unionEnv = std::getenv("MSGC_GATHER_UNION");
  const int64_t laneBlock = isa == Isa::Avx2 ? 8 : 16;
  bool unionHeads = isa != Isa::Portable && force != "pixvec" && g.G > 1 && g.Og < 16 && g.Og % laneBlock != 0 &&
                    g.O % laneBlock == 0 && !outMask && !(unionEnv && std::string(unionEnv) == "0");
  if (unionHeads && isa == Isa::Avx512 && g.T > 1 && !(unionEnv && std::string(unionEnv) == "1")) {
    const double unionShare = (double)selStore.ustart[g.N] / (double)std::max<int64_t>(1, g.N * g.C);
    unionHeads = g.Og < 8 && unionShare < 0.85;
  }
  static thread_local Selection unionStore;
  if (unionHeads) {
    // one head: its selection is each sample's union (selStore is not read again in this call: its union arrays
    // are swapped over, both thread_local stores keeping their storage, and only idx and start are copies)
    Selection& u = unionStore;
    u.G = 1;
    u.idx = selStore.uni;
    u.start = selStore.ustart;
    std::swap(u.uni, selStore.uni);
    std::swap(u.ustart, selStore.ustart);
    std::swap(u.upos, selStore.upos);
    u.unit.assign(g.N, 0);
  }
  const LaneScales laneScales{unionHeads ? s : nullptr, g.G, g.Og};
  if (unionHeads) g.G = 1, g.Og = g.O;
  const Selection& sel = unionHeads ? unionStore : selStore;
  OutSelection outSel;
  if (outMask) outSel = selectOutputs(g, plainData(*outMask), outMask->shape[1]);
  // a compacted x: each channel's slot (inputMask's union positions), and the slots of each sample's union
  const bool compactIn = compact && compact->inputMask;
  const bool compactOut = compact && compact->output;
  static thread_local Selection slotStore;
  std::vector<int32_t> unionSlots;
  if (compactIn) {
    MSGC_CHECK(isa != Isa::Portable, "msgcConv2d: a compacted input needs the AVX2 or AVX-512 gathered kernels (this CPU runs the portable ones)");
    Geometry gm = g;
    gm.G = compact->inputMask->shape[1];
    select(gm, plainData(*compact->inputMask), slotStore);
    unionSlots.resize(sel.uni.size());
    for (int64_t n = 0; n < g.N; n++)
      for (int64_t u = sel.ustart[n]; u < sel.ustart[n + 1]; u++) {
        const int32_t slot = slotStore.upos[n * g.C + sel.uni[u]];
        MSGC_CHECK(slot >= 0, "msgcConv2d: the scale selects channel ", sel.uni[u], " of sample ", n,
                   ", which no row of inputMask selects: a compacted input holds only inputMask's channels");
        unionSlots[u] = slot;
      }
  }

  Source src;
  src.block = channelBlock(x);
  if (src.block == 1 || src.block == 0) {
    src.block = 1;
    src.data = plainData(x);
  } else {
    src.data = x.data();
  }
  src.Cb = (g.C + src.block - 1) / src.block;

  const char* foldEnv = std::getenv("MSGC_GATHER_FOLD");
  const bool forcePack = foldEnv && std::string(foldEnv) == "weights";
  const bool pointwise = g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.PH == 0 && g.PW == 0;
  const bool simd = isa != Isa::Portable;
  // ocvec when a head's outputs fill its 16-lane blocks well enough (O/G = 24, 40: 75%, 83%; the lanes past a
  // head's last output compute zeros), else pixvec (O/G = 4, 6, 8 on large maps)
  // The AVX2 kernels also take heads of 16k + 8 outputs (ResNet-20/56's 32-channel stage: 8), whose last block is one
  // ymm half
  const int64_t lanes = (g.Og + 15) / 16 * 16, blockOf = isa == Isa::Avx2 ? 8 : 16;
  const bool ocvec = simd && force != "pixvec" &&
                     (g.Og % blockOf == 0 || force == "ocvec" || g.Og * 4 >= lanes * 3);
  // a blocked output: nChw16c, or nChw8c (oneDNN's layout on AVX2 CPUs) from the AVX2 kernels (Job::plainOut);
  // AVX-512 heads of 16k + 8 outputs write nChw16c too, from inside its blocks (Job::shifted)
  const char* shiftEnv = std::getenv("MSGC_GATHER_SHIFT");
  const bool shifted = ocvec && isa == Isa::Avx512 && g.Og % 16 != 0 && g.Og % 8 == 0 && g.O % 16 == 0 &&
                       !(shiftEnv && std::string(shiftEnv) == "0");
  // pixvec's plain rows of output pixels into nChw16c, when x comes blocked and O fills whole blocks: plain outputs
  // cost more in the ops that follow than the transposes do (ResNet-56's training step with its narrow heads on
  // pixvec: the forward convs 2.5 ms faster, oneDNN's BatchNorm on the plain outputs 3.7 ms slower).
  // MSGC_GATHER_PIXBLOCK=0 keeps them plain (tests, benchmarks).
  const char* pixBlockEnv = std::getenv("MSGC_GATHER_PIXBLOCK");
  const bool pixBlocked = simd && !ocvec && isa == Isa::Avx512 && src.block == 16 && g.O % 16 == 0 && !outMask &&
                          !compactIn && !compactOut && !(pixBlockEnv && pixBlockEnv[0] == '0');
  const int64_t yBlock = pixBlocked ? 16 : ocvec && (g.Og % blockOf == 0 || shifted) ? blockOf : 1;
  // 1×1 convs with heads of 16 outputs, whole samples per thread: each channel's broadcasts shared by the heads that
  // selected it (msgc_gather_pattern.cc, whose patternApplies has the rule). MSGC_GATHER_KERNEL=pattern forces it at any batch (an error where
  // it cannot run); any other forced kernel and MSGC_GATHER_PATTERN=0 keep it off (tests, benchmarks).
  const char* patternEnv = std::getenv("MSGC_GATHER_PATTERN");
  const bool patternCan = !outMask && !compactIn && !compactOut && !unionHeads && patternApplies(g, src.block, force == "pattern");
  MSGC_CHECK(force != "pattern" || patternCan, "msgcConv2d: MSGC_GATHER_KERNEL=pattern needs AVX-512, a 1×1 stride-1 ",
             "unpadded conv on a channel-blocked (nChw16c) input, channels and outputs in whole blocks of 16, heads of at ",
             "least 16 outputs, and no output mask or compaction");
  if (patternCan && (force == "pattern" || (force == "auto" && !(patternEnv && patternEnv[0] == '0')))) {
    return blocked16([&](const Post* post, float* pooled, float* y) {
      runPattern(g, s, src, weightLayout(weight, g, false), post, pooled, y);
    });
  }
  TensorPtr y = tensorWithDesc(ys, blockedDesc(ys, yBlock));
  Buffer pixRows;  // (pixBlocked: the kernels' plain output)
  const float* WL = weightLayout(weight, g, ocvec);
  // the BN epilogue as a separate pass over y (paths that do not fuse it)
  auto separateBn = [&](TensorPtr raw) {
    if (!bn) return raw;
    return batchNormActEval(*raw, *bn->runningMean, *bn->runningVar, bn->weight, bn->bias, bn->eps, bn->act,
                            bn->residual, means);
  };
  if (compactOut) {
    MSGC_CHECK(outMask && g.G == 1 && simd && ocvec && yBlock > 1 && (!bn || !(bn->residual || means)),
               "msgcConv2d: a compacted output needs one head, an outputMask, the AVX2 or AVX-512 gathered kernels, ",
               "whole blocks of outputs, and no residual or pooled means");
  }
  if (!simd) {
    runSgemm(g, sel, src, s, WL, y->data());
    if (outMask) zeroUnselected(g, outSel, 1, y->data());
    return separateBn(y);
  }
  Rows rows;
  if (pointwise && force != "im2col" && force != "direct") {
    rows = Rows::Planes;
  } else if (ocvec && (g.SW == 1 || g.SW == 2) && force != "im2col") {
    rows = Rows::Direct;
  } else if (!ocvec && g.SW == 1 && force != "im2col") {
    rows = Rows::Direct;  // pixvec: vectors of consecutive pixels within a padded row
  } else {
    rows = Rows::Im2col;  // pixvec with a horizontal stride needs a dense pixel grid
  }
  const bool selectInKernel = outMask && ocvec;
  // the BN fused into the kernels' output, except where outputs are zeroed afterwards, and with an output
  // selection, where only a plain BN + activation is (the unselected outputs get BN(0))
  const bool fuse = bn && !(outMask && !selectInKernel) && !(selectInKernel && (bn->residual || means));
  Post post;
  dnnl::memory rmem;
  TensorPtr pooled;
  if (fuse) fusedPost(yBlock, post, rmem, pooled);
  runSimd(isa, g, sel, src, s, WL, ocvec ? KernelKind::Ocvec : KernelKind::Pixvec, rows, forcePack,
          selectInKernel ? &outSel : nullptr, fuse ? &post : nullptr, pooled ? pooled->data() : nullptr,
          pixBlocked ? pixRows.get((size_t)(g.N * g.O * g.OHW)) : y->data(), laneScales,
          compactIn ? slotStore.upos.data() : nullptr, compactIn ? unionSlots.data() : nullptr, compactOut, shifted,
          pixBlocked ? y->data() : nullptr);
  if (outMask && !selectInKernel) zeroUnselected(g, outSel, yBlock, y->data());
  if (!fuse) return separateBn(y);
  if (means) *means = pooled;
  return y;
}

}  // namespace msgc
