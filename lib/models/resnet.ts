// resnet.ts: ResNet-18/34/50 (torchvision layout and parameter names) and the CIFAR ResNet-20/56, dense or
// MSGC-boosted (spec §2.7, §5.1–5.2), with the spec's MAC accounting (§4.4).
// BasicBlock + MSGC: m1 (+ a1) gates conv1's input, conv2 is the MSGC conv with G heads (+ a2).
// Bottleneck + MSGC: m1 gates conv1's input, the 3×3 conv2 is MSGC (+ a2), m3 gates conv3's input.
import * as F from '../ops/index';
import { BlockMacTally, emptyMacs, MacCount, MacRow, addMacs, withDense } from '../macs/types';
import { kaimingNormal } from '../nn/init';
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, convBnAct, Linear, MaxPool2d, ReLU, Sequential } from '../nn/layers';
import { AttentionHead, GateHead, headMacs } from '../nn/msgc/heads';
import { DeferredGateStats, dynamicTensor, gateStats, isDeferred, producerConsumerTally, releaseTally, tallyOf, withEnvSwitches } from '../nn/msgc/tally';
import { Module } from '../nn/module';
import { Tensor } from '../tensor/tensor';
import { Backbone, BackboneOptions, composes, context, convOut, CountedBlock, gateHints, gatedConvBn, ResolvedMsgc, resolveMsgc, inputGatedConvBn, macRowWriter, mainOnlyMacs, stemForward } from './common';

function downsample(inC: number, outC: number, stride: number): Sequential {
  return new Sequential(new Conv2d(inC, outC, 1, { stride, bias: false }), new BatchNorm2d(outC));
}

export class BasicBlock extends Module implements CountedBlock {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly downsample: Sequential | null;
  readonly mask1: GateHead | null = null;
  readonly mask2: GateHead | null = null;
  readonly att1: AttentionHead | null = null;
  readonly att2: AttentionHead | null = null;
  lastTally: BlockMacTally | null = null;

