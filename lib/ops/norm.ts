// norm.ts: F.batchNorm2d (torch semantics: momentum 0.1 weights the new batch statistic, biased variance in the
// forward, unbiased variance into the running estimate).
import { native, NativeHandle } from '../native';
import { isGradEnabled } from '../tensor/scope';
import { recordOp, Tensor, wrapOptional } from '../tensor/tensor';
import { relu, relu6 } from './activation';
import { adaptiveAvgPool2d, recordGlobalPool } from './pool';
import { add } from './elementwise';
import { conv2d, Conv2dOptions, convOptions } from './conv';
import { checkTensor, optionalTensor } from './util';

export interface BatchNormOptions {
  training: boolean;
  momentum?: number;
  eps?: number;
}

/** x: [N, C, H, W] or [N, C]; runningMean/runningVar/weight/bias: [C]. Updates the running stats when training. */
export function batchNorm2d(
  x: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  options: BatchNormOptions,
): Tensor {
  const op = 'batchNorm2d';
  checkTensor(op, 'x', x);
  checkTensor(op, 'runningMean', runningMean);
  checkTensor(op, 'runningVar', runningVar);
  const w = optionalTensor(op, 'weight', weight);
  const b = optionalTensor(op, 'bias', bias);
  if (!options || typeof options.training !== 'boolean') throw new Error(`${op}: options.training (boolean) is required`);
  const training = options.training;
  const momentum = options.momentum ?? 0.1;
  const eps = options.eps ?? 1e-5;
  const [yh, meanH, varH] = native.batchNorm2dForward(x.h, runningMean.h, runningVar.h, w ? w.h : null, b ? b.h : null,
    training, momentum, eps);
  const y = new Tensor(yh);
  const mean = new Tensor(meanH);
  const variance = new Tensor(varH);
  return recordOp(y, op, [x, null, null, w, b], (g) => {
    const needWB = (!!w && w.requiresGrad) || (!!b && b.requiresGrad);
    const [gx, gw, gb] = native.batchNorm2dBackward(x.h, g.h, mean.h, variance.h, w ? w.h : null, training, eps, needWB);
    const gxT = new Tensor(gx);
    const gwT = wrapOptional(gw);
    const gbT = wrapOptional(gb);
    return [gxT, null, null, w && w.requiresGrad ? gwT : (gwT?.dispose(), null), b && b.requiresGrad ? gbT : (gbT?.dispose(), null)];
  }, [mean, variance]);
}

export interface BatchNormActOptions extends BatchNormOptions {
  /** applied last; null: none */
  activation?: 'relu' | 'relu6' | null;
  /** added after the normalisation, before the activation (a residual connection) */
  residual?: Tensor | null;
}

const ACT_CODE = { none: -1, relu: 0, relu6: 1 } as const;

/** The native activation code (Activation::ReLU / ReLU6, -1 for none). */
export function actCode(act: 'relu' | 'relu6' | null): number {
  return ACT_CODE[act ?? 'none'];
}

interface ActArgs {
  act: 'relu' | 'relu6' | null;
  residual: Tensor | null;
  w: Tensor | null;
  b: Tensor | null;
  recording: boolean;
  /** the fused native pass applies: eval, nothing recorded, a 4-D x */
  fused: boolean;
}

/** batchNormAct's and batchNormActPooled's argument checks and path choice. */
function actArgs(op: string, x: Tensor, runningMean: Tensor, runningVar: Tensor, weight: Tensor | null, bias: Tensor | null,
  options: BatchNormActOptions): ActArgs {
  checkTensor(op, 'x', x);
  const act = options?.activation ?? null;
  if (act !== null && act !== 'relu' && act !== 'relu6') throw new Error(`${op}: activation must be 'relu', 'relu6' or null, got ${String(act)}`);
  const residual = options?.residual ?? null;
  if (residual !== null) checkTensor(op, 'residual', residual);
  const w = optionalTensor(op, 'weight', weight);
  const b = optionalTensor(op, 'bias', bias);
  if (!options || typeof options.training !== 'boolean') throw new Error(`${op}: options.training (boolean) is required`);
  const recording = isGradEnabled() && [x, w, b, residual].some((t) => t && t.requiresGrad);
  const fused = !options.training && !recording && x.rank === 4;
  if (fused) {
    checkTensor(op, 'runningMean', runningMean);
    checkTensor(op, 'runningVar', runningVar);
  }
  return { act, residual, w, b, recording, fused };
}

