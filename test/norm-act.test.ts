// norm-act.test.ts: F.batchNormAct / BatchNorm2d.forwardAct (BN with running statistics + residual + ReLU/ReLU6 in
// one native pass) against a float64 reference, in plain and conv-blocked layouts (channel counts that do and do not
// fill a SIMD block, residual in a different layout); the composite path it takes in training and under autograd;
// Sequential's BN→ReLU fusion; bad input. Also: denormal flushing (on by default, never visible to JavaScript) and
// which tensors are reported to V8 as external memory (only those no tidy scope disposes).
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { BatchNorm2d, Conv2d, ReLU, ReLU6, Sequential } from '../lib/nn/layers';
import { gradCheck, numel, randomArray } from './helpers/gradcheck';
import { expectClose, expectError, eye, settledLiveCount } from './helpers/testing';

const F = msgc.F;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});
afterAll(async () => {
  expect(await settledLiveCount()).toBe(baseline);
});

/** float64 act(BN_eval(x) + r). */
function reference(x: ArrayLike<number>, shape: number[], rm: ArrayLike<number>, rv: ArrayLike<number>, w: ArrayLike<number> | null,
  b: ArrayLike<number> | null, eps: number, act: 'relu' | 'relu6' | null, r: ArrayLike<number> | null): Float64Array {
  const [N, C] = shape;
  const inner = numel(shape.slice(2));
  const y = new Float64Array(numel(shape));
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < inner; i++) {
        const k = (n * C + c) * inner + i;
        let v = ((x[k] - rm[c]) / Math.sqrt(rv[c] + eps)) * (w ? w[c] : 1) + (b ? b[c] : 0) + (r ? r[k] : 0);
        if (act) v = Math.max(0, v);
        if (act === 'relu6') v = Math.min(6, v);
        y[k] = v;
      }
  return y;
}

/** A copy of t in the blocked layout a 1×1 identity convolution produces. */
function blockedCopy(t: Tensor): Tensor {
  const e = eye(t.shape[1]);
  const y = F.conv2d(t, e);
  e.dispose();
  return y;
}

