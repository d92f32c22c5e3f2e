// conv.ts: F.conv2d (torch.nn.functional.conv2d semantics), forward and backward on the native kernels.
import { native } from '../native';
import { recordOp, Tensor, wrapOptional } from '../tensor/tensor';
import { checkTensor, IntOrPair, optionalTensor, pair } from './util';

export interface Conv2dOptions {
  stride?: IntOrPair;
  padding?: IntOrPair;
  dilation?: IntOrPair;
  groups?: number;
}

/** x: [N, C, H, W], weight: [K, C/groups, kH, kW], bias: [K] | null -> [N, K, OH, OW] */
/** Checks Conv2dOptions and returns them with defaults, as the native calls take them. */
export function convOptions(op: string, options: Conv2dOptions): { stride: [number, number]; padding: [number, number]; dilation: [number, number]; groups: number } {
  if (options === null || typeof options !== 'object') throw new Error(`${op}: options must be an object, got ${options === null ? 'null' : typeof options}`);
  const stride = pair(op, 'stride', options.stride ?? 1, 1);
  const padding = pair(op, 'padding', options.padding ?? 0, 0);
  const dilation = pair(op, 'dilation', options.dilation ?? 1, 1);
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`${op}: groups must be a positive integer, got ${groups}`);
  return { stride, padding, dilation, groups };
}

export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  const { stride, padding, dilation, groups } = convOptions(op, options);
  checkTensor(op, 'x', x);
  checkTensor(op, 'weight', weight);
  const b = optionalTensor(op, 'bias', bias);
  const y = new Tensor(native.conv2dForward(x.h, weight.h, b ? b.h : null, stride, padding, dilation, groups));
  return recordOp(y, op, [x, weight, b], (g) => {
    const [gx, gw, gb] = native.conv2dBackward(x.h, weight.h, stride, padding, dilation, groups, g.h,
      x.requiresGrad, weight.requiresGrad, !!b && b.requiresGrad);
    return [wrapOptional(gx), wrapOptional(gw), wrapOptional(gb)];
  });
}
