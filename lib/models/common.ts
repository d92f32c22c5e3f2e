// common.ts: what every backbone shares — MSGC options, the model base with MAC accounting, init helpers.
import { LastMacs, MacCount, MacRow } from '../macs/types';
import { BatchNorm2d, Conv2d, convBnAct } from '../nn/layers';
import { isGradEnabled } from '../tensor/scope';
import { Module } from '../nn/module';
import { BlockMacTally } from '../macs/types';
import * as F from '../ops/index';
import { GateStats, readDeferred, releaseTally } from '../nn/msgc/tally';
import { Tensor } from '../tensor/tensor';

export interface MsgcOptions {
  /** G, heads per gated conv (spec: 4) */
  heads?: number;
  /** add attention heads (spec §2.4) */
  attention?: boolean;
}

export interface BackboneOptions {
  numClasses?: number;
  /** false: the dense network; an object: the MSGC-boosted one */
  msgc?: false | MsgcOptions;
  /** CIFAR-style stem for 28–32 px images */
  smallInput?: boolean;
  /** input channels (3 for RGB, 1 for grayscale datasets) */
  inChannels?: number;
}

export interface ResolvedMsgc {
  heads: number;
  attention: boolean;
}

export function resolveMsgc(o: false | MsgcOptions | undefined): ResolvedMsgc | null {
  if (!o) return null;
  const heads = o.heads ?? 4;
  if (!Number.isInteger(heads) || heads < 1) throw new Error(`msgc.heads must be a positive integer, got ${heads}`);
  return { heads, attention: !!o.attention };
}

/** A block that reports its MACs: static per input size, dynamic after each forward. */
export interface CountedBlock {
  countMacs(C: number, H: number, W: number): { macs: MacCount; C: number; H: number; W: number };
  lastTally: BlockMacTally | null;
}

export function isCountedBlock(m: object): m is CountedBlock & Module {
  return typeof (m as CountedBlock).countMacs === 'function' && 'lastTally' in (m as object);
}

/** The MacCount of a part that is never gated (dense = main). */
export function mainOnlyMacs(v: number): MacCount {
  return { dense: v, main: v, gated: 0, heads: 0, extra: 0 };
}

/** A function that appends a row to `rows` when a per-part table is being built (a no-op otherwise). */
export function macRowWriter(rows?: MacRow[]): (name: string, input: number[], macs: MacCount) => void {
  return (name, input, macs) => {
    rows?.push({ name, input, macs });
  };
}

export function convOut(x: number, k: number, s: number, p: number): number {
  return Math.floor((x + 2 * p - k) / s) + 1;
}

/**
 * Records pooled as y's global average pool, computed along with y (blockOutput), for context(y): the next block's
 * gate context.
 */
export function rememberPooled(y: Tensor, pooled: Tensor): void {
  y._pooled = pooled;
}

/** Global average pool to [N, C, 1, 1]: the gate context (the one blockOutput computed with x, if any). */
export function context(x: Tensor): Tensor {
  const cached = x._pooled;
  if (cached && !cached.isDisposed) return cached;
  return F.adaptiveAvgPool2d(x, 1);
}

/** bn.forwardActPooled, its pool recorded for context(y). */
function actPooled(bn: BatchNorm2d, v: Tensor, activation: 'relu' | 'relu6' | null, residual: Tensor | null): Tensor {
  const { y, pooled } = bn.forwardActPooled(v, activation, residual);
  y._pooled = pooled;
  return y;
}

/**
 * The tail of an MSGC host block: activation(bn(v) + residual). In eval without autograd the same pass also
 * computes the output's global average pool — the next MSGC block's gate context — which context() then returns
 * instead of pooling the tensor again (a full read of it: 1.4% of ResNet-18's time at batch 32).
 */
export function blockOutput(bn: BatchNorm2d, v: Tensor, activation: 'relu' | 'relu6' | null, residual: Tensor | null): Tensor {
  if (bn.training || isGradEnabled()) return bn.forwardAct(v, activation, residual);
  return actPooled(bn, v, activation, residual);
}

/**
 * A stem: act(bn(conv(x))). With `pool` (an MSGC network, whose first block takes the pool as its gate context), in
 * training or with autograd on the CPU, the activation and the output's global average pool are one pass (a residual
 * tail without a residual, F.batchNormActPooled), and so are their backward (the pool's gradient added in the
 * activation's pass), which context() then returns; otherwise the fused layer (convBnAct).
 */
export function stemForward(conv: Conv2d, bn: BatchNorm2d, x: Tensor, activation: 'relu' | 'relu6', pool: boolean): Tensor {
  if (!pool || !(bn.training || isGradEnabled()) || x.device !== 'cpu') return convBnAct(conv, bn, x, activation);
  return actPooled(bn, conv.forward(x), activation, null);
}

/**
 * Whether gatedConvBn(bn, ...) runs as the composition (training, or autograd on): then its MSGC conv can take the
 * activation in front of it (F.msgcConv2d's inputActivation), whose backward it applies as it writes its input
 * gradient, instead of the activation's own pass. The host blocks pass that activation on where its output feeds
 * the MSGC conv alone.
 */
export function composes(bn: BatchNorm2d): boolean {
  return bn.training || isGradEnabled();
}

