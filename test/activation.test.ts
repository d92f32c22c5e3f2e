// activation.test.ts: F.relu, F.relu6 (clamp to [0, 6]) and F.sigmoid against float64 references, backward
// against central differences (inputs kept away from the kinks at 0 and 6), on plain and blocked (conv-output)
// inputs, and bad input through F and the native boundary.
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

/** Values in [-3, 9) at least `gap` away from 0 and 6, so that central differences never straddle a kink. */
function awayFromKinks(n: number, seed: number, gap = 0.05): Float32Array {
  const v = randomArray(n, seed, -3, 9);
  for (let i = 0; i < n; i++) {
    for (const k of [0, 6]) {
      const d = v[i] - k;
      if (Math.abs(d) < gap) v[i] = k + (d < 0 ? -gap : gap) * 2;
    }
  }
  return v;
}

type Kind = 'relu' | 'relu6' | 'sigmoid';
const refs: Record<Kind, (v: number) => number> = {
  relu: (v) => Math.max(v, 0),
  relu6: (v) => Math.min(Math.max(v, 0), 6),
  sigmoid: (v) => 1 / (1 + Math.exp(-v)),
};
const ops: Record<Kind, (x: Tensor) => Tensor> = { relu: F.relu, relu6: F.relu6, sigmoid: F.sigmoid };
const kinds: Kind[] = ['relu', 'relu6', 'sigmoid'];

