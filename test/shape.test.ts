// shape.test.ts: F.reshape (with -1), F.flatten, F.concat and F.slice along channels against float64 index
// arithmetic, backward against central differences, blocked (conv-output) inputs, and bad input through F and
// the native boundary.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { gradCheck, numel, randomArray } from './helpers/gradcheck';
import { expectError, eye, settledLiveCount } from './helpers/testing';

const F = msgc.F;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});

function blockedOf(x: Tensor): Tensor {
  const y = F.conv2d(x, eye(x.shape[1]));
  expect(y.layout).toBe('blocked');
  return y;
}

/** Reference channel concat of row-major [N, C_i, ...rest] arrays. */
function concatRef(datas: ArrayLike<number>[], shapes: number[][]): { y: number[]; shape: number[] } {
  const N = shapes[0][0];
  const inner = numel(shapes[0].slice(2));
  const y: number[] = [];
  for (let n = 0; n < N; n++) {
    datas.forEach((d, i) => {
      const block = shapes[i][1] * inner;
      for (let j = 0; j < block; j++) y.push(d[n * block + j]);
    });
  }
  const shape = shapes[0].slice();
  shape[1] = shapes.reduce((s, sh) => s + sh[1], 0);
  return { y, shape };
}

function sliceRef(d: ArrayLike<number>, shape: number[], start: number, end: number): number[] {
  const [N, C] = shape;
  const inner = numel(shape.slice(2));
  const y: number[] = [];
  for (let n = 0; n < N; n++) for (let c = start; c < end; c++) for (let i = 0; i < inner; i++) y.push(d[(n * C + c) * inner + i]);
  return y;
}

const f32 = (a: ArrayLike<number>): number[] => Array.from(a, (v) => Math.fround(v));

describe('a tensor\'s shape as read from its handle', () => {
  // (Tensor reads it through NativeTensor.dims() and the binding's shared Float64Array; each is checked against the
  // shape the tensor was made with, and the handle's own `shape` accessor)
  test('ranks 0 to 8 (the most a shape may have), dimensions of 0, 1 and past 2^31 (in a shape of zero elements)', () => {
    const shapes: number[][] = [[], [7], [0], [2, 3], [1, 64, 56, 56], [3, 0, 2 ** 31 + 5], [2 ** 33, 0]];
    for (let r = 5; r <= 8; r++) shapes.push(Array.from({ length: r }, (_, i) => (i % 3 === 0 ? 2 : i + 1)));
    for (const shape of shapes) {
      const t = msgc.zeros(shape);
      expect(t.shape).toEqual(shape);
      expect(t.rank).toBe(shape.length);
      expect(t.size).toBe(shape.reduce((a, b) => a * b, 1));
      expect(t.h.shape).toEqual(shape);
      t.dispose();
    }
  });

  test('an op\'s output reads the shape the op produced, and a disposed handle says so', () => {
    msgc.tidy(() => {
      const y = msgc.F.conv2d(msgc.randn([2, 3, 5, 4]), msgc.randn([6, 3, 3, 3]), null, { padding: 1, stride: 2 });
      expect(y.shape).toEqual([2, 6, 3, 2]);
    });
    const h = native.full([4, 1], 0);
    h.dispose();
    expectError(() => h.dims(), /^tensor\.shape: the tensor was disposed/);
  });
});

