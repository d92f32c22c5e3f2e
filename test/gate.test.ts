// gate.test.ts: the Gumbel(logistic)-sigmoid straight-through gate (spec §2.3): eval is a deterministic,
// seed-independent threshold at logit 0; training draws logistic noise (checked by its moments and by the
// on-probability sigmoid(l)) and back-propagates the tempered-sigmoid derivative.
import * as msgc from '../lib';
import { randomArray } from './helpers/gradcheck';
import { gateStats } from '../lib/nn/msgc/tally';
import { setNativeEnv } from './helpers/testing';

const { F } = msgc;
const startLive = msgc.liveTensorCount();

/** Arguments of the native head calls: ctx [2, 8, 1, 1], w1 [2, 8, 1, 1], BN vectors [2], w2 [6, 2, 1, 1], b2 [6]. */
function headArgs() {
  return { ctx: msgc.zeros([2, 8, 1, 1]), w1: msgc.zeros([2, 8, 1, 1]), s: msgc.ones([2]), w2: msgc.zeros([6, 2, 1, 1]), b2: msgc.zeros([6]) };
}

test('eval gates threshold the logit at 0, whatever the seed', () => {
  msgc.tidy(() => {
    const l = randomArray(1000, 1, -3, 3);
    l[0] = 0; // logit 0 counts as open
    const logits = msgc.tensor(l, [10, 4, 25]);
    const a = F.gumbelSigmoidGate(logits, { training: false, seed: 1 }).toFloat32Array();
    const b = F.gumbelSigmoidGate(logits, { training: false, seed: 999 }).toFloat32Array();
    for (let i = 0; i < l.length; i++) expect(a[i]).toBe(l[i] >= 0 ? 1 : 0);
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(F.gumbelSigmoidGate(logits, { training: false }).requiresGrad).toBe(false);
  });
});

test('training gates open with probability sigmoid(logit) and are binary', () => {
  msgc.tidy(() => {
    const n = 20000;
    for (const logit of [2, 0, -1]) {
      const m = F.gumbelSigmoidGate(msgc.full([n], logit), { training: true, seed: 5 }).toFloat32Array();
      const rate = m.reduce((a, b) => a + b, 0) / n;
      expect(m.every((v) => v === 0 || v === 1)).toBe(true);
      // binomial standard error at n = 20000 is < 0.0036; allow 4 of them
      expect(Math.abs(rate - 1 / (1 + Math.exp(-logit)))).toBeLessThan(0.015);
    }
  });
});

test('the same seed gives the same training masks, another seed different ones', () => {
  msgc.tidy(() => {
    const logits = msgc.tensor(randomArray(4096, 2, -1, 1), [4096]);
    const a = F.gumbelSigmoidGate(logits, { training: true, seed: 11 }).toFloat32Array();
    const b = F.gumbelSigmoidGate(logits, { training: true, seed: 11 }).toFloat32Array();
    const c = F.gumbelSigmoidGate(logits, { training: true, seed: 12 }).toFloat32Array();
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Array.from(c)).not.toEqual(Array.from(a));
  });
});

test('training backward is the tempered-sigmoid derivative of logits + logistic noise (straight-through)', () => {
  const tau = 2 / 3;
  const n = 20000;
  const l = randomArray(n, 3, -2, 2);
  const logits = msgc.tensor(l, [n], { requiresGrad: true });
  const gy = randomArray(n, 4, -1, 1);
  msgc.tidy(() => {
    const m = F.gumbelSigmoidGate(logits, { training: true, temperature: tau, seed: 21 });
    // recover the noise the gate drew from its saved soft value: soft = sigmoid((l + g) / tau)
    const soft = m._node!.saved[0].toFloat32Array();
    const mask = m.toFloat32Array();
    let mean = 0;
    let sq = 0;
    let used = 0;
    for (let i = 0; i < n; i++) {
      expect(mask[i]).toBe(soft[i] >= 0.5 ? 1 : 0);
      if (soft[i] <= 1e-6 || soft[i] >= 1 - 1e-6) continue; // saturated: the logit cannot be recovered
      const g = tau * Math.log(soft[i] / (1 - soft[i])) - l[i];
      mean += g;
      sq += g * g;
      used++;
    }
    mean /= used;
    const variance = sq / used - mean * mean;
    expect(used).toBeGreaterThan(n * 0.95);
    expect(Math.abs(mean)).toBeLessThan(0.1); // logistic noise: mean 0, variance pi^2 / 3
    expect(Math.abs(variance - (Math.PI * Math.PI) / 3)).toBeLessThan(0.35);
    m.backward(msgc.tensor(gy, [n]));
    const grad = logits.grad!.toFloat32Array();
    for (let i = 0; i < n; i += 97) {
      const expected = (gy[i] * soft[i] * (1 - soft[i])) / tau;
      expect(Math.abs(grad[i] - expected)).toBeLessThanOrEqual(1e-6 + 1e-5 * Math.abs(expected));
    }
    // closed gates still receive gradient
    const closed = mask.findIndex((v, i) => v === 0 && Math.abs(gy[i]) > 0.1 && soft[i] > 1e-3);
    expect(closed).toBeGreaterThanOrEqual(0);
    expect(grad[closed]).not.toBe(0);
  });
  logits.dispose();
});

