// msgc_rules.ts: the measured rules behind F.msgcConv2d's 'auto' execution (lib/ops/msgc.ts): whether the gathered
// execution should run (preferGathered), skip the outputs an outputMask leaves out (preferOutputSkipping), and run
// narrow heads as one head over their union (narrowHeadsUnite).
import { gatheredKernels } from '../native';

/**
 * Whether the gathered execution should skip the outputs an outputMask leaves out ('auto'; an explicit 'gathered'
 * skips wherever heads have at least 32 outputs). Skipping packs each head's selected weights per sample (16
 * selected outputs to a block; about 50 multiply-adds' worth of time per packed float, where binary gates otherwise
 * read the cached weights in place), and gives up the samples' shared weights. The kernels compute 16 outputs at a
 * time, so a head of fewer than 32 outputs (headOutputs = O/G; one block either way) saves nothing: ResNet-50's 56²
 * 3×3 conv (64 outputs, 4 heads) took 1.2x the time of computing every output.
 * Measured 2026-12-05 (2 threads, AVX-512, one- and four-head convs at input density 0.5, skipping ÷ computing every
 * output; needed share 0.3 / 0.6 / 0.8): ResNet's 3×3 convs at batch 1: 56² 0.78 / 0.88-1.01 / 1.35-1.48, 28²
 * 0.74-1.11 / 1.16-1.74 / 1.29-1.95, 14² 0.84-1.01 / 1.35-1.40 / 1.73, 7² 1.62-1.67 / 2.2 / 3.1; at batch 32 56²-14²
 * 0.52-0.66 / 0.89-1.09 / 1.08-1.48, 7² 1.31 / 2.26 / 3.0; ResNet-50's 1×1 convs (256->64 at 56² ... 2048->512 at
 * 7²) at batch 1 0.94-1.98 / 1.38-3.23, at batch 32 0.57-0.86 (7²: 1.42) / 0.90-2.64. MobileNetV2's expansions
 * (one head of 96-960 outputs) lost at every share (bench/msgc_compact.js). Until then the rule skipped from a
 * tenth of the outputs up, which random independent gates (a four-head union leaves 6% out) never reached, and
 * trained-like ones (unions of 0.6) did: ResNet-18 at batch 1 ran its 56² conv1 1.6x slower. Hence: never on 7²
 * maps; 3×3 convs from a skipped share of 0.5 at batch > 2, of 0.65 at batch 1-2 on maps of 28² and more; 1×1
 * convs from 0.6 at batch > 2 only.
 * conv: the conv's kernel size (kh·kw; default 1), the batch (default 1) and the kind of gathered kernels (default:
 * this CPU's).
 */
export function preferOutputSkipping(skippedShare: number, outPixels: number, headOutputs = Infinity,
  conv: { kernel?: number; kernels?: 'avx512' | 'avx2' | 'portable'; batch?: number } = {}): boolean {
  // AVX2 kernels on wide 1×1 heads over maps larger than 14² (MobileNetV2's expansion convs, which skip through a
  // forced gathered one-head conv): the gathered conv took 6-14x the dense conv's time at 112² and 56², batch 1
  // (16 -> 96 outputs: 4.4 ms vs 0.32), so no skipped share pays for it (preferGathered's rule for the same shapes)
  const kernels = conv.kernels ?? gatheredKernels();
  const kernel = conv.kernel ?? 1, batch = conv.batch ?? 1;
  if (kernels === 'avx2' && kernel === 1 && headOutputs >= 64 && outPixels > 14 * 14) return false;
  if (headOutputs < 32 || outPixels <= 7 * 7) return false;
  if (kernel === 1) return batch > 2 && skippedShare >= 0.6;
  if (batch > 2) return skippedShare >= 0.5;
  return outPixels >= 28 * 28 && skippedShare >= 0.65;
}

