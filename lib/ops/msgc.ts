// msgc.ts: the MSGC operators — F.msgcConv2d (middle-spectrum grouped convolution with per-sample, per-head
// input-channel scales) and F.gumbelSigmoidGate (the binary straight-through gate that produces the masks).
import { native } from '../native';
import { recordOp, Tensor, wrapOptional } from '../tensor/tensor';
import { checkTensor, IntOrPair, pair } from './util';

export interface MsgcConv2dOptions {
  stride?: IntOrPair;
  padding?: IntOrPair;
  /** G: output channels split into G contiguous groups, one per head */
  heads: number;
}

/**
 * y[n, group i] = W_i ⋆ (scale[n, i, :] ⊙ x[n]) where head i owns output channels [i·O/G, (i+1)·O/G).
 * x: [N, C, H, W], weight: [O, C, k, k] (the dense conv's weight, no bias), scale: [N, G, C] (gates, optionally
 * times attention). With scale ≡ 1 this is the dense convolution. Gradients flow to x, weight and scale.
 */
export function msgcConv2d(x: Tensor, weight: Tensor, scale: Tensor, options: MsgcConv2dOptions): Tensor {
  const op = 'msgcConv2d';
  checkTensor(op, 'x', x);
  checkTensor(op, 'weight', weight);
  checkTensor(op, 'scale', scale);
  if (!options || !Number.isInteger(options.heads) || options.heads < 1) {
    throw new Error(`${op}: options.heads must be a positive integer, got ${options ? options.heads : options}`);
  }
  const heads = options.heads;
  const stride = pair(op, 'stride', options.stride ?? 1, 1);
  const padding = pair(op, 'padding', options.padding ?? 0, 0);
  const y = new Tensor(native.msgcConv2dForward(x.h, weight.h, scale.h, stride, padding, heads));
  return recordOp(y, op, [x, weight, scale], (g) => {
    const [gx, gw, gs] = native.msgcConv2dBackward(x.h, weight.h, scale.h, stride, padding, heads, g.h,
      x.requiresGrad, weight.requiresGrad, scale.requiresGrad);
    return [wrapOptional(gx), wrapOptional(gw), wrapOptional(gs)];
  });
}

export interface GateOptions {
  training: boolean;
  /** τ of the tempered sigmoid (spec: 2/3) */
  temperature?: number;
  /** noise seed; by default drawn from the global generator (see manualSeed) */
  seed?: number;
}

/**
 * Binary gates from logits (spec §2.3). Training: logistic noise, mask = 1[sigmoid((l + g)/τ) ≥ 0.5], gradient
 * of the tempered sigmoid (straight-through). Eval: mask = 1[l ≥ 0], deterministic, no gradient.
 */
export function gumbelSigmoidGate(logits: Tensor, options: GateOptions): Tensor {
  const op = 'gumbelSigmoidGate';
  checkTensor(op, 'logits', logits);
  if (!options || typeof options.training !== 'boolean') throw new Error(`${op}: options.training (boolean) is required`);
  const temperature = options.temperature ?? 2 / 3;
  if (!(temperature > 0)) throw new Error(`${op}: temperature must be positive, got ${temperature}`);
  const seed = options.seed ?? native.nextSeed();
  const [maskH, softH] = native.gateForward(logits.h, temperature, options.training, seed);
  const mask = new Tensor(maskH);
  if (!softH) return mask;
  const soft = new Tensor(softH);
  return recordOp(mask, op, [logits], (g) => [new Tensor(native.gateBackward(soft.h, g.h, temperature))], [soft]);
}