test('training gates equal the float64 gate of the same noise (float32 odds), saturated logits included', () => {
  const n = 40000, seed = 99, tau = 2 / 3;
  const l = new Float32Array(n);
  for (let i = 0; i < n; i++) l[i] = (i % 2000) / 25 - 40 + (i % 7) * 0.013; // -40 .. 40: soft down to ~1e-26
  l[0] = 1e30; // exp's argument clamped to ±87: soft 1 and below 1e-37
  l[1] = -1e30;
  msgc.tidy(() => {
    const logits = msgc.tensor(l, [n], { requiresGrad: true });
    const m = F.gumbelSigmoidGate(logits, { training: true, temperature: tau, seed });
    const soft = m._node!.saved[0].toFloat32Array();
    const mask = m.toFloat32Array();
    const u = msgc.rand([n], { seed }).toFloat32Array(); // the noise the gate draws (the same Philox stream)
    let worst = 0, wrongMasks = 0;
    for (let i = 0; i < n; i++) {
      const odds = Math.fround(Math.fround(u[i] + 1e-8) / Math.fround(1 - u[i] + 1e-8));
      const want = 1 / (1 + Math.exp(-(l[i] + Math.log(odds)) / tau));
      // float32 rounding of (l + g) / τ alone moves soft by up to ~4e-6 relative where it is tiny
      worst = Math.max(worst, Math.abs(soft[i] - want) / (5e-7 + 1e-5 * want));
      if (mask[i] !== (soft[i] >= 0.5 ? 1 : 0)) wrongMasks++;
    }
    expect(worst).toBeLessThanOrEqual(1);
    expect(wrongMasks).toBe(0);
    expect(soft[0]).toBe(1);
    expect(soft[1]).toBeLessThan(1e-37);
    expect([mask[0], mask[1]]).toEqual([1, 0]);
  });
});

test('bad input throws', () => {
  msgc.tidy(() => {
    const l = msgc.zeros([4]);
    expect(() => F.gumbelSigmoidGate(l, {} as never)).toThrow(/gumbelSigmoidGate: options.training/);
    expect(() => F.gumbelSigmoidGate(l, { training: true, temperature: 0 })).toThrow(/gumbelSigmoidGate: temperature/);
    expect(() => F.gumbelSigmoidGate(l, { training: true, seed: -3 })).toThrow(/gate: seed/);
    expect(() => F.gumbelSigmoidGate('x' as never, { training: true })).toThrow(/gumbelSigmoidGate: logits must be a Tensor/);
  });
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});

