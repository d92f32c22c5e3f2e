// linear.test.ts: F.linear (y = x W^T + b) against float64 matrix products (forward and its adjoint) and central
// finite differences, an input that comes from a blocked conv output, and bad input through F and the native
// boundary.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { closeness, gradCheck, numel, randomArray } from './helpers/gradcheck';
import { expectClose, expectError } from './helpers/testing';

const F = msgc.F;

/** y[n, o] = b[o] + sum_i x[n, i] w[o, i], in float64. */
function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, N: number, In: number, Out: number): Float64Array {
  const y = new Float64Array(N * Out);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < Out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < In; i++) s += x[n * In + i] * w[o * In + i];
      y[n * Out + o] = s;
    }
  }
  return y;
}

/** Gradients of sum(y * gy): gx = gy W, gW = gy^T x, gb = column sums of gy, in float64. */
function linearRefBackward(x: ArrayLike<number>, w: ArrayLike<number>, gy: ArrayLike<number>, N: number, In: number, Out: number) {
  const gx = new Float64Array(N * In);
  const gw = new Float64Array(Out * In);
  const gb = new Float64Array(Out);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < Out; o++) {
      const g = gy[n * Out + o];
      gb[o] += g;
      for (let i = 0; i < In; i++) {
        gx[n * In + i] += g * w[o * In + i];
        gw[o * In + i] += g * x[n * In + i];
      }
    }
  }
  return { gx, gw, gb };
}

let seed = 900;
function t(shape: number[], requiresGrad = false): Tensor {
  return msgc.tensor(randomArray(numel(shape), seed++), shape, { requiresGrad });
}

let liveAtStart = 0;
beforeAll(() => {
  liveAtStart = msgc.liveTensorCount();
});
afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(liveAtStart);
});

const shapes: [number, number, number][] = [
  // [N, in, out]
  [1, 5, 4],
  [3, 5, 4],
  [1, 1, 1],
  [3, 16, 1],
  [2, 1, 7],
  [3, 33, 10],
  // narrow outputs against many rows: the small GEMMs run transposed (cpu::sgemm), forward and backward
  [32, 64, 10],
  [64, 5, 24],
];

