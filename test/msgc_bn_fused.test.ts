// msgc_bn_fused.test.ts: F.msgcConv2dBnAct / msgcConv2dBnActPooled, the gathered MSGC convolution with its eval
// BatchNorm, residual and activation applied by the kernels as they write each block of outputs, against a
// float64 reference (the conv reference, then the BN, residual, activation and global average pool in float64),
// for every native variant and the shapes of msgc_gather.test.ts; with output selection (skipped outputs hold
// act(BN(0))); the composition it falls back to (masked execution, gradients); and the native boundary's checks.
import * as msgc from '../lib';
import { native } from '../lib/native';
import { closeness, numel, randomArray } from './helpers/gradcheck';
import { cases, Case, gates, variants, withEnv } from './helpers/gather-cases';
import { msgcConvReference as reference } from './helpers/references';

const { F } = msgc;
type Act = 'relu' | 'relu6' | null;

interface Bn { rm: Float32Array; rv: Float32Array; g: Float32Array; b: Float32Array; eps: number }

function randomBn(O: number, seed: number): Bn {
  return {
    rm: randomArray(O, seed, -1, 1),
    rv: randomArray(O, seed + 1, 0.2, 3),
    g: randomArray(O, seed + 2, -1.5, 1.5), // negative γ too: the scale flips signs before the activation
    b: randomArray(O, seed + 3, -1, 1),
    eps: 1e-3,
  };
}

/** act(BN(conv) + r) in float64, and the per-(n, o) means. */
function bnReference(conv: ArrayLike<number>, N: number, O: number, bn: Bn, act: Act, r: Float32Array | null): { y: Float64Array; means: Float64Array } {
  const per = conv.length / N / O;
  const y = new Float64Array(conv.length);
  const means = new Float64Array(N * O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const a = bn.g[o] / Math.sqrt(bn.rv[o] + bn.eps);
      let sum = 0;
      for (let p = 0; p < per; p++) {
        const k = (n * O + o) * per + p;
        let v = (conv[k] - bn.rm[o]) * a + bn.b[o] + (r ? r[k] : 0);
        if (act) v = Math.min(act === 'relu6' ? 6 : Infinity, Math.max(0, v));
        y[k] = v;
        sum += v;
      }
      means[n * O + o] = sum / per;
    }
  return { y, means };
}

/** The case's operands: x (blocked when c.blocked), weight, gates, and a residual in the output's shape. */
function operands(c: Case, i: number) {
  const xs = [c.N, c.C, c.H, c.W];
  const ws = [c.O, c.C, c.k, c.k];
  const OH = Math.floor((c.H + 2 * c.pad - c.k) / c.stride) + 1;
  const OW = Math.floor((c.W + 2 * c.pad - c.k) / c.stride) + 1;
  const ys = [c.N, c.O, OH, OW];
  const x0 = msgc.tensor(randomArray(numel(xs), 310 + i), xs);
  const x = c.blocked ? F.conv2d(x0, msgc.tensor(randomArray(c.C * c.C, 330 + i, -0.5, 0.5), [c.C, c.C, 1, 1]), null) : x0;
  const w = msgc.tensor(randomArray(numel(ws), 350 + i), ws);
  const sv = gates(c.N, c.G, c.C, 370 + i, c.real);
  const s = msgc.tensor(sv, [c.N, c.G, c.C]);
  // a blocked residual for blocked cases (a 1×1 conv's output), plain otherwise
  const r0 = msgc.tensor(randomArray(numel(ys), 390 + i, -2, 2), ys);
  const r = c.blocked && c.O % 16 === 0 ? F.conv2d(r0, msgc.tensor(randomArray(c.O * c.O, 395 + i, -0.3, 0.3), [c.O, c.O, 1, 1]), null) : r0;
  const conv = reference(x.toFloat32Array(), xs, w.toFloat32Array(), ws, sv, c.G, c.stride, c.pad);
  return { x, w, s, sv, r, rv: r.toFloat32Array(), conv, ys };
}

