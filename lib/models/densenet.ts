// densenet.ts: DenseNet-74 in the CondenseNet-74 layout (stages 4-6-8-10-8, growth 8-16-32-64-128, bottleneck 4,
// 3×3/2 stem to 16 channels, transitions = 2×2 average pool only, final BN-ReLU, global pool, Linear), dense or
// MSGC-boosted (spec §2.7, §5.4), with the spec's MAC accounting (§4.4). torchvision-like names:
// features.conv0, features.denseblock{i}.denselayer{j}.norm1/conv1/norm2/conv2 (+ mask1/mask2/att2),
// features.transition{i} (no parameters), features.norm5, classifier.
// DenseLayer + MSGC: the gate context is the GAP of the pre-activated input ReLU(BN(x)); m1 (one head) gates the
// 1×1 conv's input, the 3×3 conv (4g → g) is the MSGC conv with G heads (+ attention a2).
import * as F from '../ops/index';
import { BlockMacTally, emptyMacs, MacCount, MacRow, addMacs, withDense } from '../macs/types';
import { kaimingNormal } from '../nn/init';
import { AvgPool2d, BatchNorm2d, Conv2d, convBnAct, Linear } from '../nn/layers';
import { AttentionHead, GateHead, headMacs } from '../nn/msgc/heads';
import { dynamicTensor, gateStats, isDeferred, producerConsumerTally, releaseTally, withEnvSwitches } from '../nn/msgc/tally';
import { Module } from '../nn/module';
import { Tensor } from '../tensor/tensor';
import { Backbone, BackboneOptions, blockOutput, composes, context, convOut, CountedBlock, gateHints, ResolvedMsgc, resolveMsgc, inputGatedConvBn, macRowWriter, mainOnlyMacs } from './common';

/** Children with explicit names, run in registration order. */
class NamedSequential extends Module {
  readonly layers: Module[] = [];
  add<M extends Module>(name: string, m: M): M {
    this.layers.push(m);
    return this.registerModule(name, m);
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const m of this.layers) h = m.forward(h);
    return h;
  }
}

/** Pre-activation dense layer C_in → 4g → g, output concat(x, y) with C_in + g channels. */
export class DenseLayer extends Module implements CountedBlock {
  readonly hidden: number;
  readonly norm1: BatchNorm2d;
  readonly conv1: Conv2d;
  readonly norm2: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly mask1: GateHead | null = null;
  readonly mask2: GateHead | null = null;
  readonly att2: AttentionHead | null = null;
  /** gate/attention squeeze rate: 8 if C_in ≥ 200 else 4 (spec §2.9) */
  readonly squeezeRate: number;
  lastTally: BlockMacTally | null = null;

  constructor(readonly inChannels: number, readonly growth: number, readonly msgc: ResolvedMsgc | null, readonly bottleneck = 4) {
    super();
    if (msgc && growth % msgc.heads) throw new Error(`DenseLayer: growth ${growth} is not divisible by ${msgc.heads} heads`);
    const hid = bottleneck * growth;
    this.hidden = hid;
    this.squeezeRate = inChannels >= 200 ? 8 : 4;
    this.norm1 = this.registerModule('norm1', new BatchNorm2d(inChannels));
    this.conv1 = this.registerModule('conv1', new Conv2d(inChannels, hid, 1, { bias: false }));
    this.norm2 = this.registerModule('norm2', new BatchNorm2d(hid));
    this.conv2 = this.registerModule('conv2', new Conv2d(hid, growth, 3, { padding: 1, bias: false }));
    if (msgc) {
      const r = this.squeezeRate;
      this.mask1 = this.registerModule('mask1', new GateHead({ contextChannels: inChannels, channels: inChannels, heads: 1, squeezeRate: r }));
      this.mask2 = this.registerModule('mask2', new GateHead({ contextChannels: inChannels, channels: hid, heads: msgc.heads, squeezeRate: r }));
      if (msgc.attention) {
        this.att2 = this.registerModule('att2', new AttentionHead({ contextChannels: inChannels, channels: hid, heads: msgc.heads, squeezeRate: r }));
      }
    }
  }

  /** Costs for input H×W (spec §4.4, DenseNet-74); the layer keeps the spatial size. */
  private costs(H: number, W: number) {
    const C = this.inChannels;
    const hid = this.hidden;
    const g = this.growth;
    const att = !!this.msgc?.attention;
    const G = this.msgc?.heads ?? 1;
    const pre = C * H * W; // the pre-activation ReLU
    const dgc1 = C * hid * H * W;
    const dgc2 = hid * (9 * g + 1) * H * W + (att ? G * hid * H * W : 0);
    const extra = att ? G * hid * H * W : 0;
    return { pre, dgc1, dgc2, extra };
  }

