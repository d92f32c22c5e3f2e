// mobilenetv2.ts: MobileNetV2 (torchvision layout and parameter names, width 1.0), dense or MSGC-boosted
// (spec §2.7, §5.3), with the spec's MAC accounting (§4.4).
// InvertedResidual + MSGC: the projection ("pw-linear") 1×1 conv is the MSGC conv with G heads; its gates (and the
// optional attention) are predicted from the GAP of the block input, so expansion and depthwise channels that no head
// selects count as "bonus". No companion gate.
import * as F from '../ops/index';
import { BlockMacTally, emptyMacs, MacCount, MacRow, addMacs, withDense } from '../macs/types';
import { constant, kaimingNormal, normal } from '../nn/init';
import { BatchNorm2d, Conv2d, Identity, Linear, ReLU6, Sequential } from '../nn/layers';
import { AttentionHead, GateHead, headMacs } from '../nn/msgc/heads';
import { dynamicTensor, envSwitch, GateStats, gateStats, isDeferred, releaseTally, tallyOf, withEnvSwitches } from '../nn/msgc/tally';
import { Module } from '../nn/module';
import { ones } from '../tensor/creation';
import { isGradEnabled } from '../tensor/scope';
import { Tensor } from '../tensor/tensor';
import { gatheredKernels } from '../native';
import { Backbone, BackboneOptions, composes, context, gatedConvBn, rememberPooled, stemForward, convOut, CountedBlock, gateHints, ResolvedMsgc, resolveMsgc, macRowWriter, mainOnlyMacs } from './common';

/** torchvision's Conv2dNormActivation with ReLU6: children 0 (conv), 1 (BN), 2 (ReLU6). */
function convBnReLU6(inC: number, outC: number, kernel: number, stride: number, groups = 1): Sequential {
  return new Sequential(
    new Conv2d(inC, outC, kernel, { stride, padding: (kernel - 1) >> 1, groups, bias: false }),
    new BatchNorm2d(outC),
    new ReLU6(),
  );
}

export class InvertedResidual extends Module implements CountedBlock {
  readonly hidden: number;
  readonly useResidual: boolean;
  /** torchvision's `conv` Sequential: [pw ConvBNReLU6 (t ≠ 1)], dw ConvBNReLU6, project conv, project BN */
  readonly conv: Sequential;
  /** the expansion 1×1 ConvBNReLU6 (null for t = 1) */
  readonly pw: Sequential | null;
  /** the depthwise 3×3 ConvBNReLU6 */
  readonly dw: Sequential;
  /** the projection 1×1 conv (the MSGC conv in the boosted model) and its BN */
  readonly project: Conv2d;
  readonly projectBn: BatchNorm2d;
  readonly mask: GateHead | null = null;
  readonly att: AttentionHead | null = null;
  lastTally: BlockMacTally | null = null;

  constructor(
    readonly inp: number,
    readonly oup: number,
    readonly stride: number,
    readonly expandRatio: number,
    readonly msgc: ResolvedMsgc | null,
    readonly squeezeRate = 4,
  ) {
    super();
    if (stride !== 1 && stride !== 2) throw new Error(`InvertedResidual: stride must be 1 or 2, got ${stride}`);
    if (msgc && oup % msgc.heads) throw new Error(`InvertedResidual: ${oup} output channels are not divisible by ${msgc.heads} heads`);
    const hid = Math.round(inp * expandRatio);
    this.hidden = hid;
    this.useResidual = stride === 1 && inp === oup;
    this.pw = expandRatio !== 1 ? convBnReLU6(inp, hid, 1, 1) : null;
    this.dw = convBnReLU6(hid, hid, 3, stride, hid);
    this.project = new Conv2d(hid, oup, 1, { bias: false });
    this.projectBn = new BatchNorm2d(oup);
    const layers: Module[] = this.pw ? [this.pw] : [];
    layers.push(this.dw, this.project, this.projectBn);
    this.conv = this.registerModule('conv', new Sequential(...layers));
    if (msgc) {
      const o = { contextChannels: inp, channels: hid, heads: msgc.heads, squeezeRate };
      this.mask = this.registerModule('mask', new GateHead(o));
      if (msgc.attention) this.att = this.registerModule('att', new AttentionHead(o));
    }
  }