describe('F.batchNormAct in eval (fused)', () => {
  const cases: [string, number[]][] = [
    ['16 channels', [2, 16, 5, 6]],
    ['24 channels (a partly filled block)', [3, 24, 4, 4]],
    ['8 channels', [2, 8, 7, 3]],
    ['40 channels, batch 1', [1, 40, 9, 9]],
    ['3 channels', [2, 3, 6, 6]],
  ];
  for (const [name, shape] of cases) {
    for (const act of ['relu', 'relu6', null] as const) {
      for (const layout of ['plain', 'blocked'] as const) {
        for (const res of ['none', 'plain', 'blocked'] as const) {
          test(`${name}, ${act ?? 'no activation'}, ${layout} x, residual ${res}`, () => {
            const C = shape[1];
            const xv = randomArray(numel(shape), 11 + C, -4, 4);
            const rv0 = randomArray(numel(shape), 12 + C, -3, 3);
            const rm = randomArray(C, 13, -1, 1);
            const rvar = randomArray(C, 14, 0.2, 3);
            const w = randomArray(C, 15, -2, 2);
            const b = randomArray(C, 16, -1, 1);
            const eps = 1e-3;
            msgc.tidy(() => {
              const x0 = msgc.tensor(xv, shape);
              const x = layout === 'blocked' ? blockedCopy(x0) : x0;
              if (layout === 'blocked' && C >= 8) expect(x.layout).toBe('blocked');
              const r0 = msgc.tensor(rv0, shape);
              const r = res === 'none' ? null : res === 'blocked' ? blockedCopy(r0) : r0;
              const y = msgc.noGrad(() => F.batchNormAct(x, msgc.tensor(rm, [C]), msgc.tensor(rvar, [C]), msgc.tensor(w, [C]),
                msgc.tensor(b, [C]), { training: false, eps, activation: act, residual: r }));
              expect(y.shape).toEqual(shape);
              if (layout === 'blocked' && C >= 8) expect(y.layout).toBe('blocked');
              expectClose(y.toFloat32Array(), reference(xv, shape, rm, rvar, w, b, eps, act, r ? rv0 : null), 'fused', 1e-5);
            });
          });
        }
      }
    }
  }

  test('without affine parameters', () => {
    const shape = [2, 16, 3, 3];
    const xv = randomArray(numel(shape), 21, -2, 2);
    const rm = randomArray(16, 22, -1, 1);
    const rvar = randomArray(16, 23, 0.5, 2);
    msgc.tidy(() => {
      const y = msgc.noGrad(() => F.batchNormAct(msgc.tensor(xv, shape), msgc.tensor(rm, [16]), msgc.tensor(rvar, [16]), null, null,
        { training: false, activation: 'relu' }));
      expectClose(y.toFloat32Array(), reference(xv, shape, rm, rvar, null, null, 1e-5, 'relu', null), 'no affine', 1e-5);
    });
  });

  test('eval with gradients recorded: the composite path, same values, gradients vs finite differences', () => {
    const shape = [2, 16, 3, 3];
    const xv = randomArray(numel(shape), 31, -2, 2);
    const rv0 = randomArray(numel(shape), 32, -2, 2);
    const rm = msgc.tensor(randomArray(16, 33, -1, 1), [16]);
    const rvar = msgc.tensor(randomArray(16, 34, 0.5, 2), [16]);
    const w = msgc.tensor(randomArray(16, 35, -2, 2), [16]);
    const b = msgc.tensor(randomArray(16, 36, -1, 1), [16]);
    w.requiresGrad = true;
    b.requiresGrad = true;
    msgc.tidy(() => {
      const x = msgc.tensor(xv, shape);
      x.requiresGrad = true;
      const r = msgc.tensor(rv0, shape);
      r.requiresGrad = true;
      const y = F.batchNormAct(x, rm, rvar, w, b, { training: false, activation: 'relu6', residual: r });
      expect(y.requiresGrad).toBe(true);
      expectClose(y.toFloat32Array(), reference(xv, shape, rm.toFloat32Array(), rvar.toFloat32Array(), w.toFloat32Array(),
        b.toFloat32Array(), 1e-5, 'relu6', rv0), 'recorded', 1e-5);
    });
    const report = gradCheck(([x, r, ww, bb]) => F.batchNormAct(x, rm, rvar, ww, bb, { training: false, activation: null, residual: r }),
      [msgc.tensor(xv, shape), msgc.tensor(rv0, shape), w, b]);
    expect(report.worst).toBeLessThan(1);
    for (const t of [rm, rvar, w, b]) t.dispose();
  });

  test('training: batch statistics and running-stat update, as batchNorm2d then add then ReLU', () => {
    const shape = [4, 16, 3, 3];
    const xv = randomArray(numel(shape), 41, -2, 2);
    const rv0 = randomArray(numel(shape), 42, -2, 2);
    const bnA = new BatchNorm2d(16);
    const bnB = new BatchNorm2d(16);
    msgc.tidy(() => {
      const x = msgc.tensor(xv, shape);
      const r = msgc.tensor(rv0, shape);
      const fused = msgc.noGrad(() => bnA.forwardAct(x, 'relu', r));
      const separate = msgc.noGrad(() => F.relu(F.add(bnB.forward(x), r)));
      expectClose(fused.toFloat32Array(), separate.toFloat32Array(), 'training output', 1e-6);
      expectClose(bnA.runningMean.toFloat32Array(), bnB.runningMean.toFloat32Array(), 'running mean', 1e-7);
      expectClose(bnA.runningVar.toFloat32Array(), bnB.runningVar.toFloat32Array(), 'running var', 1e-7);
      expect(bnA.numBatchesTracked.item()).toBe(1);
    });
    bnA.dispose();
    bnB.dispose();
  });

  test('Sequential fuses Conv2d → BatchNorm2d → ReLU / ReLU6 (one folded conv) and BatchNorm2d → act in eval, as the layers one by one', () => {
    for (const Act of [ReLU, ReLU6]) {
      const seq = new Sequential(new Conv2d(8, 16, 3, { padding: 1, bias: false }), new BatchNorm2d(16), new Act(), new BatchNorm2d(16), new Act());
      for (const i of [1, 3]) {
        const bn = seq.layers[i] as BatchNorm2d;
        bn.runningMean.assign(randomArray(16, 51 + i, -0.5, 0.5));
        bn.runningVar.assign(randomArray(16, 52 + i, 0.5, 2));
      }
      seq.eval();
      msgc.tidy(() => {
        const x = msgc.tensor(randomArray(2 * 8 * 5 * 5, 53, -2, 2), [2, 8, 5, 5]);
        const folded = jest.spyOn(native, 'conv2dBnActEval');
        const bnAct = jest.spyOn(native, 'batchNormActEval');
        const y = msgc.noGrad(() => seq.forward(x));
        expect(folded).toHaveBeenCalledTimes(1);
        expect(bnAct).toHaveBeenCalledTimes(1);
        folded.mockRestore();
        bnAct.mockRestore();
        let h = x;
        for (const m of seq.layers) h = m.forward(h);
        expectClose(y.toFloat32Array(), h.toFloat32Array(), 'sequential', 1e-5);
      });
      seq.dispose();
    }
  });

  test('NaN comes out as from the separate ops: kept without an activation, 0 after ReLU / ReLU6 (as oneDNN gives)', () => {
    const shape = [1, 16, 2, 2];
    const xv = randomArray(numel(shape), 61, -2, 2);
    xv[3] = NaN;
    xv[17] = NaN;
    msgc.tidy(() => msgc.noGrad(() => {
      const x = msgc.tensor(xv, shape);
      const s = msgc.ones([16]);
      const z = msgc.zeros([16]);
      for (const act of ['relu', 'relu6', null] as const) {
        const fused = F.batchNormAct(x, z, s, null, null, { training: false, activation: act }).toFloat32Array();
        const bn = F.batchNorm2d(x, z, s, null, null, { training: false });
        const sep = (act === 'relu' ? F.relu(bn) : act === 'relu6' ? F.relu6(bn) : bn).toFloat32Array();
        for (let k = 0; k < xv.length; k++) {
          if (Number.isNaN(sep[k])) expect(fused[k]).toBeNaN();
          else expect(fused[k]).toBeCloseTo(sep[k], 5);
        }
        if (act === null) expect(fused[3]).toBeNaN();
        else expect(fused[3]).toBe(0);
      }
    }));
  });

  test('batchNormActPooled: the output and its per-channel means from one pass, vs float64', () => {
    for (const [shape, layout] of [[[2, 24, 5, 7], 'blocked'], [[3, 16, 4, 4], 'plain'], [[1, 40, 9, 9], 'blocked']] as const) {
      const C = shape[1];
      const xv = randomArray(numel([...shape]), 71 + C, -3, 3);
      const rv0 = randomArray(numel([...shape]), 72 + C, -2, 2);
      const rm = randomArray(C, 73, -1, 1);
      const rvar = randomArray(C, 74, 0.3, 2);
      msgc.tidy(() => msgc.noGrad(() => {
        const x0 = msgc.tensor(xv, [...shape]);
        const x = layout === 'blocked' ? blockedCopy(x0) : x0;
        const { y, pooled } = F.batchNormActPooled(x, msgc.tensor(rm, [C]), msgc.tensor(rvar, [C]), null, null,
          { training: false, activation: 'relu', residual: msgc.tensor(rv0, [...shape]) });
        const ref = reference(xv, [...shape], rm, rvar, null, null, 1e-5, 'relu', rv0);
        expectClose(y.toFloat32Array(), ref, 'pooled y', 1e-5);
        expect(pooled.shape).toEqual([shape[0], C, 1, 1]);
        const HW = shape[2] * shape[3];
        const want = new Float64Array(shape[0] * C);
        for (let k = 0; k < ref.length; k++) want[Math.floor(k / HW)] += ref[k] / HW;
        expectClose(pooled.toFloat32Array(), want, 'means', 1e-5);
      }));
    }
    // training: the composition (batch statistics) and an ordinary pool of its output
    const bn = new BatchNorm2d(8);
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * 8 * 9, 75, -2, 2), [2, 8, 3, 3]);
      const { y, pooled } = msgc.noGrad(() => bn.forwardActPooled(x, 'relu'));
      expectClose(pooled.toFloat32Array(), F.adaptiveAvgPool2d(y, 1).toFloat32Array(), 'training pool', 1e-6);
    });
    bn.dispose();
  });

  test('bad input throws an Error naming the problem', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 4, 3, 3]);
      const s = msgc.ones([4]);
      expectError(() => msgc.noGrad(() => F.batchNormAct(x, s, s, null, null, { training: false, residual: msgc.zeros([2, 4, 3, 2]) })), /residual/);
      expectError(() => msgc.noGrad(() => F.batchNormAct(x, msgc.ones([3]), s, null, null, { training: false })), /runningMean/);
      expectError(() => F.batchNormAct(x, s, s, null, null, { training: false, activation: 'gelu' as never }), /activation/);
      expectError(() => native.batchNormActEval(x.h, s.h, s.h, null, null, -1, 0, null), /eps/);
      expectError(() => native.batchNormActEval(x.h, s.h, s.h, null, null, 1e-5, 7, null), /activation/);
      expectError(() => native.batchNormActEval(msgc.zeros([2, 4]).h, s.h, s.h, null, null, 1e-5, 0, null), /4 \(\[N, C, H, W\]\)/);
    });
  });
});