describe('gate and attention heads in eval: one fused native call', () => {
  // float64 reference of a head: conv1 (1×1, no bias) -> BN (running stats) -> ReLU -> conv2 + bias
  function reference(head: msgc.nn.GateHead | msgc.nn.AttentionHead, ctx: Float32Array, N: number): Float64Array {
    const w1 = head.conv1.weight.toFloat32Array();
    const w2 = head.conv2.weight.toFloat32Array();
    const b2 = head.conv2.bias!.toFloat32Array();
    const mu = head.bn.runningMean.toFloat32Array();
    const v = head.bn.runningVar.toFloat32Array();
    const g = head.bn.weight!.toFloat32Array();
    const be = head.bn.bias!.toFloat32Array();
    const [B, Cc] = head.conv1.weight.shape;
    const K = head.conv2.weight.shape[0];
    const out = new Float64Array(N * K);
    for (let n = 0; n < N; n++) {
      const h = new Float64Array(B);
      for (let b = 0; b < B; b++) {
        let z = 0;
        for (let c = 0; c < Cc; c++) z += w1[b * Cc + c] * ctx[n * Cc + c];
        h[b] = Math.max(0, ((z - mu[b]) / Math.sqrt(v[b] + head.bn.eps)) * g[b] + be[b]);
      }
      for (let k = 0; k < K; k++) {
        let z = b2[k];
        for (let b = 0; b < B; b++) z += w2[k * B + b] * h[b];
        out[n * K + k] = z;
      }
    }
    return out;
  }

  function randomizeBn(head: msgc.nn.GateHead | msgc.nn.AttentionHead, seed: number): void {
    const B = head.bn.runningMean.size;
    head.bn.runningMean.assign(randomArray(B, seed, -0.5, 0.5));
    head.bn.runningVar.assign(randomArray(B, seed + 1, 0.5, 2));
    head.bn.weight!.assign(randomArray(B, seed + 2, 0.5, 1.5));
    head.bn.bias!.assign(randomArray(B, seed + 3, -0.3, 0.3));
    head.conv2.weight.assign(randomArray(head.conv2.weight.size, seed + 4, -0.3, 0.3));
    head.conv2.bias!.assign(randomArray(head.conv2.bias!.size, seed + 5, -0.5, 0.5));
  }

  test.each([1, 5])('GateHead eval gates equal the thresholded float64 logits (batch %i)', (N) => {
    const head = new msgc.nn.GateHead({ contextChannels: 24, channels: 10, heads: 3, squeezeRate: 4 });
    randomizeBn(head, 11);
    head.eval();
    const cv = randomArray(N * 24, 13, -1, 2);
    const ctx = msgc.tensor(cv, [N, 24, 1, 1]);
    const ref = reference(head, cv, N);
    const m = msgc.tidy(() => head.forward(ctx));
    expect(m.shape).toEqual([N, 3, 10]);
    const mv = m.toFloat32Array();
    let decided = 0;
    ref.forEach((z, i) => {
      if (Math.abs(z) > 1e-4) {
        expect(mv[i]).toBe(z >= 0 ? 1 : 0);
        decided++;
      }
    });
    expect(decided).toBeGreaterThan(ref.length * 0.9);
    expect(mv.some((v) => v === 0) && mv.some((v) => v === 1)).toBe(true);
    for (const t of [m, ctx]) t.dispose();
    head.dispose();
  });

  test('AttentionHead eval without gradient equals the float64 head; with gradients it records the ops', () => {
    const N = 4;
    const head = new msgc.nn.AttentionHead({ contextChannels: 16, channels: 8, heads: 2, squeezeRate: 4 });
    randomizeBn(head, 21);
    head.eval();
    const cv = randomArray(N * 16, 23, -1, 2);
    const ctx = msgc.tensor(cv, [N, 16, 1, 1]);
    const ref = reference(head, cv, N);
    const a = msgc.noGrad(() => head.forward(ctx));
    expect(a.shape).toEqual([N, 2, 8]);
    const av = a.toFloat32Array();
    ref.forEach((z, i) => expect(av[i]).toBeCloseTo(z, 4));
    msgc.tidy(() => {
      const ag = head.forward(ctx); // parameters require grad: the unfused, recorded path
      expect(ag.requiresGrad).toBe(true);
      const agv = ag.toFloat32Array();
      ref.forEach((z, i) => expect(agv[i]).toBeCloseTo(z, 4));
    });
    for (const t of [a, ctx]) t.dispose();
    head.dispose();
  });

  // Batch 1-4 in inference runs both GEMMs over the weights' panel copies (64 rows at a time, gate.cc
  // headGemmPanels), one per ISA; the copies follow the weights when these change
  test.each([['default'], ['avx2'], ['portable']])('inference heads at batch 1-4 (%s kernels) equal the float64 head, also after a weight update', (kernel) => {
    if (kernel !== 'default') setNativeEnv('MSGC_HEAD_KERNEL', kernel);
    try {
      // 160 -> 40 -> 3840 (MobileNetV2's last heads: 60 groups of 64 rows, split over the threads) and
      // 24 -> 6 -> 30 (one partial group each)
      for (const o of [{ contextChannels: 160, channels: 960, heads: 4, squeezeRate: 4 }, { contextChannels: 24, channels: 10, heads: 3, squeezeRate: 4 }]) {
        const att = new msgc.nn.AttentionHead(o);
        randomizeBn(att, 51);
        att.eval();
        for (let N = 1; N <= 4; N++) {
          for (const update of [false, true]) {
            if (update) {
              att.conv1.weight.assign(randomArray(att.conv1.weight.size, 60 + N, -0.5, 0.5));
              att.conv2.weight.assign(randomArray(att.conv2.weight.size, 70 + N, -0.3, 0.3));
            }
            const cv = randomArray(N * o.contextChannels, 53 + N, -1, 2);
            // exact zeros in the context too: the panel GEMVs skip the weights of an input that is zero in every
            // row, in either layer (the second layer's input is a ReLU's output)
            for (let i = 0; i < cv.length; i++) if (i % 5 === 0 || (i < o.contextChannels && i % 3 === 0)) cv[i] = 0;
            const ctx = msgc.tensor(cv, [N, o.contextChannels, 1, 1]);
            const a = msgc.noGrad(() => att.forward(ctx));
            const av = a.toFloat32Array();
            const ref = reference(att, cv, N);
            expect(av.length).toBe(ref.length);
            let worst = 0;
            ref.forEach((z, i) => (worst = Math.max(worst, Math.abs(av[i] - z) / (1 + Math.abs(z)))));
            expect(worst).toBeLessThan(2e-5);
            a.dispose();
            ctx.dispose();
          }
        }
        att.dispose();
      }
    } finally {
      setNativeEnv('MSGC_HEAD_KERNEL', undefined);
    }
  });

  // Batch 1-4 runs the head's GEMMs as panel GEMVs of our own: on one thread below 32K multiply-adds (here the
  // first, 16 × 64 per sample), split over the threads above (the second, 4096 logits × 16); batch 6
  // runs oneDNN's sgemm
  test.each([[1, 0], [3, 0], [6, 0], [1, 1], [3, 1]])('large heads (batch %i, one thread: %i) equal the float64 head', (N, single) => {
    const threads = msgc.backendInfo().threads;
    if (single) msgc.setNumThreads(1);
    try {
      const o = { contextChannels: 64, channels: 1024, heads: 4, squeezeRate: 4 };
      const att = new msgc.nn.AttentionHead(o);
      randomizeBn(att, 31);
      att.eval();
      const gate = new msgc.nn.GateHead(o);
      randomizeBn(gate, 41);
      gate.eval();
      const cv = randomArray(N * 64, 33 + N, -1, 2);
      const ctx = msgc.tensor(cv, [N, 64, 1, 1]);
      const a = msgc.noGrad(() => att.forward(ctx));
      const av = a.toFloat32Array();
      const ref = reference(att, cv, N);
      let worst = 0;
      ref.forEach((z, i) => (worst = Math.max(worst, Math.abs(av[i] - z))));
      expect(worst).toBeLessThan(1e-4);
      const m = msgc.tidy(() => gate.forward(ctx));
      const mv = m.toFloat32Array();
      const gref = reference(gate, cv, N);
      let decided = 0, open = 0;
      gref.forEach((z, i) => {
        if (Math.abs(z) > 1e-4) {
          expect(mv[i]).toBe(z >= 0 ? 1 : 0);
          decided++;
        }
      });
      mv.forEach((v) => (open += v));
      expect(decided).toBeGreaterThan(gref.length * 0.99);
      expect(open).toBeGreaterThan(0);
      expect(open).toBeLessThan(mv.length);
      // the statistics that come with the gates: the open share, and channels no head selects
      const st = gateStats(m);
      expect(st.density).toBeCloseTo(open / mv.length, 12);
      let none = 0;
      for (let n = 0; n < N; n++)
        for (let c = 0; c < 1024; c++) {
          let any = false;
          for (let i = 0; i < 4; i++) any = any || mv[(n * 4 + i) * 1024 + c] === 1;
          if (!any) none++;
        }
      expect(st.unselected).toBeCloseTo(none / (N * 1024), 12);
      for (const t of [a, m, ctx]) t.dispose();
      att.dispose();
      gate.dispose();
    } finally {
      msgc.setNumThreads(threads);
    }
  });

  test('the native head checks its arguments', () => {
    const { native } = require('../lib/native');
    msgc.tidy(() => {
      const { ctx, w1, s, w2, b2 } = headArgs();
      expect(() => native.squeezeHeadEval(ctx.h, msgc.zeros([2, 7, 1, 1]).h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, true)).toThrow(/squeezeHeadEval: w1 has shape/);
      expect(() => native.squeezeHeadEval(ctx.h, w1.h, msgc.ones([3]).h, s.h, null, null, 1e-5, w2.h, b2.h, true)).toThrow(/squeezeHeadEval/);
      expect(() => native.squeezeHeadEval(ctx.h, w1.h, s.h, s.h, null, null, -1, w2.h, b2.h, true)).toThrow(/eps must be non-negative/);
      expect(() => native.squeezeHeadEval(msgc.zeros([2, 8]).h, w1.h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, true)).toThrow(/ctx/);
      const y = new msgc.Tensor(native.squeezeHeadEval(ctx.h, w1.h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, false));
      expect(y.shape).toEqual([2, 6]);
    });
  });
});

