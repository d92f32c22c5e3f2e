// conv.test.ts: F.conv2d against a naive float64 convolution (forward and its adjoint), central finite
// differences, results independent of the internal (blocked) layout, and bad input through F and the native
// boundary.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { closeness, gradCheck, numel, randomArray } from './helpers/gradcheck';
import { expectClose, expectError } from './helpers/testing';

const F = msgc.F;

interface ConvCfg {
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

function cfgOf(o: { stride?: number | [number, number]; padding?: number | [number, number]; dilation?: number | [number, number]; groups?: number }): ConvCfg {
  const p = (v: number | [number, number] | undefined, d: number): [number, number] => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);
  return { stride: p(o.stride, 1), padding: p(o.padding, 0), dilation: p(o.dilation, 1), groups: o.groups ?? 1 };
}

function outSize(H: number, W: number, KH: number, KW: number, c: ConvCfg): [number, number] {
  const oh = Math.floor((H + 2 * c.padding[0] - c.dilation[0] * (KH - 1) - 1) / c.stride[0]) + 1;
  const ow = Math.floor((W + 2 * c.padding[1] - c.dilation[1] * (KW - 1) - 1) / c.stride[1]) + 1;
  return [oh, ow];
}

/** Visits every (output, input, weight) index triple of the convolution. */
function forEachTap(xs: number[], ws: number[], c: ConvCfg, visit: (yi: number, xi: number, wi: number, k: number) => void): number[] {
  const [N, C, H, W] = xs;
  const [K, Cg, KH, KW] = ws;
  const [OH, OW] = outSize(H, W, KH, KW, c);
  const Kg = K / c.groups;
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const g = Math.floor(k / Kg);
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          const yi = ((n * K + k) * OH + oh) * OW + ow;
          visit(yi, -1, -1, k);
          for (let cg = 0; cg < Cg; cg++) {
            const ch = g * Cg + cg;
            for (let i = 0; i < KH; i++) {
              const ih = oh * c.stride[0] - c.padding[0] + i * c.dilation[0];
              if (ih < 0 || ih >= H) continue;
              for (let j = 0; j < KW; j++) {
                const iw = ow * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (iw < 0 || iw >= W) continue;
                visit(yi, ((n * C + ch) * H + ih) * W + iw, ((k * Cg + cg) * KH + i) * KW + j, k);
              }
            }
          }
        }
      }
    }
  }
  return [N, K, OH, OW];
}

/** Naive float64 convolution (torch.nn.functional.conv2d semantics). */
function convRef(x: ArrayLike<number>, xs: number[], w: ArrayLike<number>, ws: number[], b: ArrayLike<number> | null, c: ConvCfg): { y: Float64Array; shape: number[] } {
  const [OH, OW] = outSize(xs[2], xs[3], ws[2], ws[3], c);
  const y = new Float64Array(xs[0] * ws[0] * OH * OW);
  const shape = forEachTap(xs, ws, c, (yi, xi, wi, k) => {
    if (xi < 0) y[yi] = b ? b[k] : 0;
    else y[yi] += x[xi] * w[wi];
  });
  return { y, shape };
}

/** The adjoint of convRef: gradients of sum(y * gy) for x, weight and bias, in float64. */
function convRefBackward(x: ArrayLike<number>, xs: number[], w: ArrayLike<number>, ws: number[], gy: ArrayLike<number>, c: ConvCfg) {
  const gx = new Float64Array(numel(xs));
  const gw = new Float64Array(numel(ws));
  const gb = new Float64Array(ws[0]);
  forEachTap(xs, ws, c, (yi, xi, wi, k) => {
    if (xi < 0) {
      gb[k] += gy[yi];
    } else {
      gx[xi] += w[wi] * gy[yi];
      gw[wi] += x[xi] * gy[yi];
    }
  });
  return { gx, gw, gb };
}

let seed = 100;
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