  constructor(readonly inplanes: number, readonly planes: number, readonly stride: number, readonly msgc: ResolvedMsgc | null, readonly squeezeRate = 4) {
    super();
    this.conv1 = this.registerModule('conv1', new Conv2d(inplanes, planes, 3, { stride, padding: 1, bias: false }));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(planes));
    this.conv2 = this.registerModule('conv2', new Conv2d(planes, planes, 3, { padding: 1, bias: false }));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(planes));
    this.downsample = stride !== 1 || inplanes !== planes ? this.registerModule('downsample', downsample(inplanes, planes, stride)) : null;
    if (msgc) {
      const r = squeezeRate;
      this.mask1 = this.registerModule('mask1', new GateHead({ contextChannels: inplanes, channels: inplanes, heads: 1, squeezeRate: r }));
      this.mask2 = this.registerModule('mask2', new GateHead({ contextChannels: inplanes, channels: planes, heads: msgc.heads, squeezeRate: r }));
      if (msgc.attention) {
        this.att1 = this.registerModule('att1', new AttentionHead({ contextChannels: inplanes, channels: inplanes, heads: 1, squeezeRate: r }));
        this.att2 = this.registerModule('att2', new AttentionHead({ contextChannels: inplanes, channels: planes, heads: msgc.heads, squeezeRate: r }));
      }
    }
  }

  /** Costs of the two convs for input H×W (spec §4.4, R18 BasicBlock). */
  private costs(H: number, W: number) {
    const P = this.planes;
    const Cin = this.inplanes;
    const Ho = convOut(H, 3, this.stride, 1);
    const Wo = convOut(W, 3, this.stride, 1);
    const att = !!this.msgc?.attention;
    const G = this.msgc?.heads ?? 1;
    const dgc1 = (att ? Cin * H * W : 0) + 9 * Cin * P * Ho * Wo + P * Ho * Wo;
    const dgc2 = (9 * P + 1) * P * Ho * Wo + (att ? G * P * Ho * Wo : 0);
    const extra = att ? Cin * H * W + G * P * Ho * Wo : 0;
    const ds = this.downsample ? Cin * P * Ho * Wo : 0;
    return { dgc1, dgc2, extra, ds, Ho, Wo };
  }

  countMacs(C: number, H: number, W: number) {
    const c = this.costs(H, W);
    const r = this.squeezeRate;
    let macs: MacCount;
    if (!this.msgc) {
      const dense = c.dgc1 + c.dgc2 + c.ds;
      macs = mainOnlyMacs(dense);
    } else {
      const G = this.msgc.heads;
      const one = headMacs(C, C, 1, r) + headMacs(C, this.planes, G, r);
      const heads = (this.msgc.attention ? 2 * one : one) + H * W * C;
      macs = withDense({ main: c.ds, gated: c.dgc1 + c.dgc2, heads, extra: c.extra });
    }
    return { macs, C: this.planes, H: c.Ho, W: c.Wo };
  }

  forward(x: Tensor): Tensor {
    const identity = this.downsample ? this.downsample.forward(x) : x;
    if (!this.msgc) {
      const u = convBnAct(this.conv1, this.bn1, x, 'relu');
      return this.bn2.forwardAct(this.conv2.forward(u), 'relu', identity);
    }
    const xs = x._shape, N = xs[0], H = xs[2], W = xs[3];
    const G = this.msgc.heads;
    const ctx = context(x);
    const m1 = this.mask1!.forward(ctx);
    const m2 = this.mask2!.forward(ctx);
    const s1 = this.att1 ? F.mul(m1, this.att1.forward(ctx)) : m1;
    const s2 = this.att2 ? F.mul(m2, this.att2.forward(ctx)) : m2;
    // the gate statistics, read once: for the MAC tally and as msgcConv2d's hints (so 'auto' need not read them);
    // deferred ones (the GPU at small batches, deferGateStats) are not read during the pass: no hints then
    const g1 = gateStats(m1);
    const g2 = gateStats(m2);
    const lazy = isDeferred(g1) || isDeferred(g2);
    releaseTally(this.lastTally);
    // eval: conv1 outputs no head of conv2 selects are not computed (producer skipping, spec §2.10)
    const st1: { gathered: boolean; skippedOutputs?: boolean } = { gathered: false };
    // recording, conv2 takes bn1's ReLU (composes()): its backward applies the derivative as it writes the gradient
    const fuse = composes(this.bn2);
    const u = inputGatedConvBn(this.conv1, this.bn1, x, s1, fuse ? null : 'relu', { outputMask: this.training ? null : m2, stats: st1,
      hints: lazy ? undefined : this.att1 ? { unneededOutputs: g2.unselected } : gateHints(g1, g2.unselected) });
    const y = gatedConvBn(this.bn2, u, this.conv2.weight, s2,
      { heads: G, padding: 1, hints: lazy || this.att2 ? undefined : gateHints(g2), inputActivation: fuse ? 'relu' : null },
      'relu', identity, true);
    // MACs of this batch (spec §4.2–4.3)
    const c = this.costs(H, W);
    this.lastTally = producerConsumerTally(g1, g2, c.dgc1, c.dgc2, !this.training && !!st1.skippedOutputs,
      dynamicTensor([m1, m2], [c.dgc1, c.dgc2]));
    return y;
  }
}

export class Bottleneck extends Module implements CountedBlock {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly downsample: Sequential | null;
  readonly mask1: GateHead | null = null;
  readonly mask2: GateHead | null = null;
  readonly mask3: GateHead | null = null;
  readonly att2: AttentionHead | null = null;
  readonly width: number;
  lastTally: BlockMacTally | null = null;

