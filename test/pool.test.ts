// pool.test.ts: F.maxPool2d, F.avgPool2d and F.adaptiveAvgPool2d against naive float64 pooling (forward and its
// adjoint) and central finite differences, on plain inputs and on blocked ones (a conv output), plus bad input
// through F and the native boundary.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { closeness, gradCheck, numel, randomArray } from './helpers/gradcheck';
import { expectClose, expectError } from './helpers/testing';

const F = msgc.F;

type Pair = [number, number];
interface PoolCfg {
  kernel: Pair;
  stride: Pair;
  padding: Pair;
}

const pairOf = (v: number | Pair): Pair => (typeof v === 'number' ? [v, v] : v);
function cfgOf(o: { kernelSize: number | Pair; stride?: number | Pair; padding?: number | Pair }): PoolCfg {
  const kernel = pairOf(o.kernelSize);
  return { kernel, stride: o.stride === undefined ? kernel : pairOf(o.stride), padding: pairOf(o.padding ?? 0) };
}

/**
 * Naive float64 pooling with torch's floor output size. Max pooling looks only at real input positions (torch
 * pads with -inf); average pooling divides by the kernel area (count_include_pad=True). Returns the output and,
 * per output, the input indices that feed it (for max, the single argmax).
 */
function poolRef(kind: 'max' | 'avg', x: ArrayLike<number>, xs: number[], c: PoolCfg) {
  const [N, C, H, W] = xs;
  const OH = Math.floor((H + 2 * c.padding[0] - c.kernel[0]) / c.stride[0]) + 1;
  const OW = Math.floor((W + 2 * c.padding[1] - c.kernel[1]) / c.stride[1]) + 1;
  const y = new Float64Array(N * C * OH * OW);
  const taps: number[][] = [];
  for (let nc = 0; nc < N * C; nc++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const yi = (nc * OH + oh) * OW + ow;
        let best = -Infinity;
        let arg = -1;
        let sum = 0;
        const idx: number[] = [];
        for (let i = 0; i < c.kernel[0]; i++) {
          const ih = oh * c.stride[0] - c.padding[0] + i;
          if (ih < 0 || ih >= H) continue;
          for (let j = 0; j < c.kernel[1]; j++) {
            const iw = ow * c.stride[1] - c.padding[1] + j;
            if (iw < 0 || iw >= W) continue;
            const xi = (nc * H + ih) * W + iw;
            idx.push(xi);
            sum += x[xi];
            if (x[xi] > best) {
              best = x[xi];
              arg = xi;
            }
          }
        }
        if (kind === 'max') {
          y[yi] = best;
          taps.push([arg]);
        } else {
          y[yi] = sum / (c.kernel[0] * c.kernel[1]);
          taps.push(idx);
        }
      }
    }
  }
  return { y, shape: [N, C, OH, OW], taps };
}

/** The adjoint of poolRef for an output gradient gy (max: to the argmax; avg: gy / kernel area to each tap). */
function poolRefBackward(kind: 'max' | 'avg', x: ArrayLike<number>, xs: number[], c: PoolCfg, gy: ArrayLike<number>): Float64Array {
  const { taps } = poolRef(kind, x, xs, c);
  const gx = new Float64Array(numel(xs));
  const area = c.kernel[0] * c.kernel[1];
  taps.forEach((idx, yi) => {
    for (const xi of idx) gx[xi] += kind === 'max' ? gy[yi] : gy[yi] / area;
  });
  return gx;
}

/** Distinct values spaced 0.05 apart in a seeded random order (no ties for max pooling), centred on 0. */
function distinctValues(n: number, seed: number): Float32Array {
  const keys = randomArray(n, seed);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => keys[a] - keys[b] || a - b);
  const out = new Float32Array(n);
  order.forEach((pos, rank) => {
    out[pos] = (rank - n / 2) * 0.05;
  });
  return out;
}