function bnTensors(bn: Bn) {
  return {
    runningMean: msgc.tensor(bn.rm, [bn.rm.length]),
    runningVar: msgc.tensor(bn.rv, [bn.rv.length]),
    weight: msgc.tensor(bn.g, [bn.g.length]),
    bias: msgc.tensor(bn.b, [bn.b.length]),
    eps: bn.eps,
  };
}

const combos: Array<{ act: Act; residual: boolean; pooled: boolean }> = [
  { act: 'relu', residual: true, pooled: true },
  { act: 'relu6', residual: false, pooled: false },
  { act: null, residual: true, pooled: false },
  { act: 'relu', residual: false, pooled: true },
];

const startLive = msgc.liveTensorCount();

/**
 * msgcConv2dBnAct / msgcConv2dBnActPooled in the given execution against the float64 reference, for every combo
 * of activation, residual and pooling and every native variant in envs.
 */
function expectFusedMatchesReference(c: Case & { i: number }, execution: 'gathered' | 'masked', bnSeed: number, envs: Array<Record<string, string>>): void {
  msgc.tidy(() => msgc.noGrad(() => {
    const { x, w, s, r, rv, conv } = operands(c, c.i);
    const bn = randomBn(c.O, bnSeed + c.i);
    const bt = bnTensors(bn);
    const opts = { heads: c.G, stride: c.stride, padding: c.pad, execution };
    for (const k of combos) {
      const want = bnReference(conv, c.N, c.O, bn, k.act, k.residual ? rv : null);
      for (const env of envs) {
        const got = withEnv(env, () => {
          const o = { ...opts, activation: k.act, residual: k.residual ? r : null };
          if (!k.pooled) return { y: F.msgcConv2dBnAct(x, w, s, bt, o), pooled: null };
          return F.msgcConv2dBnActPooled(x, w, s, bt, o);
        });
        const err = closeness(got.y.toFloat32Array(), want.y, 2e-4, 2e-4);
        if (err > 1) throw new Error(`variant ${JSON.stringify(env)} ${JSON.stringify(k)}: off the reference by ${err}`);
        if (got.pooled) {
          expect(got.pooled.shape).toEqual([c.N, c.O, 1, 1]);
          const perr = closeness(got.pooled.toFloat32Array(), want.means, 2e-4, 2e-4);
          if (perr > 1) throw new Error(`variant ${JSON.stringify(env)} ${JSON.stringify(k)}: pooled means off by ${perr}`);
        }
      }
    }
  }));
}

describe('fused gathered conv + BN (+ residual, activation, pooling) equals a float64 reference', () => {
  test.each(cases.map((c, i) => ({ ...c, i })))('N=$N C=$C $H×$W O=$O k=$k stride=$stride pad=$pad G=$G blocked=$blocked real=$real', (c) => {
    expectFusedMatchesReference(c, 'gathered', 400, variants);
  });
});

describe('masked execution with the BN applied per sample (inference) equals a float64 reference', () => {
  // per-sample convs (MSGC_MASKED_IMPL=persample; by default at batch > 1 for 1×1 convs and narrow heads) apply
  // the BN, residual and activation to each sample's output in cache; at batch 1, one conv with W ⊙ scale and the
  // same epilogue over its output in pixel chunks (nChw16c, or plain for widths that are not whole blocks); batched
  // head convs compose natively
  const maskedVariants: Array<Record<string, string>> = [{}, { MSGC_MASKED_IMPL: 'persample' }, { MSGC_MASKED_IMPL: 'batched' }, { MSGC_MASKED_IMPL: 'grouped' }];
  test.each(cases.map((c, i) => ({ ...c, i })))('N=$N C=$C $H×$W O=$O k=$k stride=$stride G=$G blocked=$blocked real=$real', (c) => {
    expectFusedMatchesReference(c, 'masked', 450, maskedVariants);
  });
});