  /** Costs for input H×W (spec §4.4, MobileNetV2). */
  private costs(H: number, W: number) {
    const hid = this.hidden;
    const Ho = convOut(H, 3, this.stride, 1);
    const Wo = convOut(W, 3, this.stride, 1);
    const att = !!this.msgc?.attention;
    const G = this.msgc?.heads ?? 1;
    const pw = this.pw ? this.inp * hid * H * W + hid * H * W : 0;
    const dw = 9 * hid * Ho * Wo + hid * Ho * Wo;
    const dgc = hid * this.oup * Ho * Wo + (att ? G * hid * Ho * Wo : 0);
    const extra = att ? G * hid * Ho * Wo : 0;
    return { pw, dw, dgc, extra, Ho, Wo };
  }

  countMacs(C: number, H: number, W: number) {
    const c = this.costs(H, W);
    let macs: MacCount;
    if (!this.msgc) {
      const dense = c.pw + c.dw + c.dgc;
      macs = mainOnlyMacs(dense);
    } else {
      const one = headMacs(C, this.hidden, this.msgc.heads, this.squeezeRate);
      const heads = (this.msgc.attention ? 2 * one : one) + H * W * C;
      macs = withDense({ main: c.pw + c.dw, gated: c.dgc, heads, extra: c.extra });
    }
    return { macs, C: this.oup, H: c.Ho, W: c.Wo };
  }

