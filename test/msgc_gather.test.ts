// msgc_gather.test.ts: the gathered execution of F.msgcConv2d (only the channels with scale ≠ 0 take part)
// against the masked execution and a float64 reference, for every native variant (MSGC_GATHER_KERNEL), on
// random gates with closed and full heads, densities that differ across samples and heads, attention-like real
// scales (negative too), strides 1 and 2, 1×1 / 3×3 / 5×5 kernels, padding, batch 1 and several, plain and
// channel-blocked inputs; plus the 'auto' choice, the no-gradient rule and the native boundary's checks.
import * as msgc from '../lib';
import { native } from '../lib/native';
import { narrowHeadsUnite, preferGathered, preferOutputSkipping } from '../lib/ops/msgc';
import { closeness, numel, randomArray } from './helpers/gradcheck';
import { cases, gates, variants, withEnv } from './helpers/gather-cases';
import { msgcConvReference as reference } from './helpers/references';

const { F } = msgc;

const startLive = msgc.liveTensorCount();

describe('gathered msgcConv2d equals the masked one and a float64 reference', () => {
  test.each(cases.map((c, i) => ({ ...c, i })))('N=$N C=$C $H×$W O=$O k=$k stride=$stride pad=$pad G=$G blocked=$blocked real=$real', (c) => {
    msgc.tidy(() => msgc.noGrad(() => {
      const xs = [c.N, c.C, c.H, c.W];
      const ws = [c.O, c.C, c.k, c.k];
      const x0 = msgc.tensor(randomArray(numel(xs), 10 + c.i), xs);
      // a blocked input: the output of a (1×1) convolution, in the layout oneDNN chose
      const x = c.blocked ? F.conv2d(x0, msgc.tensor(randomArray(c.C * c.C, 30 + c.i, -0.5, 0.5), [c.C, c.C, 1, 1]), null) : x0;
      const w = msgc.tensor(randomArray(numel(ws), 50 + c.i), ws);
      const sv = gates(c.N, c.G, c.C, 70 + c.i, c.real);
      const s = msgc.tensor(sv, [c.N, c.G, c.C]);
      const opts = { heads: c.G, stride: c.stride, padding: c.pad };
      const ref = reference(x.toFloat32Array(), xs, w.toFloat32Array(), ws, sv, c.G, c.stride, c.pad);
      const masked = F.msgcConv2d(x, w, s, { ...opts, execution: 'masked' }).toFloat32Array();
      expect(closeness(masked, ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      for (const env of variants) {
        const y = withEnv(env, () => F.msgcConv2d(x, w, s, { ...opts, execution: 'gathered' }));
        const v = y.toFloat32Array();
        expect(y.shape).toEqual([c.N, c.O, Math.floor((c.H + 2 * c.pad - c.k) / c.stride) + 1, Math.floor((c.W + 2 * c.pad - c.k) / c.stride) + 1]);
        const err = closeness(v, ref, 1e-4, 1e-4);
        if (err > 1) throw new Error(`variant ${JSON.stringify(env)}: off the reference by ${err}`);
        expect(closeness(v, masked, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      }
      // a closed head gives exact zeros in its channels (sample 0, head 0)
      const y = F.msgcConv2d(x, w, s, { ...opts, execution: 'gathered' }).toFloat32Array();
      const per = y.length / c.N / c.O;
      for (let o = 0; o < c.O / c.G; o++) for (let p = 0; p < per; p++) expect(y[o * per + p]).toBe(0);
    }));
  });

  test('all gates closed gives zeros; all open gives the dense convolution', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const x = F.conv2d(msgc.tensor(randomArray(2 * 16 * 6 * 6, 90), [2, 16, 6, 6]), msgc.tensor(randomArray(16 * 16, 91), [16, 16, 1, 1]), null);
      const w = msgc.tensor(randomArray(32 * 16 * 9, 92), [32, 16, 3, 3]);
      const zero = F.msgcConv2d(x, w, msgc.zeros([2, 2, 16]), { heads: 2, padding: 1, execution: 'gathered' }).toFloat32Array();
      expect(zero.every((v) => v === 0)).toBe(true);
      const full = F.msgcConv2d(x, w, msgc.ones([2, 2, 16]), { heads: 2, padding: 1, execution: 'gathered' });
      expect(closeness(full.toFloat32Array(), F.conv2d(x, w, null, { padding: 1 }).toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    }));
  });

  test('a weight written after a call is seen by the next call (cached reorders are invalidated)', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const x = msgc.tensor(randomArray(2 * 16 * 5 * 5, 93), [2, 16, 5, 5]);
      const w = msgc.tensor(randomArray(16 * 16 * 9, 94), [16, 16, 3, 3]);
      const sv = gates(2, 1, 16, 95, true);
      const s = msgc.tensor(sv, [2, 1, 16]);
      F.msgcConv2d(x, w, s, { heads: 1, padding: 1, execution: 'gathered' });
      const w2 = randomArray(16 * 16 * 9, 96);
      w.assign(w2);
      const y = F.msgcConv2d(x, w, s, { heads: 1, padding: 1, execution: 'gathered' }).toFloat32Array();
      const ref = reference(x.toFloat32Array(), [2, 16, 5, 5], w2, [16, 16, 3, 3], sv, 1, 1, 1);
      expect(closeness(y, ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    }));
  });
});