/**
 * The rule 'auto' uses (when no gradient is needed): run 'gathered' when the measured density (the fraction of
 * scale entries ≠ 0, i.e. the share of the dense multiply-adds it does) is below a threshold, 'masked' otherwise.
 * Derived from bench/msgc_ops.js (ResNet-18/50 3×3 and MobileNetV2 1×1 MSGC layers, 2 threads, AVX-512): the
 * density below which gathered beat masked was ≥ 0.93 on every layer at batch 1; at batch 32 it was ≥ 1 on
 * 28² and larger maps, 0.75–1.1 on 14² maps and 0.63–0.88 on 7² maps, where the gathered kernels lose more to
 * the padding rows they compute, to reading each sample's own weights and to small register blocks. Hence:
 *   threshold = 0.95 for batch ≤ 2 or output maps larger than 14², 0.85 for maps up to 14², 0.75 up to 7².
 * Narrow heads (fewer than 16 output channels per head, e.g. ResNet-20's 16- and 32-channel stages) fill few
 * SIMD lanes of the ocvec kernel; the pixvec kernel (16 pixels per register) reads their padded rows directly.
 * Against the masked path (one full-width conv per sample) on 16 channels at 32² and 32 at 16², 4 heads: at batch 1
 * gathered was faster up to density 0.75-0.9 (32 vs 33 µs at 0.5, 35 vs 34 at 0.75); at batch 32-128, after the
 * multi-row pixvec blocks, up to 0.6 for 16 channels (batch 128: 1.70 vs 1.74 ms at 0.5, 1.85 vs 1.80 at 0.6) and
 * 0.6-0.8 for 32 (1.34 vs 1.88 ms at 0.5; with 8 heads of 4 outputs 0.49 vs 0.46 at 0.6, batch 32): threshold 0.7
 * at batch ≤ 2, 0.6 above. In training (recording: a gradient will be taken) 0.45: the narrow heads' plain NCHW
 * output slows the following BatchNorm and backward, and ResNet-20's training step at batch 32 ran 0.70x dense with
 * 0.6 against 0.74-0.77x with 0.45 or masked only.
 * `kernels` (backendInfo().gatheredKernels): on CPUs with neither AVX-512 nor AVX2 the gathered path runs oneDNN's
 * sgemm on packed copies, about as fast as dense at density 0.5, so 'auto' takes it only below 0.3; the AVX2
 * kernels (two ymm halves per 16 outputs, 6 pixels per register block) follow the AVX-512 rule except on 1×1 convs
 * at batch > 2 and on heads of at most 4 outputs (below). `blocked`: x is in the channel-blocked layout (with AVX-512,
 * 1×1 convs with heads of at most 8 outputs then have a kernel of their own at batch 1-2: see below).
 */