  forward(x: Tensor): Tensor {
    const residual = this.useResidual ? x : null;
    if (!this.msgc) {
      // this.conv's layers, with the projection BN and the residual add fused (BatchNorm2d.forwardAct)
      const h = this.dw.forward(this.pw ? this.pw.forward(x) : x);
      return this.projectBn.forwardAct(this.project.forward(h), null, residual);
    }
    const xs = x._shape, N = xs[0], H = xs[2], W = xs[3];
    const G = this.msgc.heads;
    const ctx = context(x);
    const m = this.mask!.forward(ctx);
    const s = this.att ? F.mul(m, this.att.forward(ctx)) : m;
    const ms = gateStats(m);
    // deferred statistics (the GPU at small batches, deferGateStats) are not read during the pass
    const lazy = isDeferred(ms);
    releaseTally(this.lastTally);
    let expanded: Tensor | null = null;
    let pwSkipped = false;
    const c = this.costs(H, W);
    const hints = lazy || this.att ? undefined : gateHints(ms);
    // (not on cuda: its MSGC kernel computes every output, so cuDNN's dense 1×1 conv is the faster way there)
    const evalCpu = !!this.pw && !this.training && !lazy && x.device === 'cpu' && F.getMsgcExecution() !== 'masked';
    if (evalCpu && !isGradEnabled() && this.compactWins(N, ms.density, 1 - ms.unselected, H * W, c.Ho * c.Wo)) {
      // eval without autograd, sparse unions: expansion, depthwise and projection on tensors compacted by the heads'
      // masks (F.msgcConv2dBnActCompact): the hidden channels no head selects are computed by neither conv
      const pwConv = this.pw!.layers[0] as Conv2d;
      const all = ones([N, 1, this.inp]);
      const e = F.msgcConv2dBnActCompact(x, pwConv.weight, all, this.pw!.layers[1] as BatchNorm2d, { heads: 1, compactOutput: m, activation: 'relu6' }).y;
      all.dispose();
      const dwConv = this.dw.layers[0] as Conv2d;
      const h = F.depthwiseConv2dBnActCompact(e, m, dwConv.weight, this.dw.layers[1] as BatchNorm2d,
        { stride: dwConv.stride, padding: dwConv.padding, activation: 'relu6' });
      e.dispose();
      const r = F.msgcConv2dBnActCompact(h, this.project.weight, s, this.projectBn, { heads: G, inputMask: m, residual, pooled: true });
      h.dispose();
      rememberPooled(r.y, r.pooled!);
      this.lastTally = this.tally(c, ms, m, true, true);
      return r.y;
    }
    // Otherwise the expansion skips the outputs no head selects only on the portable kernels (which cannot compact;
    // by the rule, or with setMsgcExecution('gathered')): on AVX-512 and AVX2 the gathered one-head conv with an
    // output mask, followed by oneDNN's depthwise conv over every channel, took 1.0-4.5x the time of oneDNN's two
    // convs at every union from 0.2 to 0.8 (bench/msgc_compact.js, "skip"), where until 2026-12-05 it ran whenever a
    // tenth of the hidden channels went unselected.
    if (evalCpu && gatheredKernels() === 'portable' && (F.getMsgcExecution() === 'gathered' ||
      F.preferOutputSkipping(ms.unselected, H * W, this.hidden, { kernel: 1, batch: N }))) {
      // eval: expansion outputs no head selects are not computed (producer skipping, spec §2.10) — the 1×1 conv
      // as a gathered one-head MSGC conv over all inputs with the heads' masks as its output mask. (The depthwise
      // conv still runs on every hidden channel: a small share of the block's MACs.)
      const pwConv = this.pw.layers[0] as Conv2d;
      const pwBn = this.pw.layers[1] as BatchNorm2d;
      const all = ones([N, 1, this.inp]);
      const st: { gathered: boolean; skippedOutputs?: boolean } = { gathered: false };
      expanded = gatedConvBn(pwBn, x, pwConv.weight, all,
        { heads: 1, execution: 'gathered', outputMask: m, stats: st, hints: { unneededOutputs: ms.unselected } }, 'relu6');
      if (!isGradEnabled()) all.dispose(); // (else the recorded backward holds it; the enclosing tidy frees it)
      pwSkipped = !!st.skippedOutputs;
    }
    const dwIn = expanded ?? (this.pw ? this.pw.forward(x) : x);
    let out: Tensor;
    if (composes(this.projectBn)) {
      // the depthwise conv's ReLU6 taken by the projection (F.msgcConv2d's inputActivation): recording on the CPU,
      // the projection's backward applies ReLU6's derivative as it writes its input gradient, instead of the
      // activation's own backward pass over [N, hidden, H, W] (the masked path per sample while it is in cache, the
      // 1×1 kernels of our own in their epilogue)
      const dwConv = this.dw.layers[0] as Conv2d;
      const dwBn = this.dw.layers[1] as BatchNorm2d;
      const a = dwBn.forward(dwConv.forward(dwIn));
      out = gatedConvBn(this.projectBn, a, this.project.weight, s, { heads: G, hints, inputActivation: 'relu6' }, null, residual, true);
    } else {
      const h = this.dw.forward(dwIn);
      out = gatedConvBn(this.projectBn, h, this.project.weight, s, { heads: G, hints }, null, residual, true);
    }
    this.lastTally = this.tally(c, ms, m, pwSkipped, false);
    return out;
  }

  /** MACs of this batch (spec §4.2–4.3): hidden channels no head selects need neither the PW nor the DW conv. */
  private tally(c: ReturnType<InvertedResidual['costs']>, ms: GateStats, m: Tensor, pwSkipped: boolean, dwSkipped: boolean): BlockMacTally {
    return tallyOf(() => {
      const d = ms.density;
      const unselected = ms.unselected;
      return { dynamic: d * c.dgc, bonus: unselected * (c.pw + c.dw), density: [d],
        bonusSkipped: (pwSkipped ? unselected * c.pw : 0) + (dwSkipped ? unselected * c.dw : 0) };
    }, dynamicTensor([m], [c.dgc]), [ms]);
  }

