// heads.ts: the small networks that drive MSGC (spec §2.2–2.4, §2.6). GateHead ("MaskGen"): pooled context →
// 1×1 conv (no bias) → BN → ReLU → 1×1 conv with bias 2.0 → logits [N, G, C] → binary gates. AttentionHead
// ("AttGen"): the same structure, last conv weight 0 and bias 1, no output activation.
import { native } from '../../native';
import * as F from '../../ops/index';
import { isGradEnabled, noGrad } from '../../tensor/scope';
import { recordOp, Tensor, wrapOptional } from '../../tensor/tensor';
import { constant, kaimingNormal } from '../init';
import { BatchNorm2d, Conv2d } from '../layers';
import { Module } from '../module';
import { deferGateStats, rememberDeferredGateStats, rememberGateStats } from './tally';

export interface HeadOptions {
  /** context width C_ctx (channels of the pooled input) */
  contextChannels: number;
  /** channels each head scales (C of the gated conv's input) */
  channels: number;
  /** G: heads (1 for the companion single-head gates) */
  heads: number;
  /** r: bottleneck width = floor(C_ctx / r) */
  squeezeRate: number;
  /** initialiser for the two 1×1 convs' weights (default Kaiming-normal fan_out, ReLU gain) */
  init?: (shape: number[]) => Tensor;
}

/** A pooled context [N, C, 1, 1] (its shape read once). */
function isPooled(ctx: Tensor): boolean {
  const s = ctx._shape;
  return s.length === 4 && s[2] === 1 && s[3] === 1;
}

/** Shared structure of both heads: conv1 (C_ctx→B, no bias), bn, ReLU, conv2 (B→G·C, bias). */
abstract class SqueezeHead extends Module {
  readonly conv1: Conv2d;
  readonly bn: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly heads: number;
  readonly channels: number;
  readonly hidden: number;

  constructor(o: HeadOptions) {
    super();
    this.heads = o.heads;
    this.channels = o.channels;
    this.hidden = Math.floor(o.contextChannels / o.squeezeRate);
    if (this.hidden < 1) throw new Error(`GateHead: context of ${o.contextChannels} channels with squeeze rate ${o.squeezeRate} leaves no hidden unit`);
    const init = o.init ?? ((s: number[]) => kaimingNormal(s, 'fan_out'));
    this.conv1 = this.registerModule('conv1', new Conv2d(o.contextChannels, this.hidden, 1, { bias: false }));
    this.conv1.initWeight(init(this.conv1.weight.shape));
    this.bn = this.registerModule('bn', new BatchNorm2d(this.hidden));
    this.conv2 = this.registerModule('conv2', new Conv2d(this.hidden, o.heads * o.channels, 1));
  }

  /** ctx: [N, C_ctx, 1, 1] -> [N, G, C] (flat index k -> head k / C, channel k % C) */
  protected logits(ctx: Tensor): Tensor {
    const z = this.bn.training && isPooled(ctx) && ctx.shape[0] > 1
      ? this.fusedTrain(ctx)
      : this.conv2.forward(F.relu(this.bn.forward(this.conv1.forward(ctx))));
    return F.reshape(z, [z.shape[0], this.heads, this.channels]);
  }

  /**
   * Training (the BN on batch statistics), pooled context: conv1 → BN → ReLU → conv2 as one native op with one
   * backward — two GEMMs and passes over [N, hidden] each way — instead of six oneDNN calls on 1×1 maps and
   * their backwards, whose per-call costs dominated the heads (ResNet-20 at batch 64: ~10 ms of a 175 ms step).
   * The running statistics and num_batches_tracked update as BatchNorm2d.forward updates them. Returns [N, G·C].
   */
  private fusedTrain(ctx: Tensor): Tensor {
    const bn = this.bn;
    bn.countBatch();
    const w1 = this.conv1.weight, w2 = this.conv2.weight, b2 = this.conv2.bias!;
    const gamma = bn.weight, beta = bn.bias;
    const [z, h1, mean, invStd, h] = native.squeezeHeadTrainForward(ctx.h, w1.h, bn.runningMean.h, bn.runningVar.h,
      gamma ? gamma.h : null, beta ? beta.h : null, bn.momentum, bn.eps, w2.h, b2.h);
    const saved = [new Tensor(h1), new Tensor(mean), new Tensor(invStd), new Tensor(h)];
    const [sh1, smean, sinv, sh] = saved;
    return recordOp(new Tensor(z), 'squeezeHead', [ctx, w1, gamma, beta, w2, b2], (g) => {
      const params = [w1, gamma, beta, w2, b2].some((p) => p !== null && p.requiresGrad);
      const r = native.squeezeHeadTrainBackward(ctx.h, w1.h, gamma ? gamma.h : null, w2.h, sh1.h, smean.h, sinv.h, sh.h,
        g.h, ctx.requiresGrad, params);
      return r.map(wrapOptional);
    }, saved);
  }