describe('the folded BN follows writes to its tensors', () => {
  // The gathered kernels' BN scale and shift (γ/√(σ²+ε), β − μ·that) are cached with the running mean and rebuilt
  // when the mean, the variance, γ or β is written, or eps changes: each write below must show in the next output.
  test('running mean, running variance, γ, β and eps, one after another', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const c = cases.find((k) => k.O % 16 === 0 && k.blocked) ?? cases[0];
      const { x, w, s, conv } = operands(c, 7);
      const bn = randomBn(c.O, 700);
      const bt = bnTensors(bn);
      const opts = { heads: c.G, stride: c.stride, padding: c.pad, execution: 'gathered' as const, activation: null };
      const check = (what: string) => {
        const want = bnReference(conv, c.N, c.O, bn, null, null);
        const got = F.msgcConv2dBnActPooled(x, w, s, bt, opts);
        const err = closeness(got.y.toFloat32Array(), want.y, 2e-4, 2e-4);
        if (err > 1) throw new Error(`after ${what}: off the reference by ${err}`);
        expect(closeness(got.pooled.toFloat32Array(), want.means, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
      };
      check('the first call');
      bn.rm = randomArray(c.O, 710, -1, 1);
      bt.runningMean.assign(bn.rm);
      check('a new running mean');
      bn.rv = randomArray(c.O, 711, 0.2, 3);
      bt.runningVar.assign(bn.rv);
      check('a new running variance');
      bn.g = randomArray(c.O, 712, -1.5, 1.5);
      bt.weight.assign(bn.g);
      check('a new γ');
      bn.b = randomArray(c.O, 713, -1, 1);
      bt.bias.assign(bn.b);
      check('a new β');
      bn.eps = 0.5;
      bt.eps = 0.5;
      check('a new eps');
    }));
  });
});