type H = NativeHandle;
/** The fused native call's arguments (before its `pooled` flag). */
function nativeArgs(x: Tensor, runningMean: Tensor, runningVar: Tensor, options: BatchNormActOptions, a: ActArgs):
  [H, H, H, H | null, H | null, number, number, H | null] {
  return [x.h, runningMean.h, runningVar.h, a.w ? a.w.h : null, a.b ? a.b.h : null, options.eps ?? 1e-5,
    ACT_CODE[a.act ?? 'none'], a.residual ? a.residual.h : null];
}

/**
 * act(batchNorm2d(x) + residual): the "BN, add, ReLU" tail of a conv block. In eval mode, when no gradient is
 * recorded, it runs as one native pass over x (inference fusion: one read and one write instead of three of each);
 * otherwise it is the composition of batchNorm2d, add and the activation, with their gradients.
 */
export function batchNormAct(
  x: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  options: BatchNormActOptions,
): Tensor {
  const args = actArgs('batchNormAct', x, runningMean, runningVar, weight, bias, options);
  const { act, residual, w, b, recording, fused } = args;
  if (fused) return new Tensor(native.batchNormActEval(...nativeArgs(x, runningMean, runningVar, options, args)));
  let y = batchNorm2d(x, runningMean, runningVar, w, b, options);
  if (residual && residualTailApplies(x, residual)) {
    const out = residualTail(y, residual, act, false).y;
    if (!recording) y.dispose();  // recorded: the tail's node holds it
    return out;
  }
  if (residual) {
    const s = add(y, residual);
    if (!recording) y.dispose();  // recorded: the add's node holds it
    y = s;
  }
  if (act) {
    const a = act === 'relu' ? relu(y) : relu6(y);
    if (!recording) y.dispose();
    y = a;
  }
  return y;
}

/** Whether residualTail runs the add and the activation: a 4-D input and its shortcut on the CPU, the same shape. */
function residualTailApplies(x: Tensor, residual: Tensor | null): boolean {
  const s = x.shape;
  if (s.length !== 4 || x.device !== 'cpu' || s[0] * s[1] * s[2] * s[3] === 0) return false;
  if (!residual) return true;
  const r = residual.shape;
  return residual.device === 'cpu' && r.length === 4 && s[0] === r[0] && s[1] === r[1] && s[2] === r[2] && s[3] === r[3];
}

/**
 * act(a + r), a residual block's training tail (a: its BatchNorm's output, r: the shortcut), as one native pass with
 * one backward pass that writes the gradient of a and of r (the separate add and activation took two passes forward
 * and, backward, the activation's pass and a copy of the gradient for the add's second input; ResNet-56 training at
 * batch 32, old and new builds alternating: the dense step 0.93-0.99x the time, the MSGC one, whose context pools and
 * their broadcast-adds went too, 0.94-0.95x). With `pooled`, also y's global average pool [N, C, 1, 1] from the same
 * pass, recorded as adaptiveAvgPool2d(y) is; the autograd engine hands its gradient to the tail's backward, which
 * adds it in the same pass. r null: act(a) (a stem's output with its pool).
 */
export function residualTail(a: Tensor, r: Tensor | null, act: 'relu' | 'relu6' | null, pooled: boolean): { y: Tensor; pooled: Tensor | null } {
  const code = ACT_CODE[act ?? 'none'];
  const [yh, ph] = native.residualTailForward(a.h, r ? r.h : null, code, pooled);
  const y: Tensor = recordOp(new Tensor(yh), 'residualTail', [a, r], (g, gc) => {
    const [ga, gr] = native.residualTailBackward(y.h, g.h, gc ? gc.h : null, code, a.requiresGrad, !!r && r.requiresGrad);
    return [wrapOptional(ga), wrapOptional(gr)];
  }, [], true);
  return { y, pooled: ph ? recordGlobalPool(new Tensor(ph), y) : null };
}

/**
 * batchNormAct and the global average pool of its output ([N, C, 1, 1]: the next MSGC block's gate context). In
 * eval without autograd both come from one native pass (the means are summed from the output while it is in
 * cache); otherwise the composition of batchNormAct and adaptiveAvgPool2d.
 */
