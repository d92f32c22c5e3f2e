// elementwise.test.ts: F.add / F.sub / F.mul (same shape and broadcast, on either side), F.scale, F.sum, F.mean
// against float64 references with torch broadcasting; gradients of both operands (the broadcast one reduced)
// against central differences and float64; mixed blocked/plain layouts; bad input through F and natively.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { closeness, gradCheck, numel, randomArray } from './helpers/gradcheck';
import { expectError, eye, settledLiveCount } from './helpers/testing';

const F = msgc.F;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});

type Op = 'add' | 'sub' | 'mul';
const ops: Record<Op, (a: Tensor, b: Tensor) => Tensor> = { add: F.add, sub: F.sub, mul: F.mul };
const apply: Record<Op, (u: number, v: number) => number> = { add: (u, v) => u + v, sub: (u, v) => u - v, mul: (u, v) => u * v };

/** torch broadcasting (right-aligned, dims equal or 1): the result shape and, per output element, the source offsets. */
function broadcast(as: number[], bs: number[]): { shape: number[]; ai: Int32Array; bi: Int32Array } {
  const r = Math.max(as.length, bs.length);
  const pa = [...Array(r - as.length).fill(1), ...as];
  const pb = [...Array(r - bs.length).fill(1), ...bs];
  const shape = pa.map((d, i) => {
    if (d !== pb[i] && d !== 1 && pb[i] !== 1) throw new Error('reference: shapes do not broadcast');
    return Math.max(d, pb[i]);
  });
  const n = numel(shape);
  const ai = new Int32Array(n);
  const bi = new Int32Array(n);
  const idx = new Array(r).fill(0);
  for (let e = 0; e < n; e++) {
    let oa = 0;
    let ob = 0;
    for (let d = 0; d < r; d++) {
      oa = oa * pa[d] + (pa[d] === 1 ? 0 : idx[d]);
      ob = ob * pb[d] + (pb[d] === 1 ? 0 : idx[d]);
    }
    ai[e] = oa;
    bi[e] = ob;
    for (let d = r - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return { shape, ai, bi };
}

/** float64 forward and the gradients of sum(y * g) for both operands. */
function binaryRef(op: Op, a: ArrayLike<number>, as: number[], b: ArrayLike<number>, bs: number[], g?: ArrayLike<number>) {
  const { shape, ai, bi } = broadcast(as, bs);
  const y = new Float64Array(ai.length);
  const ga = new Float64Array(numel(as));
  const gb = new Float64Array(numel(bs));
  for (let e = 0; e < ai.length; e++) {
    y[e] = apply[op](a[ai[e]], b[bi[e]]);
    if (g) {
      ga[ai[e]] += op === 'mul' ? g[e] * b[bi[e]] : g[e];
      gb[bi[e]] += op === 'mul' ? g[e] * a[ai[e]] : op === 'sub' ? -g[e] : g[e];
    }
  }
  return { y, shape, ga, gb };
}

const shapePairs: [number[], number[]][] = [
  [[2, 3, 4, 5], [2, 3, 4, 5]],
  [[2, 3, 4, 5], [2, 3, 1, 1]],
  [[2, 3, 4, 5], [1, 3, 1, 1]],
  [[2, 3, 4, 5], [1, 1, 1, 1]],
  [[2, 3, 4, 5], [1]],
  [[2, 3, 4, 5], []],
  [[2, 3, 4, 5], [2, 1, 4, 1]],
  [[2, 3, 4, 5], [1, 3, 4, 5]],
  [[6, 7], [1, 7]],
  [[6, 7], [6, 1]],
  // broadcast on the left operand
  [[2, 3, 1, 1], [2, 3, 4, 5]],
  [[1, 3, 1, 1], [2, 3, 4, 5]],
  [[1], [2, 3, 4, 5]],
  [[], [6, 7]],
  [[1, 7], [6, 7]],
];

describe('add / sub / mul', () => {
  for (const op of ['add', 'sub', 'mul'] as Op[]) {
    for (const [as, bs] of shapePairs) {
      test(`${op} ${JSON.stringify(as)} with ${JSON.stringify(bs)}: forward, float64 gradients, central differences`, () => {
        msgc.tidy(() => {
          const ad = randomArray(numel(as), numel(as) + 1, -2, 2);
          const bd = randomArray(numel(bs), numel(bs) + 2, -2, 2);
          const ref0 = binaryRef(op, ad, as, bd, bs);
          const gd = randomArray(ref0.y.length, 5);
          const ref = binaryRef(op, ad, as, bd, bs, gd);
          const a = msgc.tensor(ad, as, { requiresGrad: true });
          const b = msgc.tensor(bd, bs, { requiresGrad: true });
          const y = ops[op](a, b);
          expect(y.shape).toEqual(ref.shape);
          expect(closeness(y.toFloat32Array(), ref.y, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
          y.backward(msgc.tensor(gd, ref.shape));
          expect(a.grad!.shape).toEqual(as);
          expect(b.grad!.shape).toEqual(bs);
          expect(closeness(a.grad!.toFloat32Array(), ref.ga, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
          expect(closeness(b.grad!.toFloat32Array(), ref.gb, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
          gradCheck(([a, b]) => ops[op](a, b), [a, b]);
        });
      });
    }
  }

  test('only one operand requiring grad', () => {
    msgc.tidy(() => {
      for (const op of ['add', 'sub', 'mul'] as Op[]) {
        const a = msgc.tensor(randomArray(24, 11), [2, 3, 2, 2], { requiresGrad: true });
        const b = msgc.tensor(randomArray(6, 12), [2, 3, 1, 1]);
        gradCheck(([a, b]) => ops[op](a, b), [a, b]);
        expect(b.grad).toBeNull();
        const c = msgc.tensor(randomArray(24, 13), [2, 3, 2, 2]);
        const d = msgc.tensor(randomArray(6, 14), [2, 3, 1, 1], { requiresGrad: true });
        gradCheck(([c, d]) => ops[op](c, d), [c, d]);
        gradCheck(([c, d]) => ops[op](d, c), [c, d]);
        expect(c.grad).toBeNull();
      }
    });
  });

  test('the same tensor on both sides', () => {
    msgc.tidy(() => {
      const xd = randomArray(12, 15);
      for (const op of ['add', 'sub', 'mul'] as Op[]) {
        const x = msgc.tensor(xd, [3, 4], { requiresGrad: true });
        F.sum(ops[op](x, x)).backward();
        const want = Array.from(xd, (v) => (op === 'add' ? 2 : op === 'sub' ? 0 : 2 * v));
        expect(closeness(x.grad!.toFloat32Array(), want, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      }
    });
  });

  test('F.mul with a number scales', () => {
    msgc.tidy(() => {
      const xd = randomArray(10, 16);
      const x = msgc.tensor(xd, [2, 5], { requiresGrad: true });
      const y = F.mul(x, -2.5);
      expect(closeness(y.toFloat32Array(), Array.from(xd, (v) => -2.5 * v), 1e-7, 1e-6)).toBeLessThanOrEqual(1);
      gradCheck(([x]) => F.mul(x, 0.75), [x]);
    });
  });
});

describe('mixed layouts (blocked conv output with plain tensors)', () => {
  const shape = [2, 6, 3, 3];
  const cases: { name: string; other: number[]; blockedLeft: boolean; otherBlocked?: boolean }[] = [
    { name: 'blocked op plain (same shape)', other: shape, blockedLeft: true },
    { name: 'plain op blocked (same shape)', other: shape, blockedLeft: false },
    { name: 'blocked op blocked (same shape)', other: shape, blockedLeft: true, otherBlocked: true },
    { name: 'blocked op [N, C, 1, 1]', other: [2, 6, 1, 1], blockedLeft: true },
    { name: 'blocked op [1, C, 1, 1]', other: [1, 6, 1, 1], blockedLeft: true },
    { name: 'blocked op one element', other: [1], blockedLeft: true },
    { name: '[N, C, 1, 1] op blocked', other: [2, 6, 1, 1], blockedLeft: false },
    { name: 'one element op blocked', other: [], blockedLeft: false },
  ];
  for (const c of cases) {
    for (const op of ['add', 'sub', 'mul'] as Op[]) {
      test(`${op}: ${c.name}`, () => {
        msgc.tidy(() => {
          const e = eye(6);
          const xd = randomArray(numel(shape), 21, -2, 2);
          const od = randomArray(numel(c.other), 22, -2, 2);
          const x = msgc.tensor(xd, shape, { requiresGrad: true });
          const o = msgc.tensor(od, c.other, { requiresGrad: true });
          const layouts = new Set<string>();
          const fn = ([x, o]: Tensor[]): Tensor => {
            const xb = F.conv2d(x, e);
            layouts.add(xb.layout);
            const ob = c.otherBlocked ? F.conv2d(o, e) : o;
            return c.blockedLeft ? ops[op](xb, ob) : ops[op](ob, xb);
          };
          const y = fn([x, o]);
          const ref = c.blockedLeft ? binaryRef(op, xd, shape, od, c.other) : binaryRef(op, od, c.other, xd, shape);
          expect(y.shape).toEqual(ref.shape);
          expect(closeness(y.toFloat32Array(), ref.y, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
          gradCheck(fn, [x, o]);
          expect([...layouts]).toEqual(['blocked']);
        });
      });
    }
  }

  // 20 channels: nChw16c with a padded second block
  for (const op of ['add', 'sub', 'mul'] as Op[]) {
    test(`${op}: 16-lane blocked [2, 20, 5, 3] op [N, C, 1, 1] and [1, C, 1, 1]`, () => {
      msgc.tidy(() => {
        const big = [2, 20, 5, 3];
        const e20 = eye(20);
        for (const other of [[2, 20, 1, 1], [1, 20, 1, 1]]) {
          const xd = randomArray(numel(big), 31, -2, 2);
          const od = randomArray(numel(other), 32, -2, 2);
          const xb = F.conv2d(msgc.tensor(xd, big), e20);
          expect(xb.layout).toBe('blocked');
          const y = ops[op](xb, msgc.tensor(od, other));
          const ref = binaryRef(op, xd, big, od, other);
          expect(closeness(y.toFloat32Array(), ref.y, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
        }
      });
    });
  }

  test('a blocked result feeds further elementwise ops', () => {
    msgc.tidy(() => {
      const e = eye(6);
      const x = msgc.tensor(randomArray(numel(shape), 25), shape, { requiresGrad: true });
      const s = msgc.tensor(randomArray(12, 26), [2, 6, 1, 1], { requiresGrad: true });
      const p = msgc.tensor(randomArray(numel(shape), 27), shape, { requiresGrad: true });
      gradCheck(([x, s, p]) => {
        const xb = F.conv2d(x, e);
        return F.sub(F.mul(F.add(xb, p), s), F.scale(xb, 0.5));
      }, [x, s, p]);
    });
  });
});

describe('scale / sum / mean', () => {
  for (const blocked of [false, true]) {
    test(`forward and backward, ${blocked ? 'blocked' : 'plain'} input`, () => {
      msgc.tidy(() => {
        const shape = [2, 5, 3, 4];
        const xd = randomArray(numel(shape), 31, -3, 3);
        const e = eye(5);
        const x = msgc.tensor(xd, shape, { requiresGrad: true });
        const prep = (t: Tensor): Tensor => {
          if (!blocked) return t;
          const b = F.conv2d(t, e);
          expect(b.layout).toBe('blocked');
          return b;
        };
        let s64 = 0;
        for (const v of xd) s64 += v;
        for (const alpha of [2.5, -1, 0]) {
          const y = F.scale(prep(x), alpha);
          expect(y.shape).toEqual(shape);
          expect(closeness(y.toFloat32Array(), Array.from(xd, (v) => alpha * v), 1e-7, 1e-6)).toBeLessThanOrEqual(1);
          gradCheck(([x]) => F.scale(prep(x), alpha), [x]);
        }
        const sum = F.sum(prep(x));
        expect(sum.shape).toEqual([]);
        expect(closeness([sum.item()], [s64], 1e-5, 1e-6)).toBeLessThanOrEqual(1);
        const mean = F.mean(prep(x));
        expect(mean.shape).toEqual([]);
        expect(closeness([mean.item()], [s64 / xd.length], 1e-6, 1e-6)).toBeLessThanOrEqual(1);
        gradCheck(([x]) => F.sum(prep(x)), [x]);
        gradCheck(([x]) => F.mean(prep(x)), [x]);
        // the analytic gradients: ones and 1/n
        const x2 = msgc.tensor(xd, shape, { requiresGrad: true });
        F.add(F.sum(prep(x2)), F.scale(F.mean(prep(x2)), 3)).backward();
        expect(closeness(x2.grad!.toFloat32Array(), new Array(xd.length).fill(1 + 3 / xd.length), 1e-7, 1e-6)).toBeLessThanOrEqual(1);
      });
    });
  }

  test('sum and mean of scalars, rank 1 and large tensors', () => {
    msgc.tidy(() => {
      expect(F.sum(msgc.tensor([4.5], [])).item()).toBe(4.5);
      expect(F.mean(msgc.tensor([1, 2, 3, 6], [4])).item()).toBe(3);
      const n = 100003;
      const xd = randomArray(n, 33, 0, 1);
      let s = 0;
      for (const v of xd) s += v;
      expect(closeness([F.sum(msgc.tensor(xd, [n])).item()], [s], 1e-3, 1e-6)).toBeLessThanOrEqual(1);
      expect(closeness([F.mean(msgc.tensor(xd, [n])).item()], [s / n], 1e-6, 1e-6)).toBeLessThanOrEqual(1);
    });
  });
});

describe('bad input', () => {
  test('through F: non-broadcastable shapes, non-tensors, numbers, disposed tensors', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 3]);
      const x4 = msgc.zeros([2, 3, 4, 4]);
      const gone = msgc.zeros([2, 3]);
      gone.dispose();
      const call = (op: string) => F[op as Op] as unknown as (a: unknown, b: unknown) => Tensor;
      for (const op of ['add', 'sub', 'mul']) {
        expectError(() => call(op)(x, msgc.zeros([3, 2])), new RegExp(`^${op}: shapes \\[2, 3\\] and \\[3, 2\\] do not broadcast`));
        expectError(() => call(op)(x4, msgc.zeros([2, 4, 1, 1])), new RegExp(`^${op}: shapes \\[2, 3, 4, 4\\] and \\[2, 4, 1, 1\\] do not broadcast`));
        expectError(() => call(op)(msgc.zeros([2, 2]), x4), new RegExp(`^${op}: shapes \\[2, 2\\] and \\[2, 3, 4, 4\\] do not broadcast`));
        expectError(() => call(op)(msgc.zeros([4]), x), new RegExp(`^${op}: shapes .* do not broadcast`));
        expectError(() => call(op)('a', x), new RegExp(`^${op}: a must be a Tensor, got string`));
        expectError(() => call(op)(x, undefined), new RegExp(`^${op}: b must be a Tensor, got undefined`));
        expectError(() => call(op)(x, [1, 2, 3]), new RegExp(`^${op}: b must be a Tensor, got object`));
        expectError(() => call(op)(gone, x), new RegExp(`^${op}: a was disposed`));
        expectError(() => call(op)(x, gone), new RegExp(`^${op}: b was disposed`));
      }
      expectError(() => call('add')(x, 2), /^add: b must be a Tensor \(use F\.scale for numbers\)/);
      expectError(() => call('sub')(x, 2), /^sub: b must be a Tensor \(use F\.scale for numbers\)/);
      const scale = F.scale as unknown as (x: unknown, a: unknown) => Tensor;
      expectError(() => scale(x, NaN), /^scale: alpha must be a finite number, got NaN/);
      expectError(() => scale(x, Infinity), /^scale: alpha must be a finite number/);
      expectError(() => scale(x, '2'), /^scale: alpha must be a finite number/);
      expectError(() => scale(x, undefined), /^scale: alpha must be a finite number/);
      expectError(() => scale(null, 2), /^scale: x must be a Tensor, got null/);
      expectError(() => scale(gone, 2), /^scale: x was disposed/);
      expectError(() => (F.sum as unknown as (x: unknown) => Tensor)(null), /^sum: x must be a Tensor, got null/);
      expectError(() => (F.sum as unknown as (x: unknown) => Tensor)([1, 2]), /^sum: x must be a Tensor, got object/);
      expectError(() => F.sum(gone), /^sum: x was disposed/);
      expectError(() => (F.mean as unknown as (x: unknown) => Tensor)(5), /^mean: x must be a Tensor, got number/);
      expectError(() => F.mean(gone), /^mean: x was disposed/);
    });
  });

  test('directly against the native elementwise functions: garbage never crashes', () => {
    msgc.tidy(() => {
      const a = msgc.tensor(randomArray(24, 41), [2, 3, 2, 2]);
      const b = msgc.tensor(randomArray(6, 42), [2, 3, 1, 1]);
      const s = msgc.tensor([2], []);
      const NT = native.NativeTensor as unknown as { new (): object; prototype: object };
      const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
      const call = (name: string, ...args: unknown[]) => () => n[name](...args);
      expectError(call('binary'), /^binary: kind must be a number, got undefined/);
      expectError(call('binary', 3, a.h, b.h), /^binary: kind must be in \[0, 2\], got 3/);
      expectError(call('binary', '0', a.h, b.h), /^binary: kind must be a number, got a string/);
      expectError(call('binary', NaN, a.h, b.h), /^binary: kind must be finite/);
      expectError(call('binary', 0, a.h), /^add: b must be a Tensor, got undefined/);
      expectError(call('binary', 1, [1, 2], b.h), /^sub: a must be a Tensor, got an array/);
      expectError(call('binary', 2, a.h, new NT()), /^mul: b was disposed/);
      expectError(call('binary', 2, a.h, Object.create(NT.prototype)), /^mul: b must be a Tensor/);
      expectError(call('binary', 0, b.h, a.h), /^add: b has shape \[2, 3, 2, 2\] and cannot broadcast to a's shape \[2, 3, 1, 1\]/);
      expectError(call('binary', 0, a.h, msgc.zeros([3, 1, 1]).h), /^add: b has shape \[3, 1, 1\] and cannot broadcast.*ranks differ/);
      expectError(call('reduceToShape', a.h, [2, 3]), /^reduceToShape: shape \[2, 3\] must have 4 dims/);
      expectError(call('reduceToShape', a.h, [2, 2, 1, 1]), /^reduceToShape: shape \[2, 2, 1, 1\] does not broadcast/);
      expectError(call('reduceToShape', a.h, 'shape'), /^reduceToShape: shape must be an array of dimensions, got a string/);
      expectError(call('reduceToShape', a.h, [2, 3, -1, 1]), /^reduceToShape: shape\[2\] must be a non-negative integer/);
      expectError(call('scale', a.h, NaN), /^scale: alpha must be finite/);
      expectError(call('scale', a.h), /^scale: alpha must be a number, got undefined/);
      expectError(call('scale', 'x', 2), /^scale: x must be a Tensor, got a string/);
      expectError(call('sumAll'), /^sum: x must be a Tensor, got undefined/);
      expectError(call('sumAll', {}), /^sum: x must be a Tensor, got an object/);
      expectError(call('broadcastScalar', a.h, [2], 1), /^broadcastScalar: scalar has 24 elements, expected 1/);
      expectError(call('broadcastScalar', s.h, [2, NaN], 1), /^broadcastScalar: shape\[1\] must be a non-negative integer/);
      expectError(call('broadcastScalar', s.h, [1e5, 1e5], 1), /^broadcastScalar: shape \[100000, 100000\] has 1e\+10 elements; at most 4e9/);
      expectError(call('broadcastScalar', s.h, [2], Infinity), /^broadcastScalar: alpha must be finite/);
      expectError(call('addInPlace', a.h, b.h, 1), /^addInPlace: src has shape \[2, 3, 1, 1\], expected \[2, 3, 2, 2\]/);
      expectError(call('addInPlace', a.h, a.h), /^addInPlace: alpha must be a number, got undefined/);
      expectError(call('addInPlace', undefined, a.h, 1), /^addInPlace: dst must be a Tensor, got undefined/);
      const garbage: unknown[] = [undefined, null, 'str', NaN, -1, 1.5, [1, 2, 3], [], {}, true, new Float32Array(3), new NT()];
      const sweeps: [string, unknown[], RegExp][] = [
        ['binary', [0, a.h, b.h], /^(binary|add|sub|mul): /],
        ['binary', [2, a.h, a.h], /^(binary|add|sub|mul): /],
        ['reduceToShape', [a.h, [2, 3, 1, 1]], /^reduceToShape: /],
        ['scale', [a.h, 2], /^scale: /],
        ['sumAll', [a.h], /^sum: /],
        ['broadcastScalar', [s.h, [2, 2], 1], /^broadcastScalar: /],
        ['addInPlace', [msgc.zeros([2, 3, 2, 2]).h, a.h, 1], /^addInPlace: /],
      ];
      for (const [name, good, re] of sweeps) {
        for (let i = 0; i < good.length; i++) {
          for (const v of garbage) {
            const args = good.slice();
            args[i] = v;
            try {
              const out = n[name](...args) as { dispose(): void } | undefined;
              if (out) out.dispose();
            } catch (e) {
              expect(Object.prototype.toString.call(e)).toBe('[object Error]');
              expect((e as Error).message).toMatch(re);
            }
          }
        }
      }
    });
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