describe('the residual tail in training (act(BN(x) + r) as one pass, and its pool)', () => {
  // a run's module and inputs (with their gradients) freed
  const release = (bn: BatchNorm2d, ...ts: Tensor[]): void => {
    bn.dispose();
    for (const t of ts) {
      t.grad!.dispose();
      t.dispose();
    }
  };
  // values of `shape` in plain NCHW, or in a conv's blocked layout (through an identity 1×1 conv)
  const tensorIn = (v: Float32Array, shape: number[], blocked: boolean): Tensor => {
    const t = msgc.tensor(v, shape);
    if (!blocked) return t;
    const b = msgc.noGrad(() => F.conv2d(t, eye(shape[1]), null));
    t.dispose();
    return b;
  };
  // the composition it replaces, as separate recorded ops
  const composite = (bn: BatchNorm2d, x: Tensor, r: Tensor, act: 'relu' | 'relu6' | null): Tensor => {
    const s = F.add(bn.forward(x), r);
    return act === 'relu' ? F.relu(s) : act === 'relu6' ? F.relu6(s) : s;
  };
  // x and r in plain NCHW or in a conv's blocked layout, with channel counts that fill a 16-lane block or not
  const cases = [
    { C: 16, blocked: true, act: 'relu' as const }, { C: 20, blocked: true, act: 'relu6' as const },
    { C: 16, blocked: false, act: null }, { C: 24, blocked: true, act: null }, { C: 8, blocked: false, act: 'relu' as const },
  ];
  test.each(cases)('C=$C blocked=$blocked act=$act: output, running statistics and gradients as the separate ops', ({ C, blocked, act }) => {
    const shape = [3, C, 5, 4];
    const xv = randomArray(numel(shape), 61, -2, 2), rv0 = randomArray(numel(shape), 62, -2, 2), gv = randomArray(numel(shape), 63);
    const make = (v: Float32Array) => tensorIn(v, shape, blocked);
    const runs = [true, false].map((tail) => {
      const bn = new BatchNorm2d(C);
      bn.train();
      bn.weight!.assign(randomArray(C, 64, 0.5, 2));
      bn.bias!.assign(randomArray(C, 65, -1, 1));
      const x = make(xv), r = make(rv0);
      x.requiresGrad = true;
      r.requiresGrad = true;
      const out = msgc.tidy(() => {
        const y = tail ? bn.forwardAct(x, act, r) : composite(bn, x, r, act);
        y.backward(msgc.tensor(gv, shape));
        return { y: y.toFloat32Array(), gx: x.grad!.toFloat32Array(), gr: r.grad!.toFloat32Array(), gw: bn.weight!.grad!.toFloat32Array(),
          gb: bn.bias!.grad!.toFloat32Array(), rm: bn.runningMean.toFloat32Array(), rvar: bn.runningVar.toFloat32Array() };
      });
      release(bn, x, r);
      return out;
    });
    const [tail, sep] = runs;
    for (const k of ['y', 'gx', 'gr', 'gw', 'gb', 'rm', 'rvar'] as const) expectClose(tail[k], sep[k], k, 1e-5);
  });

  test('batchNormActPooled in training: the means from the same pass (float64), gradients through y and the means as the separate ops, and vs finite differences', () => {
    const C = 20, shape = [2, C, 4, 3], hw = 12;
    const xv = randomArray(numel(shape), 71, -2, 2), rv0 = randomArray(numel(shape), 72, -2, 2);
    const cy = randomArray(numel(shape), 73), cp = randomArray(2 * C, 74);
    for (const onlyPooled of [false, true]) {
      const runs = [true, false].map((tail) => {
        const bn = new BatchNorm2d(C);
        bn.train();
        const x = msgc.tensor(xv, shape), r = msgc.tensor(rv0, shape);
        x.requiresGrad = true;
        r.requiresGrad = true;
        const out = msgc.tidy(() => {
          let y: Tensor, pooled: Tensor;
          if (tail) ({ y, pooled } = bn.forwardActPooled(x, 'relu', r));
          else {
            y = composite(bn, x, r, 'relu');
            pooled = F.adaptiveAvgPool2d(y, 1);
          }
          // loss = Σ cy·y + Σ cp·pooled (or the pooled part alone: the pool's gradient is then the tail's whole one)
          const lp = F.sum(F.mul(pooled, msgc.tensor(cp, [2, C, 1, 1])));
          const loss = onlyPooled ? lp : F.add(F.sum(F.mul(y, msgc.tensor(cy, shape))), lp);
          loss.backward();
          return { y: y.toFloat32Array(), pooled: pooled.toFloat32Array(), gx: x.grad!.toFloat32Array(), gr: r.grad!.toFloat32Array() };
        });
        release(bn, x, r);
        return out;
      });
      const [tail, sep] = runs;
      const means = new Float64Array(2 * C);
      for (let k = 0; k < tail.y.length; k++) means[Math.floor(k / hw)] += tail.y[k] / hw;
      expectClose(tail.pooled, means, 'pooled vs float64 means of y', 1e-5);
      for (const k of ['y', 'pooled', 'gx', 'gr'] as const) expectClose(tail[k], sep[k], `${k} (onlyPooled ${onlyPooled})`, 1e-5);
    }
    const bn = new BatchNorm2d(C);
    bn.train();
    const report = gradCheck(([x, r]) => {
      const { y, pooled } = bn.forwardActPooled(x, null, r);
      return F.add(F.mul(y, msgc.tensor(cy, shape)), F.mul(pooled, msgc.tensor(cp, [2, C, 1, 1])));
    }, [msgc.tensor(xv, shape), msgc.tensor(rv0, shape)]);
    expect(report.worst).toBeLessThan(1);
    bn.dispose();
  });

  test.each([
    { C: 16, blocked: true, act: 'relu6' as const }, { C: 20, blocked: false, act: 'relu' as const }, { C: 8, blocked: true, act: 'relu' as const },
  ])('without a residual (a stem), C=$C blocked=$blocked act=$act: activation and pool in one pass as the separate ops, the means in float64, finite differences', ({ C, blocked, act }) => {
    const shape = [3, C, 5, 4], hw = 20;
    const xv = randomArray(numel(shape), 81, -2, 2), cy = randomArray(numel(shape), 82), cp = randomArray(3 * C, 83);
    const make = (v: Float32Array) => tensorIn(v, shape, blocked);
    let tailCalls = 0;
    const runs = [true, false].map((tail) => {
      const bn = new BatchNorm2d(C);
      bn.train();
      bn.weight!.assign(randomArray(C, 84, 0.5, 2));
      bn.bias!.assign(randomArray(C, 85, -1, 1));
      const x = make(xv);
      x.requiresGrad = true;
      const forward = native.residualTailForward;
      native.residualTailForward = (a, r, code, pooled) => { if (r === null) tailCalls++; return forward(a, r, code, pooled); };
      try {
        const out = msgc.tidy(() => {
          let y: Tensor, pooled: Tensor;
          if (tail) ({ y, pooled } = bn.forwardActPooled(x, act));
          else {
            y = act === 'relu' ? F.relu(bn.forward(x)) : F.relu6(bn.forward(x));
            pooled = F.adaptiveAvgPool2d(y, 1);
          }
          F.add(F.sum(F.mul(y, msgc.tensor(cy, shape))), F.sum(F.mul(pooled, msgc.tensor(cp, [3, C, 1, 1])))).backward();
          return { y: y.toFloat32Array(), pooled: pooled.toFloat32Array(), gx: x.grad!.toFloat32Array(), gw: bn.weight!.grad!.toFloat32Array(),
            gb: bn.bias!.grad!.toFloat32Array(), rm: bn.runningMean.toFloat32Array(), rvar: bn.runningVar.toFloat32Array() };
        });
        bn.dispose();
        x.grad!.dispose();
        x.dispose();
        return out;
      } finally {
        native.residualTailForward = forward;
      }
    });
    expect(tailCalls).toBe(1);
    const [tail, sep] = runs;
    const means = new Float64Array(3 * C);
    for (let k = 0; k < tail.y.length; k++) means[Math.floor(k / hw)] += tail.y[k] / hw;
    expectClose(tail.pooled, means, 'pooled vs float64 means of y', 1e-5);
    for (const k of ['y', 'pooled', 'gx', 'gw', 'gb', 'rm', 'rvar'] as const) expectClose(tail[k], sep[k], k, 1e-5);
    const bn = new BatchNorm2d(C);
    bn.train();
    const report = gradCheck(([x]) => {
      const { y, pooled } = bn.forwardActPooled(x, act);
      return F.add(F.mul(y, msgc.tensor(cy, shape)), F.mul(pooled, msgc.tensor(cp, [3, C, 1, 1])));
    }, [msgc.tensor(xv, shape)]);
    expect(report.worst).toBeLessThan(1);
    bn.dispose();
  });

  test('residualTail bad input throws an Error naming the problem', () => {
    msgc.tidy(() => {
      const a = msgc.zeros([2, 4, 3, 3]);
      expectError(() => native.residualTailForward(a.h, msgc.zeros([2, 4, 3, 2]).h, 0, false), /residualTail: residual has shape \[2, 4, 3, 2\]/);
      expectError(() => native.residualTailForward(msgc.zeros([2, 4]).h, msgc.zeros([2, 4]).h, 0, false), /residualTail: x .*4 dims|\[N, C, H, W\]/);
      expectError(() => native.residualTailForward(a.h, a.h, 7, false), /activation/);
      expectError(() => native.residualTailForward(a.h, 'r' as unknown as typeof a.h, 0, false), /residual/);
      expectError(() => native.residualTailBackward(a.h, msgc.zeros([2, 4, 3, 2]).h, null, 0, true, true), /gradOutput/);
      expectError(() => native.residualTailBackward(a.h, a.h, msgc.zeros([2, 4]).h, 0, true, true), /gradChannels/);
    });
  });
});