describe('reshape and flatten', () => {
  const cases: [number[], number[], number[]][] = [
    [[2, 3, 4], [6, 4], [6, 4]],
    [[2, 3, 4], [-1, 4], [6, 4]],
    [[2, 3, 4], [2, -1], [2, 12]],
    [[2, 3, 4], [-1], [24]],
    [[2, 3, 4], [4, 1, -1, 2], [4, 1, 3, 2]],
    [[24], [2, 3, 2, 2], [2, 3, 2, 2]],
    [[1], [], []],
    [[], [1, 1, -1], [1, 1, 1]],
    [[0, 3], [-1, 3], [0, 3]],
  ];
  for (const [from, to, want] of cases) {
    test(`${JSON.stringify(from)} -> ${JSON.stringify(to)}`, () => {
      msgc.tidy(() => {
        const xd = randomArray(numel(from), numel(from) + 3);
        const x = msgc.tensor(xd, from, { requiresGrad: true });
        const y = F.reshape(x, to);
        expect(y.shape).toEqual(want);
        expect(Array.from(y.toFloat32Array())).toEqual(f32(xd));
        if (numel(from) > 0) {
          gradCheck(([x]) => F.reshape(x, to), [x]);
          expect(x.grad!.shape).toEqual(from);
        }
      });
    });
  }

  test('a blocked input reshapes to its row-major values, and the gradient flows back through the conv', () => {
    msgc.tidy(() => {
      const shape = [2, 6, 3, 3];
      const xd = randomArray(numel(shape), 7);
      const x = msgc.tensor(xd, shape, { requiresGrad: true });
      const y = F.reshape(blockedOf(x), [2, -1]);
      expect(y.shape).toEqual([2, 54]);
      expect(Array.from(y.toFloat32Array())).toEqual(f32(xd));
      const e = eye(6);
      gradCheck(([x]) => F.reshape(F.conv2d(x, e), [12, 9]), [x]);
    });
  });

  test('writing into the reshape of a blocked tensor does not change that tensor', () => {
    msgc.tidy(() => {
      const shape = [2, 6, 3, 3];
      const xd = randomArray(numel(shape), 8);
      const xb = blockedOf(msgc.tensor(xd, shape));
      const y = F.reshape(xb, [-1]);
      y.assign(new Float32Array(y.size).fill(7));
      expect(Array.from(xb.toFloat32Array())).toEqual(f32(xd));
      // an op reading xb's plain values and one reading its blocked buffer agree
      expect(Array.from(F.sum(xb).toFloat32Array())).toEqual(Array.from(F.sum(F.scale(xb, 1)).toFloat32Array()));
      expect(Array.from(F.reshape(xb, [-1]).toFloat32Array())).toEqual(f32(xd));
    });
  });

  test('flatten', () => {
    msgc.tidy(() => {
      const shape = [2, 3, 4, 5];
      const xd = randomArray(numel(shape), 9);
      const x = msgc.tensor(xd, shape, { requiresGrad: true });
      for (const [startDim, want] of [[undefined, [2, 60]], [0, [120]], [1, [2, 60]], [2, [2, 3, 20]], [3, [2, 3, 4, 5]]] as [number | undefined, number[]][]) {
        const y = F.flatten(x, startDim);
        expect(y.shape).toEqual(want);
        expect(Array.from(y.toFloat32Array())).toEqual(f32(xd));
        gradCheck(([x]) => F.flatten(x, startDim), [x], { samples: 8 });
      }
      const yb = F.flatten(blockedOf(x));
      expect(yb.shape).toEqual([2, 60]);
      expect(Array.from(yb.toFloat32Array())).toEqual(f32(xd));
    });
  });
});