  constructor(readonly inplanes: number, planes: number, readonly stride: number, readonly msgc: ResolvedMsgc | null, readonly squeezeRate = 8) {
    super();
    const w = planes;
    this.width = w;
    this.conv1 = this.registerModule('conv1', new Conv2d(inplanes, w, 1, { bias: false }));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(w));
    this.conv2 = this.registerModule('conv2', new Conv2d(w, w, 3, { stride, padding: 1, bias: false }));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(w));
    this.conv3 = this.registerModule('conv3', new Conv2d(w, 4 * w, 1, { bias: false }));
    this.bn3 = this.registerModule('bn3', new BatchNorm2d(4 * w));
    this.downsample = stride !== 1 || inplanes !== 4 * w ? this.registerModule('downsample', downsample(inplanes, 4 * w, stride)) : null;
    if (msgc) {
      const r = squeezeRate;
      this.mask1 = this.registerModule('mask1', new GateHead({ contextChannels: inplanes, channels: inplanes, heads: 1, squeezeRate: r }));
      this.mask2 = this.registerModule('mask2', new GateHead({ contextChannels: inplanes, channels: w, heads: msgc.heads, squeezeRate: r }));
      this.mask3 = this.registerModule('mask3', new GateHead({ contextChannels: inplanes, channels: w, heads: 1, squeezeRate: r }));
      if (msgc.attention) {
        this.att2 = this.registerModule('att2', new AttentionHead({ contextChannels: inplanes, channels: w, heads: msgc.heads, squeezeRate: r }));
      }
    }
  }

  private costs(H: number, W: number) {
    const w = this.width;
    const Cin = this.inplanes;
    const Ho = convOut(H, 3, this.stride, 1);
    const Wo = convOut(W, 3, this.stride, 1);
    const att = !!this.msgc?.attention;
    const G = this.msgc?.heads ?? 1;
    const dgc1 = Cin * w * H * W + w * H * W;
    const dgc2 = (att ? G * w * H * W : 0) + 9 * w * w * Ho * Wo + w * Ho * Wo;
    const dgc3 = (w + 1) * 4 * w * Ho * Wo;
    const extra = att ? G * w * H * W : 0;
    const ds = this.downsample ? Cin * 4 * w * Ho * Wo : 0;
    return { dgc1, dgc2, dgc3, extra, ds, Ho, Wo };
  }

  countMacs(C: number, H: number, W: number) {
    const c = this.costs(H, W);
    const r = this.squeezeRate;
    let macs: MacCount;
    if (!this.msgc) {
      const dense = c.dgc1 + c.dgc2 + c.dgc3 + c.ds;
      macs = mainOnlyMacs(dense);
    } else {
      const G = this.msgc.heads;
      const w = this.width;
      let heads = headMacs(C, C, 1, r) + headMacs(C, w, G, r) + headMacs(C, w, 1, r) + H * W * C;
      if (this.msgc.attention) heads += headMacs(C, w, G, r);
      macs = withDense({ main: c.ds, gated: c.dgc1 + c.dgc2 + c.dgc3, heads, extra: c.extra });
    }
    return { macs, C: 4 * this.width, H: c.Ho, W: c.Wo };
  }

  forward(x: Tensor): Tensor {
    const identity = this.downsample ? this.downsample.forward(x) : x;
    if (!this.msgc) {
      const u = convBnAct(this.conv1, this.bn1, x, 'relu');
      const v = convBnAct(this.conv2, this.bn2, u, 'relu');
      return this.bn3.forwardAct(this.conv3.forward(v), 'relu', identity);
    }
    const xs = x._shape, N = xs[0], H = xs[2], W = xs[3];
    const G = this.msgc.heads;
    const w = this.width;
    const ctx = context(x);
    const m1 = this.mask1!.forward(ctx);
    const m2 = this.mask2!.forward(ctx);
    const m3 = this.mask3!.forward(ctx);
    const s2 = this.att2 ? F.mul(m2, this.att2.forward(ctx)) : m2;
    // eval: conv1 outputs no head of conv2 selects, and conv2 outputs m3 drops, are not computed (producer and
    // consumer skipping, spec §2.10)
    const skip = !this.training;
    // the gate statistics, read once: for the MAC tally and as msgcConv2d's hints; deferred ones (the GPU at small
    // batches, deferGateStats) are not read during the pass: no hints then, and the consumer bonus below from
    // per-head sums (m3 seen as G slices) computed on the device
    const g1 = gateStats(m1);
    const g2 = gateStats(m2);
    const g3 = gateStats(m3);
    const slice = w / G;
    const lazy = isDeferred(g1) && isDeferred(g2) && isDeferred(g3) && Number.isInteger(slice);
    releaseTally(this.lastTally);
    const m3Slices = lazy ? DeferredGateStats.of(F.reshape(m3, [N, G, slice])) : null;
    const m2v = lazy ? null : m2.toFloat32Array();
    const m3v = lazy ? null : m3.toFloat32Array();
    const st1: { gathered: boolean; skippedOutputs?: boolean } = { gathered: false };
    const st2: { gathered: boolean; skippedOutputs?: boolean } = { gathered: false };
    // recording, conv2 takes bn1's ReLU and conv3 bn2's (composes()): their backward applies the derivative as it
    // writes the gradient
    const fuse2 = composes(this.bn2), fuse3 = composes(this.bn3);
    const u = inputGatedConvBn(this.conv1, this.bn1, x, m1, fuse2 ? null : 'relu', { outputMask: skip ? m2 : null, stats: st1, hints: lazy ? undefined : gateHints(g1, g2.unselected) });
    const h2 = lazy ? undefined : this.att2 ? { unneededOutputs: 1 - g3.density } : gateHints(g2, 1 - g3.density);
    const v = gatedConvBn(this.bn2, u, this.conv2.weight, s2,
      { heads: G, stride: this.stride, padding: 1, outputMask: skip ? m3 : null, stats: st2, hints: h2, inputActivation: fuse2 ? 'relu' : null },
      fuse3 ? null : 'relu');
    const y = inputGatedConvBn(this.conv3, this.bn3, v, m3, 'relu', { hints: lazy ? undefined : gateHints(g3), inputActivation: fuse3 ? 'relu' : null },
      identity, true);
    const c = this.costs(H, W);
    this.lastTally = tallyOf(() => {
      const d1 = g1.density;
      const d2 = g2.density;
      const d3 = g3.density;
      // bonus2: conv1 outputs no head selects; bonus3: conv2 outputs that conv3's mask drops (spec §4.3)
      const bonus2 = g2.unselected * d1 * c.dgc1;
      let bonus3 = 0;
      const heads = m3Slices ? (g2 as DeferredGateStats).headSums() : null;
      const kept = m3Slices ? m3Slices.headSums() : null;
      for (let i = 0; i < G; i++) {
        let head = 0;
        let dropped = 0;
        if (heads && kept) {
          head = heads[i];
          dropped = N * slice - kept[i];
        } else {
          for (let n = 0; n < N; n++) for (let k = 0; k < w; k++) head += m2v![(n * G + i) * w + k];
          for (let n = 0; n < N; n++) for (let k = i * slice; k < (i + 1) * slice; k++) dropped += 1 - m3v![n * w + Math.floor(k)];
        }
        bonus3 += (head / (N * w)) * (c.dgc2 / G) * (dropped / (N * slice));
      }
      const skipped = skip ? (st1.skippedOutputs ? bonus2 : 0) + (st2.skippedOutputs ? bonus3 : 0) : 0;
      return { dynamic: d1 * c.dgc1 + d2 * c.dgc2 + d3 * c.dgc3, bonus: bonus2 + bonus3, density: [d1, d2, d3], bonusSkipped: skipped };
    }, dynamicTensor([m1, m2, m3], [c.dgc1, c.dgc2, c.dgc3]), m3Slices ? [g1, g2, g3, m3Slices] : [g1, g2, g3]);
    return y;
  }
}