describe('denormal floats', () => {
  const denormal = 1e-39; // below float32's smallest normal (1.18e-38): stored as a denormal

  test('flushed to zero in native ops by default; kept with setFlushDenormals(false)', () => {
    expect(msgc.getFlushDenormals()).toBe(true);
    msgc.tidy(() => {
      const x = msgc.tensor(new Float32Array([denormal, 1, -denormal]), [3]);
      expect(Array.from(F.mul(x, 1).toFloat32Array())).toEqual([0, 1, -0]);
      try {
        expect(msgc.setFlushDenormals(false)).toBe(true);
        const kept = F.mul(x, 1).toFloat32Array();
        expect(kept[0]).toBeCloseTo(Math.fround(denormal), 45);
        expect(kept[0]).toBeGreaterThan(0);
      } finally {
        msgc.setFlushDenormals(true);
      }
    });
  });

  test('JavaScript arithmetic keeps gradual underflow after native ops ran', () => {
    msgc.tidy(() => {
      F.mul(msgc.ones([1000]), 2);
    });
    const tiny = Number.MIN_VALUE * 3; // a float64 denormal
    expect(tiny / 3).toBe(Number.MIN_VALUE);
    expect(new Float32Array([denormal])[0] * 1).toBeGreaterThan(0);
  });
});