describe('gate and attention heads in training: one fused native op', () => {
  // float64 reference of a head in training: conv1 (1×1, no bias) -> BN on the batch statistics (biased variance)
  // -> ReLU -> conv2 + bias, and the running statistics it leaves (momentum, unbiased variance)
  interface HeadValues { ctx: Float64Array; w1: Float64Array; gamma: Float64Array; beta: Float64Array; w2: Float64Array; b2: Float64Array }
  function forward64(v: HeadValues, N: number, Cc: number, B: number, K: number, eps: number) {
    const h1 = new Float64Array(N * B);
    for (let n = 0; n < N; n++)
      for (let b = 0; b < B; b++) {
        let z = 0;
        for (let c = 0; c < Cc; c++) z += v.w1[b * Cc + c] * v.ctx[n * Cc + c];
        h1[n * B + b] = z;
      }
    const mean = new Float64Array(B);
    const variance = new Float64Array(B);
    for (let b = 0; b < B; b++) {
      for (let n = 0; n < N; n++) mean[b] += h1[n * B + b] / N;
      for (let n = 0; n < N; n++) variance[b] += (h1[n * B + b] - mean[b]) ** 2 / N;
    }
    const z = new Float64Array(N * K);
    for (let n = 0; n < N; n++) {
      const h = new Float64Array(B);
      for (let b = 0; b < B; b++) h[b] = Math.max(0, ((h1[n * B + b] - mean[b]) / Math.sqrt(variance[b] + eps)) * v.gamma[b] + v.beta[b]);
      for (let k = 0; k < K; k++) {
        let acc = v.b2[k];
        for (let b = 0; b < B; b++) acc += v.w2[k * B + b] * h[b];
        z[n * K + k] = acc;
      }
    }
    return { z, mean, variance };
  }

  /** Each gradient of ctx and the head's parameters (then freed) against central differences of `loss` (float64). */
  function expectHeadGrads(head: msgc.nn.GateHead | msgc.nn.AttentionHead, ctx: msgc.Tensor, v: HeadValues, loss: (w: HeadValues) => number): void {
    const grads: [keyof HeadValues, msgc.Tensor][] = [['ctx', ctx], ['w1', head.conv1.weight], ['gamma', head.bn.weight!],
      ['beta', head.bn.bias!], ['w2', head.conv2.weight], ['b2', head.conv2.bias!]];
    for (const [name, t] of grads) {
      expect(t.grad).not.toBeNull();
      const g = t.grad!.toFloat32Array();
      for (let i = 0; i < g.length; i++) {
        const h = 1e-6;
        const plus = { ...v, [name]: Float64Array.from(v[name]) }, minus = { ...v, [name]: Float64Array.from(v[name]) };
        plus[name][i] += h;
        minus[name][i] -= h;
        const fd = (loss(plus) - loss(minus)) / (2 * h);
        expect(Math.abs(g[i] - fd)).toBeLessThan(2e-4 * (1 + Math.abs(fd)));
      }
    }
    for (const [, t] of grads) { t.grad!.dispose(); t.grad = null; }
  }

  test.each([
    ['AttentionHead', 6, 20, 4, 2, 7],
    ['GateHead', 5, 24, 3, 3, 10],
  ] as const)('%s: logits, running statistics and every gradient equal the float64 head and its finite differences', (kind, N, Cc, r, G, C) => {
    const { native } = require('../lib/native');
    const head = kind === 'GateHead'
      ? new msgc.nn.GateHead({ contextChannels: Cc, channels: C, heads: G, squeezeRate: r })
      : new msgc.nn.AttentionHead({ contextChannels: Cc, channels: C, heads: G, squeezeRate: r });
    head.train();
    const B = head.hidden, K = G * C, eps = head.bn.eps, mom = head.bn.momentum;
    head.bn.weight!.assign(randomArray(B, 41, 0.5, 1.5));
    head.bn.bias!.assign(randomArray(B, 42, -0.3, 0.3));
    head.conv2.weight.assign(randomArray(K * B, 43, -0.5, 0.5));
    head.conv2.bias!.assign(randomArray(K, 44, -0.5, 0.5));
    const rm0 = randomArray(B, 45, -0.2, 0.2), rv0 = randomArray(B, 46, 0.5, 1.5);
    head.bn.runningMean.assign(rm0);
    head.bn.runningVar.assign(rv0);
    const f64 = (t: msgc.Tensor) => Float64Array.from(t.toFloat32Array());
    const cv = randomArray(N * Cc, 47, -1, 2);
    const v: HeadValues = { ctx: Float64Array.from(cv), w1: f64(head.conv1.weight), gamma: f64(head.bn.weight!), beta: f64(head.bn.bias!),
      w2: f64(head.conv2.weight), b2: f64(head.conv2.bias!) };
    const ref = forward64(v, N, Cc, B, K, eps);
    const R = Float64Array.from(randomArray(N * K, 48, -1, 1));
    const ctx = msgc.tensor(cv, [N, Cc, 1, 1]);
    ctx.requiresGrad = true;
    // one native call forward, one backward; no per-layer oneDNN calls
    const calls: Record<string, number> = {};
    const spied = ['squeezeHeadTrainForward', 'squeezeHeadTrainBackward', 'conv2dForward', 'batchNorm2dForward'];
    const orig = spied.map((k) => native[k]);
    spied.forEach((k, i) => { native[k] = (...a: unknown[]) => { calls[k] = (calls[k] ?? 0) + 1; return orig[i](...a); }; });
    const tracked = head.bn.numBatchesTracked.item();
    try {
      msgc.tidy(() => {
        const l = (head as msgc.nn.GateHead).logitsOf ? (head as msgc.nn.GateHead).logitsOf(ctx) : head.forward(ctx);
        expect(l.shape).toEqual([N, G, C]);
        const lv = l.toFloat32Array();
        ref.z.forEach((z, i) => expect(Math.abs(lv[i] - z)).toBeLessThan(1e-4 * (1 + Math.abs(z))));
        l.backward(msgc.tensor(Float32Array.from(R), [N, G, C]));
      });
    } finally {
      spied.forEach((k, i) => { native[k] = orig[i]; });
    }
    expect(calls).toEqual({ squeezeHeadTrainForward: 1, squeezeHeadTrainBackward: 1 });
    expect(head.bn.numBatchesTracked.item()).toBe(tracked + 1);
    const rm = head.bn.runningMean.toFloat32Array(), rv = head.bn.runningVar.toFloat32Array();
    for (let b = 0; b < B; b++) {
      expect(rm[b]).toBeCloseTo((1 - mom) * rm0[b] + mom * ref.mean[b], 5);
      expect(rv[b]).toBeCloseTo((1 - mom) * rv0[b] + mom * ref.variance[b] * N / (N - 1), 5);
    }
    // gradients of L = Σ z·R against central differences of the float64 head
    expectHeadGrads(head, ctx, v, (w) => forward64(w, N, Cc, B, K, eps).z.reduce((a, z, i) => a + z * R[i], 0));
    ctx.dispose();
    head.dispose();
  });

  test.each([
    ['noise scale 1', 1, 6, 24, 3, 4, 10],
    ['noise scale 0.4', 0.4, 5, 16, 4, 2, 24],
  ] as const)('GateHead in training (%s): head, Gumbel gate and statistics in one native op each way, against the float64 head, the noise and finite differences', (_, sigma, N, Cc, r, G, C) => {
    const { native } = require('../lib/native');
    const head = new msgc.nn.GateHead({ contextChannels: Cc, channels: C, heads: G, squeezeRate: r });
    head.train();
    head.noiseScale = sigma;
    const B = head.hidden, K = G * C, eps = head.bn.eps, tau = head.temperature;
    head.bn.weight!.assign(randomArray(B, 51, 0.5, 1.5));
    head.bn.bias!.assign(randomArray(B, 52, -0.3, 0.3));
    head.conv2.weight.assign(randomArray(K * B, 53, -0.8, 0.8));
    head.conv2.bias!.assign(randomArray(K, 54, -0.5, 0.5));
    const f64 = (t: msgc.Tensor) => Float64Array.from(t.toFloat32Array());
    const cv = randomArray(N * Cc, 55, -1, 2);
    const v: HeadValues = { ctx: Float64Array.from(cv), w1: f64(head.conv1.weight), gamma: f64(head.bn.weight!), beta: f64(head.bn.bias!),
      w2: f64(head.conv2.weight), b2: f64(head.conv2.bias!) };
    const z64 = forward64(v, N, Cc, B, K, eps).z;
    const seed = 7777;
    // the noise the gate draws: u ~ U[0, 1) from the seed, as msgc.rand draws it
    const u = msgc.tidy(() => msgc.rand([N * K], { seed }).toFloat32Array());
    const soft64 = z64.map((z, i) => {
      const g = Math.log(u[i] + 1e-8) - Math.log(1 - u[i] + 1e-8);
      return 1 / (1 + Math.exp(-(z / sigma + g) / (tau / sigma)));
    });
    const ctx = msgc.tensor(cv, [N, Cc, 1, 1]);
    ctx.requiresGrad = true;
    const calls: Record<string, number> = {};
    const spied = ['gateHeadTrainForward', 'gateHeadTrainBackward', 'squeezeHeadTrainForward', 'gateForward', 'gateBackward', 'maskStats', 'scale'];
    const orig = spied.map((k) => native[k]);
    spied.forEach((k, i) => { native[k] = (...a: unknown[]) => { calls[k] = (calls[k] ?? 0) + 1; return orig[i](...a); }; });
    const nextSeed = native.nextSeed;
    native.nextSeed = () => seed;
    const tracked = head.bn.numBatchesTracked.item();
    const R = randomArray(N * K, 56, -1, 1);
    let soft: Float32Array;
    let mask: Float32Array;
    try {
      msgc.tidy(() => {
        const m = head.forward(ctx);
        expect(m.shape).toEqual([N, G, C]);
        mask = m.toFloat32Array();
        soft = m._node!.saved[0].toFloat32Array();
        let sum = 0, unselected = 0;
        for (let n = 0; n < N; n++)
          for (let c = 0; c < C; c++) {
            let closed = 1;
            for (let i = 0; i < G; i++) closed *= 1 - mask[(n * G + i) * C + c];
            unselected += closed;
          }
        for (let i = 0; i < N * K; i++) {
          expect(mask[i]).toBe(soft[i] >= 0.5 ? 1 : 0);
          expect(Math.abs(soft[i] - soft64[i])).toBeLessThan(1e-4);
          if (Math.abs(soft64[i] - 0.5) > 1e-4) expect(mask[i]).toBe(soft64[i] >= 0.5 ? 1 : 0);
          sum += mask[i];
        }
        // both values occur, and the statistics came with the gates
        expect(sum).toBeGreaterThan(0);
        expect(sum).toBeLessThan(N * K);
        const st = gateStats(m);
        expect(st.density).toBeCloseTo(sum / (N * K), 12);
        expect(st.unselected).toBeCloseTo(unselected / (N * C), 12);
        expect(st.allOnes).toBe(false);
        m.backward(msgc.tensor(R, [N, G, C]));
      });
    } finally {
      spied.forEach((k, i) => { native[k] = orig[i]; });
      native.nextSeed = nextSeed;
    }
    expect(calls).toEqual({ gateHeadTrainForward: 1, gateHeadTrainBackward: 1 });
    expect(head.bn.numBatchesTracked.item()).toBe(tracked + 1);
    // straight-through: L = Σ m·R has the gradient of Σ soft·R with d soft / d z = soft (1 − soft) / τ (σ cancels)
    const Rz = Float64Array.from(R, (x, i) => (x * soft![i] * (1 - soft![i])) / tau);
    expectHeadGrads(head, ctx, v, (w) => forward64(w, N, Cc, B, K, eps).z.reduce((a, z, i) => a + z * Rz[i], 0));
    // the separate ops (the head's logits, F.scale, F.gumbelSigmoidGate) with the same seed give the same bits
    msgc.tidy(() => {
      const l = head.logitsOf(ctx);
      const m = F.gumbelSigmoidGate(sigma === 1 ? l : F.scale(l, 1 / sigma), { training: true, temperature: tau / sigma, seed });
      expect(Array.from(m.toFloat32Array())).toEqual(Array.from(mask!));
      expect(Array.from(m._node!.saved[0].toFloat32Array())).toEqual(Array.from(soft!));
    });
    ctx.dispose();
    head.dispose();
  });

  test('the MAC-budget term of fused training gates: one node, its value and gradient against float64', () => {
    const { native } = require('../lib/native');
    const { dynamicTensor } = require('../lib/nn/msgc/tally');
    const N = 6, Cc = 16, tau = 2 / 3;
    const heads = [new msgc.nn.GateHead({ contextChannels: Cc, channels: 8, heads: 2, squeezeRate: 4 }),
      new msgc.nn.GateHead({ contextChannels: Cc, channels: 12, heads: 3, squeezeRate: 4 })];
    const costs = [1234.5, 678.25];
    heads.forEach((h, j) => {
      h.train();
      h.conv2.weight.assign(randomArray(h.conv2.weight.size, 61 + j, -1, 1));
      h.conv2.bias!.assign(randomArray(h.conv2.bias!.size, 63 + j, -0.5, 0.5));
    });
    const ctx = msgc.tensor(randomArray(N * Cc, 65, -1, 2), [N, Cc, 1, 1]);
    const calls: Record<string, number> = {};
    const spied = ['sumAll', 'scale', 'binary'];
    const orig = spied.map((k) => native[k]);
    let soft: Float32Array[] = [];
    try {
      msgc.tidy(() => {
        const ms = heads.map((h) => h.forward(ctx));
        soft = ms.map((m) => m._node!.saved[0].toFloat32Array());
        spied.forEach((k, i) => { native[k] = (...a: unknown[]) => { calls[k] = (calls[k] ?? 0) + 1; return orig[i](...a); }; });
        const d = dynamicTensor(ms, costs) as msgc.Tensor;
        spied.forEach((k, i) => { native[k] = orig[i]; });
        expect(calls).toEqual({});
        expect(d.shape).toEqual([]);
        // Σ F·mean(m) in float64 from the gate values
        let want = 0;
        ms.forEach((m, j) => { const v = m.toFloat32Array(); want += (costs[j] * v.reduce((a, b) => a + b, 0)) / v.length; });
        expect(Math.abs(d.item() - want)).toBeLessThan(1e-6 * want);
        d.backward();
      });
    } finally {
      spied.forEach((k, i) => { native[k] = orig[i]; });
    }
    // d/d b2[k] = Σ_n F/size · soft (1 − soft) / τ (straight-through; the head's b2 adds to every sample's logit k)
    heads.forEach((h, j) => {
      const K = h.conv2.bias!.size, size = N * K, g = h.conv2.bias!.grad!.toFloat32Array();
      for (let k = 0; k < K; k++) {
        let want = 0;
        for (let n = 0; n < N; n++) { const sv = soft[j][n * K + k]; want += ((costs[j] / size) * sv * (1 - sv)) / tau; }
        expect(Math.abs(g[k] - want)).toBeLessThan(1e-5 * (1 + Math.abs(want)));
      }
    });
    for (const h of heads) h.dispose();
    ctx.dispose();
  });

  test('the fused training gate checks its arguments', () => {
    const { native } = require('../lib/native');
    msgc.tidy(() => {
      const { ctx, w1, s, w2, b2 } = headArgs();
      const args = (c = ctx, heads = 2, t = 0.5, inv = 1) => [c.h, w1.h, s.h, s.h, null, null, 0.1, 1e-5, w2.h, b2.h, heads, t, inv, 3];
      expect(() => native.gateHeadTrainForward(...args(msgc.zeros([1, 8, 1, 1])))).toThrow(/gateHeadTrain: training normalises over the batch/);
      expect(() => native.gateHeadTrainForward(...args(ctx, 4))).toThrow(/gateHeadTrain: 6 outputs are not divisible by 4 heads/);
      expect(() => native.gateHeadTrainForward(...args(ctx, 2, 0))).toThrow(/gateHeadTrain: temperature must be positive/);
      expect(() => native.gateHeadTrainForward(...args(ctx, 2, 0.5, 0))).toThrow(/gateHeadTrain: invSigma/);
      const [m, soft, h1, mean, inv, h, sum, unselected, ones] = native.gateHeadTrainForward(...args());
      expect(new msgc.Tensor(m).shape).toEqual([2, 2, 3]);
      expect([typeof sum, typeof unselected, typeof ones]).toEqual(['number', 'number', 'number']);
      const gm = msgc.ones([2, 2, 3]);
      expect(() => native.gateHeadTrainBackward(ctx.h, w1.h, null, w2.h, h1, mean, inv, h, soft, msgc.ones([2, 6]).h, 0.5, true, true))
        .toThrow(/gateHeadTrainBackward: gradMask has shape/);
      expect(() => native.gateHeadTrainBackward(ctx.h, w1.h, null, w2.h, h1, mean, inv, h, gm.h, gm.h, -1, true, true))
        .toThrow(/gateHeadTrainBackward: temperature must be positive/);
      expect(() => native.gateHeadTrainBackward(ctx.h, w1.h, null, w2.h, mean, mean, inv, h, soft, gm.h, 0.5, true, true)).toThrow(/h1/);
      const g = native.gateHeadTrainBackward(ctx.h, w1.h, null, w2.h, h1, mean, inv, h, soft, gm.h, 0.5, false, true);
      expect(g[0]).toBeNull();
      expect(g[1]).not.toBeNull();
      for (const t of [m, soft, h1, mean, inv, h, ...g]) if (t) new msgc.Tensor(t).dispose();
    });
  });

  test('the fused training head checks its arguments', () => {
    const { native } = require('../lib/native');
    msgc.tidy(() => {
      const { ctx, w1, s, w2, b2 } = headArgs();
      expect(() => native.squeezeHeadTrainForward(msgc.zeros([1, 8, 1, 1]).h, w1.h, s.h, s.h, null, null, 0.1, 1e-5, w2.h, b2.h))
        .toThrow(/squeezeHeadTrain: training normalises over the batch/);
      expect(() => native.squeezeHeadTrainForward(ctx.h, msgc.zeros([2, 7, 1, 1]).h, s.h, s.h, null, null, 0.1, 1e-5, w2.h, b2.h))
        .toThrow(/squeezeHeadTrain: w1 has shape/);
      expect(() => native.squeezeHeadTrainForward(ctx.h, w1.h, msgc.ones([3]).h, s.h, null, null, 0.1, 1e-5, w2.h, b2.h)).toThrow(/squeezeHeadTrain/);
      expect(() => native.squeezeHeadTrainForward(ctx.h, w1.h, s.h, s.h, null, null, 2, 1e-5, w2.h, b2.h)).toThrow(/momentum must be in \[0, 1\]/);
      expect(() => native.squeezeHeadTrainForward(ctx.h, w1.h, s.h, s.h, null, null, 0.1, 1e-5, w2.h, msgc.zeros([5]).h)).toThrow(/b2/);
      const [z, h1, mean, inv, h] = native.squeezeHeadTrainForward(ctx.h, w1.h, s.h, s.h, null, null, 0.1, 1e-5, w2.h, b2.h);
      expect(() => native.squeezeHeadTrainBackward(ctx.h, w1.h, null, w2.h, h1, mean, inv, h, msgc.zeros([2, 5]).h, true, true))
        .toThrow(/squeezeHeadTrainBackward: gz must hold 12 values/);
      expect(() => native.squeezeHeadTrainBackward(ctx.h, w1.h, null, w2.h, mean, mean, inv, h, z, true, true)).toThrow(/h1/);
      const g = native.squeezeHeadTrainBackward(ctx.h, w1.h, null, w2.h, h1, mean, inv, h, z, true, false);
      expect(g[0]).not.toBeNull();
      expect(g.slice(1)).toEqual([null, null, null, null, null]);
      for (const t of [z, h1, mean, inv, h, g[0]]) new msgc.Tensor(t).dispose();
    });
  });
});