let seed = 500;
function t(shape: number[], requiresGrad = false): Tensor {
  return msgc.tensor(randomArray(numel(shape), seed++), shape, { requiresGrad });
}
function distinct(shape: number[], requiresGrad = false): Tensor {
  return msgc.tensor(distinctValues(numel(shape), seed++), shape, { requiresGrad });
}

/** An [N, C, H, W] tensor in the blocked layout holding `values`: the output of a 1x1 identity convolution. */
function blocked(values: Float32Array, shape: number[]): Tensor {
  return msgc.noGrad(() =>
    msgc.tidy(() => {
      const C = shape[1];
      const eye = new Float32Array(C * C);
      for (let c = 0; c < C; c++) eye[c * C + c] = 1;
      const y = F.conv2d(msgc.tensor(values, shape), msgc.tensor(eye, [C, C, 1, 1]));
      expect(y.layout).toBe('blocked');
      return y;
    }),
  );
}

let liveAtStart = 0;
beforeAll(() => {
  liveAtStart = msgc.liveTensorCount();
});
afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(liveAtStart);
});

type PoolOpts = { kernelSize: number | Pair; stride?: number | Pair; padding?: number | Pair };
const poolCases: { xs: number[]; o: PoolOpts }[] = [
  { xs: [1, 3, 8, 8], o: { kernelSize: 2 } }, // stride defaults to the kernel
  { xs: [3, 2, 7, 9], o: { kernelSize: 2, stride: 2 } }, // odd sizes: floor drops the last row / column
  { xs: [2, 4, 7, 9], o: { kernelSize: 3, stride: 2, padding: 1 } },
  { xs: [1, 2, 6, 6], o: { kernelSize: 3, stride: 1, padding: 1 } },
  { xs: [3, 3, 5, 7], o: { kernelSize: 3, stride: 1 } },
  { xs: [2, 3, 6, 7], o: { kernelSize: [2, 3], stride: [1, 2], padding: [1, 1] } },
  { xs: [1, 2, 10, 9], o: { kernelSize: 5, stride: 2, padding: 2 } },
  { xs: [2, 2, 9, 10], o: { kernelSize: 3, stride: 3, padding: 1 } },
  { xs: [1, 3, 7, 7], o: { kernelSize: 1, stride: 2 } },
  { xs: [1, 2, 4, 5], o: { kernelSize: [4, 5] } }, // the whole input
  { xs: [2, 8, 9, 8], o: { kernelSize: [3, 2], stride: [2, 3], padding: [1, 0] } },
];
const desc = (c: { xs: number[]; o: PoolOpts }) => `x [${c.xs}] ${JSON.stringify(c.o)}`;