describe('concat and slice along channels', () => {
  const concatCases: number[][][] = [
    [[2, 3], [2, 5], [2, 1]],
    [[3, 4]],
    [[2, 3, 2, 2], [2, 5, 2, 2]],
    [[2, 1, 3, 2], [2, 4, 3, 2], [2, 2, 3, 2]],
    [[1, 2, 3], [1, 3, 3]],
    [[2, 0, 2, 2], [2, 3, 2, 2]],
  ];
  for (const shapes of concatCases) {
    test(`concat ${JSON.stringify(shapes)}`, () => {
      msgc.tidy(() => {
        const datas = shapes.map((s, i) => randomArray(numel(s), 20 + i));
        const xs = shapes.map((s, i) => msgc.tensor(datas[i], s, { requiresGrad: true }));
        const y = F.concat(xs);
        const ref = concatRef(datas, shapes);
        expect(y.shape).toEqual(ref.shape);
        expect(Array.from(y.toFloat32Array())).toEqual(f32(ref.y));
        gradCheck((ts) => F.concat(ts), xs, { samples: 12 });
      });
    });
  }

  test('concat with blocked inputs (conv outputs) next to plain ones', () => {
    msgc.tidy(() => {
      const sa = [2, 5, 3, 3];
      const sb = [2, 2, 3, 3];
      const sc = [2, 6, 3, 3];
      const da = randomArray(numel(sa), 31);
      const db = randomArray(numel(sb), 32);
      const dc = randomArray(numel(sc), 33);
      const a = msgc.tensor(da, sa, { requiresGrad: true });
      const b = msgc.tensor(db, sb, { requiresGrad: true });
      const c = msgc.tensor(dc, sc, { requiresGrad: true });
      const ea = eye(5);
      const ec = eye(6);
      const fn = ([a, b, c]: Tensor[]): Tensor => {
        const ab = F.conv2d(a, ea);
        const cb = F.conv2d(c, ec);
        expect([ab.layout, cb.layout]).toEqual(['blocked', 'blocked']);
        return F.concat([ab, b, cb]);
      };
      const y = fn([a, b, c]);
      const ref = concatRef([da, db, dc], [sa, sb, sc]);
      expect(y.shape).toEqual([2, 13, 3, 3]);
      expect(Array.from(y.toFloat32Array())).toEqual(f32(ref.y));
      gradCheck(fn, [a, b, c], { samples: 16 });
      // and a blocked result feeds a conv again
      const w = msgc.tensor(randomArray(4 * 13, 34), [4, 13, 1, 1]);
      gradCheck(([a, b, c]) => F.conv2d(fn([a, b, c]), w), [a, b, c], { samples: 8 });
    });
  });

  test('concat where only some inputs require grad, and the same tensor twice', () => {
    msgc.tidy(() => {
      const a = msgc.tensor(randomArray(12, 41), [2, 3, 2], { requiresGrad: true });
      const b = msgc.tensor(randomArray(8, 42), [2, 2, 2]);
      gradCheck(([a, b]) => F.concat([b, a, b]), [a, b]);
      expect(b.grad).toBeNull();
      const x = msgc.tensor(randomArray(6, 43), [2, 3], { requiresGrad: true });
      gradCheck(([x]) => F.concat([x, x]), [x]);
      x.grad!.dispose();
      x.grad = null;
      const g = randomArray(12, 44);
      F.concat([x, x]).backward(msgc.tensor(g, [2, 6]));
      const want = [0, 1, 2, 6, 7, 8].map((i) => Math.fround(g[i] + g[i + 3]));
      expect(Array.from(x.grad!.toFloat32Array())).toEqual(want);
    });
  });

  const sliceCases: [number[], number, number][] = [
    [[2, 5, 3, 2], 1, 4],
    [[2, 5, 3, 2], 0, 5],
    [[2, 5, 3, 2], 4, 5],
    [[3, 7], 2, 6],
    [[2, 4, 3], 0, 1],
  ];
  for (const [shape, start, end] of sliceCases) {
    test(`slice ${JSON.stringify(shape)} [${start}, ${end})`, () => {
      msgc.tidy(() => {
        const xd = randomArray(numel(shape), 50 + start);
        const x = msgc.tensor(xd, shape, { requiresGrad: true });
        const y = F.slice(x, start, end);
        const want = shape.slice();
        want[1] = end - start;
        expect(y.shape).toEqual(want);
        expect(Array.from(y.toFloat32Array())).toEqual(f32(sliceRef(xd, shape, start, end)));
        gradCheck(([x]) => F.slice(x, start, end), [x], { samples: numel(shape) });
        // outside the slice the gradient is exactly zero
        const g = x.grad!.toFloat32Array();
        const inner = numel(shape.slice(2));
        for (let i = 0; i < g.length; i++) {
          const c = Math.floor(i / inner) % shape[1];
          if (c < start || c >= end) expect(g[i]).toBe(0);
        }
      });
    });
  }

  test('an empty slice and slices of a blocked input', () => {
    msgc.tidy(() => {
      const shape = [2, 6, 3, 3];
      const xd = randomArray(numel(shape), 61);
      const x = msgc.tensor(xd, shape, { requiresGrad: true });
      expect(F.slice(x, 3, 3).shape).toEqual([2, 0, 3, 3]);
      const xb = blockedOf(x);
      expect(Array.from(F.slice(xb, 2, 5).toFloat32Array())).toEqual(f32(sliceRef(xd, shape, 2, 5)));
      const e = eye(6);
      gradCheck(([x]) => {
        const b = F.conv2d(x, e);
        return F.concat([F.slice(b, 4, 6), F.slice(b, 0, 3)]);
      }, [x], { samples: 30 });
    });
  });

  test('slices concatenated back give the input, and the gradient is the identity', () => {
    msgc.tidy(() => {
      const shape = [3, 7, 2, 2];
      const xd = randomArray(numel(shape), 71);
      const x = msgc.tensor(xd, shape, { requiresGrad: true });
      const y = F.concat([F.slice(x, 0, 2), F.slice(x, 2, 3), F.slice(x, 3, 7)]);
      expect(Array.from(y.toFloat32Array())).toEqual(f32(xd));
      const g = randomArray(numel(shape), 72);
      y.backward(msgc.tensor(g, shape));
      expect(Array.from(x.grad!.toFloat32Array())).toEqual(f32(g));
    });
  });
});