describe('gateStats: the gate statistics host blocks read natively', () => {
  // float64 reference: mean of m, mean over (n, c) of Π_i (1 − m[n, i, c]), every entry exactly 1
  function reference(v: Float32Array, N: number, G: number, C: number) {
    let sum = 0;
    let unselected = 0;
    for (let n = 0; n < N; n++)
      for (let c = 0; c < C; c++) {
        let p = 1;
        for (let i = 0; i < G; i++) {
          const x = v[(n * G + i) * C + c];
          sum += x;
          p *= 1 - x;
        }
        unselected += p;
      }
    return { density: sum / v.length, unselected: unselected / (N * C), allOnes: v.every((x) => x === 1) };
  }

  test.each([
    ['binary', 3, 4, 37, (u: number, a: number) => (u < 0.4 ? 1 : 0 * a)],
    ['real-valued (attention-scaled, negative too)', 2, 3, 50, (u: number, a: number) => (u < 0.6 ? a : 0)],
    ['all open', 2, 4, 16, () => 1],
    ['one head', 5, 1, 33, (u: number) => (u < 0.5 ? 1 : 0)],
  ])('%s gates [%i, %i, %i]', (_name, N, G, C, f) => {
    msgc.tidy(() => {
      const u = randomArray(N * G * C, 7, 0, 1);
      const a = randomArray(N * G * C, 8, -1.5, 1.5);
      const v = Float32Array.from(u, (x, k) => f(x, a[k]));
      const st = gateStats(msgc.tensor(v, [N, G, C]));
      const ref = reference(v, N, G, C);
      expect(st.density).toBeCloseTo(ref.density, 12);
      expect(st.unselected).toBeCloseTo(ref.unselected, 12);
      expect(st.allOnes).toBe(ref.allOnes);
    });
  });

  test("a GateHead's eval gates come with their statistics (no second native call), equal to the reference", () => {
    const { native } = require('../lib/native');
    const head = new msgc.nn.GateHead({ contextChannels: 24, channels: 10, heads: 3, squeezeRate: 4 });
    head.eval();
    msgc.tidy(() => {
      const ctx = msgc.tensor(randomArray(5 * 24, 31, -1, 2), [5, 24, 1, 1]);
      const m = head.forward(ctx);
      expect(m.shape).toEqual([5, 3, 10]);
      const calls = native.maskStats;
      let counted = 0;
      native.maskStats = (...a: unknown[]) => { counted++; return calls(...a); };
      try {
        const st = gateStats(m);
        expect(counted).toBe(0);
        const ref = reference(m.toFloat32Array(), 5, 3, 10);
        expect(st.density).toBeCloseTo(ref.density, 12);
        expect(st.unselected).toBeCloseTo(ref.unselected, 12);
        expect(st.allOnes).toBe(ref.allOnes);
        gateStats(msgc.tensor(m.toFloat32Array(), [5, 3, 10]));  // a copy: computed natively
        expect(counted).toBe(1);
      } finally {
        native.maskStats = calls;
      }
    });
    head.dispose();
  });

  test('the native head with heads G returns [N, G, K / G] and checks G', () => {
    const { native } = require('../lib/native');
    msgc.tidy(() => {
      const ctx = msgc.zeros([2, 8, 1, 1]);
      const w1 = msgc.zeros([2, 8, 1, 1]);
      const s = msgc.ones([2]);
      const w2 = msgc.zeros([6, 2, 1, 1]);
      const b2 = msgc.full([6], -1);
      const a = new msgc.Tensor(native.squeezeHeadEval(ctx.h, w1.h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, false, 3));
      expect(a.shape).toEqual([2, 3, 2]);
      expect(Array.from(a.toFloat32Array())).toEqual(new Array(12).fill(-1));
      const [h, sum, unselected, ones] = native.squeezeHeadEval(ctx.h, w1.h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, true, 2);
      const g = new msgc.Tensor(h);
      expect(g.shape).toEqual([2, 2, 3]);
      expect([sum, unselected, ones]).toEqual([0, 6, 0]);  // every gate closed: 2·3 (sample, channel) pairs unselected
      expect(() => native.squeezeHeadEval(ctx.h, w1.h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, true, 4)).toThrow(/6 outputs are not divisible by 4 heads/);
      expect(() => native.squeezeHeadEval(ctx.h, w1.h, s.h, s.h, null, null, 1e-5, w2.h, b2.h, true, 0)).toThrow(/heads/);
    });
  });

  test('a gate tensor that is not [N, heads, channels] throws', () => {
    msgc.tidy(() => {
      expect(() => gateStats(msgc.ones([4, 8]))).toThrow(/maskStats: mask .*\[N, heads, channels\]/);
    });
  });
});