// ---------------------------------------------------------------------------------------------------------------
describe.each([
  ['maxPool2d', 'max'],
  ['avgPool2d', 'avg'],
] as const)('%s', (name, kind) => {
  const op = (x: Tensor, o: PoolOpts) => (kind === 'max' ? F.maxPool2d(x, o) : F.avgPool2d(x, o));
  const data = (shape: number[], requiresGrad = false) => (kind === 'max' ? distinct(shape, requiresGrad) : t(shape, requiresGrad));

  test.each([false, true])('forward matches the float64 reference (plain input; recording a gradient: %s)', (grad) => {
    // without a gradient the inference primitive runs (max pooling: no argmax workspace), with one the training one
    for (const c of poolCases) {
      msgc.tidy(() => {
        const x = data(c.xs, grad);
        const y = op(x, c.o);
        const ref = poolRef(kind, x.toFloat32Array(), c.xs, cfgOf(c.o));
        expect([desc(c), y.shape]).toEqual([desc(c), ref.shape]);
        expectClose(y.toFloat32Array(), ref.y, `${name} ${desc(c)}`);
        expect(y.requiresGrad).toBe(grad);
      });
    }
  });

  test('max pooling computes its argmax workspace only for training', () => {
    msgc.tidy(() => {
      const x = data([2, 3, 9, 9]);
      const [y1, ws1] = native.pool2dForward(kind === 'max' ? 0 : 1, x.h, [3, 3], [2, 2], [1, 1], false);
      const [y2, ws2] = native.pool2dForward(kind === 'max' ? 0 : 1, x.h, [3, 3], [2, 2], [1, 1]);
      expect(ws1).toBeNull();
      expect(ws2 !== null).toBe(kind === 'max');
      expect(Array.from(new Tensor(y1).toFloat32Array())).toEqual(Array.from(new Tensor(y2).toFloat32Array()));
      if (ws2) new Tensor(ws2).dispose();
      expect(() => native.pool2dForward(0, x.h, [3, 3], [2, 2], [1, 1], 'yes' as never)).toThrow(/pool2d: training must be a boolean/);
    });
  });

  test('forward matches the float64 reference on a blocked input (a conv output)', () => {
    for (const c of poolCases) {
      msgc.tidy(() => {
        const xs = [c.xs[0], 8, c.xs[2], c.xs[3]];
        const values = kind === 'max' ? distinctValues(numel(xs), seed++) : randomArray(numel(xs), seed++);
        const x = blocked(values, xs);
        const y = op(x, c.o);
        const ref = poolRef(kind, x.toFloat32Array(), xs, cfgOf(c.o));
        expect(y.shape).toEqual(ref.shape);
        expectClose(y.toFloat32Array(), ref.y, `${name} blocked ${desc(c)}`);
      });
    }
  });

  test('backward equals the float64 adjoint (plain and blocked inputs)', () => {
    for (const c of poolCases) {
      for (const layout of ['plain', 'blocked']) {
        msgc.tidy(() => {
          const xs = layout === 'plain' ? c.xs : [c.xs[0], 8, c.xs[2], c.xs[3]];
          const values = kind === 'max' ? distinctValues(numel(xs), seed++) : randomArray(numel(xs), seed++);
          const x = layout === 'plain' ? msgc.tensor(values, xs) : blocked(values, xs);
          expect(x.layout).toBe(layout);
          x.requiresGrad = true;
          const y = op(x, c.o);
          const gy = randomArray(y.size, seed++);
          y.backward(msgc.tensor(gy, y.shape));
          const ref = poolRefBackward(kind, x.toFloat32Array(), xs, cfgOf(c.o), gy);
          expect(x.grad!.shape).toEqual(xs);
          expectClose(x.grad!.toFloat32Array(), ref, `${name} ${layout} grad ${desc(c)}`);
          x.dispose();
        });
      }
    }
  });

  const fdCases = [poolCases[2], poolCases[5], poolCases[1], poolCases[10]];
  test.each(fdCases.map((c) => [desc(c), c] as const))('backward matches central finite differences: %s', (_d, c) => {
    // max: distinct values 0.05 apart and eps 1e-3, so no perturbation changes an argmax
    const eps = kind === 'max' ? 1e-3 : 1e-2;
    const x = data(c.xs, true);
    const r = gradCheck(([a]) => op(a, c.o), [x], { eps, samples: 8 });
    expect(r.worst).toBeLessThanOrEqual(1);
    x.dispose();
    const bs = [c.xs[0], 8, c.xs[2], c.xs[3]];
    const xb = blocked(kind === 'max' ? distinctValues(numel(bs), seed++) : randomArray(numel(bs), seed++), bs);
    xb.requiresGrad = true;
    // the analytic gradient is taken with the blocked input; the probes then write plain values into it
    const rb = gradCheck(([a]) => op(a, c.o), [xb], { eps, samples: 8 });
    expect(rb.worst).toBeLessThanOrEqual(1);
    xb.dispose();
  });

  test('the gradient flows back through the conv that produced a blocked input', () => {
    msgc.tidy(() => {
      // x -> 1x1 identity conv (blocked output) -> pool: x.grad is the pool's adjoint on x's values
      const xs = [2, 8, 7, 6];
      const x = data(xs, true);
      const eye = new Float32Array(64);
      for (let c = 0; c < 8; c++) eye[c * 8 + c] = 1;
      const h = F.conv2d(x, msgc.tensor(eye, [8, 8, 1, 1]));
      expect(h.layout).toBe('blocked');
      const o = { kernelSize: 3, stride: 2, padding: 1 };
      const y = op(h, o);
      const gy = randomArray(y.size, seed++);
      y.backward(msgc.tensor(gy, y.shape));
      const ref = poolRefBackward(kind, x.toFloat32Array(), xs, cfgOf(o), gy);
      expectClose(x.grad!.toFloat32Array(), ref, `${name} through conv`);
      x.dispose();
    });
  });
});