/**
 * act(bn(msgcConv2d(x, weight, s, options)) + residual), a host block's MSGC conv with its BatchNorm. In eval without
 * autograd one call: the gathered kernels apply the BN, residual and activation to the outputs as they write them
 * (F.msgcConv2dBnAct; with `pool`, also the output's global average pool, which context() then returns); in training
 * (batch statistics) the composition.
 */
export function gatedConvBn(bn: BatchNorm2d, x: Tensor, weight: Tensor, s: Tensor, options: F.MsgcConv2dOptions,
  activation: 'relu' | 'relu6' | null, residual: Tensor | null = null, pool = false): Tensor {
  if (composes(bn)) {
    const v = F.msgcConv2d(x, weight, s, options);
    // a residual tail: the output's pool (the next block's context) from the same pass (F.batchNormActPooled)
    if (!pool || !residual) return bn.forwardAct(v, activation, residual);
    return actPooled(bn, v, activation, residual);
  }
  // (Object.assign: an object spread with added properties takes a slow path in V8 (Node 20), ~1.7 µs a call hot)
  const o: F.MsgcConv2dBnActOptions = Object.assign({}, options, { activation, residual });
  if (!pool) return F.msgcConv2dBnAct(x, weight, s, bn, o);
  const { y, pooled } = F.msgcConv2dBnActPooled(x, weight, s, bn, o);
  y._pooled = pooled;
  return y;
}

/**
 * gatedConvBn for conv(x ⊙ s) with a companion single-head gate s: [N, 1, C] (gate, or gate × attention): an MSGC
 * convolution with one head, so that without autograd only the selected input channels are read and multiplied
 * (gathered execution), and in training the gate receives its gradient through the product.
 */
export function inputGatedConvBn(conv: Conv2d, bn: BatchNorm2d, x: Tensor, s: Tensor, activation: 'relu' | 'relu6' | null,
  options: { outputMask?: Tensor | null; stats?: { gathered: boolean; skippedOutputs?: boolean }; hints?: F.MsgcConv2dOptions['hints'];
    inputActivation?: F.MsgcConv2dOptions['inputActivation'] } = {},
  residual: Tensor | null = null, pool = false): Tensor {
  // (Object.assign: a literal with properties before a spread takes V8's slow path; see gatedConvBn)
  return gatedConvBn(bn, x, conv.weight, s, Object.assign({ heads: 1, stride: conv.stride, padding: conv.padding }, options), activation, residual, pool);
}

/** msgcConv2d's hints for binary gates whose statistics the block has read (density, all open). */
export function gateHints(st: GateStats, unneededOutputs?: number): { density: number; allOnes: boolean; unionDensity: number; unneededOutputs?: number } {
  return { density: st.density, allOnes: st.allOnes, unionDensity: 1 - st.unselected, unneededOutputs };
}

/** Base of every backbone: static MAC counting and the last batch's dynamic MACs. */
export abstract class Backbone extends Module {
  abstract readonly msgc: ResolvedMsgc | null;
  protected lastInput: [number, number, number] | null = null;

  /** Static MAC accounting for an input of [C, H, W] (spec §4); `rows` receives a per-part breakdown. */
  abstract countMacs(input: number[], rows?: MacRow[]): MacCount;

  protected remember(x: Tensor): void {
    const s = x.shape;
    this.lastInput = [s[1], s[2], s[3]];
  }

  /** Blocks that report MACs, in forward order. */
  countedBlocks(): CountedBlock[] {
    const out: CountedBlock[] = [];
    for (const [, m] of this.namedModules()) if (isCountedBlock(m)) out.push(m);
    return out;
  }

  /** MACs of the last forward pass: F_main + F_dyn + F_heads − F_bonus (spec §4.2). */
  lastMacs(): LastMacs {
    if (!this.lastInput) throw new Error('lastMacs: run a forward pass first');
    const stat = this.countMacs(this.lastInput);
    if (!this.msgc) {
      return { perImage: stat.dense, dynamic: 0, dynamicTensor: null, bonus: 0, executed: stat.dense, dense: stat.dense, ratio: 1, constant: stat.dense };
    }
    let dynamic = 0;
    let bonus = 0;
    let skipped = 0;
    let tensor: Tensor | null = null;
    const blocks = this.countedBlocks();
    readDeferred(blocks.map((b) => b.lastTally));  // (gate statistics left on the GPU: one copy for all blocks)
    for (const b of blocks) {
      const t = b.lastTally;
      if (!t) continue;
      dynamic += t.dynamic;
      bonus += t.bonus;
      skipped += t.bonusSkipped;
      if (t.dynamicTensor && !t.dynamicTensor.isDisposed) tensor = tensor ? F.add(tensor, t.dynamicTensor) : t.dynamicTensor;
    }
    const constant = stat.main + stat.heads - bonus;
    const perImage = constant + dynamic;
    const executed = perImage + bonus - skipped;
    return { perImage, dynamic, dynamicTensor: tensor, bonus, executed, dense: stat.dense, ratio: perImage / stat.dense, constant };
  }

  /** Frees the parameters and buffers, and the gate statistics a last forward pass left unread on the device. */
  dispose(): void {
    for (const b of this.countedBlocks()) releaseTally(b.lastTally);
    super.dispose();
  }

  /** Mean gate density of each gated conv in the last forward pass, by block name. */
  lastDensities(): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    readDeferred(this.countedBlocks().map((b) => b.lastTally));
    for (const [name, m] of this.namedModules()) if (isCountedBlock(m) && m.lastTally) out[name] = m.lastTally.density;
    return out;
  }
}