export function preferGathered(density: number, s: { outPixels: number; batch: number; headChannels?: number; kernel?: number; channels?: number; recording?: boolean; kernels?: 'avx512' | 'avx2' | 'portable'; union?: boolean; unionDensity?: number; blocked?: boolean }): boolean {
  // the portable gathered path (sgemm on packed copies) is about as fast as dense at density 0.5
  if (s.kernels === 'portable') return density < 0.3;
  // Narrow heads run as one head over the heads' union (narrowHeadsUnite), so in eval the gathered work follows the
  // union's density, the share of (sample, channel) pairs some head selects. With the BN, residual and ReLU fused,
  // random independent heads, 2 threads, Zen 5 (÷ dense conv + BN): AVX-512, 16 channels at 28², batch 256:
  // union 0.58 / 0.75 / 0.86 gathered 0.70 / 0.51 / 0.56, masked 0.88 / 0.55 / 0.56 (two runs); 32 channels at 14²:
  // union 0.59 / 0.76 / 0.87 / 0.94 gathered 0.75 / 0.92 / 1.05 / 1.11, masked 0.97 / 0.99 / 1.03 / 1.00; at batch 1
  // gathered won at every density (16 channels at 32², union 1.0: 0.73 against 0.87). AVX2 kernels (16 channels,
  // heads of 4): batch 32 union 0.34 / 0.76 gathered 0.57 / 1.05, masked 0.68 / 0.72; batch 1 union 1.0 0.87 both.
  // Training forward (recording; then the masked backward) alike, AVX-512, batch 64, heads correlated to vary the
  // union at a given density (÷ dense conv, no BN; 16 channels at 28², 32 at 14², 16 at 32², 32 at 16²): union 0.3
  // gathered 0.71 / 0.45 / 0.41 / 0.42, masked 1.28 / 1.14 / 0.93 / 1.12; union 0.6 (density 0.48) 0.86 / 0.84 /
  // 0.64 / 0.88 against 1.19 / 1.18 / 0.92 / 1.16; union 0.8 1.06 / 0.95 / 0.78 / 1.03 against 1.18 / 1.05 / 0.91 /
  // 1.14; union 0.93 1.12 / 1.19 / 0.90 / 1.18 against 1.04 / 1.14 / 0.91 / 1.14. (Until 2026-12-04 training used
  // the head density below, < 0.45: heads at 0.48 with a union of 0.6, as trained gates give, ran masked.)
  // 1×1 convs keep the rules below: MobileNetV2's projections with heads of 4 and 8 at batch 1 (32->16 at 112²,
  // 192->32 at 28², density 0.5) ran 1.1-1.3x slower over the union than masked.
  if (s.union && s.unionDensity !== undefined && (s.kernel ?? 9) > 1) {
    if (s.batch <= 2 && !s.recording) return true;
    return s.unionDensity < (s.kernels === 'avx2' ? 0.45 : 0.85);
  }
  // (AVX2 kernels on wide 1×1 heads over maps larger than 14², ResNet-50's companion-gated 1×1 convs at 28² and
  // 56², went to the masked path until 2026-12-03, when gathered took 1.5-3.7x the dense time. With the kernels
  // reading nChw8c in place they win at batch 1-2: 128->512 at 28², one head, density 0.5: 442 µs vs masked 717
  // (dense 544), 64->256 at 56² 539 vs 737 (550), 256->64 at 56² 467 vs 613, 512->128 at 28² 463 vs 649; at
  // batch 1 the masked path reorders W ⊙ scale for oneDNN on every call. ResNet-50 at batch 1: 53.8 -> 47.7 ms.)
  // AVX2 kernels on heads of at most 4 outputs (ResNet-20/56's 16-channel stage with G = 4): inside ResNet-20 at
  // density 0.5 the gathered conv (+ BN, residual, ReLU) took 1.7x the dense conv's time at batch 32 and 2.1x at
  // batch 1, the masked path 1.3x / 1.6x (per-layer times interleaved in one process, per-sample gates)
  if (s.kernels === 'avx2' && (s.kernel ?? 9) > 1 && (s.headChannels ?? 16) <= 4) return density < 0.3;
  // AVX2 kernels on 1×1 convs at batch > 2: the masked path (per-sample oneDNN convs with W ⊙ scale, BN fused per
  // sample) unless the density is below 0.25, or below 0.6 on wide heads (>= 64 outputs) and, in eval, 7² maps.
  // Until 2026-12-03 the masked path beat gathered on every shape (the kernel re-read each 16-output block's inputs
  // from L2, at 1/5 of oneDNN's rate per thread): MobileNetV2's projections 576->96 at 14² 6.9 vs 11.3 ms, 192->32
  // at 28² 4.6 vs 8.4, ResNet-50's one-head 1024->256 at 14² 28 vs 62 (density 0.5, batch 32, eval with BN; 2
  // threads, Zen 3). With channel groups over all of a head's blocks (Job::allBlocks, kBlock) at density 0.5,
  // gathered vs masked: 1024->256 22.7 vs 27.9 ms, 2048->512 at 7² 21.5 vs 31.2, 256->1024 at 14² 13.9 vs 21.7,
  // 128->512 at 28² 13.5 vs 20.0, 256->128 at 56² 38 vs 47, MobileNetV2's 960->160 at 7² 3.4 vs 4.1 and
  // 960->320 5.3 vs 7.3; 576->96 at 14² (heads of 24) and 192->32 at 28² (heads of 8) still lose (5.1 vs 4.7,
  // 3.6 vs 2.3). At density 0.7 the two paths tie. ResNet-50 at batch 32, eval: 1443 -> 1323 ms (interleaved).
  // In training (recording: the gathered forward, then the masked backward) ResNet-50's step at batch 32 went from
  // 5830 to 5543 ms with its wide heads gathered; MobileNetV2's with its 7² projections gathered as well measured
  // no faster (885 vs 905 ms), so they stay masked there.
  if (s.kernels === 'avx2' && s.kernel === 1 && s.batch > 2) {
    if ((s.outPixels <= 7 * 7 && !s.recording) || (s.headChannels ?? 0) >= 64) return density < 0.6;
    return density < 0.25;
  }
  // AVX-512, 1×1 convs with heads of 1-8 outputs on a channel-blocked x (`blocked`) at batch 1-2: the narrow-head
  // kernel (msgc_gather_narrow.cc: each head over its own channels, vectors of pixels, the input transposed in L1),
  // where the masked path computes every multiply-add and the heads' union most of them. MobileNetV2's projections
  // at batch 1, BN + ReLU6 + pooled means fused, 2 threads, Zen 5, gathered ÷ masked at density 0.3 / 0.5 / 0.7 /
  // 0.9, alone: 96->24 at 56² 0.68 / 0.73 / 0.81 / 0.93, 144->24 0.67 / 0.76 / 0.86 / 0.94, 144->32 at 28² 0.71 /
  // 0.84 / 0.89 / 0.92, 192->32 0.68 / 0.78 / 0.87 / 0.96; inside the network at 0.5 about 0.9 (their input comes
  // cold from the depthwise conv). With 32 inputs (32->16 at 112²) the transposes outweigh the multiply-adds: 0.88 at
  // 0.5 alone, 1.5 inside the network, so from 64 inputs. At batch 32 it ties with the masked path's per-sample
  // convs (0.91-1.02x), which stay there.
  if (s.kernels === 'avx512' && s.kernel === 1 && s.batch <= 2 && (s.headChannels ?? 16) <= 8 && s.blocked &&
    (s.channels ?? 0) % 16 === 0 && (s.channels ?? 0) >= 64) {
    return density < 0.85;
  }
  let threshold = 0.95;
  if (s.kernel === 1 && (s.headChannels ?? 0) >= 64) {
    // wide 1×1 heads (ResNet-50's companion-gated 1×1 convs, one head of 64-2048 outputs) are compute-bound:
    // gathered took 0.46-0.66x dense time at density 0.5 on batch 1 and 0.53-0.93x at batch 32
    threshold = s.batch <= 2 ? 0.95 : s.outPixels >= 56 * 56 ? 0.7 : 0.85;
  } else if (s.kernel === 1) {
    // 1×1 (MobileNetV2's projections): the gathered kernel still reads most input rows (the heads' union) and is
    // memory-bound on these shapes: at density 0.5 it took 0.76-0.9x dense time only with >= 192 input channels
    // on maps <= 14² at batch 1. At batch 32 (after the inference fixes that made dense MobileNetV2 2x faster) the
    // masked path (one conv per sample with W ⊙ scale) took 1.2-1.25x dense time on 14² maps and 1.3-1.9x on 7²,
    // gathered 0.68-1.04x on 14² at density 0.5 (0.95-1.3x at 0.75-0.9) and 0.85-1.4x on 7² at any density: so
    // on 7² maps gathered always beats masked, on 14² up to density ~0.7; on 28² and larger masked runs at
    // 1.0-1.07x and gathered at 1.14-2.1x (density 0.5).
    // AVX-512 at batch 1-2, 14² and 7² maps from 384 inputs: gathered at any density (below all-ones, which runs
    // dense). The masked path's single conv with W ⊙ scale costs the same at every density (the weight copy is
    // reordered for oneDNN on every call: 960->160 at 7² ~290 µs against ~70 for the dense conv), the gathered
    // one grows slowly with it. Inside MobileNetV2 at batch 1 (2026-12-06), both paths on the same arguments,
    // alternating per layer, µs masked / gathered at density 0.65 / 0.8 / 0.9: 576->96 at 14² 177 / 106, 174 / 115,
    // 163 / 113; 384->64 101 / 59, 99 / 65, 93 / 62; 960->160 at 7² 294 / 87, 293 / 91, 272 / 91; the model's
    // forward at density 0.75 (old rule / new, in-process A/B) 5.59 / 4.79 ms. (192->64 at 14² varied, 0.65: 70 /
    // 100, 0.8: 68 / 48, and keeps the rule below; at 28² the per-layer gain at density 0.5, 69 / 56 µs, did not
    // show in the model's forward, 1.21 / 1.24 ms for its projections, so 28² stays masked.)
    const wide = s.kernels === 'avx512' && s.batch <= 2 ? (s.channels ?? 0) : 0;
    if (wide >= 384 && s.outPixels <= 14 * 14) threshold = 1.01;
    else if (s.batch <= 2) threshold = (s.channels ?? 0) >= 192 && s.outPixels < 28 * 28 ? 0.6 : 0.2;
    else threshold = s.outPixels <= 7 * 7 ? 1.01 : s.outPixels <= 14 * 14 ? 0.7 : 0.15;
  } else if (s.headChannels !== undefined && s.headChannels < 16) {
    // (AVX-512: narrow heads of k×k convs that narrowHeadsUnite keeps apart, on the pixvec kernel. Training forward,
    // batch 32, heads of 4 (16 channels at 32²) / 8 (32 at 16²), ms apart against masked: density 0.5 0.47 / 0.52,
    // 0.39 / 0.51; 0.7 0.56 / 0.56, 0.47 / 0.53; 0.85 0.62 / 0.59, 0.54 / 0.57)
    threshold = s.kernels === 'avx512' ? 0.7 : s.batch <= 2 ? 0.7 : s.recording ? 0.45 : 0.6;
  }
  else if (s.batch > 2 && s.outPixels <= 14 * 14) threshold = s.outPixels <= 7 * 7 ? 0.75 : 0.85;
  return density < threshold;
}