describe('bad input', () => {
  test('reshape and flatten through F', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 3, 4]);
      const gone = msgc.zeros([2]);
      gone.dispose();
      const reshape = F.reshape as unknown as (x: unknown, s: unknown) => Tensor;
      expectError(() => reshape(x, [5, 5]), /^reshape: cannot reshape \[2, 3, 4\] \(24 elements\) to \[5, 5\] \(25 elements\)/);
      expectError(() => reshape(x, [25]), /^reshape: cannot reshape \[2, 3, 4\]/);
      expectError(() => reshape(x, [-1, 5]), /^reshape: cannot reshape \[2, 3, 4\] to \[-1, 5\]/);
      expectError(() => reshape(x, [0, -1]), /^reshape: cannot reshape \[2, 3, 4\]/);
      expectError(() => reshape(x, [-1, -1]), /^reshape: at most one dimension may be -1/);
      expectError(() => reshape(x, [2, -3, 4]), /^reshape: cannot reshape \[2, 3, 4\] to \[2, -3, 4\]/);
      expectError(() => reshape(x, [2.5, 2, 4.8]), /^reshape: cannot reshape/);
      expectError(() => reshape(x, [NaN, 24]), /^reshape: cannot reshape/);
      expectError(() => reshape(x, ['24']), /^reshape: /);
      expectError(() => reshape(x, '24'), /^reshape: shape must be an array/);
      expectError(() => reshape(x, undefined), /^reshape: shape must be an array/);
      expectError(() => reshape(x, 24), /^reshape: shape must be an array/);
      expectError(() => reshape(null, [2]), /^reshape: x must be a Tensor, got null/);
      expectError(() => reshape(gone, [2]), /^reshape: x was disposed/);
      const flatten = F.flatten as unknown as (x: unknown, d?: unknown) => Tensor;
      expectError(() => flatten(x, 3), /^flatten: startDim 3 is outside \[0, 3\)/);
      expectError(() => flatten(x, -1), /^flatten: startDim -1 is outside \[0, 3\)/);
      expectError(() => flatten(x, 1.5), /^flatten: startDim 1.5 is outside/);
      expectError(() => flatten(x, '1'), /^flatten: startDim 1 is outside|^flatten: startDim/);
      expectError(() => flatten('x'), /^flatten: x must be a Tensor, got string/);
      expectError(() => flatten(gone), /^flatten: x was disposed/);
    });
  });

  test('concat and slice through F', () => {
    msgc.tidy(() => {
      const a = msgc.zeros([2, 3, 2, 2]);
      const gone = msgc.zeros([2, 3, 2, 2]);
      gone.dispose();
      const concat = F.concat as unknown as (xs: unknown, dim?: unknown) => Tensor;
      expectError(() => concat([a, msgc.zeros([2, 3, 2, 3])]), /^concat: entry 1 has shape \[2, 3, 2, 3\], which differs from entry 0's \[2, 3, 2, 2\] outside dim 1/);
      expectError(() => concat([a, msgc.zeros([3, 3, 2, 2])]), /^concat: entry 1 has shape \[3, 3, 2, 2\], which differs from entry 0's/);
      expectError(() => concat([a, msgc.zeros([2, 3, 2])]), /^concat: entry 1 has shape \[2, 3, 2\], which differs from entry 0's/);
      expectError(() => concat([msgc.zeros([2, 3]), msgc.zeros([2, 3, 1, 1])]), /^concat: entry 1 has shape \[2, 3, 1, 1\], which differs/);
      expectError(() => concat([msgc.zeros([3]), msgc.zeros([3])]), /^concat: entry 0 has shape \[3\]; concat along channels needs >= 2 dims/);
      expectError(() => concat([]), /^concat: expected a non-empty array of tensors/);
      expectError(() => concat(a), /^concat: expected a non-empty array of tensors/);
      expectError(() => concat(undefined), /^concat: expected a non-empty array of tensors/);
      expectError(() => concat([a, 'b']), /^concat: xs\[1\] must be a Tensor, got string/);
      expectError(() => concat([a, null]), /^concat: xs\[1\] must be a Tensor, got null/);
      expectError(() => concat([gone, a]), /^concat: xs\[0\] was disposed/);
      expectError(() => concat([a, a], 0), /^concat: only dim 1 \(channels\) is supported, got 0/);
      expectError(() => concat([a, a], 2), /^concat: only dim 1/);
      const slice = F.slice as unknown as (x: unknown, s: unknown, e?: unknown) => Tensor;
      expectError(() => slice(a, 2, 5), /^slice: end must be in \[2, 3\], got 5/);
      expectError(() => slice(a, -1, 2), /^slice: start must be in \[0, 3\], got -1/);
      expectError(() => slice(a, 4, 4), /^slice: start must be in \[0, 3\], got 4/);
      expectError(() => slice(a, 2, 1), /^slice: end must be in \[2, 3\], got 1/);
      expectError(() => slice(a, 0.5, 2), /^slice: start must be an integer/);
      expectError(() => slice(a, 0, NaN), /^slice: end must be finite/);
      expectError(() => slice(a, '0', 2), /^slice: start must be a number, got a string/);
      expectError(() => slice(a, 0), /^slice: end must be a number, got undefined/);
      expectError(() => slice(msgc.zeros([4]), 0, 1), /^slice: x has shape \[4\]; slicing channels needs >= 2 dims/);
      expectError(() => slice({}, 0, 1), /^slice: x must be a Tensor, got object/);
      expectError(() => slice(gone, 0, 1), /^slice: x was disposed/);
    });
  });

  test('directly against the native shape functions: garbage never crashes', () => {
    msgc.tidy(() => {
      const a = msgc.tensor(randomArray(24, 81), [2, 3, 2, 2]);
      const b = msgc.tensor(randomArray(16, 82), [2, 2, 2, 2]);
      const g = msgc.tensor(randomArray(16, 83), [2, 2, 2, 2]);
      const NT = native.NativeTensor as unknown as { new (): object; prototype: object };
      const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
      const call = (name: string, ...args: unknown[]) => () => n[name](...args);
      expectError(call('concatChannels'), /^concat: expected an array of tensors/);
      expectError(call('concatChannels', 'ab'), /^concat: expected an array of tensors/);
      expectError(call('concatChannels', []), /^concat: needs at least one tensor/);
      expectError(call('concatChannels', [1, 2]), /^concat: entry 0 must be a Tensor, got a number/);
      expectError(call('concatChannels', [a.h, {}]), /^concat: entry 1 must be a Tensor, got an object/);
      expectError(call('concatChannels', [a.h, new NT()]), /^concat: entry 1 was disposed/);
      expectError(call('concatChannels', [Object.create(NT.prototype)]), /^concat: entry 0 /);
      expectError(call('concatChannels', [a.h, Object.create(NT.prototype)]), /^concat: entry 1 /);
      expectError(call('concatChannels', [a.h, msgc.zeros([2, 3, 2, 1]).h]), /^concat: entry 1 has shape \[2, 3, 2, 1\], which differs/);
      expectError(call('sliceChannels', a.h, 0, 4), /^slice: end must be in \[0, 3\], got 4/);
      expectError(call('sliceChannels', a.h, 0), /^slice: end must be a number, got undefined/);
      expectError(call('sliceChannels', [1, 2], 0, 1), /^slice: x must be a Tensor, got an array/);
      expectError(call('sliceChannelsBackward', g.h, [2, 3, 2, 2], 2), /^slice backward: slice \[2, 4\) exceeds 3 channels/);
      expectError(call('sliceChannelsBackward', g.h, [2, 3, 2], 0), /^slice backward: xShape \[2, 3, 2\] does not match gradOutput/);
      expectError(call('sliceChannelsBackward', g.h, [3, 3, 2, 2], 0), /^slice backward: xShape \[3, 3, 2, 2\] does not match gradOutput/);
      expectError(call('sliceChannelsBackward', g.h, [2, 3, 2, 2], -1), /^slice backward: start must be in/);
      expectError(call('sliceChannelsBackward', g.h, 'shape', 0), /^slice backward: xShape must be an array/);
      expectError(call('reshape', a.h, [25]), /^reshape: cannot reshape \[2, 3, 2, 2\] \(24 elements\) to \[25\]/);
      expectError(call('reshape', a.h, [-1]), /^reshape: shape\[0\] must be a non-negative integer/);
      expectError(call('reshape', a.h), /^reshape: shape must be an array of dimensions, got undefined/);
      expectError(call('reshape', a.h, [1, 1, 1, 1, 1, 1, 1, 1, 24]), /^reshape: shape has 9 dims; at most 8/);
      expectError(call('toPlain', 'x'), /^clone: x must be a Tensor/);
      expectError(call('clone', new NT()), /^clone: x was disposed/);
      const garbage: unknown[] = [undefined, null, 'str', NaN, -1, 1.5, 0, 2, [1, 2, 3], [], [2, 2, 2, 2], {}, true, new Float32Array(3), new NT(), Object.create(NT.prototype)];
      const sweeps: [string, unknown[], RegExp][] = [
        ['concatChannels', [[a.h, b.h]], /^concat: /],
        ['sliceChannels', [a.h, 1, 2], /^slice: /],
        ['sliceChannelsBackward', [g.h, [2, 3, 2, 2], 1], /^slice backward: /],
        ['reshape', [a.h, [6, 4]], /^reshape: /],
        ['toPlain', [a.h], /^clone: /],
        ['clone', [a.h], /^clone: /],
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
        // arrays of garbage for concat
        for (const v of garbage) {
          try {
            const out = n.concatChannels([a.h, v]) as { dispose(): void };
            out.dispose();
          } catch (e) {
            expect(Object.prototype.toString.call(e)).toBe('[object Error]');
            expect((e as Error).message).toMatch(/^concat: /);
          }
        }
      }
    });
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