export function batchNormActPooled(
  x: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  options: BatchNormActOptions,
): { y: Tensor; pooled: Tensor } {
  const args = actArgs('batchNormActPooled', x, runningMean, runningVar, weight, bias, options);
  const { w, b, fused } = args;
  if (fused) {
    const [yh, ph] = native.batchNormActEval(...nativeArgs(x, runningMean, runningVar, options, args), true);
    return { y: new Tensor(yh), pooled: new Tensor(ph) };
  }
  if ((args.residual || args.act) && !fused && residualTailApplies(x, args.residual)) {
    // the pool from the tail's pass (training; and eval with autograd): with a residual, or an activation alone (a
    // stem's output: the activation and the pool one pass, and backward the pool's broadcast-add and the activation's
    // backward; MobileNetV2's stem at batch 32, [32, 32, 112, 112]: forward 3.2-3.5 -> 2.0 ms, backward 4.4-4.8 ->
    // 3.0-3.2 ms)
    const y0 = batchNorm2d(x, runningMean, runningVar, w, b, options);
    const r = residualTail(y0, args.residual, args.act, true);
    if (!args.recording) y0.dispose();  // recorded: the tail's node holds it
    return { y: r.y, pooled: r.pooled! };
  }
  const y = batchNormAct(x, runningMean, runningVar, w, b, options);
  return { y, pooled: adaptiveAvgPool2d(y, 1) };
}

/** The eval-mode BatchNorm a conv is followed by (its running statistics and affine parameters). */
export interface FoldedBatchNorm {
  runningMean: Tensor;
  runningVar: Tensor;
  weight: Tensor | null;
  bias: Tensor | null;
  eps?: number;
}

/**
 * The checked parts of an eval BatchNorm and activation argument pair (the fused conv + BN ops): γ and β (optional)
 * and the activation.
 */
export function checkBnAct(op: string, bn: FoldedBatchNorm, activation: 'relu' | 'relu6' | null | undefined):
  { g: Tensor | null; beta: Tensor | null; act: 'relu' | 'relu6' | null } {
  if (!bn || typeof bn !== 'object') throw new Error(`${op}: bn must be { runningMean, runningVar, weight, bias, eps? }`);
  const act = activation ?? null;
  if (act !== null && act !== 'relu' && act !== 'relu6') throw new Error(`${op}: activation must be 'relu', 'relu6' or null, got ${String(act)}`);
  checkTensor(op, 'bn.runningMean', bn.runningMean);
  checkTensor(op, 'bn.runningVar', bn.runningVar);
  return { g: optionalTensor(op, 'bn.weight', bn.weight), beta: optionalTensor(op, 'bn.bias', bn.bias), act };
}

/**
 * activation(batchNorm2d_eval(conv2d(x, weight, bias))) for inference: when no gradient is recorded, one oneDNN
 * convolution with the BatchNorm folded into its weights and bias (w·γ/√(σ²+ε), β + (b − μ)·γ/√(σ²+ε); cached until
 * the weight or a BN tensor is written) and the activation as a post-op, so the BN + activation pass over the output
 * disappears (MobileNetV2 at batch 32 spent 40% of its inference time there). With a gradient recorded it is the
 * composition of conv2d and batchNormAct (eval statistics), with their gradients. Values agree with the composition
 * to float rounding.
 */
export function conv2dBnAct(x: Tensor, weight: Tensor, bias: Tensor | null, bn: FoldedBatchNorm, options: Conv2dOptions & { activation?: 'relu' | 'relu6' | null } = {}): Tensor {
  const op = 'conv2dBnAct';
  const { stride, padding, dilation, groups } = convOptions(op, options);
  const { g, beta, act } = checkBnAct(op, bn, options.activation);
  checkTensor(op, 'x', x);
  checkTensor(op, 'weight', weight);
  const b = optionalTensor(op, 'bias', bias);
  const recording = isGradEnabled() && [x, weight, b, g, beta].some((t) => t && t.requiresGrad);
  if (recording) {
    const y = conv2d(x, weight, b, options);
    return batchNormAct(y, bn.runningMean, bn.runningVar, g, beta, { training: false, eps: bn.eps, activation: act });
  }
  return new Tensor(native.conv2dBnActEval(x.h, weight.h, b ? b.h : null, stride, padding, dilation, groups,
    bn.runningMean.h, bn.runningVar.h, g ? g.h : null, beta ? beta.h : null, bn.eps ?? 1e-5, ACT_CODE[act ?? 'none']));
}