  countMacs(C: number, H: number, W: number) {
    const c = this.costs(H, W);
    let macs: MacCount;
    if (!this.msgc) {
      const dense = c.pre + c.dgc1 + c.dgc2;
      macs = mainOnlyMacs(dense);
    } else {
      const r = this.squeezeRate;
      const G = this.msgc.heads;
      const hid = this.hidden;
      let heads = headMacs(C, C, 1, r) + headMacs(C, hid, G, r) + H * W * C;
      if (this.msgc.attention) heads += headMacs(C, hid, G, r);
      macs = withDense({ main: c.pre, gated: c.dgc1 + c.dgc2, heads, extra: c.extra });
    }
    return { macs, C: this.inChannels + this.growth, H, W };
  }

  forward(x: Tensor): Tensor {
    // (MSGC: in eval the same pass pools t for the gate context)
    const t = this.msgc ? blockOutput(this.norm1, x, 'relu', null) : this.norm1.forwardAct(x, 'relu');
    if (!this.msgc) {
      const u = convBnAct(this.conv1, this.norm2, t, 'relu');
      return F.concat([x, this.conv2.forward(u)]);
    }
    const [N, , H, W] = x.shape;
    const G = this.msgc.heads;
    const ctx = context(t); // after the pre-activation (spec §2.7, §10.7)
    const m1 = this.mask1!.forward(ctx);
    const m2 = this.mask2!.forward(ctx);
    const s2 = this.att2 ? F.mul(m2, this.att2.forward(ctx)) : m2;
    // the gate statistics, read once: for the MAC tally and as msgcConv2d's hints; deferred ones (the GPU at small
    // batches, deferGateStats) are not read during the pass: no hints then
    const g1 = gateStats(m1);
    const g2 = gateStats(m2);
    const lazy = isDeferred(g1) || isDeferred(g2);
    releaseTally(this.lastTally);
    // eval: 1×1-conv outputs no head selects are not computed (producer skipping, spec §2.10)
    const st1: { gathered: boolean; skippedOutputs?: boolean } = { gathered: false };
    // recording, conv2 takes norm2's ReLU (composes()): its backward applies the derivative as it writes the gradient
    const fuse = composes(this.norm2);
    const u = inputGatedConvBn(this.conv1, this.norm2, t, m1, fuse ? null : 'relu', { outputMask: this.training ? null : m2, stats: st1, hints: lazy ? undefined : gateHints(g1, g2.unselected) });
    const y = F.msgcConv2d(u, this.conv2.weight, s2,
      { heads: G, padding: 1, hints: lazy || this.att2 ? undefined : gateHints(g2), inputActivation: fuse ? 'relu' : null });
    const out = F.concat([x, y]);
    // MACs of this batch (spec §4.2–4.3): 1×1-conv outputs no head selects need not be computed
    const c = this.costs(H, W);
    this.lastTally = producerConsumerTally(g1, g2, c.dgc1, c.dgc2, !this.training && !!st1.skippedOutputs,
      dynamicTensor([m1, m2], [c.dgc1, c.dgc2]));
    return out;
  }
}

export class DenseBlock extends NamedSequential {
  constructor(inChannels: number, layers: number, growth: number, msgc: ResolvedMsgc | null, bottleneck = 4) {
    super();
    for (let j = 0; j < layers; j++) this.add(`denselayer${j + 1}`, new DenseLayer(inChannels + j * growth, growth, msgc, bottleneck));
  }
  get denseLayers(): DenseLayer[] {
    return this.layers as DenseLayer[];
  }
}

export interface DenseNetConfig {
  /** dense layers per stage */
  stages: number[];
  /** growth rate per stage */
  growth: number[];
  /** hidden width of a layer = bottleneck · growth (default 4) */
  bottleneck?: number;
  /** stem channels (default 2 · growth[0]) */
  stemChannels?: number;
}

/** DenseNet-74 = CondenseNet-74's layout */
export const DENSENET74: DenseNetConfig = { stages: [4, 6, 8, 10, 8], growth: [8, 16, 32, 64, 128], bottleneck: 4 };

const HEAD_NAME = /(^|\.)(mask|att)\d*(\.|$)/;

export class DenseNet extends Backbone {
  readonly msgc: ResolvedMsgc | null;
  readonly features: NamedSequential;
  readonly conv0: Conv2d;
  readonly blocks: DenseBlock[] = [];
  readonly norm5: BatchNorm2d;
  readonly classifier: Linear;
  readonly smallInput: boolean;
  readonly config: Required<DenseNetConfig>;
  private readonly stemStride: number;