  /**
   * Whether the compacted chain (expansion, depthwise, projection on tensors compacted by the heads' masks:
   * F.msgcConv2dBnActCompact, F.depthwiseConv2dBnActCompact) beats oneDNN's expansion and depthwise convs over every
   * hidden channel. Per sample, only the selected hidden channels are computed, which gives up the weight reuse across
   * samples and the register blocking of oneDNN's 1×1 kernel: bench/msgc_compact.js (2 threads, AVX-512, expansion +
   * depthwise ÷ oneDNN's; two runs) measured at a union of 0.2 0.64-1.05 on 28²-56² inputs (batch 1 and 32),
   * 0.77-1.18 on 14², 1.0-1.2 on 112², 1.3-1.4 on 7², and at a union of 0.5 0.83-2.9; the AVX2 kernels lost
   * everywhere (1.2-3.2). So: AVX-512, a union of at most 0.25, the block's input map 28²-56²; and the projection
   * must run gathered by msgcConv2d's rule (a compacted input has no masked execution). Trained gates need far
   * sparser unions than the 0.6 or so they tend to give for this to fire. With setMsgcExecution('gathered') or
   * MSGC_COMPACT=1 the blocks compact wherever the chain can run; MSGC_COMPACT=0 never (tests, benchmarks).
   */
  private compactWins(N: number, density: number, union: number, inPixels: number, outPixels: number): boolean {
    if (this.att) return false;
    const kernels = gatheredKernels();
    // (compacted outputs are written in whole blocks of 16 channels, or of 8 by the AVX2 kernels)
    if (kernels === 'portable' || this.hidden % (kernels === 'avx2' ? 8 : 16) !== 0) return false;
    const force = envSwitch('MSGC_COMPACT');
    if (force === '0') return false;
    // (setMsgcExecution('gathered'): every MSGC conv gathered, and the blocks skip what they can)
    if (force === '1' || F.getMsgcExecution() === 'gathered') return true;
    if (kernels !== 'avx512' || union > 0.25 || inPixels < 28 * 28 || inPixels > 56 * 56) return false;
    const G = this.msgc!.heads;
    const unite = F.narrowHeadsUnite(this.oup, G, kernels);
    return F.preferGathered(density, { outPixels, batch: N,
      headChannels: this.oup / G, kernel: 1, channels: this.hidden, recording: false, kernels, union: unite, unionDensity: union });
  }

}

/** (t, c, n, s) of the ImageNet MobileNetV2 */
export const MOBILENETV2_SETTINGS: readonly (readonly [number, number, number, number])[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];
/** stage strides of the CIFAR setting (spec §5.3), with a stride-1 stem */
const SMALL_INPUT_STRIDES = [1, 1, 2, 1, 2, 1, 1];

/** Named like the gate/attention heads: they keep their own init. */
const HEAD_NAME = /(^|\.)(mask|att)\d*(\.|$)/;

export class MobileNetV2 extends Backbone {
  readonly msgc: ResolvedMsgc | null;
  readonly features: Sequential;
  readonly classifier: Sequential;
  readonly smallInput: boolean;
  readonly stemChannels = 32;
  readonly lastChannels = 1280;
  private readonly blocks: InvertedResidual[] = [];
  private readonly stemStride: number;