describe('linear forward and backward', () => {
  test.each(shapes.flatMap((s) => [true, false].map((bias) => [...s, bias] as const)))(
    'N=%i in=%i out=%i bias=%s: forward and gradients match float64',
    (N, In, Out, withBias) => {
      msgc.tidy(() => {
        const x = t([N, In], true);
        const w = t([Out, In], true);
        const b = withBias ? t([Out], true) : null;
        const y = F.linear(x, w, b);
        expect(y.shape).toEqual([N, Out]);
        const xv = x.toFloat32Array();
        const wv = w.toFloat32Array();
        expectClose(y.toFloat32Array(), linearRef(xv, wv, b ? b.toFloat32Array() : null, N, In, Out), 'forward');
        const gy = randomArray(N * Out, seed++);
        y.backward(msgc.tensor(gy, y.shape));
        const ref = linearRefBackward(xv, wv, gy, N, In, Out);
        expect(x.grad!.shape).toEqual([N, In]);
        expect(w.grad!.shape).toEqual([Out, In]);
        expectClose(x.grad!.toFloat32Array(), ref.gx, 'x grad');
        expectClose(w.grad!.toFloat32Array(), ref.gw, 'weight grad');
        if (b) {
          expect(b.grad!.shape).toEqual([Out]);
          expectClose(b.grad!.toFloat32Array(), ref.gb, 'bias grad');
        }
        [x, w, b].forEach((v) => v?.dispose());
      });
    },
  );

  test.each([
    [1, 6, 3, true],
    [1, 4, 5, false],
    [3, 7, 4, true],
    [3, 5, 2, false],
  ] as const)('N=%i in=%i out=%i bias=%s: gradients match central finite differences', (N, In, Out, withBias) => {
    const x = t([N, In], true);
    const w = t([Out, In], true);
    const b = withBias ? t([Out], true) : null;
    const inputs = b ? [x, w, b] : [x, w];
    const r = gradCheck(([xi, wi, bi]) => F.linear(xi, wi, bi ?? null), inputs, { samples: 12 });
    expect(r.worst).toBeLessThanOrEqual(1);
    inputs.forEach((v) => v.dispose());
  });

  test('only the inputs that require grad receive one', () => {
    msgc.tidy(() => {
      const x = t([3, 5], false);
      const w = t([4, 5], true);
      const b = t([4], false);
      const y = F.linear(x, w, b);
      const gy = randomArray(12, seed++);
      y.backward(msgc.tensor(gy, y.shape));
      expect(x.grad).toBeNull();
      expect(b.grad).toBeNull();
      expectClose(w.grad!.toFloat32Array(), linearRefBackward(x.toFloat32Array(), w.toFloat32Array(), gy, 3, 5, 4).gw, 'weight grad');
      w.dispose();
    });
  });

  test('a scalar loss on top: backward() without an argument', () => {
    msgc.tidy(() => {
      const x = t([3, 4], true);
      const w = t([2, 4], true);
      const b = t([2], true);
      F.sum(F.linear(x, w, b)).backward();
      const ref = linearRefBackward(x.toFloat32Array(), w.toFloat32Array(), new Float64Array(6).fill(1), 3, 4, 2);
      expectClose(x.grad!.toFloat32Array(), ref.gx, 'x grad');
      expectClose(w.grad!.toFloat32Array(), ref.gw, 'w grad');
      expectClose(b.grad!.toFloat32Array(), ref.gb, 'b grad');
      [x, w, b].forEach((v) => v.dispose());
    });
  });

  test('empty edges: zero input features give the bias (or zeros); an empty batch gives an empty output', () => {
    msgc.tidy(() => {
      const b = t([3]);
      const y = F.linear(msgc.zeros([2, 0]), msgc.zeros([3, 0]), b);
      expect(y.shape).toEqual([2, 3]);
      const bv = Array.from(b.toFloat32Array());
      expect(Array.from(y.toFloat32Array())).toEqual([...bv, ...bv]);
      // no bias: zeros, whatever the output buffer held before
      for (let i = 0; i < 3; i++) {
        const y0 = F.linear(msgc.zeros([2, 0]), msgc.zeros([3, 0]), null);
        expect(Array.from(y0.toFloat32Array())).toEqual([0, 0, 0, 0, 0, 0]);
      }
      const e = F.linear(msgc.zeros([0, 4]), t([3, 4]), t([3]));
      expect(e.shape).toEqual([0, 3]);
      const z = F.linear(t([2, 4]), msgc.zeros([0, 4]), null);
      expect(z.shape).toEqual([2, 0]);
      // gradients with an empty batch: weight and bias grads are zero
      const x0 = msgc.zeros([0, 4], { requiresGrad: true });
      const w0 = t([3, 4], true);
      const b0 = t([3], true);
      F.linear(x0, w0, b0).backward(msgc.zeros([0, 3]));
      expect(Array.from(w0.grad!.toFloat32Array())).toEqual(new Array(12).fill(0));
      expect(Array.from(b0.grad!.toFloat32Array())).toEqual([0, 0, 0]);
      [x0, w0, b0].forEach((v) => v.dispose());
    });
  });

  test('the flattened output of a conv (blocked layout) as input: forward and gradients', () => {
    msgc.tidy(() => {
      // x0 -> 1x1 identity conv (blocked) -> flatten -> linear; x0's gradient is gy W reshaped
      const xs = [3, 8, 3, 2];
      const x0 = t(xs, true);
      const eye = new Float32Array(64);
      for (let c = 0; c < 8; c++) eye[c * 8 + c] = 1;
      const h = F.conv2d(x0, msgc.tensor(eye, [8, 8, 1, 1]));
      expect(h.layout).toBe('blocked');
      const flat = F.flatten(h);
      expect(flat.shape).toEqual([3, 48]);
      const w = t([5, 48], true);
      const b = t([5], true);
      const y = F.linear(flat, w, b);
      const xv = x0.toFloat32Array(); // row-major NCHW: the same order as the flattened rows
      expectClose(y.toFloat32Array(), linearRef(xv, w.toFloat32Array(), b.toFloat32Array(), 3, 48, 5), 'forward');
      const gy = randomArray(15, seed++);
      y.backward(msgc.tensor(gy, y.shape));
      const ref = linearRefBackward(xv, w.toFloat32Array(), gy, 3, 48, 5);
      expect(x0.grad!.shape).toEqual(xs);
      expectClose(x0.grad!.toFloat32Array(), ref.gx, 'x grad through flatten and conv');
      expectClose(w.grad!.toFloat32Array(), ref.gw, 'weight grad');
      expectClose(b.grad!.toFloat32Array(), ref.gb, 'bias grad');
      [x0, w, b].forEach((v) => v.dispose());
    });
  });
});