/** narrowHeadsUnite: k×k heads of fewer than 8 outputs (AVX-512) run united below this union share (native: the same) */
const NARROW_UNION_MAX = 0.85;

/**
 * Whether the gathered execution runs a conv's heads as one head over their union (native msgcConvForwardGathered):
 * heads of fewer than 16 outputs that are not a whole SIMD vector of them (AVX-512: 16 lanes; AVX2: 8), when all
 * O outputs fill whole vectors (O = 16, 32, ...: ResNet-20/56's 16-channel stage, heads of 4; with AVX-512 also
 * the 32-channel one, heads of 8). Each selected channel's weights then carry, output by output, the scale of the
 * head the output belongs to, zero where that head did not select the channel; the union's multiply-adds are
 * computed rather than each head's own.
 *
 * With `kernel` (kh·kw) > 1 and the AVX-512 kernels, also by the heads' union share (`unionDensity`, the share of
 * (sample, channel) pairs some head selects): the heads run apart (the pixvec kernel, 16 pixels a vector over a
 * head's own channels) when they have 8 outputs or more, or when the union reaches 0.85. 3×3 convs, density 0.5,
 * batch 32, 2 threads, µs, eval with BN (united / apart; masked ~498): heads of 8 (32 channels at 16²) at a union of
 * 0.6 344 / 317, 0.75 391 / 324, 0.94 492 / 396 (batch 1: 26 / 22, 25 / 25, 36 / 26); heads of 4 (16 at 32²) 0.6
 * 337 / 383, 0.75 352 / 357, 0.94 492 / 473 (batch 1: 21 / 24, 25 / 30, 33 / 30). The training forward at a union
 * of 0.94 (ms, apart / united / masked / dense): heads of 8 0.39 / 0.64 / 0.51 / 0.44, heads of 4 0.47 / 0.61 /
 * 0.52 / 0.57. 1×1 convs keep their heads united (MobileNetV2's 144->32 and 192->32 at 28²: apart lost at 0.6).
 * (Those per-op times have pixvec writing plain NCHW, which cost more in the ops after it than it saved: oneDNN's
 * BatchNorm in ResNet-56's training step took 3.7 ms longer, ResNet-20's inference at batch 32 10-15% longer. With a
 * blocked x it now writes nChw16c, each sample's planes transposed while in cache; against the union rule before,
 * old / new: ResNet-20 inference at batch 32 9.13, 8.70 / 8.53, 8.62 ms, at batch 1 1.19, 1.18 / 1.10, 1.08 ms,
 * ResNet-56 at batch 32 25.1, 25.3 / 24.7, 24.2 ms; ResNet-56's training forward convs 21.1 / 19.5 ms a step.)
 */
export function narrowHeadsUnite(outChannels: number, heads: number, kernels: 'avx512' | 'avx2' | 'portable' = gatheredKernels(),
  kernel = 1, unionDensity?: number): boolean {
  if (kernels === 'portable' || heads <= 1 || outChannels % heads !== 0) return false;
  const lanes = kernels === 'avx2' ? 8 : 16, per = outChannels / heads;
  if (!(per < 16 && per % lanes !== 0 && outChannels % lanes === 0)) return false;
  if (kernels === 'avx512' && kernel > 1) return per < 8 && (unionDensity === undefined || unionDensity < NARROW_UNION_MAX);
  return true;
}
