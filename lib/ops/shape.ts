// shape.ts: F.reshape, F.flatten, F.concat / F.slice along channels (dim 1).
import { native } from '../native';
import { recordOp, Tensor } from '../tensor/tensor';
import { checkTensor } from './util';

/** A tensor with the same values in a new shape; one dim may be -1. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  checkTensor('reshape', 'x', x);
  if (!Array.isArray(shape)) throw new Error(`reshape: shape must be an array of integers, got ${shape === null ? 'null' : typeof shape}`);
  const inShape = x.shape;
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const free = shape.filter((d) => d === -1).length;
  if (free > 1) throw new Error('reshape: at most one dimension may be -1');
  const resolved = shape.map((d) => (d === -1 ? (known === 0 ? 0 : x.size / known) : d));
  if (resolved.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot reshape [${inShape.join(', ')}] to [${shape.join(', ')}]`);
  }
  const y = new Tensor(native.reshape(x.h, resolved));
  return recordOp(y, 'reshape', [x], (g) => [new Tensor(native.reshape(g.h, inShape))]);
}

/** Flattens dims from startDim on: [N, C, H, W] -> [N, C*H*W] for startDim 1. */
export function flatten(x: Tensor, startDim = 1): Tensor {
  checkTensor('flatten', 'x', x);
  const s = x.shape;
  if (!Number.isInteger(startDim) || startDim < 0 || startDim >= Math.max(1, s.length)) {
    throw new Error(`flatten: startDim ${startDim} is outside [0, ${s.length})`);
  }
  return reshape(x, [...s.slice(0, startDim), s.slice(startDim).reduce((a, b) => a * b, 1)]);
}

/** Concatenates along dim 1 (channels); all other dims must match. */
export function concat(xs: Tensor[], dim = 1): Tensor {
  if (dim !== 1) throw new Error(`concat: only dim 1 (channels) is supported, got ${dim}`);
  if (!Array.isArray(xs) || xs.length === 0) throw new Error('concat: expected a non-empty array of tensors');
  xs.forEach((t, i) => checkTensor('concat', `xs[${i}]`, t));
  const y = new Tensor(native.concatChannels(xs.map((t) => t.h)));
  const sizes = xs.map((t) => t.shape[1]);
  return recordOp(y, 'concat', xs, (g) => {
    let start = 0;
    return xs.map((t, i) => {
      const s = start;
      start += sizes[i];
      return t.requiresGrad ? new Tensor(native.sliceChannels(g.h, s, s + sizes[i])) : null;
    });
  });
}

/** Channels [start, end) of x (dim 1). */
export function slice(x: Tensor, start: number, end: number): Tensor {
  checkTensor('slice', 'x', x);
  const xShape = x.shape;
  const y = new Tensor(native.sliceChannels(x.h, start, end));
  return recordOp(y, 'slice', [x], (g) => [new Tensor(native.sliceChannelsBackward(g.h, xShape, start))]);
}