describe('external memory reported to V8', () => {
  const bytes = 16 << 20;
  const external = (): number => msgc.memoryStats().externalBytes;

  test('a tensor outside any scope is reported until disposed; a scope\'s intermediates are not', () => {
    const before = external();
    const t = msgc.zeros([bytes / 4]);
    expect(external() - before).toBeGreaterThanOrEqual(bytes);
    t.dispose();
    expect(Math.abs(external() - before)).toBeLessThan(bytes / 2);
    let peak = 0;
    msgc.tidy(() => {
      msgc.zeros([bytes / 4]);
      peak = external() - before;
    });
    expect(peak).toBeLessThan(bytes / 2);
  });

  test('a tensor that outlives its scope (returned or kept) is reported from then on', () => {
    const before = external();
    const r = msgc.tidy(() => msgc.zeros([bytes / 4]));
    expect(external() - before).toBeGreaterThanOrEqual(bytes);
    let k: Tensor | null = null;
    msgc.tidy(() => {
      k = msgc.keep(msgc.zeros([bytes / 4]));
    });
    expect(external() - before).toBeGreaterThanOrEqual(2 * bytes);
    r.dispose();
    (k as unknown as Tensor).dispose();
    expect(Math.abs(external() - before)).toBeLessThan(bytes / 2);
  });

  // (other external memory, e.g. array buffers a collection frees meanwhile, moves the count by up to ~100 KB:
  // hence margins of a quarter of the 16 MB tensors)
  test('a training step inside tidy reports neither the saved activations nor the engine\'s gradients; leaf grads are reported', () => {
    const w = msgc.randn([4, bytes / 16], { seed: 1 });
    w.requiresGrad = true;
    const before = external();
    let peakForward = 0;
    msgc.tidy(() => {
      // crossEntropy saves its softmax (16 MB) on its node; mul's and relu's gradients (16 MB each) are the engine's
      const a = msgc.randn([4, bytes / 16], { seed: 2 });
      const loss = F.crossEntropy(F.relu(F.mul(a, w)), [0, 1, 2, 3]);
      peakForward = external() - before;
      loss.backward();
    });
    expect(peakForward).toBeLessThan(bytes / 2);
    // w.grad outlives the step: reported, and nothing else
    expect(w.grad).not.toBeNull();
    expect(external() - before).toBeGreaterThan(0.75 * bytes);
    expect(external() - before).toBeLessThan(1.5 * bytes);
    w.grad!.dispose();
    w.grad = null;
    expect(Math.abs(external() - before)).toBeLessThan(bytes / 2);
    w.dispose();
  });

  test('an output that escapes every scope is reported with the tensors its graph saved', () => {
    const x = msgc.randn([4, bytes / 16], { seed: 1 });
    x.requiresGrad = true;
    const before = external();
    // the loss (4 bytes) escapes; its node holds the 16 MB softmax
    const loss = msgc.tidy(() => F.crossEntropy(x, [0, 1, 2, 3]));
    expect(external() - before).toBeGreaterThan(0.75 * bytes);
    loss.dispose();
    expect(Math.abs(external() - before)).toBeLessThan(bytes / 2);
    // outside any scope, saved tensors are reported as they are saved
    const loss2 = F.crossEntropy(x, [0, 1, 2, 3]);
    expect(external() - before).toBeGreaterThan(0.75 * bytes);
    loss2.backward();
    loss2.dispose();
    x.grad!.dispose();
    x.grad = null;
    expect(Math.abs(external() - before)).toBeLessThan(bytes / 2);
    x.dispose();
  });
});