// ---------------------------------------------------------------------------------------------------------------
describe('conv2d forward against a naive float64 convolution', () => {
  const channelCfgs = [
    { name: 'groups=1', C: 3, K: 4, groups: 1 },
    { name: 'groups=2', C: 4, K: 6, groups: 2 },
    { name: 'depthwise (C=K=groups=8)', C: 8, K: 8, groups: 8 },
  ];
  const inputs = [
    { N: 1, H: 7, W: 9 },
    { N: 3, H: 10, W: 8 },
  ];
  for (const kernel of [1, 3, 5, 7]) {
    for (const cc of channelCfgs) {
      test(`${kernel}x${kernel} kernel, ${cc.name}: stride 1/2, padding 0/1/3, dilation 1/2, bias or not, batch 1/3`, () => {
        let ran = 0;
        let caseNo = 0;
        const failures: string[] = [];
        for (const stride of [1, 2]) {
          for (const padding of [0, 1, 3]) {
            for (const dilation of [1, 2]) {
              for (const withBias of [false, true]) {
                {
                  // the two inputs alternate so that each meets both bias settings: (no bias, 0), (bias, 1),
                  // (no bias, 1), (bias, 0), ...
                  const idx = caseNo++;
                  const inp = inputs[(idx + Math.floor(idx / 2)) % 2];
                  const c = cfgOf({ stride, padding, dilation, groups: cc.groups });
                  const eff = dilation * (kernel - 1) + 1;
                  if (inp.H + 2 * padding < eff || inp.W + 2 * padding < eff) continue;
                  const desc = `N=${inp.N} ${inp.H}x${inp.W} stride=${stride} padding=${padding} dilation=${dilation} bias=${withBias}`;
                  msgc.tidy(() => {
                    const xs = [inp.N, cc.C, inp.H, inp.W];
                    const ws = [cc.K, cc.C / cc.groups, kernel, kernel];
                    const x = t(xs);
                    const w = t(ws);
                    const b = withBias ? t([cc.K]) : null;
                    const y = F.conv2d(x, w, b, { stride, padding, dilation, groups: cc.groups });
                    const ref = convRef(x.toFloat32Array(), xs, w.toFloat32Array(), ws, b ? b.toFloat32Array() : null, c);
                    if (y.shape.join(',') !== ref.shape.join(',')) {
                      failures.push(`${desc}: shape [${y.shape}] vs [${ref.shape}]`);
                      return;
                    }
                    const worst = closeness(y.toFloat32Array(), ref.y, 1e-4, 1e-4);
                    if (!(worst <= 1)) failures.push(`${desc}: closeness ${worst}`);
                  });
                  ran++;
                }
              }
            }
          }
        }
        expect(failures).toEqual([]);
        expect(ran).toBeGreaterThan(0);
      });
    }
  }

  test('non-square kernels and per-axis stride / padding / dilation pairs', () => {
    const cases: { xs: number[]; ws: number[]; o: Parameters<typeof F.conv2d>[3] }[] = [
      { xs: [2, 4, 7, 9], ws: [6, 2, 3, 5], o: { stride: [1, 2], padding: [0, 2], dilation: [2, 1], groups: 2 } },
      { xs: [1, 3, 9, 7], ws: [5, 3, 1, 3], o: { stride: [2, 1], padding: [1, 0], dilation: [1, 3] } },
      { xs: [3, 8, 6, 10], ws: [8, 1, 5, 3], o: { stride: [2, 3], padding: [2, 1], dilation: [1, 2], groups: 8 } },
      { xs: [2, 4, 8, 8], ws: [8, 1, 3, 3], o: { stride: 1, padding: 1, groups: 4 } }, // depthwise, multiplier 2
      { xs: [1, 2, 5, 6], ws: [3, 2, 5, 6], o: {} }, // kernel covers the whole input: 1x1 output
    ];
    for (const { xs, ws, o } of cases) {
      msgc.tidy(() => {
        const x = t(xs);
        const w = t(ws);
        const b = t([ws[0]]);
        const y = F.conv2d(x, w, b, o);
        const ref = convRef(x.toFloat32Array(), xs, w.toFloat32Array(), ws, b.toFloat32Array(), cfgOf(o ?? {}));
        expect(y.shape).toEqual(ref.shape);
        expectClose(y.toFloat32Array(), ref.y, `x ${xs} w ${ws} ${JSON.stringify(o)}`);
      });
    }
  });

  test('floor output size when the stride does not divide the padded extent', () => {
    msgc.tidy(() => {
      // (8 + 2 - 3) / 2 + 1 = 4 (floor of 4.5); (9 + 0 - 3) / 4 + 1 = 2 (floor of 2.5)
      const x = t([1, 2, 8, 9]);
      const w = t([3, 2, 3, 3]);
      const y = F.conv2d(x, w, null, { stride: [2, 4], padding: [1, 0] });
      expect(y.shape).toEqual([1, 3, 4, 2]);
      const ref = convRef(x.toFloat32Array(), x.shape, w.toFloat32Array(), w.shape, null, cfgOf({ stride: [2, 4], padding: [1, 0] }));
      expectClose(y.toFloat32Array(), ref.y, 'floor output');
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('conv2d backward', () => {
  test('gradients for x, weight and bias equal the float64 adjoint over a parameter grid', () => {
    const failures: string[] = [];
    const configs: { C: number; K: number; groups: number }[] = [
      { C: 3, K: 4, groups: 1 },
      { C: 4, K: 6, groups: 2 },
      { C: 8, K: 8, groups: 8 },
    ];
    for (const kernel of [1, 3, 5]) {
      for (const cc of configs) {
        for (const stride of [1, 2]) {
          for (const padding of [0, 1, 3]) {
            for (const dilation of [1, 2]) {
              const withBias = (stride + padding + dilation) % 2 === 0;
              const N = padding === 1 ? 3 : 1;
              const xs = [N, cc.C, 7, 9];
              const ws = [cc.K, cc.C / cc.groups, kernel, kernel];
              const eff = dilation * (kernel - 1) + 1;
              if (7 + 2 * padding < eff) continue;
              const c = cfgOf({ stride, padding, dilation, groups: cc.groups });
              const desc = `k=${kernel} C=${cc.C} K=${cc.K} groups=${cc.groups} stride=${stride} padding=${padding} dilation=${dilation} bias=${withBias}`;
              msgc.tidy(() => {
                const x = t(xs, true);
                const w = t(ws, true);
                const b = withBias ? t([cc.K], true) : null;
                const y = F.conv2d(x, w, b, { stride, padding, dilation, groups: cc.groups });
                const gyData = randomArray(y.size, seed++);
                y.backward(msgc.tensor(gyData, y.shape));
                const ref = convRefBackward(x.toFloat32Array(), xs, w.toFloat32Array(), ws, gyData, c);
                const check = (g: Tensor | null, r: Float64Array, name: string, shape: number[]) => {
                  if (!g) return failures.push(`${desc}: no gradient for ${name}`);
                  if (g.shape.join(',') !== shape.join(',')) return failures.push(`${desc}: ${name} grad shape [${g.shape}]`);
                  const worst = closeness(g.toFloat32Array(), r, 1e-4, 1e-4);
                  if (!(worst <= 1)) failures.push(`${desc}: ${name} grad closeness ${worst}`);
                  return 0;
                };
                check(x.grad, ref.gx, 'x', xs);
                check(w.grad, ref.gw, 'weight', ws);
                if (b) check(b.grad, ref.gb, 'bias', [cc.K]);
                // the leaves' .grad are not tracked by tidy: free them with their owners
                x.dispose();
                w.dispose();
                b?.dispose();
              });
            }
          }
        }
      }
    }
    expect(failures).toEqual([]);
  });

  const fdCases: { name: string; xs: number[]; ws: number[]; bias: boolean; o: Parameters<typeof F.conv2d>[3] }[] = [
    { name: 'plain 3x3, padding 1, bias', xs: [2, 3, 6, 7], ws: [4, 3, 3, 3], bias: true, o: { padding: 1 } },
    { name: 'grouped (groups=2), stride 2', xs: [2, 4, 7, 6], ws: [6, 2, 3, 3], bias: true, o: { stride: 2, padding: 1, groups: 2 } },
    { name: 'depthwise (C=K=groups=8)', xs: [1, 8, 6, 6], ws: [8, 1, 3, 3], bias: true, o: { padding: 1, groups: 8 } },
    { name: 'strided + dilated, non-square input', xs: [2, 3, 7, 9], ws: [4, 3, 3, 3], bias: true, o: { stride: 2, padding: 2, dilation: 2 } },
    { name: '5x5 with per-axis pairs, no bias', xs: [1, 2, 8, 7], ws: [3, 2, 5, 5], bias: false, o: { stride: [2, 1], padding: [2, 1], dilation: [1, 2] } },
    { name: '7x7, padding 3, stride 2, batch 3', xs: [3, 2, 8, 8], ws: [3, 2, 7, 7], bias: true, o: { padding: 3, stride: 2 } },
  ];
  for (const fc of fdCases) {
    test(`matches central finite differences: ${fc.name}`, () => {
      const x = t(fc.xs, true);
      const w = t(fc.ws, true);
      const b = fc.bias ? t([fc.ws[0]], true) : null;
      const inputs = b ? [x, w, b] : [x, w];
      const r = gradCheck(([xi, wi, bi]) => F.conv2d(xi, wi, bi ?? null, fc.o), inputs, { samples: 10 });
      expect(r.checked).toBeGreaterThan(0);
      expect(r.worst).toBeLessThanOrEqual(1);
      inputs.forEach((v) => v.dispose());
    });
  }

  test('only the inputs that require grad receive one', () => {
    msgc.tidy(() => {
      const x = t([1, 2, 5, 5], false);
      const w = t([3, 2, 3, 3], true);
      const b = t([3], false);
      const y = F.conv2d(x, w, b, { padding: 1 });
      const gy = randomArray(y.size, seed++);
      y.backward(msgc.tensor(gy, y.shape));
      expect(x.grad).toBeNull();
      expect(b.grad).toBeNull();
      const ref = convRefBackward(x.toFloat32Array(), x.shape, w.toFloat32Array(), w.shape, gy, cfgOf({ padding: 1 }));
      expectClose(w.grad!.toFloat32Array(), ref.gw, 'weight grad');
      w.dispose();
    });
  });

  test('gradients accumulate over two backward passes', () => {
    msgc.tidy(() => {
      const x = t([1, 2, 5, 5], true);
      const w = t([3, 2, 3, 3], true);
      const gy = randomArray(3 * 5 * 5, seed++);
      for (let i = 0; i < 2; i++) {
        const y = F.conv2d(x, w, null, { padding: 1 });
        y.backward(msgc.tensor(gy, y.shape));
      }
      const ref = convRefBackward(x.toFloat32Array(), x.shape, w.toFloat32Array(), w.shape, gy, cfgOf({ padding: 1 }));
      expectClose(x.grad!.toFloat32Array(), ref.gx.map((v) => 2 * v), 'x grad twice');
      expectClose(w.grad!.toFloat32Array(), ref.gw.map((v) => 2 * v), 'weight grad twice');
      x.dispose();
      w.dispose();
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('conv2d does not depend on the internal layout', () => {
  test('a blocked conv output fed into a second conv equals the reference applied twice', () => {
    msgc.tidy(() => {
      const xs = [2, 8, 7, 9];
      const x = t(xs);
      const w1 = t([8, 8, 3, 3]);
      const b1 = t([8]);
      const y1 = F.conv2d(x, w1, b1, { padding: 1 });
      expect(y1.layout).toBe('blocked');
      const r1 = convRef(x.toFloat32Array(), xs, w1.toFloat32Array(), w1.shape, b1.toFloat32Array(), cfgOf({ padding: 1 }));
      expectClose(y1.toFloat32Array(), r1.y, 'first conv');

      const seconds: { ws: number[]; o: Parameters<typeof F.conv2d>[3] }[] = [
        { ws: [6, 8, 3, 3], o: { stride: 2 } },
        { ws: [8, 4, 3, 3], o: { padding: 1, groups: 2 } },
        { ws: [8, 1, 3, 3], o: { padding: 1, groups: 8 } }, // depthwise
        { ws: [16, 8, 1, 1], o: {} },
        { ws: [3, 8, 3, 3], o: { padding: 2, dilation: 2, stride: [1, 2] } },
      ];
      for (const s of seconds) {
        const w2 = t(s.ws);
        const b2 = t([s.ws[0]]);
        const y2 = F.conv2d(y1, w2, b2, s.o);
        // the reference second conv reads the reference first output (float64), not the code under test
        const r2 = convRef(r1.y, r1.shape, w2.toFloat32Array(), s.ws, b2.toFloat32Array(), cfgOf(s.o ?? {}));
        expect(y2.shape).toEqual(r2.shape);
        expectClose(y2.toFloat32Array(), r2.y, `second conv ${JSON.stringify(s)}`, 2e-4);
      }
      // the blocked output read twice and used again still has the same values
      expectClose(y1.toFloat32Array(), r1.y, 'first conv after reuse');
    });
  });

  test('gradients through two convs (blocked gradient in between) match the float64 adjoint and finite differences', () => {
    const xs = [2, 8, 6, 7];
    const x = t(xs, true);
    const w1 = t([8, 8, 3, 3], true);
    const w2 = t([8, 4, 3, 3], true);
    const b2 = t([8], true);
    const o1 = { padding: 1 };
    const o2 = { stride: 2, padding: 1, groups: 2 };
    msgc.tidy(() => {
      const y1 = F.conv2d(x, w1, null, o1);
      expect(y1.layout).toBe('blocked');
      const y2 = F.conv2d(y1, w2, b2, o2);
      const gy = randomArray(y2.size, seed++);
      y2.backward(msgc.tensor(gy, y2.shape));
      const r1 = convRef(x.toFloat32Array(), xs, w1.toFloat32Array(), w1.shape, null, cfgOf(o1));
      const g2 = convRefBackward(r1.y, r1.shape, w2.toFloat32Array(), w2.shape, gy, cfgOf(o2));
      const g1 = convRefBackward(x.toFloat32Array(), xs, w1.toFloat32Array(), w1.shape, g2.gx, cfgOf(o1));
      expectClose(b2.grad!.toFloat32Array(), g2.gb, 'b2 grad', 2e-4);
      expectClose(w2.grad!.toFloat32Array(), g2.gw, 'w2 grad', 2e-4);
      expectClose(w1.grad!.toFloat32Array(), g1.gw, 'w1 grad', 2e-4);
      expectClose(x.grad!.toFloat32Array(), g1.gx, 'x grad', 2e-4);
    });
    const r = gradCheck(([a, b, c, d]) => F.conv2d(F.conv2d(a, b, null, o1), c, d, o2), [x, w1, w2, b2], { samples: 6 });
    expect(r.worst).toBeLessThanOrEqual(1);
    [x, w1, w2, b2].forEach((v) => v.dispose());
  });

  test('a blocked conv output as a leaf input: conv and its gradient', () => {
    msgc.tidy(() => {
      const y1 = msgc.noGrad(() => F.conv2d(t([1, 8, 6, 6]), t([8, 8, 3, 3]), null, { padding: 1 }));
      expect(y1.layout).toBe('blocked');
      y1.requiresGrad = true;
      const w = t([4, 8, 3, 3], true);
      const y = F.conv2d(y1, w, null, { stride: 2 });
      const gy = randomArray(y.size, seed++);
      y.backward(msgc.tensor(gy, y.shape));
      const ref = convRefBackward(y1.toFloat32Array(), y1.shape, w.toFloat32Array(), w.shape, gy, cfgOf({ stride: 2 }));
      expectClose(y1.grad!.toFloat32Array(), ref.gx, 'blocked leaf grad');
      expectClose(w.grad!.toFloat32Array(), ref.gw, 'weight grad');
      y1.dispose();
      w.dispose();
    });
  });

  test('new values written into an input or a weight are seen by the next conv (no stale reordered copy)', () => {
    msgc.tidy(() => {
      const x = t([1, 8, 6, 6]);
      const w1 = t([8, 8, 3, 3]);
      const y1 = F.conv2d(x, w1, null, { padding: 1 });
      expect(y1.layout).toBe('blocked');
      const w2 = t([4, 8, 3, 3]);
      const first = F.conv2d(y1, w2, null, {});
      const r0 = convRef(y1.toFloat32Array(), y1.shape, w2.toFloat32Array(), w2.shape, null, cfgOf({}));
      expectClose(first.toFloat32Array(), r0.y, 'before writes');
      // overwrite the (blocked) input and the weight in place, as an optimiser step would
      const newY = randomArray(y1.size, seed++);
      const newW = randomArray(w2.size, seed++);
      y1.assign(newY);
      w2.assign(newW);
      const second = F.conv2d(y1, w2, null, {});
      const r1 = convRef(newY, y1.shape, newW, w2.shape, null, cfgOf({}));
      expectClose(second.toFloat32Array(), r1.y, 'after writes');
      // and a plain weight read twice (reordered copy cached) then overwritten
      const w3 = t([4, 8, 3, 3]);
      F.conv2d(x, w3, null, {});
      const newW3 = randomArray(w3.size, seed++);
      w3.assign(newW3);
      const third = F.conv2d(x, w3, null, {});
      const r3 = convRef(x.toFloat32Array(), x.shape, newW3, w3.shape, null, cfgOf({}));
      expectClose(third.toFloat32Array(), r3.y, 'weight after write');
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('conv2d rejects bad input with an Error naming the op and the problem', () => {
  test('through msgc.F.conv2d', () => {
    msgc.tidy(() => {
      const x = t([2, 4, 6, 6]);
      const w = t([6, 4, 3, 3]);
      const b = t([6]);
      const call = (xx: unknown, ww: unknown, bb: unknown, o?: unknown) => () =>
        F.conv2d(xx as Tensor, ww as Tensor, bb as Tensor | null, o as Parameters<typeof F.conv2d>[3]);
      // not tensors
      expectError(call(3, w, null), /conv2d: x must be a Tensor/);
      expectError(call([[1, 2], [3, 4]], w, null), /conv2d: x must be a Tensor/);
      expectError(call(undefined, w, null), /conv2d: x must be a Tensor/);
      expectError(call(null, w, null), /conv2d: x must be a Tensor/);
      expectError(call(new Float32Array(144), w, null), /conv2d: x must be a Tensor/);
      expectError(call(x, 1.5, null), /conv2d: weight must be a Tensor/);
      expectError(call(x, [1, 2, 3], null), /conv2d: weight must be a Tensor/);
      expectError(call(x, w, [0, 0, 0, 0, 0, 0]), /conv2d: bias must be a Tensor/);
      expectError(call(x, w, 'bias'), /conv2d: bias must be a Tensor/);
      expectError(call(x.h, w, null), /conv2d: x must be a Tensor/);
      // rank and shape
      expectError(call(t([4, 6, 6]), w, null), /conv2d: x has 3 dims/);
      expectError(call(t([1, 2, 4, 6, 6]), w, null), /conv2d: x has 5 dims/);
      expectError(call(x, t([6, 4, 3]), null), /conv2d: weight has 3 dims/);
      expectError(call(x, t([6, 3, 3, 3]), null), /conv2d: weight has shape \[6, 3, 3, 3\].*inChannels/);
      expectError(call(x, t([6, 4, 3, 3]), null, { groups: 2 }), /conv2d: weight has shape .*groups=2/);
      expectError(call(x, w, t([5])), /conv2d: bias has shape \[5\], expected \[6\]/);
      expectError(call(x, w, t([6, 1])), /conv2d: bias has shape \[6, 1\]/);
      expectError(call(x, w, t([1])), /conv2d: bias has shape/);
      expectError(call(msgc.zeros([1, 0, 6, 6]), msgc.zeros([6, 0, 3, 3]), null), /conv2d: x has an empty channel dimension/);
      expectError(call(x, msgc.zeros([0, 4, 3, 3]), null), /conv2d: weight has an empty dimension/);
      // kernel larger than the padded input
      expectError(call(t([1, 4, 2, 6]), w, null), /conv2d: the kernel \(3x3.*larger than the padded input \(2x6\)/);
      expectError(call(x, t([6, 4, 9, 9]), null, { padding: 1 }), /conv2d: the kernel .* larger than the padded input/);
      expectError(call(x, w, null, { dilation: 3 }), /conv2d: the kernel \(7x7 with dilation\) is larger/);
      // groups
      expectError(call(x, t([6, 1, 3, 3]), null, { groups: 3 }), /conv2d: input channels \(4\) must be divisible by groups \(3\)/);
      expectError(call(t([2, 6, 6, 6]), t([4, 2, 3, 3]), null, { groups: 3 }), /conv2d: weight's outChannels \(4\) must be divisible by groups \(3\)/);
      for (const groups of [0, -2, 1.5, NaN, Infinity, '2', [2]]) {
        expectError(call(x, w, null, { groups }), /conv2d: groups must be a positive integer/);
      }
      // stride, padding, dilation
      for (const bad of [0, -1, 1.5, NaN, Infinity, '2', [1], [1, 2, 3], [1, 0], [2, -1], [1, 0.5], {}]) {
        expectError(call(x, w, null, { stride: bad }), /conv2d: stride must be an integer >= 1/);
        expectError(call(x, w, null, { dilation: bad }), /conv2d: dilation must be an integer >= 1/);
      }
      for (const bad of [-1, 0.5, NaN, '1', [1], [0, -1], [1, 1, 1], [0.5, 0]]) {
        expectError(call(x, w, null, { padding: bad }), /conv2d: padding must be an integer >= 0/);
      }
      expectError(call(x, w, null, null), /conv2d: options must be an object/);
      // disposed tensors
      const xd = t([2, 4, 6, 6]);
      xd.dispose();
      expectError(call(xd, w, null), /conv2d: x was disposed/);
      const wd = t([6, 4, 3, 3]);
      wd.dispose();
      expectError(call(x, wd, null), /conv2d: weight was disposed/);
      const bd = t([6]);
      bd.dispose();
      expectError(call(x, w, bd), /conv2d: bias was disposed/);
      // nothing above broke the good tensors
      const y = F.conv2d(x, w, b, { padding: 1 });
      const ref = convRef(x.toFloat32Array(), x.shape, w.toFloat32Array(), w.shape, b.toFloat32Array(), cfgOf({ padding: 1 }));
      expectClose(y.toFloat32Array(), ref.y, 'after bad calls');
    });
  });

  test('gradient of the wrong shape or type through backward', () => {
    msgc.tidy(() => {
      const x = t([1, 2, 5, 5], true);
      const w = t([3, 2, 3, 3], true);
      const y = F.conv2d(x, w, null, { padding: 1 });
      expectError(() => y.backward(msgc.zeros([1, 3, 5, 4])), /backward: gradient has shape \[1, 3, 5, 4\], expected \[1, 3, 5, 5\]/);
      expectError(() => y.backward(msgc.zeros([3, 5, 5])), /backward: gradient has shape/);
      expectError(() => y.backward([1, 2, 3] as unknown as Tensor), /backward: gradient must be a Tensor/);
      expectError(() => y.backward(), /backward: the tensor has shape \[1, 3, 5, 5\]/);
      const gd = msgc.zeros([1, 3, 5, 5]);
      gd.dispose();
      expectError(() => y.backward(gd), /backward: gradient was disposed/);
      // the graph is still usable after the rejected calls
      const gy = randomArray(y.size, seed++);
      y.backward(msgc.tensor(gy, y.shape));
      const ref = convRefBackward(x.toFloat32Array(), x.shape, w.toFloat32Array(), w.shape, gy, cfgOf({ padding: 1 }));
      expectClose(x.grad!.toFloat32Array(), ref.gx, 'x grad after rejected calls');
      x.dispose();
      w.dispose();
    });
  });

  test('directly against native.conv2dForward / conv2dBackward: garbage never crashes', () => {
    msgc.tidy(() => {
      const x = t([2, 4, 6, 6]).h;
      const w = t([6, 4, 3, 3]).h;
      const b = t([6]).h;
      const gy = t([2, 6, 6, 6]).h;
      const P = [1, 1];
      const Z = [0, 0];
      const fwd = (...a: unknown[]) => () => (native.conv2dForward as unknown as (...a: unknown[]) => unknown)(...a);
      const bwd = (...a: unknown[]) => () => (native.conv2dBackward as unknown as (...a: unknown[]) => unknown)(...a);
      // arity and types
      expectError(fwd(), /conv2d: x must be a Tensor, got undefined/);
      expectError(fwd(x), /conv2d: weight must be a Tensor, got undefined/);
      expectError(fwd(x, w), /conv2d: stride must be an array of 2 integers, got undefined/);
      expectError(fwd(x, w, null, P), /conv2d: padding must be an array of 2 integers, got undefined/);
      expectError(fwd(x, w, null, P, P), /conv2d: dilation must be an array/);
      expectError(fwd(x, w, null, P, P, P), /conv2d: groups must be a number, got undefined/);
      expectError(fwd('x', w, null, P, Z, P, 1), /conv2d: x must be a Tensor, got a string/);
      expectError(fwd(x, 7, null, P, Z, P, 1), /conv2d: weight must be a Tensor, got a number/);
      expectError(fwd(x, w, 'b', P, Z, P, 1), /conv2d: bias must be a Tensor, got a string/);
      expectError(fwd(x, w, [1, 2, 3, 4, 5, 6], P, Z, P, 1), /conv2d: bias must be a Tensor, got an array/);
      expectError(fwd({ shape: [2, 4, 6, 6] }, w, null, P, Z, P, 1), /conv2d: x must be a Tensor, got an object/);
      expectError(fwd(new (native.NativeTensor as unknown as new () => object)(), w, null, P, Z, P, 1), /conv2d: x was disposed/);
      expectError(fwd(Object.create((native.NativeTensor as unknown as { prototype: object }).prototype), w, null, P, Z, P, 1), /conv2d: x must be a Tensor/);
      expectError(fwd(x, w, null, '1', Z, P, 1), /conv2d: stride must be an array of 2 integers, got a string/);
      expectError(fwd(x, w, null, [1], Z, P, 1), /conv2d: stride must have 2 entries, got 1/);
      expectError(fwd(x, w, null, [1, 1, 1], Z, P, 1), /conv2d: stride must have 2 entries, got 3/);
      expectError(fwd(x, w, null, [NaN, 1], Z, P, 1), /conv2d: stride\[0\] must be an integer/);
      expectError(fwd(x, w, null, [1, '1'], Z, P, 1), /conv2d: stride\[1\] must be a number, got a string/);
      expectError(fwd(x, w, null, [0, 1], Z, P, 1), /conv2d: stride\[0\] must be an integer in \[1/);
      expectError(fwd(x, w, null, [1, 2 ** 40], Z, P, 1), /conv2d: stride\[1\] must be an integer in/);
      expectError(fwd(x, w, null, P, [-1, 0], P, 1), /conv2d: padding\[0\] must be an integer in \[0/);
      expectError(fwd(x, w, null, P, [0, 0.5], P, 1), /conv2d: padding\[1\] must be an integer/);
      expectError(fwd(x, w, null, P, Z, [1, 0], 1), /conv2d: dilation\[1\] must be an integer in \[1/);
      expectError(fwd(x, w, null, P, Z, P, NaN), /conv2d: groups must be finite/);
      expectError(fwd(x, w, null, P, Z, P, 0), /conv2d: groups must be in \[1/);
      expectError(fwd(x, w, null, P, Z, P, 1.5), /conv2d: groups must be an integer/);
      expectError(fwd(x, w, null, P, Z, P, '1'), /conv2d: groups must be a number, got a string/);
      expectError(fwd(x, w, null, P, Z, P, 2 ** 53), /conv2d: groups must be in/);
      expectError(fwd(x, w, null, P, Z, P, 3), /conv2d: input channels \(4\) must be divisible by groups \(3\)/);
      expectError(fwd(x, w, null, P, Z, P, 4), /conv2d: weight's outChannels \(6\) must be divisible by groups \(4\)/);
      expectError(fwd(x, w, null, P, Z, P, 2), /conv2d: weight has shape \[6, 4, 3, 3\], expected inChannels\/groups = 2/);
      expectError(fwd(x, b, null, P, Z, P, 1), /conv2d: weight has 1 dims/);
      expectError(fwd(w, x, null, P, Z, P, 1), /conv2d: the kernel \(6x6 with dilation\) is larger than the padded input \(3x3\)/);
      expectError(fwd(x, w, w, P, Z, P, 1), /conv2d: bias has shape \[6, 4, 3, 3\], expected \[6\]/);
      expectError(fwd(x, w, null, P, Z, [4, 4], 1), /conv2d: the kernel \(9x9 with dilation\) is larger than the padded input \(6x6\)/);
      const disposed = t([6]).h;
      disposed.dispose();
      expectError(fwd(x, w, disposed, P, Z, P, 1), /conv2d: bias was disposed/);
      // backward: x, weight, stride, padding, dilation, groups, gy, needX, needWeight, needBias
      expectError(bwd(), /conv2d backward: x must be a Tensor/);
      expectError(bwd(x, w, P, [1, 1], P, 1), /conv2d backward: gradOutput must be a Tensor, got undefined/);
      expectError(bwd(x, w, P, [1, 1], P, 1, gy), /conv2d backward: needX must be a boolean, got undefined/);
      expectError(bwd(x, w, P, [1, 1], P, 1, gy, 1, true, true), /conv2d backward: needX must be a boolean, got a number/);
      expectError(bwd(x, w, P, [1, 1], P, 1, gy, true, 'yes', true), /conv2d backward: needWeight must be a boolean/);
      expectError(bwd(x, w, P, [1, 1], P, 1, gy, true, true, null), /conv2d backward: needBias must be a boolean/);
      expectError(bwd(x, w, P, Z, P, 1, gy, true, true, true), /conv2d backward: gradOutput has shape \[2, 6, 6, 6\], expected \[2, 6, 4, 4\]/);
      expectError(bwd(x, w, P, [1, 1], P, 1, b, true, true, true), /conv2d backward: gradOutput has shape \[6\]/);
      expectError(bwd(x, w, P, [1, 1], P, 1, 'gy', true, true, true), /conv2d backward: gradOutput must be a Tensor, got a string/);
      expectError(bwd(x, w, null, P, [1, 1], P, 1, gy, true, true, true), /conv2d backward: stride must be an array/);
      expectError(bwd(x, w, P, [1, 1], P, 3, gy, true, true, true), /conv2d backward: input channels \(4\) must be divisible by groups \(3\)/);
      expectError(bwd(x, w, P, [-1, 1], P, 1, gy, true, true, true), /conv2d backward: padding\[0\] must be an integer in/);
      expectError(bwd(x, w, P, [1, 1], P, 1, disposed, true, true, true), /conv2d backward: gradOutput was disposed/);
      // valid calls still work, extra arguments are ignored, and the handles are released
      const y = native.conv2dForward(x, w, b, [1, 1], [1, 1], [1, 1], 1);
      expect(y.shape).toEqual([2, 6, 6, 6]);
      const extra = (native.conv2dForward as unknown as (...a: unknown[]) => { shape: number[]; dispose(): void })(x, w, b, [1, 1], [1, 1], [1, 1], 1, 'extra', 5);
      expect(extra.shape).toEqual([2, 6, 6, 6]);
      const grads = native.conv2dBackward(x, w, [1, 1], [1, 1], [1, 1], 1, gy, true, false, true);
      expect(grads[0]!.shape).toEqual([2, 4, 6, 6]);
      expect(grads[1]).toBeNull();
      expect(grads[2]!.shape).toEqual([6]);
      [y, extra, ...grads].forEach((h) => h && h.dispose());
    });
  });
});