  constructor(config: DenseNetConfig = DENSENET74, options: BackboneOptions = {}) {
    super();
    if (config.stages.length !== config.growth.length || config.stages.length === 0) {
      throw new Error(`DenseNet: stages (${config.stages.length}) and growth (${config.growth.length}) must have the same non-zero length`);
    }
    this.config = { bottleneck: 4, stemChannels: 2 * config.growth[0], ...config };
    this.msgc = resolveMsgc(options.msgc);
    const G = this.msgc?.heads ?? 1;
    const bad = config.growth.find((g) => g % G);
    if (bad !== undefined) throw new Error(`DenseNet: growth ${bad} is not divisible by ${G} heads`);
    this.smallInput = !!options.smallInput;
    this.stemStride = this.smallInput ? 1 : 2;
    const inC = options.inChannels ?? 3;
    const numClasses = options.numClasses ?? 1000;
    this.features = this.registerModule('features', new NamedSequential());
    let c = this.config.stemChannels;
    this.conv0 = this.features.add('conv0', new Conv2d(inC, c, 3, { stride: this.stemStride, padding: 1, bias: false }));
    this.config.stages.forEach((n, i) => {
      const g = this.config.growth[i];
      this.blocks.push(this.features.add(`denseblock${i + 1}`, new DenseBlock(c, n, g, this.msgc, this.config.bottleneck)));
      c += n * g;
      if (i < this.config.stages.length - 1) this.features.add(`transition${i + 1}`, new AvgPool2d({ kernelSize: 2, stride: 2 }));
    });
    this.norm5 = this.features.add('norm5', new BatchNorm2d(c));
    this.classifier = this.registerModule('classifier', new Linear(c, numClasses));
    this.initWeights();
  }

  /** The reference init: convs N(0, √(2/(k·k·out))), BN 1/0, Linear bias 0 (weight keeps torch's default). */
  private initWeights(): void {
    for (const [name, m] of this.namedModules()) {
      if (HEAD_NAME.test(name)) continue;
      if (m instanceof Conv2d) m.initWeight(kaimingNormal(m.weight.shape, 'fan_out'));
      else if (m instanceof Linear && m.bias) m.bias.assign(new Float32Array(m.outFeatures));
    }
  }

  get numFeatures(): number {
    return this.norm5.numFeatures;
  }

  forward(x: Tensor): Tensor {
    this.remember(x);
    const pass = () => this.classifier.forward(F.flatten(F.adaptiveAvgPool2d(F.relu(this.features.forward(x)), 1)));
    return this.msgc ? withEnvSwitches(pass) : pass();
  }

  countMacs(input: number[], rows?: MacRow[]): MacCount {
    const [C, H, W] = input;
    const row = macRowWriter(rows);
    let macs = emptyMacs();
    let h = convOut(H, 3, this.stemStride, 1);
    let w = convOut(W, 3, this.stemStride, 1);
    let c = this.config.stemChannels;
    const stem = 9 * C * c * h * w; // spec: 9·3·16·112² (no BN term: the first layer's BN-ReLU counts it)
    macs.main += stem;
    row('features.conv0', [C, H, W], mainOnlyMacs(stem));
    this.blocks.forEach((block, i) => {
      block.denseLayers.forEach((layer, j) => {
        const r = layer.countMacs(c, h, w);
        row(`features.denseblock${i + 1}.denselayer${j + 1}`, [c, h, w], r.macs);
        macs = addMacs(macs, r.macs);
        c = r.C;
      });
      if (i < this.blocks.length - 1) {
        const ho = convOut(h, 2, 2, 0);
        const wo = convOut(w, 2, 2, 0);
        const pool = 4 * c * ho * wo;
        row(`features.transition${i + 1}`, [c, h, w], mainOnlyMacs(pool));
        macs.main += pool;
        h = ho;
        w = wo;
      }
    });
    // final ReLU + global pool, classifier without bias (spec: 7²·C·2 + C·1000)
    const tail = h * w * c * 2 + c * this.classifier.outFeatures;
    row('norm5+pool+classifier', [c, h, w], mainOnlyMacs(tail));
    macs.main += tail;
    return this.msgc ? withDense(macs) : mainOnlyMacs(macs.main);
  }
}

/** DenseNet-74 (CondenseNet-74 layout, dense 1×1 and 3×3 convs), optionally MSGC-boosted. */
export function densenet74(options: BackboneOptions = {}): DenseNet {
  return new DenseNet(DENSENET74, options);
}