describe('fused BN with output selection', () => {
  test.each(cases.filter((_, i) => i % 2 === 0).map((c, i) => ({ ...c, i: 2 * i })))('N=$N C=$C O=$O k=$k G=$G blocked=$blocked', (c) => {
    msgc.tidy(() => msgc.noGrad(() => {
      const { x, w, s, r, rv, conv } = operands(c, c.i);
      const bn = randomBn(c.O, 500 + c.i);
      const bt = bnTensors(bn);
      // sample 0 needs nothing of head 0's outputs; the rest at random
      const u = randomArray(c.N * c.O, 520 + c.i, 0, 1);
      const mv = new Float32Array(c.N * c.O).map((_, k) => ((k < c.O / c.G) ? 0 : u[k] < 0.4 ? 1 : 0));
      const m = msgc.tensor(mv, [c.N, 1, c.O]);
      const per = conv.length / c.N / c.O;
      const zeroed = Float64Array.from(conv);
      for (let k = 0; k < c.N * c.O; k++) if (mv[k] === 0) zeroed.fill(0, k * per, (k + 1) * per);
      for (const k of [combos[1], combos[0]]) {  // in-kernel selection; with a residual and pooling: a separate pass
        const want = bnReference(zeroed, c.N, c.O, bn, k.act, k.residual ? rv : null);
        for (const env of variants) {
          const [y, p] = withEnv(env, () => {
            const out = native.msgcConv2dBnActEval(x.h, w.h, s.h, [c.stride, c.stride], [c.pad, c.pad], c.G, m.h,
              bt.runningMean.h, bt.runningVar.h, bt.weight.h, bt.bias.h, bn.eps, k.act === 'relu6' ? 1 : k.act ? 0 : -1,
              k.residual ? r.h : null, k.pooled);
            const [yh, ph] = k.pooled ? out as [typeof m.h, typeof m.h] : [out as typeof m.h, null];
            return [new msgc.Tensor(yh), ph ? new msgc.Tensor(ph) : null];
          });
          const err = closeness(y.toFloat32Array(), want.y, 2e-4, 2e-4);
          if (err > 1) throw new Error(`variant ${JSON.stringify(env)} ${JSON.stringify(k)}: off the reference by ${err}`);
          if (p) expect(closeness(p.toFloat32Array(), want.means, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
        }
      }
    }));
  });
});

describe('msgcConv2dBnAct falls back to the composition', () => {
  test('masked execution and auto give the same values as gathered', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const c = cases[0];
      const { x, w, s, r } = operands(c, 0);
      const bt = bnTensors(randomBn(c.O, 600));
      const o = { heads: c.G, stride: c.stride, padding: c.pad, activation: 'relu' as const, residual: r };
      const g = F.msgcConv2dBnActPooled(x, w, s, bt, { ...o, execution: 'gathered' });
      const mk = F.msgcConv2dBnActPooled(x, w, s, bt, { ...o, execution: 'masked' });
      const au = F.msgcConv2dBnAct(x, w, s, bt, o);
      expect(closeness(g.y.toFloat32Array(), mk.y.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(g.pooled.toFloat32Array(), mk.pooled.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(au.toFloat32Array(), mk.y.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    }));
  });

  test('with a gradient recorded: the composition, whose gradients match a BN + add + ReLU written out', () => {
    msgc.tidy(() => {
      const c = cases[0];
      const { x, w, s, r } = operands(c, 1);
      const bn = randomBn(c.O, 610);
      const bt = bnTensors(bn);
      const xg = msgc.tensor(x.toFloat32Array(), x.shape, { requiresGrad: true });
      const sg = msgc.tensor(s.toFloat32Array(), s.shape, { requiresGrad: true });
      const o = { heads: c.G, stride: c.stride, padding: c.pad };
      const y = F.msgcConv2dBnAct(xg, w, sg, bt, { ...o, activation: 'relu', residual: r, execution: 'gathered' });
      F.sum(y).backward();
      // the same by hand: conv, then (v - μ)·γ/√(σ²+ε) + β + r, ReLU, with the BN as broadcast tensor ops
      const a = Float32Array.from(bn.g, (g, k) => g / Math.sqrt(bn.rv[k] + bn.eps));
      const b = Float32Array.from(bn.b, (be, k) => be - bn.rm[k] * a[k]);
      const x2 = msgc.tensor(x.toFloat32Array(), x.shape, { requiresGrad: true });
      const s2 = msgc.tensor(s.toFloat32Array(), s.shape, { requiresGrad: true });
      const v = F.msgcConv2d(x2, w, s2, { ...o, execution: 'masked' });
      const z = F.relu(F.add(F.add(F.mul(v, msgc.tensor(a, [1, c.O, 1, 1])), msgc.tensor(b, [1, c.O, 1, 1])), r));
      F.sum(z).backward();
      expect(closeness(y.toFloat32Array(), z.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(xg.grad!.toFloat32Array(), x2.grad!.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(sg.grad!.toFloat32Array(), s2.grad!.toFloat32Array(), 1e-3, 1e-4)).toBeLessThanOrEqual(1);
      for (const t of [xg, sg, x2, s2]) t.grad?.dispose();
    });
  });
});

describe('native boundary', () => {
  test('bad BN vectors, residual shape, activation and eps throw Errors that say what was expected', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const c = cases[0];
      const { x, w, s, r } = operands(c, 2);
      const bt = bnTensors(randomBn(c.O, 700));
      const call = (over: Partial<{ rm: msgc.Tensor; res: msgc.Tensor | null; act: number; eps: number }>) =>
        native.msgcConv2dBnActEval(x.h, w.h, s.h, [1, 1], [1, 1], c.G, null, (over.rm ?? bt.runningMean).h, bt.runningVar.h,
          null, null, over.eps ?? 1e-5, over.act ?? 0, over.res === undefined ? r.h : over.res ? over.res.h : null, false);
      expect(() => call({ rm: msgc.zeros([c.O + 1]) })).toThrow(/runningMean.*\[64\]/);
      expect(() => call({ res: msgc.zeros([c.N, c.O, 3, 3]) })).toThrow(/residual/);
      expect(() => call({ act: 7 })).toThrow(/activation/);
      expect(() => call({ eps: 0 })).toThrow(/eps must be positive/);
      expect(() => F.msgcConv2dBnAct(x, w, s, bt, { heads: c.G, padding: 1, activation: 'gelu' as never })).toThrow(/activation/);
      expect(() => F.msgcConv2dBnAct(x, w, s, null as never, { heads: c.G, padding: 1 })).toThrow(/bn must be/);
    }));
  });
});

test('no tensors leak', () => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});