describe('output selection (producer/consumer skipping): only the outputs an outputMask needs', () => {
  /** outputMask [N, K, O] with densities that differ per sample (sample 0: nothing needed in head 0's range). */
  function outMask(N: number, K: number, O: number, G: number, seed: number): Float32Array {
    const u = randomArray(N * K * O, seed, 0, 1);
    const m = new Float32Array(N * K * O);
    for (let n = 0; n < N; n++)
      for (let k = 0; k < K; k++)
        for (let o = 0; o < O; o++) {
          const closedHead = n === 0 && o < O / G;
          const density = n === 1 ? 1 : 0.15 + 0.2 * ((n + k) % 3);
          if (!closedHead && u[(n * K + k) * O + o] < density) m[(n * K + k) * O + o] = 1;
        }
    return m;
  }

  test.each(cases.map((c, i) => ({ ...c, i })))('N=$N C=$C $H×$W O=$O k=$k stride=$stride G=$G real=$real', (c) => {
    msgc.tidy(() => msgc.noGrad(() => {
      const xs = [c.N, c.C, c.H, c.W];
      const ws = [c.O, c.C, c.k, c.k];
      const x0 = msgc.tensor(randomArray(numel(xs), 110 + c.i), xs);
      const x = c.blocked ? F.conv2d(x0, msgc.tensor(randomArray(c.C * c.C, 130 + c.i, -0.5, 0.5), [c.C, c.C, 1, 1]), null) : x0;
      const w = msgc.tensor(randomArray(numel(ws), 150 + c.i), ws);
      const sv = gates(c.N, c.G, c.C, 170 + c.i, c.real);
      const s = msgc.tensor(sv, [c.N, c.G, c.C]);
      const ref = reference(x.toFloat32Array(), xs, w.toFloat32Array(), ws, sv, c.G, c.stride, c.pad);
      for (const K of [1, 3]) {
        const mv = outMask(c.N, K, c.O, c.G, 190 + c.i + K);
        const m = msgc.tensor(mv, [c.N, K, c.O]);
        // the reference with the unneeded outputs zeroed
        const per = ref.length / c.N / c.O;
        const want = Float64Array.from(ref);
        for (let n = 0; n < c.N; n++)
          for (let o = 0; o < c.O; o++) {
            let any = false;
            for (let k = 0; k < K; k++) any = any || mv[(n * K + k) * c.O + o] !== 0;
            if (!any) want.fill(0, (n * c.O + o) * per, (n * c.O + o + 1) * per);
          }
        for (const env of variants) {
          const v = withEnv(env, () => {
            const h = native.msgcConv2dForwardGathered(x.h, w.h, s.h, [c.stride, c.stride], [c.pad, c.pad], c.G, m.h);
            const y = new msgc.Tensor(h);
            return y.toFloat32Array();
          });
          const err = closeness(v, want, 1e-4, 1e-4);
          if (err > 1) throw new Error(`variant ${JSON.stringify(env)}, K = ${K}: off the reference by ${err}`);
          for (let k = 0; k < want.length; k++) if (want[k] === 0 && ref[k] !== 0) expect(v[k]).toBe(0);
        }
      }
    }));
  });

  test('msgcConv2d skips only where preferOutputSkipping() says it pays (auto) or heads are wide enough (gathered), and says so in stats', () => {
    const k512 = { kernels: 'avx512' as const };
    // 3×3 convs (kernel 9): batch > 2 from half the outputs skipped, batch 1-2 from 0.65 on maps of 28² and more
    expect(preferOutputSkipping(0.5, 14 * 14, Infinity, { ...k512, kernel: 9, batch: 32 })).toBe(true);
    expect(preferOutputSkipping(0.4, 28 * 28, Infinity, { ...k512, kernel: 9, batch: 32 })).toBe(false);
    expect(preferOutputSkipping(0.7, 56 * 56, Infinity, { ...k512, kernel: 9, batch: 1 })).toBe(true);
    expect(preferOutputSkipping(0.5, 56 * 56, Infinity, { ...k512, kernel: 9, batch: 1 })).toBe(false);
    expect(preferOutputSkipping(0.7, 14 * 14, Infinity, { ...k512, kernel: 9, batch: 1 })).toBe(false);
    expect(preferOutputSkipping(0.9, 7 * 7, Infinity, { ...k512, kernel: 9, batch: 32 })).toBe(false); // packing costs more than the work there
    expect(preferOutputSkipping(0.06, 56 * 56, Infinity, { ...k512, kernel: 9, batch: 32 })).toBe(false); // a four-head union leaves little out
    expect(preferOutputSkipping(0.7, 56 * 56, 16, { ...k512, kernel: 9, batch: 32 })).toBe(false); // one block of 16 outputs per head either way
    expect(preferOutputSkipping(0.7, 56 * 56, 32, { ...k512, kernel: 9, batch: 32 })).toBe(true);
    // 1×1 convs: batch > 2 only, from 0.6
    expect(preferOutputSkipping(0.7, 28 * 28, Infinity, { ...k512, kernel: 1, batch: 32 })).toBe(true);
    expect(preferOutputSkipping(0.5, 28 * 28, Infinity, { ...k512, kernel: 1, batch: 32 })).toBe(false);
    expect(preferOutputSkipping(0.9, 28 * 28, Infinity, { ...k512, kernel: 1, batch: 1 })).toBe(false);
    // AVX2: not through wide 1×1 heads on maps above 14² (the gathered conv is slower than the dense one there)
    expect(preferOutputSkipping(0.7, 112 * 112, 96, { kernels: 'avx2', batch: 32 })).toBe(false);
    expect(preferOutputSkipping(0.7, 14 * 14, 96, { kernels: 'avx2', kernel: 1, batch: 32 })).toBe(true);
    expect(preferOutputSkipping(0.7, 56 * 56, 96, { kernels: 'avx2', kernel: 9, batch: 32 })).toBe(true);
    msgc.tidy(() => msgc.noGrad(() => {
      const N = 2, C = 16, O = 64, H = 16;
      const x = msgc.tensor(randomArray(N * C * H * H, 201), [N, C, H, H]);
      const w = msgc.tensor(randomArray(O * C * 9, 202), [O, C, 3, 3]);
      const s = msgc.tensor(gates(N, 2, C, 203, false), [N, 2, C]);
      const mv = new Float32Array(N * O);
      for (let k = 0; k < mv.length; k += 2) mv[k] = 1; // half the outputs
      const m = msgc.tensor(mv, [N, 1, O]);
      const opts = { heads: 2, padding: 1 };
      const full = F.msgcConv2d(x, w, s, { ...opts, execution: 'gathered' }).toFloat32Array();
      const stats = { gathered: false, skippedOutputs: false };
      const y = F.msgcConv2d(x, w, s, { ...opts, execution: 'gathered', outputMask: m, stats }).toFloat32Array();
      expect(stats).toEqual({ gathered: true, skippedOutputs: true });
      const per = H * H;
      for (let n = 0; n < N; n++)
        for (let o = 0; o < O; o++)
          for (let p = 0; p < per; p++) {
            const k = (n * O + o) * per + p;
            if (o % 2) expect(y[k]).toBe(0);
            else expect(Math.abs(y[k] - full[k])).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(full[k])));
          }
      // the masked execution ignores the mask
      const st2 = { gathered: true, skippedOutputs: true };
      const ym = F.msgcConv2d(x, w, s, { ...opts, execution: 'masked', outputMask: m, stats: st2 }).toFloat32Array();
      expect(st2).toEqual({ gathered: false, skippedOutputs: false });
      expect(closeness(ym, full, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      // heads of 16 outputs (4 heads): not skipped, every output computed
      const s4 = msgc.tensor(gates(N, 4, C, 204, false), [N, 4, C]);
      const st4 = { gathered: false, skippedOutputs: true };
      const y4 = F.msgcConv2d(x, w, s4, { heads: 4, padding: 1, execution: 'gathered', outputMask: m, stats: st4 }).toFloat32Array();
      expect(st4).toEqual({ gathered: true, skippedOutputs: false });
      // 'auto' by the rule: batch 2 on a 16² map computes every output (the mask is ignored)
      const sta = { gathered: false, skippedOutputs: true };
      const ya = F.msgcConv2d(x, w, s, { ...opts, execution: 'auto', outputMask: m, stats: sta }).toFloat32Array();
      expect(sta.skippedOutputs).toBe(false);
      expect(closeness(ya, full, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      const full4 = F.msgcConv2d(x, w, s4, { heads: 4, padding: 1, execution: 'gathered' }).toFloat32Array();
      expect(closeness(y4, full4, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
    }));
  });

  test('the native boundary checks the output mask', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 4, 5, 5]);
      const w = msgc.zeros([8, 4, 3, 3]);
      const s = msgc.ones([2, 2, 4]);
      for (const bad of [[2, 8], [2, 1, 7], [3, 1, 8], [2, 0, 8]]) {
        expect(() => native.msgcConv2dForwardGathered(x.h, w.h, s.h, [1, 1], [1, 1], 2, msgc.zeros(bad).h)).toThrow(/outputMask/);
      }
    });
  });
});

