// norm.test.ts: F.batchNorm2d against a float64 reference (torch semantics: batch mean and biased variance in
// training, running = (1 - momentum) * running + momentum * batchStat with the unbiased variance, running stats
// in eval), its backward against central differences in both modes, blocked (conv-output) inputs, and bad input
// through F and the native boundary.
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

interface BnRef {
  y: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
}

/** float64 batch norm over [N, C, ...rest]. */
function bnRef(
  x: ArrayLike<number>, shape: number[], rm: ArrayLike<number>, rv: ArrayLike<number>,
  w: ArrayLike<number> | null, b: ArrayLike<number> | null, training: boolean, momentum = 0.1, eps = 1e-5,
): BnRef {
  const N = shape[0];
  const C = shape[1];
  const inner = numel(shape.slice(2));
  const count = N * inner;
  const mean = new Float64Array(C);
  const varB = new Float64Array(C);
  const runningMean = Float64Array.from(rm);
  const runningVar = Float64Array.from(rv);
  for (let c = 0; c < C; c++) {
    if (training) {
      let s = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < inner; i++) s += x[(n * C + c) * inner + i];
      const m = s / count;
      let v = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < inner; i++) v += (x[(n * C + c) * inner + i] - m) ** 2;
      mean[c] = m;
      varB[c] = v / count;
      runningMean[c] = (1 - momentum) * rm[c] + momentum * m;
      runningVar[c] = (1 - momentum) * rv[c] + momentum * (v / (count - 1));
    } else {
      mean[c] = rm[c];
      varB[c] = rv[c];
    }
  }
  const y = new Float64Array(numel(shape));
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const inv = 1 / Math.sqrt(varB[c] + eps);
      for (let i = 0; i < inner; i++) {
        const k = (n * C + c) * inner + i;
        y[k] = (x[k] - mean[c]) * inv * (w ? w[c] : 1) + (b ? b[c] : 0);
      }
    }
  }
  return { y, runningMean, runningVar };
}

interface Case {
  shape: number[];
  affine: boolean;
  momentum?: number;
  eps?: number;
  offset?: number;
}

function makeInputs(c: Case, seed: number) {
  const C = c.shape[1];
  const xData = randomArray(numel(c.shape), seed, -1.5 + (c.offset ?? 0), 1.5 + (c.offset ?? 0));
  const rmData = randomArray(C, seed + 1, -0.5, 0.5);
  const rvData = randomArray(C, seed + 2, 0.5, 2);
  const wData = randomArray(C, seed + 3, 0.5, 1.5);
  const bData = randomArray(C, seed + 4, -0.5, 0.5);
  return { xData, rmData, rvData, wData, bData };
}

