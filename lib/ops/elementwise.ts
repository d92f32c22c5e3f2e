// elementwise.ts: F.add / F.sub / F.mul with broadcasting (dims equal or 1, same rank, or a one-element
// operand, e.g. per-sample-per-channel scales [N, C, 1, 1] against [N, C, H, W]), F.sum, F.mean, F.scale.
import { native } from '../native';
import { recordOp, Tensor } from '../tensor/tensor';
import { checkTensor, sameShape } from './util';

const ADD = 0;
const SUB = 1;
const MUL = 2;

function broadcastsTo(small: number[], big: number[]): boolean {
  if (small.reduce((a, b) => a * b, 1) === 1 && small.length <= big.length) return true;
  return small.length === big.length && small.every((d, i) => d === big[i] || d === 1);
}

/** Gradient of a broadcast operand: g summed down to `shape`. */
function reduceGrad(g: Tensor, shape: number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  if (shape.length !== g.rank) {
    const s = new Tensor(native.sumAll(g.h));
    const r = new Tensor(native.reshape(s.h, shape));
    s.dispose();
    return r;
  }
  return new Tensor(native.reduceToShape(g.h, shape));
}

function binary(kind: number, name: string, a: Tensor, b: Tensor | number): Tensor {
  checkTensor(name, 'a', a);
  if (typeof b === 'number') {
    if (kind === MUL) return scale(a, b);
    throw new Error(`${name}: b must be a Tensor (use F.scale for numbers)`);
  }
  checkTensor(name, 'b', b);
  const as = a.shape;
  const bs = b.shape;
  let y: Tensor;
  if (broadcastsTo(bs, as)) {
    y = new Tensor(native.binary(kind, a.h, b.h));
  } else if (broadcastsTo(as, bs) && kind !== SUB) {
    y = new Tensor(native.binary(kind, b.h, a.h));
  } else if (broadcastsTo(as, bs)) {
    const t = new Tensor(native.binary(SUB, b.h, a.h));
    y = new Tensor(native.scale(t.h, -1));
    t.dispose();
  } else {
    throw new Error(`${name}: shapes [${as.join(', ')}] and [${bs.join(', ')}] do not broadcast (each dim must match or be 1)`);
  }
  return recordOp(y, name, [a, b], (g) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (a.requiresGrad) {
      const full = kind === MUL ? new Tensor(native.binary(MUL, g.h, b.h)) : g;
      ga = reduceGrad(full, as);
      if (full !== g && full !== ga) full.dispose();
    }
    if (b.requiresGrad) {
      let full = kind === MUL ? new Tensor(native.binary(MUL, g.h, a.h)) : g;
      if (kind === SUB) full = new Tensor(native.scale(g.h, -1));
      gb = reduceGrad(full, bs);
      if (full !== g && full !== gb) full.dispose();
    }
    return [ga, gb];
  });
}

export function add(a: Tensor, b: Tensor): Tensor {
  return binary(ADD, 'add', a, b);
}
export function sub(a: Tensor, b: Tensor): Tensor {
  return binary(SUB, 'sub', a, b);
}
/** a * b elementwise (b may broadcast, e.g. [N, C, 1, 1]); a number b scales. */
export function mul(a: Tensor, b: Tensor | number): Tensor {
  return binary(MUL, 'mul', a, b);
}

/** alpha * x */
export function scale(x: Tensor, alpha: number): Tensor {
  checkTensor('scale', 'x', x);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new Error(`scale: alpha must be a finite number, got ${alpha}`);
  const y = new Tensor(native.scale(x.h, alpha));
  return recordOp(y, 'scale', [x], (g) => [new Tensor(native.scale(g.h, alpha))]);
}

/** Sum of all elements (shape []). */
export function sum(x: Tensor): Tensor {
  checkTensor('sum', 'x', x);
  const shape = x.shape;
  const y = new Tensor(native.sumAll(x.h));
  return recordOp(y, 'sum', [x], (g) => [new Tensor(native.broadcastScalar(g.h, shape, 1))]);
}

/** Mean of all elements (shape []). */
export function mean(x: Tensor): Tensor {
  checkTensor('mean', 'x', x);
  const shape = x.shape;
  const n = Math.max(1, x.size);
  const s = new Tensor(native.sumAll(x.h));
  const y = new Tensor(native.scale(s.h, 1 / n));
  s.dispose();
  return recordOp(y, 'mean', [x], (g) => [new Tensor(native.broadcastScalar(g.h, shape, 1 / n))]);
}