describe('forward against float64', () => {
  for (const kind of kinds) {
    test(`${kind}: plain 4-D and 2-D, and exact edge values`, () => {
      msgc.tidy(() => {
        for (const shape of [[2, 3, 4, 5], [7, 9], [10]]) {
          const xd = randomArray(numel(shape), 3 + shape.length, -10, 10);
          const y = ops[kind](msgc.tensor(xd, shape));
          expect(y.shape).toEqual(shape);
          expect(y.layout).toBe('plain');
          expect(closeness(y.toFloat32Array(), Array.from(xd, refs[kind]), 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        }
        const edges = [-1e30, -100, -6, -1e-7, 0, 1e-7, 3, 5.999, 6, 6.001, 100, 1e30];
        const ye = ops[kind](msgc.tensor(edges, [edges.length])).toFloat32Array();
        expect(closeness(ye, edges.map(refs[kind]), 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        for (const v of ye) expect(Number.isFinite(v)).toBe(true);
      });
    });

    test(`${kind}: a blocked input keeps its layout and its values`, () => {
      msgc.tidy(() => {
        const shape = [2, 6, 3, 4];
        const xd = randomArray(numel(shape), 17, -8, 10);
        const xb = F.conv2d(msgc.tensor(xd, shape), eye(6));
        expect(xb.layout).toBe('blocked');
        const y = ops[kind](xb);
        expect(y.shape).toEqual(shape);
        expect(y.layout).toBe('blocked');
        expect(closeness(y.toFloat32Array(), Array.from(xd, refs[kind]), 1e-6, 1e-5)).toBeLessThanOrEqual(1);
      });
    });
  }

  test('empty tensors pass through', () => {
    msgc.tidy(() => {
      for (const kind of kinds) {
        const y = ops[kind](msgc.zeros([0, 4]));
        expect(y.shape).toEqual([0, 4]);
        expect(y.toFloat32Array().length).toBe(0);
      }
    });
  });
});

describe('backward against central differences', () => {
  for (const kind of kinds) {
    test(`${kind}: plain input`, () => {
      msgc.tidy(() => {
        for (const shape of [[2, 3, 3, 4], [5, 7]]) {
          const x = msgc.tensor(awayFromKinks(numel(shape), 21), shape, { requiresGrad: true });
          const r = gradCheck(([x]) => ops[kind](x), [x], { samples: numel(shape) });
          expect(r.checked).toBe(numel(shape));
        }
      });
    });

    test(`${kind}: blocked input (conv output)`, () => {
      msgc.tidy(() => {
        const shape = [2, 5, 3, 3];
        const e = eye(5);
        const x = msgc.tensor(awayFromKinks(numel(shape), 23), shape, { requiresGrad: true });
        const layouts = new Set<string>();
        gradCheck(([x]) => {
          const xb = F.conv2d(x, e);
          layouts.add(xb.layout);
          return ops[kind](xb);
        }, [x], { samples: numel(shape) });
        expect([...layouts]).toEqual(['blocked']);
      });
    });
  }

  test('analytic gradients match the float64 derivative with a given upstream gradient', () => {
    msgc.tidy(() => {
      const shape = [3, 4, 2, 2];
      const xd = awayFromKinks(numel(shape), 27, 1e-3);
      const gd = randomArray(numel(shape), 28);
      const deriv: Record<Kind, (v: number) => number> = {
        relu: (v) => (v > 0 ? 1 : 0),
        relu6: (v) => (v > 0 && v < 6 ? 1 : 0),
        sigmoid: (v) => {
          const s = 1 / (1 + Math.exp(-v));
          return s * (1 - s);
        },
      };
      for (const kind of kinds) {
        for (const blocked of [false, true]) {
          const x = msgc.tensor(xd, shape, { requiresGrad: true });
          const xin = blocked ? F.conv2d(x, eye(4)) : x;
          ops[kind](xin).backward(msgc.tensor(gd, shape));
          const want = Array.from(xd, (v, i) => deriv[kind](v) * gd[i]);
          expect(closeness(x.grad!.toFloat32Array(), want, 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        }
      }
    });
  });

  test('chained activations (sigmoid of relu6 of relu)', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(awayFromKinks(40, 29), [4, 10], { requiresGrad: true });
      gradCheck(([x]) => F.sigmoid(F.relu6(F.relu(x))), [x], { samples: 40 });
    });
  });
});

describe('bad input', () => {
  test('through F: non-tensors and disposed tensors', () => {
    msgc.tidy(() => {
      const gone = msgc.zeros([2, 2]);
      gone.dispose();
      for (const kind of kinds) {
        const op = ops[kind] as unknown as (x: unknown) => Tensor;
        expectError(() => op(undefined), new RegExp(`^${kind}: x must be a Tensor, got undefined`));
        expectError(() => op(null), new RegExp(`^${kind}: x must be a Tensor, got null`));
        expectError(() => op([1, 2, 3]), new RegExp(`^${kind}: x must be a Tensor, got object`));
        expectError(() => op(3), new RegExp(`^${kind}: x must be a Tensor, got number`));
        expectError(() => op(gone), new RegExp(`^${kind}: x was disposed`));
      }
    });
  });

  test('directly against native.activationForward / activationBackward: garbage never crashes', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(12, 31), [3, 4]);
      const g = msgc.tensor(randomArray(12, 32), [3, 4]);
      const NT = native.NativeTensor as unknown as { new (): object; prototype: object };
      const fwd = (...a: unknown[]) => () => (native.activationForward as unknown as (...a: unknown[]) => unknown)(...a);
      const bwd = (...a: unknown[]) => () => (native.activationBackward as unknown as (...a: unknown[]) => unknown)(...a);
      expectError(fwd(), /activation: kind must be a number, got undefined/);
      expectError(fwd(3, x.h), /activation: kind must be in \[0, 2\], got 3/);
      expectError(fwd(-1, x.h), /activation: kind must be in \[0, 2\]/);
      expectError(fwd(0.5, x.h), /activation: kind must be an integer/);
      expectError(fwd(NaN, x.h), /activation: kind must be finite/);
      expectError(fwd('relu', x.h), /activation: kind must be a number, got a string/);
      expectError(fwd(0), /activation: x must be a Tensor, got undefined/);
      expectError(fwd(0, [1, 2]), /activation: x must be a Tensor, got an array/);
      expectError(fwd(0, new NT()), /activation: x was disposed/);
      expectError(fwd(0, Object.create(NT.prototype)), /activation: x must be a Tensor/);
      // (handles are recognised by their type tag, not by their prototype)
      expectError(fwd(0, Object.setPrototypeOf({ shape: [3, 4] }, NT.prototype)), /activation: x must be a Tensor/);
      const proxy = new Proxy(x.h, {});
      expectError(fwd(0, proxy), /activation: x must be a Tensor/);
      expectError(bwd(0, x.h), /activation backward: gradOutput must be a Tensor, got undefined/);
      expectError(bwd(1, x.h, msgc.zeros([4, 3]).h), /activation backward: gradOutput has shape \[4, 3\], expected \[3, 4\]/);
      expectError(bwd(2, 'y', g.h), /activation backward: saved must be a Tensor, got a string/);
      const garbage: unknown[] = [undefined, null, 'str', NaN, 7, 1.5, [1, 2, 3], {}, true, new Float32Array(12), new NT()];
      for (const [good, call] of [[[0, x.h], fwd], [[1, x.h, g.h], bwd]] as [unknown[], typeof fwd][]) {
        for (let i = 0; i < good.length; i++) {
          for (const v of garbage) {
            const args = good.slice();
            args[i] = v;
            try {
              const out = call(...args)() as { dispose(): void } | null;
              if (out) out.dispose();
            } catch (e) {
              expect(Object.prototype.toString.call(e)).toBe('[object Error]');
              expect((e as Error).message).toMatch(/^activation( backward)?: /);
            }
          }
        }
      }
      // extra arguments are ignored
      const y = (native.activationForward as unknown as (...a: unknown[]) => { dispose(): void; toFloat32Array(): Float32Array })(0, x.h, 'extra', 5);
      expect(Array.from(y.toFloat32Array())).toEqual(Array.from(x.toFloat32Array(), (v) => Math.max(v, 0)));
      y.dispose();
    });
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
