// The measured 'auto' execution (F.setMsgcTuning): per op, shape and density it runs each execution a few times,
// then keeps the faster. The timings are replaced here by fixed costs per execution (setMsgcTuningTimer), so the
// test checks the mechanism — alternation, warm-up, the choice, its scope, training left to the rule — and never
// times anything; the numbers against float64.
import * as msgc from '../lib';
import { closeness, numel, randomArray } from './helpers/gradcheck';
import { msgcConvReference } from './helpers/references';
import { narrowHeadsUnite, preferGathered } from '../lib/ops/msgc';

const { F } = msgc;

describe('F.setMsgcTuning: the measured auto execution', () => {
  const N = 3, C = 24, H = 8, W = 8, O = 32, G = 4;
  const xs = [N, C, H, W], ws = [O, C, 3, 3];
  const x = randomArray(numel(xs), 1), w = randomArray(numel(ws), 2);
  // binary gates, about half open
  const s = randomArray(N * G * C, 3).map((v) => (v > 0 ? 1 : 0));
  const ref = msgcConvReference(x, xs, w, ws, s, G, 1, 1);
  const call = (stats: { gathered: boolean }) => msgc.tidy(() => F.msgcConv2d(msgc.tensor(x, xs), msgc.tensor(w, ws),
    msgc.tensor(s, [N, G, C]), { heads: G, padding: 1, stats }).toFloat32Array());

  afterEach(() => {
    F.setMsgcTuning(false);
    F.setMsgcTuningTimer(null);
    F.msgcTuningTable(true);
  });

  test.each(['masked', 'gathered'] as const)('alternates 4 calls of each execution, then keeps the faster (%s)', (fast) => {
    F.setMsgcTuningTimer((path) => (path === fast ? 1 : 5));
    expect(F.setMsgcTuning(true)).toBe(false);
    const ran: boolean[] = [];
    for (let i = 0; i < 12; i++) {
      const stats = { gathered: false };
      const y = call(stats);
      ran.push(stats.gathered);
      expect(closeness(y, ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    }
    // measuring: masked, gathered, masked, ... (8 calls); then the faster one only
    expect(ran.slice(0, 8)).toEqual([false, true, false, true, false, true, false, true]);
    expect(ran.slice(8)).toEqual(new Array(4).fill(fast === 'gathered'));
    const table = F.msgcTuningTable();
    expect(table.size).toBe(1);
    const [key, choice] = [...table][0];
    expect(choice).toBe(fast);
    expect(key).toContain(`${xs.join('x')}`);
    expect(key).toContain('d0.5');
  });

  test('the first call of each execution is a warm-up and does not count', () => {
    // a first call can be slower (weight layouts, caches) or, by chance, faster than the steady state: here
    // gathered's first call is the fastest of all, masked's the slowest, and masked is faster from then on
    const calls = { masked: 0, gathered: 0 };
    F.setMsgcTuningTimer((path) => (calls[path]++ === 0 ? (path === 'gathered' ? 0.5 : 100) : path === 'gathered' ? 5 : 2));
    F.setMsgcTuning(true);
    for (let i = 0; i < 8; i++) call({ gathered: false });
    expect([...F.msgcTuningTable().values()]).toEqual(['masked']);
  });

  test('each shape and density decides apart; a gradient being recorded leaves the choice to the rule', () => {
    F.setMsgcTuningTimer((path) => (path === 'masked' ? 1 : 5));
    F.setMsgcTuning(true);
    for (let i = 0; i < 8; i++) call({ gathered: false });
    // another density (all gates open except one per head: 0.96) is a new key, measured from the start
    const dense = Float32Array.from(s, (_, i) => (i % C === 0 ? 0 : 1));
    const stats = { gathered: false };
    msgc.tidy(() => F.msgcConv2d(msgc.tensor(x, xs), msgc.tensor(w, ws), msgc.tensor(dense, [N, G, C]), { heads: G, padding: 1, stats }));
    expect(stats.gathered).toBe(false);  // (the first measurement: masked)
    expect(F.msgcTuningTable().size).toBe(2);
    // in training the rule decides (the forward and the masked backward are one cost), and nothing is measured
    const rule = { gathered: false };
    F.setMsgcTuning(false);
    msgc.tidy(() => F.msgcConv2d(msgc.tensor(x, xs), msgc.tensor(w, ws, { requiresGrad: true }), msgc.tensor(s, [N, G, C]), { heads: G, padding: 1, stats: rule }));
    F.setMsgcTuning(true);
    const recorded = { gathered: false };
    msgc.tidy(() => F.msgcConv2d(msgc.tensor(x, xs), msgc.tensor(w, ws, { requiresGrad: true }), msgc.tensor(s, [N, G, C]), { heads: G, padding: 1, stats: recorded }));
    expect(recorded.gathered).toBe(rule.gathered);
    expect(F.msgcTuningTable().size).toBe(2);
  });

  test('the fused BatchNorm op is tuned as its own key; off, auto follows the rule', () => {
    F.setMsgcTuningTimer((path) => (path === 'gathered' ? 1 : 5));
    F.setMsgcTuning(true);
    const bn = { runningMean: msgc.zeros([O]), runningVar: msgc.ones([O]), weight: null, bias: null, eps: 1e-5 };
    const runBn = (stats: { gathered: boolean }) => msgc.tidy(() => F.msgcConv2dBnAct(msgc.tensor(x, xs), msgc.tensor(w, ws),
      msgc.tensor(s, [N, G, C]), bn, { heads: G, padding: 1, stats }).toFloat32Array());
    for (let i = 0; i < 8; i++) runBn({ gathered: false });
    const keys = [...F.msgcTuningTable().keys()];
    expect(keys).toHaveLength(1);
    expect(keys[0].startsWith('msgcConv2dBnAct ')).toBe(true);
    const tuned = { gathered: false };
    const y = runBn(tuned);
    expect(tuned.gathered).toBe(true);
    const scaled = Float64Array.from(ref, (v) => v / Math.sqrt(1 + 1e-5));
    expect(closeness(y, scaled, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    expect(() => F.setMsgcTuning('yes' as unknown as boolean)).toThrow(/expected true or false/);
    F.setMsgcTuning(false);
    const ruled = { gathered: false };
    const measured = s.reduce((a, v) => a + (v !== 0 ? 1 : 0), 0) / s.length;
    runBn(ruled);
    // (narrow heads may unite: the rule then reads the share of (sample, channel) pairs some head selects; on
    // AVX-512 the 3×3 heads of 8 run apart, on the per-head rule)
    let united = 0;
    for (let n = 0; n < N; n++)
      for (let c = 0; c < C; c++) if ([...Array(G).keys()].some((i) => s[(n * G + i) * C + c] !== 0)) united++;
    const kernels = msgc.backendInfo().gatheredKernels as 'avx512';
    expect(ruled.gathered).toBe(preferGathered(measured, { outPixels: H * W, batch: N, headChannels: O / G, kernel: 9, channels: C, kernels,
      union: narrowHeadsUnite(O, G, kernels, 9, united / (N * C)), unionDensity: united / (N * C) }));
  });
});
