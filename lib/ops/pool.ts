// pool.ts: F.maxPool2d, F.avgPool2d (count_include_pad=True, floor mode, as torch's defaults) and
// F.adaptiveAvgPool2d for output sizes that divide the input.
import { native } from '../native';
import { isGradEnabled } from '../tensor/scope';
import { recordOp, Tensor } from '../tensor/tensor';
import { checkTensor, IntOrPair, pair } from './util';

export interface Pool2dOptions {
  kernelSize: IntOrPair;
  /** defaults to kernelSize */
  stride?: IntOrPair;
  padding?: IntOrPair;
}

function pool(kind: 0 | 1, name: string, x: Tensor, options: Pool2dOptions): Tensor {
  checkTensor(name, 'x', x);
  if (!options || options.kernelSize === undefined) throw new Error(`${name}: options.kernelSize is required`);
  const kernel = pair(name, 'kernelSize', options.kernelSize, 1);
  const stride = pair(name, 'stride', options.stride ?? kernel, 1);
  const padding = pair(name, 'padding', options.padding ?? 0, 0);
  // without a gradient to follow, max pooling computes no argmax workspace (oneDNN's forward_inference)
  const recording = isGradEnabled() && x.requiresGrad;
  const [yh, ws] = native.pool2dForward(kind, x.h, kernel, stride, padding, recording);
  const y = new Tensor(yh);
  const workspace = ws ? new Tensor(ws) : null;
  return recordOp(
    y,
    name,
    [x],
    (g) => [new Tensor(native.pool2dBackward(kind, x.h, kernel, stride, padding, g.h, workspace ? workspace.h : null))],
    workspace ? [workspace] : [],
  );
}

export function maxPool2d(x: Tensor, options: Pool2dOptions): Tensor {
  return pool(0, 'maxPool2d', x, options);
}

export function avgPool2d(x: Tensor, options: Pool2dOptions): Tensor {
  return pool(1, 'avgPool2d', x, options);
}

/** Average over windows that tile the input exactly: output [N, C, oh, ow] with H % oh == 0 and W % ow == 0. */
export function adaptiveAvgPool2d(x: Tensor, outputSize: IntOrPair): Tensor {
  const op = 'adaptiveAvgPool2d';
  checkTensor(op, 'x', x);
  const [oh, ow] = pair(op, 'outputSize', outputSize, 1);
  const s = x.shape;
  if (s.length !== 4) throw new Error(`${op}: x has shape [${s.join(', ')}], expected 4 dims ([N, C, H, W])`);
  if (s[2] % oh !== 0 || s[3] % ow !== 0) {
    throw new Error(`${op}: output size ${oh}x${ow} must divide the input size ${s[2]}x${s[3]}`);
  }
  const k: [number, number] = [s[2] / oh, s[3] / ow];
  if (oh !== 1 || ow !== 1 || s[2] * s[3] === 1) return pool(1, op, x, { kernelSize: k, stride: k });
  const kernel = pair(op, 'kernelSize', k, 1);
  const [yh] = native.pool2dForward(1, x.h, kernel, kernel, [0, 0]);
  return recordGlobalPool(new Tensor(yh), x);
}

/**
 * pooled (x's per-channel means [N, C, 1, 1], however computed) recorded as adaptiveAvgPool2d(x, 1): the gradient
 * gy / (H·W) stays [N, C, 1, 1], a channel broadcast autograd adds without expanding it.
 */
export function recordGlobalPool(pooled: Tensor, x: Tensor): Tensor {
  const s = x.shape, hw = s[2] * s[3];
  return recordOp(pooled, 'adaptiveAvgPool2d', [x], (g) => [new Tensor(native.scale(g.h, 1 / hw))]);
}