describe('linear rejects bad input with an Error naming the op and the problem', () => {
  test('through msgc.F.linear', () => {
    msgc.tidy(() => {
      const x = t([3, 5]);
      const w = t([4, 5]);
      const b = t([4]);
      const call = (xx: unknown, ww: unknown, bb: unknown) => () => F.linear(xx as Tensor, ww as Tensor, bb as Tensor | null);
      for (const bad of [3, NaN, [[1, 2, 3, 4, 5]], null, undefined, 'x', new Float32Array(15), x.h]) {
        expectError(call(bad, w, b), /linear: x must be a Tensor/);
        expectError(call(x, bad, b), /linear: weight must be a Tensor/);
      }
      for (const bad of [0, [1, 2, 3, 4], 'b', new Float32Array(4), b.h]) expectError(call(x, w, bad), /linear: bias must be a Tensor/);
      expectError(call(t([5]), w, b), /linear: x has 1 dims \(shape \[5\]\), expected 2/);
      expectError(call(t([3, 1, 5]), w, b), /linear: x has 3 dims/);
      expectError(call(t([3, 5, 1, 1]), w, b), /linear: x has 4 dims/);
      expectError(call(msgc.tensor([1], []), w, b), /linear: x has 0 dims/);
      expectError(call(x, t([5]), null), /linear: weight has 1 dims/);
      expectError(call(x, t([1, 4, 5]), null), /linear: weight has 3 dims/);
      expectError(call(x, t([4, 6]), b), /linear: x has 5 features \(shape \[3, 5\]\) but weight expects 6 \(shape \[4, 6\]\)/);
      expectError(call(x, t([5, 4]), b), /linear: x has 5 features .*but weight expects 4/);
      expectError(call(x, w, t([3])), /linear: bias has shape \[3\], expected \[4\]/);
      expectError(call(x, w, t([5])), /linear: bias has shape \[5\], expected \[4\]/);
      expectError(call(x, w, t([1, 4])), /linear: bias has shape \[1, 4\], expected \[4\]/);
      expectError(call(x, w, t([])), /linear: bias has shape \[\], expected \[4\]/);
      const xd = t([3, 5]);
      xd.dispose();
      expectError(call(xd, w, b), /linear: x was disposed/);
      const wd = t([4, 5]);
      wd.dispose();
      expectError(call(x, wd, b), /linear: weight was disposed/);
      const bd = t([4]);
      bd.dispose();
      expectError(call(x, w, bd), /linear: bias was disposed/);
      // gradient of the wrong shape
      const xg = t([3, 5], true);
      const y = F.linear(xg, w, b);
      expectError(() => y.backward(msgc.zeros([4, 3])), /backward: gradient has shape \[4, 3\], expected \[3, 4\]/);
      expectError(() => y.backward(msgc.zeros([12])), /backward: gradient has shape \[12\]/);
      expectError(() => y.backward(new Float32Array(12) as unknown as Tensor), /backward: gradient must be a Tensor/);
      expectError(() => y.backward(), /backward: the tensor has shape \[3, 4\]/);
      // the graph still works after the rejected calls
      const gy = randomArray(12, seed++);
      y.backward(msgc.tensor(gy, [3, 4]));
      expectClose(xg.grad!.toFloat32Array(), linearRefBackward(xg.toFloat32Array(), w.toFloat32Array(), gy, 3, 5, 4).gx, 'x grad');
      xg.dispose();
    });
  });

  test('directly against native.linearForward / linearBackward: garbage never crashes', () => {
    msgc.tidy(() => {
      const x = t([3, 5]).h;
      const w = t([4, 5]).h;
      const b = t([4]).h;
      const gy = t([3, 4]).h;
      const fwd = (...a: unknown[]) => () => (native.linearForward as unknown as (...a: unknown[]) => unknown)(...a);
      const bwd = (...a: unknown[]) => () => (native.linearBackward as unknown as (...a: unknown[]) => unknown)(...a);
      const proto = Object.create((native.NativeTensor as unknown as { prototype: object }).prototype);
      const empty = new (native.NativeTensor as unknown as new () => object)();
      expectError(fwd(), /linear: x must be a Tensor, got undefined/);
      expectError(fwd(x), /linear: weight must be a Tensor, got undefined/);
      expectError(fwd(NaN, w, b), /linear: x must be a Tensor, got a number/);
      expectError(fwd('x', w, b), /linear: x must be a Tensor, got a string/);
      expectError(fwd([x], w, b), /linear: x must be a Tensor, got an array/);
      expectError(fwd({ shape: [3, 5] }, w, b), /linear: x must be a Tensor, got an object/);
      expectError(fwd(proto, w, b), /linear: x must be a Tensor/);
      expectError(fwd(empty, w, b), /linear: x was disposed/);
      expectError(fwd(x, w, 'b'), /linear: bias must be a Tensor, got a string/);
      expectError(fwd(x, w, 4), /linear: bias must be a Tensor, got a number/);
      expectError(fwd(x, w, proto), /linear: bias must be a Tensor/);
      expectError(fwd(x, w, x), /linear: bias has shape \[3, 5\], expected \[4\]/);
      expectError(fwd(x, t([4, 3]).h, null), /linear: x has 5 features \(shape \[3, 5\]\) but weight expects 3/);
      expectError(fwd(b, w, null), /linear: x has 1 dims/);
      expectError(fwd(x, b, null), /linear: weight has 1 dims/);
      expectError(fwd(t([3, 5, 1, 1]).h, w, null), /linear: x has 4 dims/);
      // backward: x, weight, gy, needX, needWeight, needBias
      expectError(bwd(), /linear backward: x must be a Tensor, got undefined/);
      expectError(bwd(x, w), /linear backward: gradOutput must be a Tensor, got undefined/);
      expectError(bwd(x, w, gy), /linear backward: needX must be a boolean, got undefined/);
      expectError(bwd(x, w, gy, 1, true, true), /linear backward: needX must be a boolean, got a number/);
      expectError(bwd(x, w, gy, true, 'true', true), /linear backward: needWeight must be a boolean, got a string/);
      expectError(bwd(x, w, gy, true, true, NaN), /linear backward: needBias must be a boolean, got a number/);
      expectError(bwd(x, w, t([4, 3]).h, true, true, true), /linear backward: gradOutput has shape \[4, 3\], expected \[3, 4\]/);
      expectError(bwd(x, w, b, true, true, true), /linear backward: gradOutput has shape \[4\], expected \[3, 4\]/);
      expectError(bwd(x, w, 'gy', true, true, true), /linear backward: gradOutput must be a Tensor, got a string/);
      expectError(bwd(x, w, empty, true, true, true), /linear backward: gradOutput was disposed/);
      expectError(bwd(x, t([4, 6]).h, gy, true, true, true), /linear backward: x has 5 features/);
      expectError(bwd(b, w, gy, true, true, true), /linear backward: x has 1 dims/);
      const disposed = t([3, 4]).h;
      disposed.dispose();
      expectError(bwd(x, w, disposed, true, true, true), /linear backward: gradOutput was disposed/);
      // valid calls still work; extra arguments are ignored
      const y = (native.linearForward as unknown as (...a: unknown[]) => { shape: number[]; dispose(): void })(x, w, b, 'extra');
      expect(y.shape).toEqual([3, 4]);
      const gs = native.linearBackward(x, w, gy, false, true, false);
      expect(gs[0]).toBeNull();
      expect(gs[1]!.shape).toEqual([4, 5]);
      expect(gs[2]).toBeNull();
      [y, ...gs].forEach((h) => h && h.dispose());
    });
  });
});