describe('batchNorm2d forward', () => {
  const cases: Case[] = [
    { shape: [3, 4, 3, 2], affine: true },
    { shape: [2, 5, 4, 4], affine: false },
    { shape: [4, 3, 2, 3], affine: true, momentum: 0.3, eps: 1e-3 },
    { shape: [2, 16, 3, 3], affine: true, offset: 3 },
    { shape: [6, 5], affine: true },
    { shape: [5, 3], affine: false, momentum: 0.5 },
  ];
  for (const [i, c] of cases.entries()) {
    test(`training and eval ${JSON.stringify(c)}`, () => {
      msgc.tidy(() => {
        const { xData, rmData, rvData, wData, bData } = makeInputs(c, 10 + i);
        const C = c.shape[1];
        const x = msgc.tensor(xData, c.shape);
        const rm = msgc.tensor(rmData, [C]);
        const rv = msgc.tensor(rvData, [C]);
        const w = c.affine ? msgc.tensor(wData, [C]) : null;
        const b = c.affine ? msgc.tensor(bData, [C]) : null;
        const opts = { momentum: c.momentum, eps: c.eps };
        const momentum = c.momentum ?? 0.1;
        const eps = c.eps ?? 1e-5;

        // training: batch statistics, running stats updated with the unbiased variance
        const y = F.batchNorm2d(x, rm, rv, w, b, { training: true, ...opts });
        expect(y.shape).toEqual(c.shape);
        const ref = bnRef(xData, c.shape, rmData, rvData, c.affine ? wData : null, c.affine ? bData : null, true, momentum, eps);
        expect(closeness(y.toFloat32Array(), ref.y, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
        expect(closeness(rm.toFloat32Array(), ref.runningMean, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
        expect(closeness(rv.toFloat32Array(), ref.runningVar, 1e-5, 1e-4)).toBeLessThanOrEqual(1);

        // eval: running statistics, which stay as they are
        const rmNow = rm.toFloat32Array();
        const rvNow = rv.toFloat32Array();
        const ye = F.batchNorm2d(x, rm, rv, w, b, { training: false, ...opts });
        const refE = bnRef(xData, c.shape, rmNow, rvNow, c.affine ? wData : null, c.affine ? bData : null, false, momentum, eps);
        expect(closeness(ye.toFloat32Array(), refE.y, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        expect(Array.from(rm.toFloat32Array())).toEqual(Array.from(rmNow));
        expect(Array.from(rv.toFloat32Array())).toEqual(Array.from(rvNow));
      });
    });
  }

  test('a second training step compounds the running statistics', () => {
    msgc.tidy(() => {
      const shape = [4, 3, 2, 2];
      const x1 = randomArray(numel(shape), 31, -2, 2);
      const x2 = randomArray(numel(shape), 32, 0, 3);
      const rm = msgc.zeros([3]);
      const rv = msgc.ones([3]);
      F.batchNorm2d(msgc.tensor(x1, shape), rm, rv, null, null, { training: true, momentum: 0.2 });
      F.batchNorm2d(msgc.tensor(x2, shape), rm, rv, null, null, { training: true, momentum: 0.2 });
      const r1 = bnRef(x1, shape, [0, 0, 0], [1, 1, 1], null, null, true, 0.2);
      const r2 = bnRef(x2, shape, r1.runningMean, r1.runningVar, null, null, true, 0.2);
      expect(closeness(rm.toFloat32Array(), r2.runningMean, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(rv.toFloat32Array(), r2.runningVar, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
    });
  });

  test('momentum 0 keeps and momentum 1 replaces the running statistics', () => {
    msgc.tidy(() => {
      const shape = [3, 2, 2, 2];
      const xd = randomArray(numel(shape), 41);
      const x = msgc.tensor(xd, shape);
      const rm = msgc.tensor([0.25, -0.5], [2]);
      const rv = msgc.tensor([2, 3], [2]);
      F.batchNorm2d(x, rm, rv, null, null, { training: true, momentum: 0 });
      expect(Array.from(rm.toFloat32Array())).toEqual([0.25, -0.5]);
      expect(Array.from(rv.toFloat32Array())).toEqual([2, 3]);
      F.batchNorm2d(x, rm, rv, null, null, { training: true, momentum: 1 });
      const ref = bnRef(xd, shape, [0.25, -0.5], [2, 3], null, null, true, 1);
      expect(closeness(rm.toFloat32Array(), ref.runningMean, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(rv.toFloat32Array(), ref.runningVar, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
    });
  });

  test('eval works with a single sample and a single value per channel', () => {
    msgc.tidy(() => {
      const xd = randomArray(4, 51);
      const rmd = randomArray(4, 52);
      const rvd = randomArray(4, 53, 0.5, 1.5);
      for (const shape of [[1, 4], [1, 4, 1, 1]]) {
        const y = F.batchNorm2d(msgc.tensor(xd, shape), msgc.tensor(rmd, [4]), msgc.tensor(rvd, [4]), null, null, { training: false });
        const ref = bnRef(xd, shape, rmd, rvd, null, null, false);
        expect(closeness(y.toFloat32Array(), ref.y, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      }
    });
  });

  test('a blocked input (conv output) gives the same values, in training and eval', () => {
    msgc.tidy(() => {
      const shape = [2, 6, 4, 3];
      const C = 6;
      const { xData, rmData, rvData, wData, bData } = makeInputs({ shape, affine: true }, 61);
      const xb = F.conv2d(msgc.tensor(xData, shape), eye(C));
      expect(xb.layout).toBe('blocked');
      expect(Array.from(xb.toFloat32Array())).toEqual(Array.from(xData));
      const rm = msgc.tensor(rmData, [C]);
      const rv = msgc.tensor(rvData, [C]);
      const w = msgc.tensor(wData, [C]);
      const b = msgc.tensor(bData, [C]);
      const y = F.batchNorm2d(xb, rm, rv, w, b, { training: true });
      const ref = bnRef(xData, shape, rmData, rvData, wData, bData, true);
      expect(closeness(y.toFloat32Array(), ref.y, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
      expect(closeness(rm.toFloat32Array(), ref.runningMean, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(rv.toFloat32Array(), ref.runningVar, 1e-5, 1e-4)).toBeLessThanOrEqual(1);
      const ye = F.batchNorm2d(xb, rm, rv, null, b, { training: false });
      const refE = bnRef(xData, shape, ref.runningMean, ref.runningVar, null, bData, false);
      expect(closeness(ye.toFloat32Array(), refE.y, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
    });
  });
});

describe('batchNorm2d backward (central differences)', () => {
  // [2, 12, 3, 2]: a plain input of 8+ channels, which goes through nChw16c (12 of 16 lanes)
  const shapes = [[3, 4, 3, 2], [6, 3], [2, 12, 3, 2]];
  for (const shape of shapes) {
    for (const training of [true, false]) {
      test(`${training ? 'training' : 'eval'} ${JSON.stringify(shape)}: x, weight, bias`, () => {
        msgc.tidy(() => {
          const C = shape[1];
          const { xData, rmData, rvData, wData, bData } = makeInputs({ shape, affine: true }, 70 + shape.length);
          const x = msgc.tensor(xData, shape, { requiresGrad: true });
          const w = msgc.tensor(wData, [C], { requiresGrad: true });
          const b = msgc.tensor(bData, [C], { requiresGrad: true });
          const rm = msgc.tensor(rmData, [C]);
          const rv = msgc.tensor(rvData, [C]);
          const r = gradCheck(([x, w, b]) => F.batchNorm2d(x, rm, rv, w, b, { training }), [x, w, b]);
          expect(r.checked).toBeGreaterThan(0);
          expect(x.grad!.shape).toEqual(shape);
          expect(w.grad!.shape).toEqual([C]);
          expect(b.grad!.shape).toEqual([C]);
        });
      });
    }
  }

  test('affine off: gradient of x only', () => {
    msgc.tidy(() => {
      const shape = [2, 3, 2, 3];
      const x = msgc.tensor(randomArray(numel(shape), 81), shape, { requiresGrad: true });
      const rm = msgc.zeros([3]);
      const rv = msgc.ones([3]);
      gradCheck(([x]) => F.batchNorm2d(x, rm, rv, null, null, { training: true }), [x]);
      gradCheck(([x]) => F.batchNorm2d(x, rm, rv, null, null, { training: false }), [x]);
    });
  });

  test('only weight requires grad (x and bias do not)', () => {
    msgc.tidy(() => {
      const shape = [4, 3, 2, 2];
      const x = msgc.tensor(randomArray(numel(shape), 83), shape);
      const w = msgc.tensor(randomArray(3, 84, 0.5, 1.5), [3], { requiresGrad: true });
      const b = msgc.tensor(randomArray(3, 85), [3]);
      const rm = msgc.zeros([3]);
      const rv = msgc.ones([3]);
      gradCheck(([x, w, b]) => F.batchNorm2d(x, rm, rv, w, b, { training: true }), [x, w, b]);
      expect(x.grad).toBeNull();
      expect(b.grad).toBeNull();
    });
  });

  for (const training of [true, false]) {
    test(`blocked input (conv output), ${training ? 'training' : 'eval'}`, () => {
      msgc.tidy(() => {
        const shape = [2, 5, 3, 3];
        const C = 5;
        const { xData, rmData, rvData, wData, bData } = makeInputs({ shape, affine: true }, 90);
        const e = eye(C);
        const x = msgc.tensor(xData, shape, { requiresGrad: true });
        const w = msgc.tensor(wData, [C], { requiresGrad: true });
        const b = msgc.tensor(bData, [C], { requiresGrad: true });
        const rm = msgc.tensor(rmData, [C]);
        const rv = msgc.tensor(rvData, [C]);
        const layouts: string[] = [];
        gradCheck(([x, w, b]) => {
          const xb = F.conv2d(x, e);
          layouts.push(xb.layout);
          return F.batchNorm2d(xb, rm, rv, w, b, { training });
        }, [x, w, b]);
        expect(new Set(layouts)).toEqual(new Set(['blocked']));
      });
    });
  }
});

describe('batchNorm2d bad input', () => {
  test('through F: shapes, ranks, running stats, options, non-tensors, disposed tensors', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * 3 * 2 * 2, 101), [2, 3, 2, 2]);
      const rm = msgc.zeros([3]);
      const rv = msgc.ones([3]);
      const T = { training: true };
      const bn = F.batchNorm2d as unknown as (...a: unknown[]) => Tensor;
      expectError(() => bn(msgc.zeros([2, 3, 4]), rm, rv, null, null, T), /batchNorm2d: x has 3 dims.*expected 4/);
      expectError(() => bn(msgc.zeros([6]), rm, rv, null, null, T), /batchNorm2d: x has 1 dims/);
      expectError(() => bn(msgc.zeros([2, 3, 1, 1, 2]), rm, rv, null, null, T), /batchNorm2d: x has 5 dims/);
      expectError(() => bn(x, msgc.zeros([4]), rv, null, null, T), /batchNorm2d: runningMean has shape \[4\], expected \[3\]/);
      expectError(() => bn(x, rm, msgc.ones([2]), null, null, T), /batchNorm2d: runningVar has shape \[2\], expected \[3\]/);
      expectError(() => bn(x, rm, msgc.ones([3, 1]), null, null, T), /batchNorm2d: runningVar has shape \[3, 1\], expected \[3\]/);
      expectError(() => bn(x, rm, rv, msgc.ones([4]), null, T), /batchNorm2d: weight has shape \[4\], expected \[3\]/);
      expectError(() => bn(x, rm, rv, null, msgc.ones([1]), T), /batchNorm2d: bias has shape \[1\], expected \[3\]/);
      expectError(() => bn(msgc.zeros([1, 3]), rm, rv, null, null, T), /batchNorm2d: training needs more than one value per channel/);
      expectError(() => bn(msgc.zeros([1, 3, 1, 1]), rm, rv, null, null, T), /batchNorm2d: training needs more than one value per channel/);
      expectError(() => bn(msgc.zeros([2, 0, 2, 2]), msgc.zeros([0]), msgc.zeros([0]), null, null, T), /batchNorm2d: x has no channels/);
      expectError(() => bn('x', rm, rv, null, null, T), /batchNorm2d: x must be a Tensor, got string/);
      expectError(() => bn(x, [0, 0, 0], rv, null, null, T), /batchNorm2d: runningMean must be a Tensor/);
      expectError(() => bn(x, rm, undefined, null, null, T), /batchNorm2d: runningVar must be a Tensor, got undefined/);
      expectError(() => bn(x, rm, rv, 1, null, T), /batchNorm2d: weight must be a Tensor, got number/);
      expectError(() => bn(x, rm, rv, null, {}, T), /batchNorm2d: bias must be a Tensor/);
      expectError(() => bn(x, rm, rv, null, null), /batchNorm2d: options\.training \(boolean\) is required/);
      expectError(() => bn(x, rm, rv, null, null, { training: 1 }), /batchNorm2d: options\.training/);
      expectError(() => bn(x, rm, rv, null, null, { training: true, momentum: 1.5 }), /batchNorm2d: momentum must be in \[0, 1\]/);
      expectError(() => bn(x, rm, rv, null, null, { training: true, momentum: -0.1 }), /batchNorm2d: momentum must be in \[0, 1\]/);
      expectError(() => bn(x, rm, rv, null, null, { training: true, momentum: NaN }), /batchNorm2d: momentum must be finite/);
      expectError(() => bn(x, rm, rv, null, null, { training: true, momentum: '0.1' }), /batchNorm2d: momentum must be a number/);
      expectError(() => bn(x, rm, rv, null, null, { training: true, eps: 0 }), /batchNorm2d: eps must be positive/);
      expectError(() => bn(x, rm, rv, null, null, { training: true, eps: -1e-5 }), /batchNorm2d: eps must be positive/);
      const gone = msgc.zeros([3]);
      gone.dispose();
      expectError(() => bn(x, gone, rv, null, null, T), /batchNorm2d: runningMean was disposed/);
      expectError(() => bn(x, rm, rv, gone, null, T), /batchNorm2d: weight was disposed/);
      const xg = msgc.zeros([2, 3, 2, 2]);
      xg.dispose();
      expectError(() => bn(xg, rm, rv, null, null, T), /batchNorm2d: x was disposed/);
      // none of the failed calls touched the running statistics
      expect(Array.from(rm.toFloat32Array())).toEqual([0, 0, 0]);
      expect(Array.from(rv.toFloat32Array())).toEqual([1, 1, 1]);
    });
  });

  test('directly against native.batchNorm2dForward / Backward: garbage never crashes', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(24, 111), [2, 3, 2, 2]);
      const rm = msgc.zeros([3]);
      const rv = msgc.ones([3]);
      const w = msgc.ones([3]);
      const fwd = (...a: unknown[]) => () => (native.batchNorm2dForward as unknown as (...a: unknown[]) => unknown)(...a);
      const bwd = (...a: unknown[]) => () => (native.batchNorm2dBackward as unknown as (...a: unknown[]) => unknown)(...a);
      const NT = native.NativeTensor as unknown as { new (): object; prototype: object };
      expectError(fwd(), /batchNorm2d: x must be a Tensor, got undefined/);
      expectError(fwd(x.h), /batchNorm2d: runningMean must be a Tensor, got undefined/);
      expectError(fwd(x.h, rm.h, rv.h, null, null), /batchNorm2d: training must be a boolean, got undefined/);
      expectError(fwd(x.h, rm.h, rv.h, null, null, true), /batchNorm2d: momentum must be a number, got undefined/);
      expectError(fwd(x.h, rm.h, rv.h, null, null, true, 0.1), /batchNorm2d: eps must be a number, got undefined/);
      expectError(fwd('x', rm.h, rv.h, null, null, true, 0.1, 1e-5), /batchNorm2d: x must be a Tensor, got a string/);
      expectError(fwd([1, 2, 3], rm.h, rv.h, null, null, true, 0.1, 1e-5), /batchNorm2d: x must be a Tensor, got an array/);
      expectError(fwd(x.h, rm.h, rv.h, 'w', null, true, 0.1, 1e-5), /batchNorm2d: weight must be a Tensor, got a string/);
      expectError(fwd(x.h, rm.h, rv.h, null, null, 'yes', 0.1, 1e-5), /batchNorm2d: training must be a boolean, got a string/);
      expectError(fwd(x.h, rm.h, rv.h, null, null, true, NaN, 1e-5), /batchNorm2d: momentum must be finite/);
      expectError(fwd(x.h, rm.h, rv.h, null, null, true, 0.1, Infinity), /batchNorm2d: eps must be finite/);
      expectError(fwd(x.h, rm.h, rv.h, null, null, true, 0.1, NaN), /batchNorm2d: eps must be finite/);
      expectError(fwd(x, rm.h, rv.h, null, null, true, 0.1, 1e-5), /batchNorm2d: x must be a Tensor, got an object/);
      expectError(fwd(new NT(), rm.h, rv.h, null, null, true, 0.1, 1e-5), /batchNorm2d: x was disposed/);
      expectError(fwd(Object.create(NT.prototype), rm.h, rv.h, null, null, true, 0.1, 1e-5), /batchNorm2d: x must be a Tensor/);
      expectError(fwd(x.h, x.h, rv.h, null, null, true, 0.1, 1e-5), /batchNorm2d: runningMean has shape/);

      const [y, mean, variance] = native.batchNorm2dForward(x.h, rm.h, rv.h, w.h, null, true, 0.1, 1e-5);
      expect(y.shape).toEqual([2, 3, 2, 2]);
      expectError(bwd(), /batchNorm2d backward: x must be a Tensor, got undefined/);
      expectError(bwd(x.h, y, mean), /batchNorm2d backward: var must be a Tensor, got undefined/);
      expectError(bwd(x.h, rm.h, mean, variance, w.h, true, 1e-5, true), /batchNorm2d backward: gradOutput has shape \[3\], expected \[2, 3, 2, 2\]/);
      expectError(bwd(x.h, y, x.h, variance, w.h, true, 1e-5, true), /batchNorm2d backward: mean has shape/);
      expectError(bwd(x.h, y, mean, variance, w.h, true, 0, true), /batchNorm2d backward: eps must be positive/);
      expectError(bwd(x.h, y, mean, variance, w.h, 0, 1e-5, true), /batchNorm2d backward: training must be a boolean/);
      expectError(bwd(x.h, y, mean, variance, w.h, true, 1e-5, 'no'), /batchNorm2d backward: needWeightBias must be a boolean/);

      // every argument position replaced by garbage: an Error or a result, never a crash
      const garbage: unknown[] = [undefined, null, 'str', NaN, -1, 1.5, [1, 2, 3], {}, () => 1, true, new Float32Array(3), new NT()];
      const goodF: unknown[] = [x.h, rm.h, rv.h, w.h, null, true, 0.1, 1e-5];
      const goodB: unknown[] = [x.h, y, mean, variance, w.h, true, 1e-5, true];
      for (const [good, call] of [[goodF, fwd], [goodB, bwd]] as [unknown[], typeof fwd][]) {
        for (let i = 0; i < good.length; i++) {
          for (const g of garbage) {
            const args = good.slice();
            args[i] = g;
            try {
              const out = call(...args)() as ({ dispose(): void } | null)[];
              for (const h of out) if (h) h.dispose();
            } catch (e) {
              expect(Object.prototype.toString.call(e)).toBe('[object Error]');
              expect((e as Error).message).toMatch(/^batchNorm2d( backward)?: /);
            }
          }
        }
      }
      for (const h of [y, mean, variance]) h.dispose();
    });
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