  /**
   * Eval, no gradient: the whole head in one native call (two GEMMs with BN and ReLU in between; `threshold`
   * turns the logits into gates, [N, G, C] directly), instead of six small ops whose per-call costs dominate at
   * batch 1. The gates come with their statistics (gateStats() then needs no call of its own).
   */
  protected fusedEval(ctx: Tensor, threshold: boolean): Tensor {
    const bn = this.bn;
    const c = ctx.h, w1 = this.conv1.weight.h, rm = bn.runningMean.h, rv = bn.runningVar.h;
    const g = bn.weight ? bn.weight.h : null, b = bn.bias ? bn.bias.h : null, w2 = this.conv2.weight.h, b2 = this.conv2.bias!.h;
    // (the arguments written out, not an array spread into each call: this runs for every head of every forward)
    if (!threshold) return new Tensor(native.squeezeHeadEval(c, w1, rm, rv, g, b, bn.eps, w2, b2, false, this.heads));
    if (!this.training && deferGateStats(ctx)) {
      // (statistics left on the device: see deferGateStats)
      const gates = new Tensor(native.squeezeHeadEval(c, w1, rm, rv, g, b, bn.eps, w2, b2, true, this.heads, false));
      rememberDeferredGateStats(gates);
      return gates;
    }
    const r = native.squeezeHeadEval(c, w1, rm, rv, g, b, bn.eps, w2, b2, true, this.heads);
    const m = new Tensor(r[0]);
    rememberGateStats(m, r[1], r[2], r[3]);
    return m;
  }

  /** MACs as the spec counts them: MG(C_ctx, C, G, r) = (C_ctx + 1)·B + B·C·G. */
  static macs(contextChannels: number, channels: number, heads: number, squeezeRate: number): number {
    const b = Math.floor(contextChannels / squeezeRate);
    return (contextChannels + 1) * b + b * channels * heads;
  }
}

/** Binary gates m [N, G, C] (straight-through Gumbel-sigmoid in training, logit ≥ 0 in eval). */
export class GateHead extends SqueezeHead {
  temperature: number;
  /**
   * Scale σ of the training noise (spec: 1): mask = 1[l + σ·g ≥ 0], gradient that of sigmoid((l + σ·g)/τ).
   * fit()'s gateNoiseAnneal lowers it towards 0 late in a short schedule, so that the gates the network trains
   * with approach the deterministic eval gates. Floored at 1e-3.
   */
  noiseScale = 1;
  /**
   * Frozen gates: in training mode too, the gates are the eval ones (running statistics of the head's BN,
   * threshold at 0) and carry no gradient, so the head's parameters stop moving while the rest of the network
   * trains under exactly the gates it will be evaluated with. fit() freezes the gates once an annealed gate noise
   * reaches 0: deterministic straight-through gates, trained further, can blow up (measured: gate-head weights
   * from ~4 to 130 within one epoch and a collapse of the training accuracy from 90% to 83%).
   */
  frozen = false;
  constructor(o: HeadOptions & { biasInit?: number; temperature?: number }) {
    super(o);
    this.temperature = o.temperature ?? 2 / 3;
    this.conv2.initWeight((o.init ?? ((s: number[]) => kaimingNormal(s, 'fan_out')))(this.conv2.weight.shape));
    this.conv2.initBias(constant([o.heads * o.channels], o.biasInit ?? 2.0));
  }

  /** The raw logits [N, G, C]. */
  logitsOf(ctx: Tensor): Tensor {
    return this.logits(ctx);
  }

