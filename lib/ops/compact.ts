// compact.ts: the compacted inference ops (CPU, AVX2 / AVX-512 gathered kernels). A tensor compacted by a mask
// [N, K, C] keeps its full shape but holds in channel slot k of sample n the k-th channel (ascending) that some row of
// the mask selects, and zeros in the slots past the last one, so that the channels no row selects are neither
// computed nor stored. MobileNetV2's MSGC blocks chain msgcConv2dBnActCompact (the expansion, compactOutput: the
// projection's gates), depthwiseConv2dBnActCompact and msgcConv2dBnActCompact again (the projection, inputMask: the
// same gates) where that pays (spec §2.10, the producer "bonus").
import { native, NativeHandle } from '../native';
import { isGradEnabled } from '../tensor/scope';
import { Tensor } from '../tensor/tensor';
import { actCode, checkBnAct, FoldedBatchNorm } from './norm';
import { checkTensor, IntOrPair, optionalTensor, pair } from './util';

export interface MsgcCompactOptions {
  stride?: IntOrPair;
  padding?: IntOrPair;
  /** G: output channels split into G contiguous groups, one per head */
  heads: number;
  activation?: 'relu' | 'relu6' | null;
  /** added after the BatchNorm, before the activation; same shape as the output (not with compactOutput) */
  residual?: Tensor | null;
  /** also return the output's global average pool [N, O, 1, 1] (not with compactOutput) */
  pooled?: boolean;
  /**
   * [N, K, O]: compute only the outputs some row selects and return them compacted by it: channel slot k of sample
   * n holds the k-th output (ascending) that some row k' selects, the slots past the last one hold zeros. One head.
   */
  compactOutput?: Tensor | null;
  /** [N, K, C]: x is compacted by this mask (as compactOutput writes); the scale may select only its channels */
  inputMask?: Tensor | null;
}

function noGradCompact(op: string, tensors: (Tensor | null | undefined)[]): void {
  if (isGradEnabled() && tensors.some((t) => t && t.requiresGrad)) {
    throw new Error(`${op}: compacted tensors are for inference: call it under noGrad() or with tensors that need no gradient`);
  }
}

/**
 * The gathered MSGC conv + eval BatchNorm (+ residual, activation) on compacted tensors (CPU, AVX2 / AVX-512
 * kernels; inference only): with options.compactOutput the outputs no row of it selects are neither computed nor
 * stored (the output is compacted by it), with options.inputMask x is compacted by that mask. MobileNetV2's
 * MSGC blocks chain expansion (compactOutput: the projection's gates), depthwiseConv2dBnActCompact and projection
 * (inputMask: the same gates), so that hidden channels no head selects cost nothing in either conv (spec §2.10).
 * A compacted tensor has the full shape; only its layout of channels differs (see MsgcCompactOptions).
 */
export function msgcConv2dBnActCompact(x: Tensor, weight: Tensor, scale: Tensor, bn: FoldedBatchNorm, options: MsgcCompactOptions):
  { y: Tensor; pooled: Tensor | null } {
  const op = 'msgcConv2dBnActCompact';
  checkTensor(op, 'x', x);
  checkTensor(op, 'weight', weight);
  checkTensor(op, 'scale', scale);
  if (!options || !Number.isInteger(options.heads) || options.heads < 1) {
    throw new Error(`${op}: options.heads must be a positive integer, got ${options ? options.heads : options}`);
  }
  const { g, beta, act } = checkBnAct(op, bn, options.activation);
  const residual = optionalTensor(op, 'residual', options.residual ?? null);
  const outMask = optionalTensor(op, 'compactOutput', options.compactOutput ?? null);
  const inMask = optionalTensor(op, 'inputMask', options.inputMask ?? null);
  noGradCompact(op, [x, weight, scale, g, beta, residual]);
  const stride = pair(op, 'stride', options.stride ?? 1, 1);
  const padding = pair(op, 'padding', options.padding ?? 0, 0);
  const pooled = !!options.pooled;
  const r = native.msgcConv2dBnActEval(x.h, weight.h, scale.h, stride, padding, options.heads, outMask ? outMask.h : null,
    bn.runningMean.h, bn.runningVar.h, g ? g.h : null, beta ? beta.h : null, bn.eps ?? 1e-5, actCode(act),
    residual ? residual.h : null, pooled, false, !!outMask, inMask ? inMask.h : null);
  if (!pooled) return { y: new Tensor(r as NativeHandle), pooled: null };
  const [yh, ph] = r as [NativeHandle, NativeHandle];
  return { y: new Tensor(yh), pooled: new Tensor(ph) };
}

/**
 * The eval depthwise convolution (weight [C, 1, kh, kw], no bias) + BatchNorm (running statistics) + activation
 * over x compacted by mask [N, K, C] (msgcConv2dBnActCompact's compactOutput), computed only on the occupied channel
 * slots; the output is compacted alike. CPU, inference only.
 */
export function depthwiseConv2dBnActCompact(x: Tensor, mask: Tensor, weight: Tensor, bn: FoldedBatchNorm,
  options: { stride?: IntOrPair; padding?: IntOrPair; activation?: 'relu' | 'relu6' | null } = {}): Tensor {
  const op = 'depthwiseConv2dBnActCompact';
  checkTensor(op, 'x', x);
  checkTensor(op, 'mask', mask);
  checkTensor(op, 'weight', weight);
  const { g, beta, act } = checkBnAct(op, bn, options.activation);
  noGradCompact(op, [x, weight, g, beta]);
  const stride = pair(op, 'stride', options.stride ?? 1, 1);
  const padding = pair(op, 'padding', options.padding ?? 0, 0);
  return new Tensor(native.depthwiseConv2dBnActCompactEval(x.h, mask.h, weight.h, bn.runningMean.h, bn.runningVar.h,
    g ? g.h : null, beta ? beta.h : null, bn.eps ?? 1e-5, actCode(act), stride, padding));
}