test('maxPool2d ignores padding (torch pads with -inf) even when every input is negative', () => {
  msgc.tidy(() => {
    const xs = [1, 2, 5, 6];
    const x = msgc.tensor(randomArray(numel(xs), seed++, -2, -1), xs);
    const o = { kernelSize: 3, stride: 2, padding: 1 };
    const y = F.maxPool2d(x, o);
    const ref = poolRef('max', x.toFloat32Array(), xs, cfgOf(o));
    expectClose(y.toFloat32Array(), ref.y, 'negative input');
    expect(Math.max(...Array.from(y.toFloat32Array()))).toBeLessThan(-1 + 1e-6);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('adaptiveAvgPool2d', () => {
  const cases: { xs: number[]; out: number | Pair }[] = [
    { xs: [2, 3, 7, 9], out: 1 },
    { xs: [1, 4, 1, 1], out: 1 },
    { xs: [3, 2, 8, 8], out: 2 },
    { xs: [1, 3, 6, 9], out: [2, 3] },
    { xs: [2, 2, 4, 6], out: [4, 6] }, // identity
  ];
  const refOf = (xs: number[], out: number | Pair) => {
    const [oh, ow] = pairOf(out);
    const k: Pair = [xs[2] / oh, xs[3] / ow];
    return cfgOf({ kernelSize: k, stride: k });
  };

  test('forward and backward match the float64 reference: window averages (plain and blocked inputs)', () => {
    for (const c of cases) {
      for (const layout of ['plain', 'blocked']) {
        msgc.tidy(() => {
          const xs = layout === 'plain' ? c.xs : [c.xs[0], 8, c.xs[2], c.xs[3]];
          const values = randomArray(numel(xs), seed++);
          const x = layout === 'plain' ? msgc.tensor(values, xs) : blocked(values, xs);
          x.requiresGrad = true;
          const y = F.adaptiveAvgPool2d(x, c.out);
          const [oh, ow] = pairOf(c.out);
          expect(y.shape).toEqual([xs[0], xs[1], oh, ow]);
          // independent of poolRef for output size 1: the plain mean of each channel
          if (oh === 1 && ow === 1) {
            const v = x.toFloat32Array();
            const hw = xs[2] * xs[3];
            const means = Array.from({ length: xs[0] * xs[1] }, (_, nc) => {
              let s = 0;
              for (let i = 0; i < hw; i++) s += v[nc * hw + i];
              return s / hw;
            });
            expectClose(y.toFloat32Array(), means, `adaptive 1 ${layout} [${xs}]`);
          }
          const cfg = refOf(xs, c.out);
          expectClose(y.toFloat32Array(), poolRef('avg', x.toFloat32Array(), xs, cfg).y, `adaptive ${layout} [${xs}] -> ${c.out}`);
          const gy = randomArray(y.size, seed++);
          y.backward(msgc.tensor(gy, y.shape));
          expectClose(x.grad!.toFloat32Array(), poolRefBackward('avg', x.toFloat32Array(), xs, cfg, gy), `adaptive grad ${layout}`);
          x.dispose();
        });
      }
    }
  });

  test('global pool backward in 16-channel blocks, with padded lanes (C = 20, 40): each pixel gets gy / (H·W)', () => {
    for (const C of [20, 40]) {
      msgc.tidy(() => {
        const xs = [2, C, 5, 6];
        const x = blocked(randomArray(numel(xs), seed++), xs);
        x.requiresGrad = true;
        const y = F.adaptiveAvgPool2d(x, 1);
        const gy = randomArray(2 * C, seed++);
        y.backward(msgc.tensor(gy, y.shape));
        const want = new Float64Array(numel(xs)).map((_, k) => gy[Math.floor(k / 30)] / 30);
        expectClose(x.grad!.toFloat32Array(), want, `global pool grad C=${C}`);
        x.dispose();
      });
    }
  });

  test('its gradient reaches x unexpanded and adds into x\'s other gradients in either order (float64 reference)', () => {
    // loss = Σ a·x + Σ b·mean_hw(x) [+ Σ b2·mean_hw(x)]: dloss/dx[n, c, p] = a[n, c, p] + (b + b2)[n, c] / (H·W)
    const xs = [2, 20, 3, 5];
    const hw = 15;
    const a = randomArray(numel(xs), seed++);
    const b = randomArray(40, seed++);
    const b2 = randomArray(40, seed++);
    for (const order of ['pool first', 'pool last', 'two pools', 'only pool']) {
      for (const layout of ['plain', 'blocked']) {
        msgc.tidy(() => {
          const leaf = msgc.tensor(randomArray(numel(xs), seed++), xs, { requiresGrad: true });
          // blocked: x is an intermediate (a 1x1 identity conv's output), so the sum reaches leaf through the conv
          const eye = new Float32Array(400).map((_, k) => (k % 21 === 0 ? 1 : 0));
          const x = layout === 'plain' ? leaf : F.conv2d(leaf, msgc.tensor(eye, [20, 20, 1, 1]));
          const lin = () => F.sum(F.mul(x, msgc.tensor(a, xs)));
          const pooled = (v: Float32Array) => F.sum(F.mul(F.adaptiveAvgPool2d(x, 1), msgc.tensor(v, [2, 20, 1, 1])));
          const terms = order === 'pool first' ? [pooled(b), lin()] : order === 'pool last' ? [lin(), pooled(b)]
            : order === 'two pools' ? [pooled(b), pooled(b2), lin()] : [pooled(b)];
          terms.reduce((u, v) => F.add(u, v)).backward();
          const want = new Float64Array(numel(xs)).map((_, k) => {
            const nc = Math.floor(k / hw);
            return (order === 'only pool' ? 0 : a[k]) + (b[nc] + (order === 'two pools' ? b2[nc] : 0)) / hw;
          });
          expect(leaf.grad!.shape).toEqual(xs);
          expectClose(leaf.grad!.toFloat32Array(), want, `${order} ${layout}`);
          leaf.dispose();
        });
      }
    }
  });

  test('expandChannels / addChannelsInPlace check their shapes at the native boundary', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 3, 4, 4]);
      expect(() => native.expandChannels(msgc.zeros([2, 4, 1, 1]).h, x.h, 1)).toThrow(/expandChannels: src has shape \[2, 4, 1, 1\].*\[2, 3, 1, 1\]/);
      expect(() => native.addChannelsInPlace(x.h, msgc.zeros([2, 3, 2, 1]).h, 1)).toThrow(/addChannelsInPlace: src/);
      expect(() => native.addChannelsInPlace(msgc.zeros([2, 3]).h, msgc.zeros([2, 3, 1, 1]).h, 1)).toThrow(/dst/);
    });
  });

  test('backward matches central finite differences', () => {
    for (const c of [cases[0], cases[3]]) {
      const x = t(c.xs, true);
      const r = gradCheck(([a]) => F.adaptiveAvgPool2d(a, c.out), [x], { samples: 8 });
      expect(r.worst).toBeLessThanOrEqual(1);
      x.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('pooling rejects bad input with an Error naming the op and the problem', () => {
  test.each(['maxPool2d', 'avgPool2d'] as const)('through msgc.F.%s', (name) => {
    msgc.tidy(() => {
      const op = (x: unknown, o: unknown) => () => (F[name] as (x: unknown, o: unknown) => Tensor)(x, o);
      const x = t([2, 3, 6, 6]);
      const k2 = { kernelSize: 2 };
      const re = (s: string) => new RegExp(`${name}: ${s}`);
      for (const bad of [3, [1, 2, 3], null, undefined, 'x', new Float32Array(4), x.h]) expectError(op(bad, k2), re('x must be a Tensor'));
      expectError(op(x, undefined), re('options.kernelSize is required'));
      expectError(op(x, null), re('options.kernelSize is required'));
      expectError(op(x, {}), re('options.kernelSize is required'));
      expectError(op(x, { stride: 2 }), re('options.kernelSize is required'));
      for (const bad of [0, -1, 1.5, NaN, Infinity, '2', [2], [2, 2, 2], [2, 0], {}]) {
        expectError(op(x, { kernelSize: bad }), re('kernelSize must be an integer >= 1'));
        expectError(op(x, { kernelSize: 2, stride: bad }), re('stride must be an integer >= 1'));
      }
      for (const bad of [-1, 0.5, NaN, '1', [1], [0, -1]]) expectError(op(x, { kernelSize: 3, padding: bad }), re('padding must be an integer >= 0'));
      expectError(op(x, { kernelSize: 2, padding: 2 }), re('padding \\(2, 2\\) must be at most half the kernel size \\(2, 2\\)'));
      expectError(op(x, { kernelSize: [3, 2], padding: [1, 2] }), re('padding \\(1, 2\\) must be at most half the kernel size'));
      expectError(op(x, { kernelSize: 7 }), re('kernel 7x7 is larger than the padded input 6x6'));
      expectError(op(x, { kernelSize: [2, 9], padding: [0, 1] }), re('kernel 2x9 is larger than the padded input 6x8'));
      expectError(op(t([3, 6, 6]), k2), re('x has 3 dims'));
      expectError(op(t([6, 6]), k2), re('x has 2 dims'));
      expectError(op(t([1, 1, 3, 6, 6]), k2), re('x has 5 dims'));
      expectError(op(msgc.zeros([1, 0, 6, 6]), k2), re('x is empty'));
      expectError(op(msgc.zeros([1, 3, 0, 6]), k2), re('x is empty|kernel 2x2 is larger'));
      const xd = t([1, 2, 4, 4]);
      xd.dispose();
      expectError(op(xd, k2), re('x was disposed'));
      // gradient of the wrong shape
      const xg = t([1, 2, 4, 4], true);
      const y = (F[name] as (x: Tensor, o: PoolOpts) => Tensor)(xg, k2);
      expectError(() => y.backward(msgc.zeros([1, 2, 4, 4])), /backward: gradient has shape \[1, 2, 4, 4\], expected \[1, 2, 2, 2\]/);
      expectError(() => y.backward('g' as unknown as Tensor), /backward: gradient must be a Tensor/);
      y.backward(msgc.ones([1, 2, 2, 2]));
      expect(xg.grad!.shape).toEqual([1, 2, 4, 4]);
      xg.dispose();
    });
  });

  test('through msgc.F.adaptiveAvgPool2d', () => {
    msgc.tidy(() => {
      const x = t([2, 3, 6, 6]);
      const op = (xx: unknown, o: unknown) => () => F.adaptiveAvgPool2d(xx as Tensor, o as number);
      for (const bad of [3, [1, 2], null, undefined]) expectError(op(bad, 1), /adaptiveAvgPool2d: x must be a Tensor/);
      for (const bad of [0, -1, 1.5, NaN, '1', undefined, [1], [1, 2, 3], [0, 1]]) expectError(op(x, bad), /adaptiveAvgPool2d: outputSize must be an integer >= 1/);
      expectError(op(x, 4), /adaptiveAvgPool2d: output size 4x4 must divide the input size 6x6/);
      expectError(op(x, [2, 5]), /adaptiveAvgPool2d: output size 2x5 must divide the input size 6x6/);
      expectError(op(x, 12), /adaptiveAvgPool2d: output size 12x12 must divide/);
      expectError(op(t([3, 6, 6]), 1), /adaptiveAvgPool2d: x has shape \[3, 6, 6\], expected 4 dims/);
      expectError(op(t([6, 36]), 1), /adaptiveAvgPool2d: x has shape \[6, 36\], expected 4 dims/);
      expectError(op(msgc.zeros([1, 2, 0, 4]), 1), /adaptiveAvgPool2d: /);
      expectError(op(msgc.zeros([1, 0, 4, 4]), 1), /adaptiveAvgPool2d: x is empty|avgPool2d: x is empty/);
      const xd = t([1, 2, 4, 4]);
      xd.dispose();
      expectError(op(xd, 1), /adaptiveAvgPool2d: x was disposed/);
    });
  });

  test('directly against native.pool2dForward / pool2dBackward: garbage never crashes', () => {
    msgc.tidy(() => {
      const x = t([2, 3, 6, 6]).h;
      const K: Pair = [2, 2];
      const S: Pair = [2, 2];
      const Z: Pair = [0, 0];
      const fwd = (...a: unknown[]) => () => (native.pool2dForward as unknown as (...a: unknown[]) => unknown)(...a);
      const bwd = (...a: unknown[]) => () => (native.pool2dBackward as unknown as (...a: unknown[]) => unknown)(...a);
      expectError(fwd(), /pool2d: kind must be a number, got undefined/);
      for (const kind of [2, -1, 0.5, NaN, '0', null, true]) expectError(fwd(kind, x, K, S, Z), /pool2d: kind must/);
      expectError(fwd(0), /pool2d: x must be a Tensor, got undefined/);
      expectError(fwd(0, 'x', K, S, Z), /pool2d: x must be a Tensor, got a string/);
      expectError(fwd(0, [x], K, S, Z), /pool2d: x must be a Tensor, got an array/);
      expectError(fwd(0, { shape: [2, 3, 6, 6] }, K, S, Z), /pool2d: x must be a Tensor, got an object/);
      expectError(fwd(0, Object.create((native.NativeTensor as unknown as { prototype: object }).prototype), K, S, Z), /pool2d: x must be a Tensor/);
      expectError(fwd(0, new (native.NativeTensor as unknown as new () => object)(), K, S, Z), /pool2d: x was disposed/);
      expectError(fwd(0, x), /maxPool2d: kernelSize must be an array of 2 integers, got undefined/);
      expectError(fwd(1, x), /avgPool2d: kernelSize must be an array of 2 integers, got undefined/);
      expectError(fwd(0, x, K), /maxPool2d: stride must be an array/);
      expectError(fwd(0, x, K, S), /maxPool2d: padding must be an array/);
      expectError(fwd(0, x, '2', S, Z), /maxPool2d: kernelSize must be an array of 2 integers, got a string/);
      expectError(fwd(0, x, [2], S, Z), /maxPool2d: kernelSize must have 2 entries, got 1/);
      expectError(fwd(0, x, [2, 2, 2], S, Z), /maxPool2d: kernelSize must have 2 entries, got 3/);
      expectError(fwd(0, x, [0, 2], S, Z), /maxPool2d: kernelSize\[0\] must be an integer in \[1/);
      expectError(fwd(0, x, [2, NaN], S, Z), /maxPool2d: kernelSize\[1\] must be an integer/);
      expectError(fwd(0, x, [2, '2'], S, Z), /maxPool2d: kernelSize\[1\] must be a number, got a string/);
      expectError(fwd(0, x, [2, 2 ** 40], S, Z), /maxPool2d: kernelSize\[1\] must be an integer in/);
      expectError(fwd(0, x, K, [1, 0], Z), /maxPool2d: stride\[1\] must be an integer in \[1/);
      expectError(fwd(0, x, K, [-1, 1], Z), /maxPool2d: stride\[0\] must be an integer in \[1/);
      expectError(fwd(0, x, K, S, [-1, 0]), /maxPool2d: padding\[0\] must be an integer in \[0/);
      expectError(fwd(1, x, K, S, [0, 0.5]), /avgPool2d: padding\[1\] must be an integer/);
      expectError(fwd(0, x, K, S, [2, 0]), /maxPool2d: padding \(2, 0\) must be at most half the kernel size/);
      expectError(fwd(0, x, [7, 7], S, Z), /maxPool2d: kernel 7x7 is larger than the padded input 6x6/);
      expectError(fwd(0, t([3, 6, 6]).h, K, S, Z), /maxPool2d: x has 3 dims/);
      expectError(fwd(1, msgc.zeros([2, 0, 6, 6]).h, K, S, Z), /avgPool2d: x is empty/);

      const [y, ws] = native.pool2dForward(0, x, K, S, Z);
      expect(y.shape).toEqual([2, 3, 3, 3]);
      expect(ws).not.toBeNull();
      const gy = t([2, 3, 3, 3]).h;
      // backward: kind, x, kernel, stride, padding, gy, workspace
      expectError(bwd(), /pool2d backward: kind must be a number/);
      expectError(bwd(0, x, K, S, Z), /pool2d backward: gradOutput must be a Tensor, got undefined/);
      expectError(bwd(0, x, K, S, Z, gy), /pool2d backward: max pooling needs the workspace from its forward/);
      expectError(bwd(0, x, K, S, Z, gy, null), /pool2d backward: max pooling needs the workspace/);
      expectError(bwd(0, x, K, S, Z, gy, 'ws'), /pool2d backward: workspace must be a Tensor, got a string/);
      expectError(bwd(0, x, K, S, Z, gy, [1, 2]), /pool2d backward: workspace must be a Tensor, got an array/);
      expectError(bwd(0, x, K, S, Z, msgc.zeros([1]).h, ws), /pool2d backward: gradOutput has shape \[1\], expected \[2, 3, 3, 3\]/);
      expectError(bwd(0, x, K, S, Z, gy, msgc.zeros([1]).h), /maxPool2d backward: workspace does not match this pooling/);
      expectError(bwd(0, x, K, S, Z, t([2, 3, 3, 4]).h, ws), /pool2d backward: gradOutput has shape \[2, 3, 3, 4\], expected \[2, 3, 3, 3\]/);
      expectError(bwd(1, x, K, S, Z, x, null), /pool2d backward: gradOutput has shape \[2, 3, 6, 6\], expected \[2, 3, 3, 3\]/);
      expectError(bwd(0, x, K, S, Z, 'gy', ws), /pool2d backward: gradOutput must be a Tensor, got a string/);
      expectError(bwd(0, x, [0, 0], S, Z, gy, ws), /pool2d backward: kernelSize\[0\] must be an integer in \[1/);
      expectError(bwd(0, x, K, S, [1, 2], gy, ws), /pool2d backward: padding \(1, 2\) must be at most half/);
      expectError(bwd(3, x, K, S, Z, gy, ws), /pool2d backward: kind must be in \[0, 1\]/);
      const gd = t([2, 3, 3, 3]).h;
      gd.dispose();
      expectError(bwd(0, x, K, S, Z, gd, ws), /pool2d backward: gradOutput was disposed/);
      // a workspace of the right size holding garbage (any bytes): no crash, and the result (or error) is released
      for (const fill of [1e30, -1, 3e38, 255]) {
        const garbage = msgc.full([64], fill).h;
        try {
          const g = native.pool2dBackward(0, x, K, S, Z, gy, garbage);
          expect(g.shape).toEqual([2, 3, 6, 6]);
          g.dispose();
        } catch (e) {
          expect((e as Error).message).toMatch(/maxPool2d backward: workspace/);
        }
      }
      // average pooling takes no workspace; one passed anyway is ignored
      const ga = native.pool2dBackward(1, x, K, S, Z, gy, ws);
      expect(ga.shape).toEqual([2, 3, 6, 6]);
      // the valid call still works after all the rejected ones
      const g = native.pool2dBackward(0, x, K, S, Z, gy, ws);
      expect(g.shape).toEqual([2, 3, 6, 6]);
      [y, ws, ga, g].forEach((h) => h && h.dispose());
    });
  });
});