describe('F.conv2dBnAct (inference: BatchNorm folded into the conv, activation as a post-op)', () => {
  // float64: act(gamma (conv(x) + b - mean) / sqrt(var + eps) + beta)
  function reference(x: Float32Array, xs: number[], w: Float32Array, ws: number[], b: Float32Array | null, stride: number, pad: number,
    groups: number, mean: Float32Array, vr: Float32Array, g: Float32Array | null, beta: Float32Array | null, eps: number, act: string | null): Float64Array {
    const [N, C, H, W] = xs;
    const [O, Cg, K] = ws;
    const OH = Math.floor((H + 2 * pad - K) / stride) + 1, OW = Math.floor((W + 2 * pad - K) / stride) + 1;
    const Og = O / groups;
    const y = new Float64Array(N * O * OH * OW);
    for (let n = 0; n < N; n++)
      for (let o = 0; o < O; o++)
        for (let oh = 0; oh < OH; oh++)
          for (let ow = 0; ow < OW; ow++) {
            let z = b ? b[o] : 0;
            const c0 = Math.floor(o / Og) * Cg;
            for (let c = 0; c < Cg; c++)
              for (let kh = 0; kh < K; kh++)
                for (let kw = 0; kw < K; kw++) {
                  const ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                  if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  z += w[((o * Cg + c) * K + kh) * K + kw] * x[((n * C + c0 + c) * H + ih) * W + iw];
                }
            let v = ((z - mean[o]) / Math.sqrt(vr[o] + eps)) * (g ? g[o] : 1) + (beta ? beta[o] : 0);
            if (act === 'relu') v = Math.max(0, v);
            if (act === 'relu6') v = Math.min(6, Math.max(0, v));
            y[((n * O + o) * OH + oh) * OW + ow] = v;
          }
    return y;
  }

  const cases = [
    { N: 2, C: 8, H: 7, W: 6, O: 16, K: 3, stride: 1, pad: 1, groups: 1, bias: false, affine: true, act: 'relu' as const, blocked: false },
    { N: 1, C: 16, H: 9, W: 9, O: 16, K: 3, stride: 2, pad: 1, groups: 16, bias: false, affine: true, act: 'relu6' as const, blocked: true },
    { N: 3, C: 12, H: 5, W: 5, O: 24, K: 1, stride: 1, pad: 0, groups: 1, bias: true, affine: false, act: null, blocked: true },
    { N: 2, C: 6, H: 6, W: 8, O: 4, K: 3, stride: 1, pad: 2, groups: 2, bias: true, affine: true, act: 'relu6' as const, blocked: false },
  ];
  test.each(cases.map((c, i) => ({ ...c, i })))('N=$N C=$C O=$O k=$K stride=$stride groups=$groups bias=$bias affine=$affine act=$act blocked=$blocked', (c) => {
    msgc.tidy(() => msgc.noGrad(() => {
      const xs = [c.N, c.C, c.H, c.W], ws = [c.O, c.C / c.groups, c.K, c.K];
      const x0 = msgc.tensor(randomArray(numel(xs), 300 + c.i, -2, 2), xs);
      // a blocked input: the output of a 1×1 conv in oneDNN's layout
      const x = c.blocked ? F.conv2d(x0, eye(c.C), null) : x0;
      const wv = randomArray(numel(ws), 310 + c.i, -0.5, 0.5);
      const bv = c.bias ? randomArray(c.O, 320 + c.i, -0.5, 0.5) : null;
      const mean = randomArray(c.O, 330 + c.i, -0.5, 0.5), vr = randomArray(c.O, 340 + c.i, 0.2, 2);
      const g = c.affine ? randomArray(c.O, 350 + c.i, -1.5, 1.5) : null, beta = c.affine ? randomArray(c.O, 360 + c.i, -0.5, 0.5) : null;
      const bn = { runningMean: msgc.tensor(mean, [c.O]), runningVar: msgc.tensor(vr, [c.O]), weight: g ? msgc.tensor(g, [c.O]) : null, bias: beta ? msgc.tensor(beta, [c.O]) : null, eps: 1e-3 };
      const w = msgc.tensor(wv, ws);
      const b = bv ? msgc.tensor(bv, [c.O]) : null;
      const opts = { stride: c.stride, padding: c.pad, groups: c.groups, activation: c.act };
      const ref = reference(x0.toFloat32Array(), xs, wv, ws, bv, c.stride, c.pad, c.groups, mean, vr, g, beta, 1e-3, c.act);
      const y = F.conv2dBnAct(x, w, b, bn, opts);
      expect(y.shape).toEqual([c.N, c.O, Math.floor((c.H + 2 * c.pad - c.K) / c.stride) + 1, Math.floor((c.W + 2 * c.pad - c.K) / c.stride) + 1]);
      expectClose(y.toFloat32Array(), ref, 'folded', 1e-4);
      // the folded weights are cached: a new running mean, a new weight must show in the next call
      const mean2 = randomArray(c.O, 370 + c.i, -1, 1);
      bn.runningMean.assign(mean2);
      expectClose(F.conv2dBnAct(x, w, b, bn, opts).toFloat32Array(),
        reference(x0.toFloat32Array(), xs, wv, ws, bv, c.stride, c.pad, c.groups, mean2, vr, g, beta, 1e-3, c.act), 'after a BN update', 1e-4);
      const wv2 = randomArray(numel(ws), 380 + c.i, -0.5, 0.5);
      w.assign(wv2);
      expectClose(F.conv2dBnAct(x, w, b, bn, opts).toFloat32Array(),
        reference(x0.toFloat32Array(), xs, wv2, ws, bv, c.stride, c.pad, c.groups, mean2, vr, g, beta, 1e-3, c.act), 'after a weight update', 1e-4);
    }));
  });

  test('with a gradient recorded it is conv2d → eval BatchNorm → act, with the same gradients', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * 4 * 5 * 5, 390, -1, 1), [2, 4, 5, 5], { requiresGrad: true });
      const w = msgc.tensor(randomArray(6 * 4 * 9, 391, -0.5, 0.5), [6, 4, 3, 3], { requiresGrad: true });
      const bn = { runningMean: msgc.tensor(randomArray(6, 392, -0.3, 0.3), [6]), runningVar: msgc.tensor(randomArray(6, 393, 0.5, 2), [6]),
        weight: msgc.tensor(randomArray(6, 394, 0.5, 1.5), [6], { requiresGrad: true }), bias: msgc.tensor(randomArray(6, 395, -0.3, 0.3), [6], { requiresGrad: true }) };
      const r = gradCheck(([a, b, c, d]) => F.conv2dBnAct(a, b, null, { ...bn, weight: c, bias: d }, { padding: 1 }),
        [x, w, bn.weight, bn.bias], { atol: 2e-2, rtol: 2e-2 });
      expect(r.worst).toBeLessThanOrEqual(1);
      expect(r.checked).toBeGreaterThan(0);
    });
  });

  test('bad input throws a clear error', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const x = msgc.zeros([1, 4, 5, 5]);
      const w = msgc.zeros([6, 4, 3, 3]);
      const bn = { runningMean: msgc.zeros([6]), runningVar: msgc.ones([6]), weight: null, bias: null };
      expectError(() => F.conv2dBnAct(x, w, null, { ...bn, runningMean: msgc.zeros([5]) }), /conv2dBnActEval: runningMean has shape \[5\], expected \[6\]/);
      expectError(() => F.conv2dBnAct(x, msgc.zeros([6, 3, 3, 3]), null, bn), /conv2dBnActEval: weight has shape/);
      expectError(() => F.conv2dBnAct(x, w, null, bn, { activation: 'gelu' as never }), /conv2dBnAct: activation must be/);
      expectError(() => F.conv2dBnAct(x, w, null, { ...bn, eps: 0 }), /eps must be positive/);
    }));
  });
});