describe("execution 'auto' and the gradient rule", () => {
  test("'auto' gives the masked numbers, with and without gradients", () => {
    msgc.tidy(() => {
      const c = cases[0];
      const x = F.conv2d(msgc.tensor(randomArray(c.N * c.C * 81, 1), [c.N, c.C, 9, 9]), msgc.tensor(randomArray(c.C * c.C, 2), [c.C, c.C, 1, 1]), null);
      const w = msgc.tensor(randomArray(c.O * c.C * 9, 3), [c.O, c.C, 3, 3], { requiresGrad: true });
      for (const real of [false, true]) {
        const s = msgc.tensor(gates(c.N, c.G, c.C, 4, real), [c.N, c.G, c.C]);
        const masked = msgc.noGrad(() => F.msgcConv2d(x, w, s, { heads: c.G, padding: 1, execution: 'masked' })).toFloat32Array();
        const autoNoGrad = msgc.noGrad(() => F.msgcConv2d(x, w, s, { heads: c.G, padding: 1 }));
        expect(closeness(autoNoGrad.toFloat32Array(), masked, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        expect(autoNoGrad.requiresGrad).toBe(false);
        // with a gradient to record, 'auto' still picks its forward by density and records the masked backward
        const autoGrad = F.msgcConv2d(x, w, s, { heads: c.G, padding: 1 });
        expect(autoGrad.requiresGrad).toBe(true);
        expect(closeness(autoGrad.toFloat32Array(), masked, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      }
    });
  });

  test("'auto' with every gate open runs the dense convolution, with the masked gradients", () => {
    msgc.tidy(() => {
      const N = 3, C = 16, O = 32, G = 4;
      const x = msgc.tensor(randomArray(N * C * 64, 21), [N, C, 8, 8], { requiresGrad: true });
      const w = msgc.tensor(randomArray(O * C * 9, 22), [O, C, 3, 3], { requiresGrad: true });
      const s = msgc.tensor(new Float32Array(N * G * C).fill(1), [N, G, C], { requiresGrad: true });
      const dense = msgc.noGrad(() => F.conv2d(x, w, null, { padding: 1 })).toFloat32Array();
      const spy = jest.spyOn(native, 'conv2dForward');
      const y = F.msgcConv2d(x, w, s, { heads: G, padding: 1 });
      expect(spy).toHaveBeenCalledTimes(1);
      spy.mockRestore();
      expect(closeness(y.toFloat32Array(), dense, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
      const gy = msgc.tensor(randomArray(N * O * 64, 23), [N, O, 8, 8]);
      F.sum(F.mul(y, gy)).backward();
      const got = [x.grad!, w.grad!, s.grad!].map((t) => t.toFloat32Array());
      for (const t of [x, w, s]) { t.grad!.dispose(); t.grad = null; }
      const ym = F.msgcConv2d(x, w, s, { heads: G, padding: 1, execution: 'masked' });
      F.sum(F.mul(ym, gy)).backward();
      const want = [x.grad!, w.grad!, s.grad!].map((t) => t.toFloat32Array());
      for (let k = 0; k < 3; k++) expect(closeness(got[k], want[k], 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      for (const t of [x, w, s]) { t.grad!.dispose(); t.grad = null; }
      // hints stand in for reading the scales back: told the density is 0.1, 'auto' takes the gathered path
      const spy3 = jest.spyOn(native, 'msgcConv2dForwardGathered');
      const hinted = msgc.noGrad(() => F.msgcConv2d(x, w, s, { heads: G, padding: 1, hints: { density: 0.1, allOnes: false } }));
      expect(spy3).toHaveBeenCalledTimes(1);
      spy3.mockRestore();
      expect(closeness(hinted.toFloat32Array(), dense, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      // one closed gate: back to the MSGC paths
      const sv = new Float32Array(N * G * C).fill(1);
      sv[5] = 0;
      const spy2 = jest.spyOn(native, 'conv2dForward');
      msgc.noGrad(() => F.msgcConv2d(x, w, msgc.tensor(sv, [N, G, C]), { heads: G, padding: 1 }));
      expect(spy2).not.toHaveBeenCalled();
      spy2.mockRestore();
    });
  });

  test("'gathered' forward records the masked backward: every gradient equals the masked path's", () => {
    msgc.tidy(() => {
      const c = cases[0];
      const x = msgc.tensor(randomArray(c.N * c.C * 49, 5), [c.N, c.C, 7, 7], { requiresGrad: true });
      const w = msgc.tensor(randomArray(c.O * c.C * 9, 6), [c.O, c.C, 3, 3], { requiresGrad: true });
      const s = msgc.tensor(gates(c.N, c.G, c.C, 7, true), [c.N, c.G, c.C], { requiresGrad: true });
      const gy = msgc.tensor(randomArray(c.N * c.O * 49, 8), [c.N, c.O, 7, 7]);
      const grads = (execution: 'masked' | 'gathered') => {
        for (const t of [x, w, s]) if (t.grad) { t.grad.dispose(); t.grad = null; }
        const y = F.msgcConv2d(x, w, s, { heads: c.G, padding: 1, execution });
        expect(y.requiresGrad).toBe(true);
        const out = y.toFloat32Array();
        y.backward(gy);
        return [out, ...[x, w, s].map((t) => t.grad!.toFloat32Array())];
      };
      const masked = grads('masked');
      const gathered = grads('gathered');
      for (let i = 0; i < masked.length; i++) expect(closeness(gathered[i], masked[i], 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      // closed gates still get their gradient (straight-through, spec §2.8)
      const sv = s.toFloat32Array(), gs = gathered[3];
      expect(sv.some((v, i) => v === 0 && gs[i] !== 0)).toBe(true);
      expect(() => F.msgcConv2d(x, w, s, { heads: 2, execution: 'sparse' as never })).toThrow(/msgcConv2d: options.execution must be/);
    });
  });

  test('the auto rule: gathered below a density threshold that is lower on small maps at larger batches', () => {
    expect(preferGathered(0, { outPixels: 56 * 56, batch: 32 })).toBe(true);
    expect(preferGathered(0.9, { outPixels: 56 * 56, batch: 32 })).toBe(true);
    expect(preferGathered(0.99, { outPixels: 56 * 56, batch: 32 })).toBe(false);
    expect(preferGathered(0.8, { outPixels: 14 * 14, batch: 32 })).toBe(true);
    expect(preferGathered(0.9, { outPixels: 14 * 14, batch: 32 })).toBe(false);
    expect(preferGathered(0.8, { outPixels: 7 * 7, batch: 32 })).toBe(false);
    expect(preferGathered(0.8, { outPixels: 7 * 7, batch: 1 })).toBe(true);
    expect(preferGathered(1, { outPixels: 7 * 7, batch: 1 })).toBe(false);
    // narrow heads: the masked path's per-sample convs win at batch 32+ above density ~0.45, at batch 1 above ~0.7
    expect(preferGathered(0.65, { outPixels: 28 * 28, batch: 64, headChannels: 4 })).toBe(false);
    expect(preferGathered(0.55, { outPixels: 28 * 28, batch: 64, headChannels: 4 })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 28 * 28, batch: 64, headChannels: 4, recording: true })).toBe(false);
    expect(preferGathered(0.4, { outPixels: 28 * 28, batch: 64, headChannels: 4, recording: true })).toBe(true);
    expect(preferGathered(0.8, { outPixels: 28 * 28, batch: 1, headChannels: 4 })).toBe(false);
    expect(preferGathered(0.5, { outPixels: 28 * 28, batch: 1, headChannels: 4 })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 8 * 8, batch: 1, headChannels: 16 })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 28 * 28, batch: 64, headChannels: 16 })).toBe(true);
    // 1×1 convs: gathered only well below density 0.5, except wide inputs on small maps at batch 1
    expect(preferGathered(0.5, { outPixels: 14 * 14, batch: 1, kernel: 1, channels: 576, headChannels: 24 })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 1, kernel: 1, channels: 144, headChannels: 6 })).toBe(false);
    // ...and with the AVX-512 kernels at batch 1-2, 14² and 7² maps from 384 inputs at any density
    expect(preferGathered(0.9, { outPixels: 7 * 7, batch: 1, kernel: 1, channels: 960, headChannels: 40, kernels: 'avx512' })).toBe(true);
    expect(preferGathered(0.9, { outPixels: 14 * 14, batch: 1, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx512' })).toBe(true);
    expect(preferGathered(0.9, { outPixels: 14 * 14, batch: 1, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx2' })).toBe(false);
    expect(preferGathered(0.9, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx512' })).toBe(false);
    expect(preferGathered(0.65, { outPixels: 14 * 14, batch: 1, kernel: 1, channels: 192, headChannels: 16, kernels: 'avx512' })).toBe(false);
    expect(preferGathered(0.5, { outPixels: 28 * 28, batch: 1, kernel: 1, channels: 192, headChannels: 8, kernels: 'avx512' })).toBe(false);
    expect(preferGathered(0.5, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24 })).toBe(true);
    expect(preferGathered(0.8, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24 })).toBe(false);
    expect(preferGathered(0.95, { outPixels: 7 * 7, batch: 32, kernel: 1, channels: 960, headChannels: 40 })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 28 * 28, batch: 32, kernel: 1, channels: 192, headChannels: 8 })).toBe(false);
    expect(preferGathered(0.25, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24 })).toBe(true);
    // ...but wide 1×1 heads (ResNet-50's gated 1×1 convs) are compute-bound: gathered at density 0.5
    expect(preferGathered(0.5, { outPixels: 7 * 7, batch: 32, kernel: 1, channels: 2048, headChannels: 512 })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 1, kernel: 1, channels: 256, headChannels: 64 })).toBe(true);
    // per kind of kernels: AVX2 takes wide 1×1 heads gathered at batch 1-2 on any map; the portable sgemm path
    // is taken only at low density
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 1, kernel: 1, channels: 256, headChannels: 64, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 28 * 28, batch: 2, kernel: 1, channels: 128, headChannels: 512, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 14 * 14, batch: 1, kernel: 1, channels: 256, headChannels: 1024, kernels: 'avx2' })).toBe(true);
    // ...and 1×1 convs at batch > 2 from density 0.25 on, except wide heads and (in eval) 7² maps up to 0.6
    expect(preferGathered(0.5, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx2' })).toBe(false);
    expect(preferGathered(0.2, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 7 * 7, batch: 32, kernel: 1, channels: 960, headChannels: 40, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 32, kernel: 1, channels: 256, headChannels: 128, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.7, { outPixels: 7 * 7, batch: 4, kernel: 1, channels: 2048, headChannels: 512, kernels: 'avx2' })).toBe(false);
    expect(preferGathered(0.5, { outPixels: 7 * 7, batch: 32, kernel: 1, channels: 960, headChannels: 40, kernels: 'avx2', recording: true })).toBe(false);
    expect(preferGathered(0.5, { outPixels: 7 * 7, batch: 4, kernel: 1, channels: 2048, headChannels: 512, kernels: 'avx2', recording: true })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 14 * 14, batch: 32, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx512' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 14 * 14, batch: 2, kernel: 1, channels: 576, headChannels: 24, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 1, kernel: 3, channels: 64, headChannels: 16, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 1, kernel: 1, channels: 256, headChannels: 64, kernels: 'avx512' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 56 * 56, batch: 1, kernel: 3, channels: 64, headChannels: 16, kernels: 'portable' })).toBe(false);
    // AVX2 on heads of 4 outputs (3×3): masked from density 0.3 on, at any batch
    expect(preferGathered(0.5, { outPixels: 32 * 32, batch: 32, kernel: 3, channels: 16, headChannels: 4, kernels: 'avx2' })).toBe(false);
    expect(preferGathered(0.5, { outPixels: 32 * 32, batch: 1, kernel: 3, channels: 16, headChannels: 4, kernels: 'avx2' })).toBe(false);
    expect(preferGathered(0.25, { outPixels: 32 * 32, batch: 32, kernel: 3, channels: 16, headChannels: 4, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 16 * 16, batch: 32, kernel: 3, channels: 32, headChannels: 8, kernels: 'avx2' })).toBe(true);
    expect(preferGathered(0.5, { outPixels: 32 * 32, batch: 32, kernel: 3, channels: 16, headChannels: 4, kernels: 'avx512' })).toBe(true);
    expect(preferGathered(0.2, { outPixels: 56 * 56, batch: 1, kernel: 3, channels: 64, headChannels: 16, kernels: 'portable' })).toBe(true);
  });
});

describe('narrow heads as one head over their union', () => {
  test('which convs unite, and the auto rule that follows the union\'s density (eval and training forward)', () => {
    expect(narrowHeadsUnite(16, 4, 'avx512')).toBe(true); // heads of 4 (ResNet-20's 16-channel stage)
    expect(narrowHeadsUnite(32, 4, 'avx512')).toBe(true); // heads of 8
    expect(narrowHeadsUnite(32, 4, 'avx2')).toBe(false); // heads of 8 fill a ymm half each there
    expect(narrowHeadsUnite(16, 4, 'avx2')).toBe(true);
    expect(narrowHeadsUnite(24, 4, 'avx512')).toBe(false); // 24 outputs are no whole vectors
    expect(narrowHeadsUnite(24, 4, 'avx2')).toBe(true);
    expect(narrowHeadsUnite(64, 4, 'avx512')).toBe(false); // heads of 16
    expect(narrowHeadsUnite(16, 1, 'avx512')).toBe(false);
    expect(narrowHeadsUnite(16, 4, 'portable')).toBe(false);
    // k×k convs on AVX-512: heads of 8 apart at any union; heads of 4 united below a union of 0.85 (1×1 convs and
    // AVX2 keep uniting)
    expect(narrowHeadsUnite(32, 4, 'avx512', 9, 0.6)).toBe(false);
    expect(narrowHeadsUnite(16, 4, 'avx512', 9, 0.6)).toBe(true);
    expect(narrowHeadsUnite(16, 4, 'avx512', 9, 0.84)).toBe(true);
    expect(narrowHeadsUnite(16, 4, 'avx512', 9, 0.86)).toBe(false);
    expect(narrowHeadsUnite(16, 4, 'avx2', 9, 0.95)).toBe(true);
    expect(narrowHeadsUnite(32, 4, 'avx512', 1, 0.95)).toBe(true);
    // heads kept apart take the per-head rule, which on AVX-512 gathers up to density 0.7 in training too
    const apart = { outPixels: 16 * 16, batch: 32, headChannels: 8, kernel: 9, channels: 32, kernels: 'avx512' as const };
    expect(preferGathered(0.65, { ...apart, recording: true })).toBe(true);
    expect(preferGathered(0.75, { ...apart, recording: true })).toBe(false);
    expect(preferGathered(0.65, { ...apart })).toBe(true);
    expect(preferGathered(0.5, { ...apart, recording: true, kernels: 'avx2' })).toBe(false);
    const s = { outPixels: 28 * 28, batch: 64, headChannels: 4, kernel: 9, union: true };
    // batch > 2: gathered below a union density of 0.85 (AVX-512) or 0.45 (AVX2), whatever each head's density
    expect(preferGathered(0.2, { ...s, unionDensity: 0.9 })).toBe(false);
    expect(preferGathered(0.65, { ...s, unionDensity: 0.8 })).toBe(true);
    expect(preferGathered(0.65, { ...s })).toBe(false); // (no union density: the per-head rule)
    expect(preferGathered(0.2, { ...s, unionDensity: 0.5, kernels: 'avx2' })).toBe(false);
    expect(preferGathered(0.1, { ...s, unionDensity: 0.4, kernels: 'avx2' })).toBe(true);
    // batch 1-2: gathered at any density in eval; the training forward follows the union's density as well
    expect(preferGathered(0.9, { ...s, batch: 1, unionDensity: 1 })).toBe(true);
    expect(preferGathered(0.5, { ...s, recording: true, unionDensity: 0.6 })).toBe(true);
    expect(preferGathered(0.3, { ...s, recording: true, unionDensity: 0.9 })).toBe(false);
    expect(preferGathered(0.9, { ...s, batch: 2, recording: true, unionDensity: 1 })).toBe(false);
    // 1×1 convs keep their rules (MobileNetV2's projections with heads of 4 and 8: masked at batch 1, density 0.5)
    expect(preferGathered(0.5, { ...s, batch: 1, kernel: 1, outPixels: 112 * 112, channels: 32, unionDensity: 0.9 })).toBe(false);
    // (training without the union's density: the per-head rule, gathered below 0.45)
    expect(preferGathered(0.4, { ...s, recording: true })).toBe(true);
    expect(preferGathered(0.5, { ...s, recording: true })).toBe(false);
  });

  test('the union writes the blocked layout with the numbers of the heads apart and of the masked path', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const kernels = native.gatheredKernels();
      if (kernels === 'portable') return;
      // heads of 4 outputs (both kinds of kernels unite them), binary gates and attention-like scales
      const N = 3, C = 20, H = 7, O = 16, G = 4;
      const x = F.conv2d(msgc.tensor(randomArray(N * C * H * H, 41), [N, C, H, H]), msgc.tensor(randomArray(C * C, 42), [C, C, 1, 1]), null);
      const w = msgc.tensor(randomArray(O * C * 9, 43), [O, C, 3, 3]);
      for (const real of [false, true]) {
        const sv = gates(N, G, C, 44, real);
        const s = msgc.tensor(sv, [N, G, C]);
        const run = () => F.msgcConv2d(x, w, s, { heads: G, padding: 1, execution: 'gathered' });
        const united = withEnv({ MSGC_GATHER_UNION: '1' }, run);
        const apart = withEnv({ MSGC_GATHER_UNION: '0' }, run);
        const apartPlain = withEnv({ MSGC_GATHER_UNION: '0', MSGC_GATHER_PIXBLOCK: '0' }, run);
        expect(united.layout).toBe('blocked');
        // (the heads apart run on pixvec: with AVX-512 its rows are transposed into nChw16c, x being blocked)
        expect(apart.layout).toBe(kernels === 'avx512' ? 'blocked' : 'plain');
        expect(apartPlain.layout).toBe('plain');
        const want = reference(x.toFloat32Array(), [N, C, H, H], w.toFloat32Array(), [O, C, 3, 3], sv, G, 1, 1);
        expect(closeness(united.toFloat32Array(), want, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        expect(closeness(apart.toFloat32Array(), want, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        expect(closeness(apartPlain.toFloat32Array(), want, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        const masked = F.msgcConv2d(x, w, s, { heads: G, padding: 1, execution: 'masked' });
        expect(closeness(united.toFloat32Array(), masked.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      }
    }));
  });
});

describe('narrow heads of k×k convs on AVX-512 run apart or united by their width and union', () => {
  test('heads of 8 apart; heads of 4 united below a union of 0.85, apart from it (the layout tells which), same numbers', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      if (native.gatheredKernels() !== 'avx512') return;
      const N = 3, C = 24, H = 6, G = 4;
      const x = F.conv2d(msgc.tensor(randomArray(N * C * H * H, 71), [N, C, H, H]), msgc.tensor(randomArray(C * C, 72), [C, C, 1, 1]), null);
      // union shares: each head opens the same half of the channels (union 0.5), or each its own quarter (union 1)
      const shared = new Float32Array(N * G * C), own = new Float32Array(N * G * C);
      for (let n = 0; n < N; n++)
        for (let i = 0; i < G; i++)
          for (let c = 0; c < C; c++) {
            shared[(n * G + i) * C + c] = c % 2 === 0 ? 1 : 0;
            own[(n * G + i) * C + c] = c % G === i ? 1 : 0;
          }
      for (const [O, sv, layout] of [[16, shared, 'blocked'], [16, own, 'plain'], [32, shared, 'plain'], [32, own, 'plain']] as const) {
        const w = msgc.tensor(randomArray(O * C * 9, 73), [O, C, 3, 3]);
        const s = msgc.tensor(sv, [N, G, C]);
        // (pixvec's output plain, MSGC_GATHER_PIXBLOCK=0, so that the layout tells which ran)
        const y = withEnv({ MSGC_GATHER_PIXBLOCK: '0' }, () => F.msgcConv2d(x, w, s, { heads: G, padding: 1, execution: 'gathered' }));
        expect(y.layout).toBe(layout);
        expect(narrowHeadsUnite(O, G, 'avx512', 9, layout === 'blocked' ? 0.5 : 1)).toBe(layout === 'blocked');
        const want = reference(x.toFloat32Array(), [N, C, H, H], w.toFloat32Array(), [O, C, 3, 3], sv, G, 1, 1);
        expect(closeness(y.toFloat32Array(), want, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      }
    }));
  });
});

/**
 * float64: ReLU6(BN_eval(conv) + residual) of a conv output [N, O, HW] (float64 reference values), and the per-channel
 * means of the result [N, O] (the pooled output of msgcConv2dBnActPooled).
 */
function bnResidualRelu6(conv: Float64Array, N: number, O: number, HW: number,
  bn: { runningMean: msgc.Tensor; runningVar: msgc.Tensor; weight: msgc.Tensor; bias: msgc.Tensor; eps: number }, r: msgc.Tensor) {
  const rv = r.toFloat32Array(), m = bn.runningMean.toFloat32Array(), v = bn.runningVar.toFloat32Array();
  const gm = bn.weight.toFloat32Array(), b = bn.bias.toFloat32Array();
  const want = new Float64Array(conv.length), means = new Float64Array(N * O);
  for (let k = 0; k < conv.length; k++) {
    const o = Math.floor(k / HW) % O;
    want[k] = Math.min(6, Math.max(0, (conv[k] - m[o]) * gm[o] / Math.sqrt(v[o] + bn.eps) + b[o] + rv[k]));
    means[Math.floor(k / HW)] += want[k] / HW;
  }
  return { want, means };
}

/**
 * A 1×1 conv's operands for the kernel tests: a channel-blocked x [N, C, H, H] (a conv's output; seeds xSeed and
 * base), the weight [O, C, 1, 1] (wSeed), a blocked residual and the eval BN's tensors (base + 2 .. base + 7).
 */
function pointwiseOperands(N: number, C: number, O: number, H: number, xSeed: number, wSeed: number, base: number) {
  const x = F.conv2d(msgc.tensor(randomArray(N * C * H * H, xSeed), [N, C, H, H]), msgc.tensor(randomArray(C * C, base, -0.3, 0.3), [C, C, 1, 1]), null);
  const w = msgc.tensor(randomArray(O * C, wSeed), [O, C, 1, 1]);
  const r = F.conv2d(msgc.tensor(randomArray(N * O * H * H, base + 2), [N, O, H, H]), msgc.tensor(randomArray(O * O, base + 3, -0.2, 0.2), [O, O, 1, 1]), null);
  const bn = { runningMean: msgc.tensor(randomArray(O, base + 4, -1, 1), [O]), runningVar: msgc.tensor(randomArray(O, base + 5, 0.5, 2), [O]),
    weight: msgc.tensor(randomArray(O, base + 6, -1.5, 1.5), [O]), bias: msgc.tensor(randomArray(O, base + 7, -1, 1), [O]), eps: 1e-5 };
  return { x, w, r, bn };
}

/**
 * The gathered 1×1 conv of G heads under env against float64 and the masked path, alone and with the fused BN, the
 * residual, ReLU6 and the pooled means (bnResidualRelu6); returns both outputs.
 */
function expectPointwise(o: ReturnType<typeof pointwiseOperands>, sv: Float32Array, N: number, C: number, O: number,
  G: number, H: number, env: Record<string, string>) {
  const { x, w, r, bn } = o;
  const s = msgc.tensor(sv, [N, G, C]);
  const conv = reference(x.toFloat32Array(), [N, C, H, H], w.toFloat32Array(), [O, C, 1, 1], sv, G, 1, 0);
  const y = withEnv(env, () => F.msgcConv2d(x, w, s, { heads: G, execution: 'gathered' }));
  expect(closeness(y.toFloat32Array(), conv, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
  const masked = F.msgcConv2d(x, w, s, { heads: G, execution: 'masked' }).toFloat32Array();
  expect(closeness(y.toFloat32Array(), masked, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
  // float64: conv, BN, residual, ReLU6, and the per-channel means
  const got = withEnv(env, () => F.msgcConv2dBnActPooled(x, w, s, bn, { heads: G, execution: 'gathered', residual: r, activation: 'relu6' }));
  const { want, means } = bnResidualRelu6(conv, N, O, H * H, bn, r);
  expect(closeness(got.y.toFloat32Array(), want, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
  expect(closeness(got.pooled.toFloat32Array(), means, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
  return { y, fused: got.y };
}

describe('heads of 16k + 8 outputs on AVX-512', () => {
  test('write nChw16c from inside its blocks (plain NCHW with MSGC_GATHER_SHIFT=0), with the numbers of the reference', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const avx512 = native.gatheredKernels() === 'avx512';
      // MobileNetV2's projection widths: heads of 24 (576->96) and 40 (960->160), blocked input, binary gates and
      // attention-like scales (head 0 of sample 0 empty, head 1 full: gates()); the BN, a residual and ReLU6 fused
      for (const [O, G] of [[96, 4], [160, 4], [48, 2]]) {
        const N = 2, C = 40, H = 6;
        const x = F.conv2d(msgc.tensor(randomArray(N * C * H * H, 51), [N, C, H, H]), msgc.tensor(randomArray(C * C, 52), [C, C, 1, 1]), null);
        const w = msgc.tensor(randomArray(O * C, 53), [O, C, 1, 1]);
        const r = F.conv2d(msgc.tensor(randomArray(N * O * H * H, 54), [N, O, H, H]), msgc.tensor(randomArray(O * O, 55, -0.2, 0.2), [O, O, 1, 1]), null);
        const bn = { runningMean: msgc.tensor(randomArray(O, 56, -1, 1), [O]), runningVar: msgc.tensor(randomArray(O, 57, 0.5, 2), [O]),
          weight: msgc.tensor(randomArray(O, 58, -1.5, 1.5), [O]), bias: msgc.tensor(randomArray(O, 59, -1, 1), [O]), eps: 1e-5 };
        for (const real of [false, true]) {
          const sv = gates(N, G, C, 60, real);
          const s = msgc.tensor(sv, [N, G, C]);
          const run = () => F.msgcConv2dBnActPooled(x, w, s, bn, { heads: G, execution: 'gathered', residual: r, activation: 'relu6' });
          const shifted = withEnv({}, run);
          const plain = withEnv({ MSGC_GATHER_SHIFT: '0' }, run);
          if (avx512) expect(shifted.y.layout).toBe('blocked');
          if (avx512) expect(plain.y.layout).toBe('plain');
          // float64: conv, BN, residual, ReLU6, and the per-channel means
          const conv = reference(x.toFloat32Array(), [N, C, H, H], w.toFloat32Array(), [O, C, 1, 1], sv, G, 1, 0);
          const { want, means } = bnResidualRelu6(conv, N, O, H * H, bn, r);
          for (const got of [shifted, plain]) {
            expect(closeness(got.y.toFloat32Array(), want, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
            expect(closeness(got.pooled.toFloat32Array(), means, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
          }
        }
      }
    }));
  });
});

describe('heads of 80 outputs (1×1)', () => {
  test('five 16-output blocks per kernel call, or one, with and without the input prefetch, match the reference', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      // MobileNetV2's 960->320 projection in small: 1×1 on nChw16c read in place, 7² maps (pixel chunks of 5, the
      // last of 4), binary gates and real scales, head 0 of sample 0 empty and head 1 full (gates())
      const N = 3, C = 64, H = 7, O = 320, G = 4;
      const x = F.conv2d(msgc.tensor(randomArray(N * C * H * H, 61), [N, C, H, H]), msgc.tensor(randomArray(C * C, 62, -0.3, 0.3), [C, C, 1, 1]), null);
      const w = msgc.tensor(randomArray(O * C, 63), [O, C, 1, 1]);
      for (const real of [false, true]) {
        const sv = gates(N, G, C, 64, real);
        const s = msgc.tensor(sv, [N, G, C]);
        const want = reference(x.toFloat32Array(), [N, C, H, H], w.toFloat32Array(), [O, C, 1, 1], sv, G, 1, 0);
        // (five blocks a head: a cap of 2 or 4 leaves one block per call, as 1 does)
        const envs: Record<string, string>[] = [{}, { MSGC_GATHER_NB: '1' }, { MSGC_GATHER_PREFETCH_INPUT: '2' }, { MSGC_GATHER_PREFETCH_INPUT: '0' }];
        for (const env of envs) {
          const y = withEnv(env, () => F.msgcConv2d(x, w, s, { heads: G, execution: 'gathered' }));
          expect(closeness(y.toFloat32Array(), want, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        }
      }
    }));
  });
});

describe('heads of 16 outputs (1×1) with whole samples per thread: broadcasts shared by the heads', () => {
  // The AVX-512 kernel that sorts each sample's channels by the set of output blocks whose heads selected them
  // (msgc_gather_pattern.cc): forced at a small batch (MSGC_GATHER_KERNEL=pattern) and chosen by itself at 4 samples per
  // thread; groups of 1-4 output blocks (O = 16·G, G = 2..8: groups of 2, 3, 4, and 4 + 4; forced, heads of 24 and 40
  // whose blocks two heads share, and of 80), tiles of 5 and 6 pixels (5² maps) and of 12 (7²), binary gates and
  // attention-like real scales (head 0 of sample 0 empty, head 1 full: gates()), the fused BN with a residual, ReLU6
  // and the pooled means.
  const avx512 = native.gatheredKernels() === 'avx512';
  const threads = native.getNumThreads();
  // (O: heads of 16; with Og, forced: heads of 24 and 40, whose blocks two heads share, and of 80)
  for (const [G, H, forced, Og] of [[4, 5, true, 16], [2, 7, true, 16], [3, 5, true, 16], [8, 5, true, 16], [5, 7, true, 16],
    [4, 5, false, 16], [4, 5, true, 24], [4, 7, true, 40], [4, 5, true, 80]] as const) {
    test(`G=${G} (${Og * G} outputs) on ${H}² maps, ${forced ? 'forced at batch 3' : `batch ${4 * threads + 1}, chosen by 'auto'`}`, () => {
      if (forced && !avx512) return;  // (the forced kernel is an error without AVX-512)
      msgc.tidy(() => msgc.noGrad(() => {
        const N = forced ? 3 : 4 * threads + 1, C = 48, O = Og * G;
        const o = pointwiseOperands(N, C, O, H, 81 + G, 83 + G, 82);
        if (avx512) expect(o.x.layout).toBe('blocked');
        const env: Record<string, string> = forced ? { MSGC_GATHER_KERNEL: 'pattern' } : {};
        for (const real of [false, true]) expectPointwise(o, gates(N, G, C, 90 + G, real), N, C, O, G, H, env);
      }));
    });
  }

  test('MSGC_GATHER_KERNEL=pattern where the kernel cannot run is an Error that says what it needs', () => {
    if (!avx512) return;
    msgc.tidy(() => msgc.noGrad(() => {
      const x = msgc.tensor(randomArray(2 * 16 * 5 * 5, 95), [2, 16, 5, 5]);
      const s = msgc.tensor(gates(2, 4, 16, 96, false), [2, 4, 16]);
      // a 3×3 conv
      const w3 = msgc.tensor(randomArray(64 * 16 * 9, 97), [64, 16, 3, 3]);
      expect(() => withEnv({ MSGC_GATHER_KERNEL: 'pattern' }, () => F.msgcConv2d(x, w3, s, { heads: 4, padding: 1, execution: 'gathered' })))
        .toThrow(/MSGC_GATHER_KERNEL=pattern needs AVX-512, a 1×1 stride-1/);
      // heads of 8 outputs
      const w1 = msgc.tensor(randomArray(32 * 16, 98), [32, 16, 1, 1]);
      expect(() => withEnv({ MSGC_GATHER_KERNEL: 'pattern' }, () => F.msgcConv2d(x, w1, s, { heads: 4, execution: 'gathered' })))
        .toThrow(/heads of at least 16 outputs/);
    }));
  });
});

describe('gathered msgcConv2d bad input', () => {
  test('shape errors carry the same messages as the masked path', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const x = msgc.zeros([2, 4, 5, 5]);
      const w = msgc.zeros([8, 4, 3, 3]);
      const s = msgc.zeros([2, 4, 4]);
      const g = { execution: 'gathered' as const };
      expect(() => F.msgcConv2d(x, w, s, { heads: 3, ...g })).toThrow(/msgcConv2d: outChannels \(8\) must be divisible by heads \(3\)/);
      expect(() => F.msgcConv2d(x, msgc.zeros([8, 2, 3, 3]), s, { heads: 4, ...g })).toThrow(/msgcConv2d: weight has shape/);
      expect(() => F.msgcConv2d(x, w, msgc.zeros([2, 2, 4]), { heads: 4, ...g })).toThrow(/msgcConv2d: scale has shape \[2, 2, 4\], expected \[2, 4, 4\]/);
      expect(() => F.msgcConv2d(msgc.zeros([2, 4, 2, 2]), w, s, { heads: 4, ...g })).toThrow(/msgcConv2d: the kernel/);
    }));
  });

  test('the native boundary rejects garbage without crashing', () => {
    const { native } = require('../lib/native');
    const x = msgc.zeros([2, 4, 5, 5]);
    const w = msgc.zeros([8, 4, 3, 3]);
    const s = msgc.zeros([2, 4, 4]);
    const bad: unknown[][] = [
      [], [1, 2, 3], ['a', 'b', 'c', 'd', 'e', 'f'], [x.h, undefined, null, [1], [0], NaN],
      [x.h, w.h, s.h, [1, 1], [0, 0], 0], [x.h, w.h, s.h, [0, 1], [0, 0], 4], [x.h, w.h, s.h, [1, 1], [-1, 0], 4],
      [x.h, x.h, s.h, [1, 1], [0, 0], 4], [x.h, w.h, x.h, [1, 1], [0, 0], 4], [s.h, w.h, s.h, [1, 1], [0, 0], 4],
    ];
    for (const args of bad) expect(() => native.msgcConv2dForwardGathered(...args)).toThrow(/msgcConv2d/);
    const d = msgc.zeros([2, 4, 4]);
    d.dispose();
    expect(() => native.msgcConv2dForwardGathered(x.h, w.h, d.h, [1, 1], [1, 1], 4)).toThrow(/disposed/);
    for (const t of [x, w, s]) t.dispose();
  });
});

describe('narrow heads (1×1, 1 to 8 outputs each) on a channel-blocked input: vectors of pixels', () => {
  // The AVX-512 kernel that runs each head over its own selected channels with vectors of 16 pixels, the input
  // transposed tile by tile (msgc_gather_narrow.cc): taken by the default kernel choice wherever it applies and forced
  // by MSGC_GATHER_KERNEL=narrow; heads of 1-8 outputs, O a multiple of 16 or not (oneDNN's padded nChw16c: 24, 8, 14,
  // 15 outputs), tiles of 96 / 64 / 48 pixels with a partial last one (11² = 121, 9² = 81, 7² = 49 ...), batch 1-3,
  // binary gates and attention-like real scales (head 0 of sample 0 empty, head 1 full: gates()), the fused BN with a
  // residual, ReLU6 and the pooled means.
  const avx512 = native.gatheredKernels() === 'avx512';
  for (const [G, Og, H, N, C] of [[4, 4, 11, 1, 32], [4, 6, 9, 3, 48], [4, 8, 7, 2, 64], [8, 1, 5, 1, 16], [2, 3, 6, 2, 32],
    [3, 5, 4, 1, 48], [2, 7, 9, 1, 32], [4, 2, 13, 2, 16]] as const) {
    test(`G=${G} heads of ${Og} (${G * Og} outputs), ${C} channels on ${H}² maps, batch ${N}`, () => {
      msgc.tidy(() => msgc.noGrad(() => {
        const O = G * Og;
        const o = pointwiseOperands(N, C, O, H, 101 + Og, 103 + G, 102);
        if (avx512) expect(o.x.layout).toBe('blocked');
        const envs: Array<Record<string, string>> = avx512 ? [{}, { MSGC_GATHER_KERNEL: 'narrow' }] : [{}];
        for (const env of envs) {
          for (const real of [false, true]) {
            const { y, fused } = expectPointwise(o, gates(N, G, C, 110 + Og, real), N, C, O, G, H, env);
            // the outputs feed the ops after them in their layout (oneDNN's padded nChw16c when O is not a multiple of
            // 16, whose padding lanes must be zeros)
            const w2 = msgc.tensor(randomArray(16 * O, 111, -0.3, 0.3), [16, O, 1, 1]);
            for (const out of [y, fused]) {
              const next = F.conv2d(out, w2, null).toFloat32Array();
              const nextRef = F.conv2d(msgc.tensor(out.toFloat32Array(), [N, O, H, H]), w2, null).toFloat32Array();
              expect(closeness(next, nextRef, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
            }
          }
        }
      }));
    });
  }

  test("'auto' takes it at batch 1-2 from 64 channels, and keeps the masked path at batch 32 on 28² maps and with 32 channels", () => {
    if (!avx512) return;
    msgc.tidy(() => msgc.noGrad(() => {
      for (const [N, C, H, want] of [[1, 64, 28, true], [2, 96, 8, true], [32, 64, 28, false], [1, 32, 28, false]] as const) {
        const x = F.conv2d(msgc.tensor(randomArray(N * C * H * H, 121), [N, C, H, H]), msgc.tensor(randomArray(C * C, 122, -0.3, 0.3), [C, C, 1, 1]), null);
        const w = msgc.tensor(randomArray(24 * C, 123), [24, C, 1, 1]);
        const s = msgc.tensor(Float32Array.from({ length: N * 4 * C }, (_, i) => (i % 2 ? 0 : 1)), [N, 4, C]);
        const stats = { gathered: !want };
        F.msgcConv2d(x, w, s, { heads: 4, stats });
        expect([N, C, H, stats.gathered]).toEqual([N, C, H, want]);
      }
    }));
  });

  test('MSGC_GATHER_KERNEL=narrow where the kernel cannot run is an Error that says what it needs', () => {
    if (!avx512) return;
    msgc.tidy(() => msgc.noGrad(() => {
      const xb = F.conv2d(msgc.tensor(randomArray(2 * 16 * 25, 131), [2, 16, 5, 5]), msgc.tensor(randomArray(256, 132), [16, 16, 1, 1]), null);
      const s = msgc.tensor(gates(2, 4, 16, 133, false), [2, 4, 16]);
      const run = (x: msgc.Tensor, w: msgc.Tensor, padding = 0) =>
        withEnv({ MSGC_GATHER_KERNEL: 'narrow' }, () => F.msgcConv2d(x, w, s, { heads: 4, padding, execution: 'gathered' }));
      // a 3×3 conv, heads of 16 outputs, a plain input
      expect(() => run(xb, msgc.tensor(randomArray(32 * 16 * 9, 134), [32, 16, 3, 3]), 1)).toThrow(/MSGC_GATHER_KERNEL=narrow needs AVX-512, a 1×1 stride-1/);
      expect(() => run(xb, msgc.tensor(randomArray(64 * 16, 135), [64, 16, 1, 1]))).toThrow(/heads of 1 to 8/);
      expect(() => run(msgc.tensor(randomArray(2 * 16 * 25, 136), [2, 16, 5, 5]), msgc.tensor(randomArray(32 * 16, 137), [32, 16, 1, 1]))).toThrow(/channel-blocked \(nChw16c\) input/);
    }));
  });
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});