  forward(ctx: Tensor): Tensor {
    // eval gates carry no gradient (a threshold), so they never need the recorded ops
    const evalGates = !this.training || this.frozen;
    if (evalGates && isPooled(ctx)) return this.fusedEval(ctx, true);
    if (this.frozen) {
      // (a context that is not pooled: the head's BN in eval mode for this call)
      const bnTraining = this.bn.training;
      this.bn.training = false;
      try {
        return noGrad(() => F.gumbelSigmoidGate(this.logits(ctx), { training: false, temperature: this.temperature }));
      } finally {
        this.bn.training = bnTraining;
      }
    }
    // 1[l + σg ≥ 0] = 1[l/σ + g ≥ 0], and sigmoid((l/σ + g)/(τ/σ)) = sigmoid((l + σg)/τ), gradient included
    const sigma = this.noiseScale === 1 ? 1 : Math.max(1e-3, this.noiseScale);
    if (this.training && this.bn.training && isPooled(ctx) && ctx.shape[0] > 1 && ctx.device === 'cpu') return this.fusedGateTrain(ctx, sigma);
    const l = this.logits(ctx);
    if (!this.training || sigma === 1) return F.gumbelSigmoidGate(l, { training: this.training, temperature: this.temperature });
    return F.gumbelSigmoidGate(F.scale(l, 1 / sigma), { training: true, temperature: this.temperature / sigma });
  }

  /**
   * Training on a pooled context (CPU): the head (fusedTrain's two GEMMs with the BN on batch statistics), the
   * Gumbel gate and the gates' statistics (gateStats() then needs no call) in one native op, with one backward
   * (the straight-through gate's derivative, then the head's). The same bits as the separate ops (fusedTrain,
   * F.scale, F.gumbelSigmoidGate, maskStats), in one native call each way instead of four or five, and fewer
   * recorded nodes: ResNet-56 has 54 gate heads, MobileNetV2 17.
   */
  private fusedGateTrain(ctx: Tensor, sigma: number): Tensor {
    const bn = this.bn;
    bn.countBatch();
    const w1 = this.conv1.weight, w2 = this.conv2.weight, b2 = this.conv2.bias!;
    const gamma = bn.weight, beta = bn.bias;
    const temperature = this.temperature / sigma;
    const [mh, softH, h1, mean, invStd, h, sum, unselected, ones] = native.gateHeadTrainForward(ctx.h, w1.h, bn.runningMean.h,
      bn.runningVar.h, gamma ? gamma.h : null, beta ? beta.h : null, bn.momentum, bn.eps, w2.h, b2.h, this.heads,
      temperature, 1 / sigma, native.nextSeed());
    const saved = [new Tensor(softH), new Tensor(h1), new Tensor(mean), new Tensor(invStd), new Tensor(h)];
    const [soft, sh1, smean, sinv, sh] = saved;
    const m = recordOp(new Tensor(mh), 'gateHead', [ctx, w1, gamma, beta, w2, b2], (g) => {
      const params = [w1, gamma, beta, w2, b2].some((p) => p !== null && p.requiresGrad);
      // (d soft / d z = soft (1 − soft)/τ: σ cancels, see the comment above)
      const r = native.gateHeadTrainBackward(ctx.h, w1.h, gamma ? gamma.h : null, w2.h, sh1.h, smean.h, sinv.h, sh.h,
        soft.h, g.h, this.temperature, ctx.requiresGrad, params);
      return r.map(wrapOptional);
    }, saved);
    rememberGateStats(m, sum, unselected, ones);
    return m;
  }
}

/** Real-valued channel weights a [N, G, C], unbounded, starting at exactly 1. */
export class AttentionHead extends SqueezeHead {
  constructor(o: HeadOptions) {
    super(o);
    this.conv2.initWeight(constant(this.conv2.weight.shape, 0));
    this.conv2.initBias(constant([o.heads * o.channels], 1));
  }
  forward(ctx: Tensor): Tensor {
    const needsGrad = isGradEnabled() && (ctx.requiresGrad || this.parameters().some((p) => p.requiresGrad));
    if (!this.training && !needsGrad && isPooled(ctx)) return this.fusedEval(ctx, false);
    return this.logits(ctx);
  }
}

export const headMacs = SqueezeHead.macs;