  constructor(options: BackboneOptions = {}) {
    super();
    this.msgc = resolveMsgc(options.msgc);
    const G = this.msgc?.heads ?? 1;
    const bad = MOBILENETV2_SETTINGS.find(([, c]) => c % G);
    if (bad) throw new Error(`MobileNetV2: ${bad[1]} output channels are not divisible by ${G} heads`);
    this.smallInput = !!options.smallInput;
    const inC = options.inChannels ?? 3;
    const numClasses = options.numClasses ?? 1000;
    this.stemStride = this.smallInput ? 1 : 2;
    const feats: Module[] = [convBnReLU6(inC, this.stemChannels, 3, this.stemStride)];
    let inp = this.stemChannels;
    MOBILENETV2_SETTINGS.forEach(([t, c, n, s], stage) => {
      const stageStride = this.smallInput ? SMALL_INPUT_STRIDES[stage] : s;
      for (let i = 0; i < n; i++) {
        const b = new InvertedResidual(inp, c, i === 0 ? stageStride : 1, t, this.msgc, 4);
        this.blocks.push(b);
        feats.push(b);
        inp = c;
      }
    });
    feats.push(convBnReLU6(inp, this.lastChannels, 1, 1));
    this.features = this.registerModule('features', new Sequential(...feats));
    // classifier.0 is torchvision's Dropout (p = 0 here, no parameters), classifier.1 the Linear
    this.classifier = this.registerModule('classifier', new Sequential(new Identity(), new Linear(this.lastChannels, numClasses)));
    this.initWeights();
  }

  /** torchvision's init: convs Kaiming-normal fan_out, BN 1/0, Linear N(0, 0.01) with zero bias. */
  private initWeights(): void {
    for (const [name, m] of this.namedModules()) {
      if (HEAD_NAME.test(name)) continue;
      if (m instanceof Conv2d) {
        m.initWeight(kaimingNormal(m.weight.shape, 'fan_out'));
        if (m.bias) m.initBias(constant([m.outChannels], 0));
      } else if (m instanceof Linear) {
        const w = normal(m.weight.shape, 0.01);
        m.weight.assign(w.toFloat32Array());
        w.dispose();
        if (m.bias) m.bias.assign(new Float32Array(m.outFeatures));
      }
    }
  }

  forward(x: Tensor): Tensor {
    this.remember(x);
    const h = this.msgc ? withEnvSwitches(() => this.msgcFeatures(x)) : this.features.forward(x);
    return this.classifier.forward(F.flatten(F.adaptiveAvgPool2d(h, 1)));
  }

  /** this.features with the stem's output pooled in the same pass: the first block's gate context (stemForward). */
  private msgcFeatures(x: Tensor): Tensor {
    const [stem, ...rest] = this.features.layers;
    const [conv, bn] = (stem as Sequential).layers as [Conv2d, BatchNorm2d];
    let h = stemForward(conv, bn, x, 'relu6', true);
    for (const m of rest) h = m.forward(h);
    return h;
  }

  countMacs(input: number[], rows?: MacRow[]): MacCount {
    const [C, H, W] = input;
    const row = macRowWriter(rows);
    let macs = emptyMacs();
    // stem: 3×3 conv + its BN/ReLU6 term (spec: 3·32·9·112² + 32·112²)
    let h = convOut(H, 3, this.stemStride, 1);
    let w = convOut(W, 3, this.stemStride, 1);
    const s0 = this.stemChannels;
    const stem = C * s0 * 9 * h * w + s0 * h * w;
    macs.main += stem;
    row('features.0', [C, H, W], mainOnlyMacs(stem));
    let c = s0;
    this.blocks.forEach((b, i) => {
      const r = b.countMacs(c, h, w);
      row(`features.${i + 1}`, [c, h, w], r.macs);
      macs = addMacs(macs, r.macs);
      c = r.C;
      h = r.H;
      w = r.W;
    });
    // tail: 1×1 conv to 1280 + its BN/ReLU6 term, GAP, FC without bias
    const L = this.lastChannels;
    const last = h * w * c * L + L * h * w;
    row(`features.${this.blocks.length + 1}`, [c, h, w], mainOnlyMacs(last));
    const head = L * h * w + L * this.numClasses;
    row('avgpool+classifier', [L, h, w], mainOnlyMacs(head));
    macs.main += last + head;
    return this.msgc ? withDense(macs) : mainOnlyMacs(macs.main);
  }

  get numClasses(): number {
    return (this.classifier.layers[1] as Linear).outFeatures;
  }
}

export function mobilenetV2(options: BackboneOptions = {}): MobileNetV2 {
  return new MobileNetV2(options);
}