type BlockClass = typeof BasicBlock | typeof Bottleneck;

/** torchvision's init: Kaiming-normal (fan_out, ReLU) convs — gate heads keep their own init (bias 2.0 / attention 0, 1). */
function initConvs(root: Module): void {
  for (const [name, m] of root.namedModules()) {
    if (!(m instanceof Conv2d)) continue;
    if (/(^|\.)(mask\d|att\d)\./.test(name)) continue;
    m.initWeight(kaimingNormal(m.weight.shape, 'fan_out'));
  }
}

export class ResNet extends Backbone {
  readonly msgc: ResolvedMsgc | null;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly relu = new ReLU();
  readonly maxpool: MaxPool2d | null;
  readonly layers: Sequential[] = [];
  readonly avgpool = new AdaptiveAvgPool2d(1);
  readonly fc: Linear;
  readonly smallInput: boolean;
  private readonly widths: number[];
  private readonly block: BlockClass;

  constructor(block: BlockClass, depths: number[], options: BackboneOptions & { widths?: number[]; stemChannels?: number } = {}) {
    super();
    this.msgc = resolveMsgc(options.msgc);
    this.block = block;
    this.smallInput = !!options.smallInput;
    this.widths = options.widths ?? [64, 128, 256, 512];
    const stem = options.stemChannels ?? this.widths[0];
    const inC = options.inChannels ?? 3;
    const numClasses = options.numClasses ?? 1000;
    const rate = block === Bottleneck ? 8 : 4;
    this.conv1 = this.registerModule('conv1', this.smallInput
      ? new Conv2d(inC, stem, 3, { stride: 1, padding: 1, bias: false })
      : new Conv2d(inC, stem, 7, { stride: 2, padding: 3, bias: false }));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(stem));
    this.maxpool = this.smallInput ? null : new MaxPool2d({ kernelSize: 3, stride: 2, padding: 1 });
    let inplanes = stem;
    depths.forEach((n, stage) => {
      const blocks: Module[] = [];
      for (let i = 0; i < n; i++) {
        const stride = i === 0 && stage > 0 ? 2 : 1;
        blocks.push(new block(inplanes, this.widths[stage], stride, this.msgc, rate));
        inplanes = this.widths[stage] * block.expansion;
      }
      this.layers.push(this.registerModule(`layer${stage + 1}`, new Sequential(...blocks)));
    });
    this.fc = this.registerModule('fc', new Linear(inplanes, numClasses));
    initConvs(this);
  }

  forward(x: Tensor): Tensor {
    this.remember(x);
    return this.msgc ? withEnvSwitches(() => this.pass(x)) : this.pass(x);
  }

  private pass(x: Tensor): Tensor {
    // (without the max-pool, the first block's gate context is the stem's pool: stemForward)
    let h = stemForward(this.conv1, this.bn1, x, 'relu', !!this.msgc && !this.maxpool);
    if (this.maxpool) h = this.maxpool.forward(h);
    for (const layer of this.layers) h = layer.forward(h);
    return this.fc.forward(F.flatten(this.avgpool.forward(h)));
  }

  countMacs(input: number[], rows?: MacRow[]): MacCount {
    const [C, H, W] = input;
    const row = macRowWriter(rows);
    const stem = this.conv1.outChannels;
    let macs = emptyMacs();
    let h: number;
    let w: number;
    if (this.smallInput) {
      h = H;
      w = W;
      macs.main += 9 * C * stem * h * w + stem * h * w;
    } else {
      // 7×7/2 conv + its BN/ReLU term + the max-pool (spec: 49·3·64·112² + 64·112² + 4·64·56²)
      h = convOut(H, 7, 2, 3);
      w = convOut(W, 7, 2, 3);
      macs.main += 49 * C * stem * h * w + stem * h * w;
      h = convOut(h, 3, 2, 1);
      w = convOut(w, 3, 2, 1);
      macs.main += 4 * stem * h * w;
    }
    row('stem', [C, H, W], mainOnlyMacs(macs.main));
    let c = stem;
    this.layers.forEach((layer, li) => {
      (layer.layers as unknown as CountedBlock[]).forEach((b, bi) => {
        const r = b.countMacs(c, h, w);
        row(`layer${li + 1}.${bi}`, [c, h, w], r.macs);
        macs = addMacs(macs, r.macs);
        c = r.C;
        h = r.H;
        w = r.W;
      });
    });
    const head = c * (h * w + this.fc.outFeatures); // GAP + FC without bias
    row('avgpool+fc', [c, h, w], mainOnlyMacs(head));
    macs.main += head;
    return this.msgc ? withDense(macs) : mainOnlyMacs(macs.main);
  }
}

export function resnet18(options: BackboneOptions = {}): ResNet {
  return new ResNet(BasicBlock, [2, 2, 2, 2], options);
}
export function resnet34(options: BackboneOptions = {}): ResNet {
  return new ResNet(BasicBlock, [3, 4, 6, 3], options);
}
export function resnet50(options: BackboneOptions = {}): ResNet {
  return new ResNet(Bottleneck, [3, 4, 6, 3], options);
}

/** CIFAR ResNet (He et al. 2016): 3×3 stem of 16, three stages of 16/32/64 channels, 1×1 projection shortcuts. */
function cifarResNet(n: number, options: BackboneOptions): ResNet {
  return new ResNet(BasicBlock, [n, n, n], { numClasses: 10, ...options, smallInput: true, widths: [16, 32, 64], stemChannels: 16 });
}
export function resnet20(options: BackboneOptions = {}): ResNet {
  return cifarResNet(3, options);
}
export function resnet56(options: BackboneOptions = {}): ResNet {
  return cifarResNet(9, options);
}
