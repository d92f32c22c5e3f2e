// Deferred gate statistics: on the GPU at small batches (deferGateStats) the MSGC blocks leave their gates'
// statistics on the device (native gateSummary) and read them only when the MACs are asked for, so that a forward
// pass never waits for the GPU. MSGC_DEFER_GATE_STATS=1 turns the same path on for CPU tensors, so it is checked
// here on every machine: gateSummary against float64; no statistic read during a forward pass; lastMacs() and
// lastDensities() as when the statistics are read at once (including ResNet-50's consumer bonus, from per-head
// sums), all blocks' statistics read with one copy; the outputs unchanged; the summaries freed once read or replaced.
import * as msgc from '../lib';
import { native } from '../lib/native';
import { deferGateStats, deferredGateStatReads, envSwitch, withEnvSwitches } from '../lib/nn/msgc/tally';
import { randomArray } from './helpers/gradcheck';
import { gatesAtHalfDensity, relativeMaxDiff } from './helpers/models';

function gateSummaryReference(v: Float32Array, N: number, G: number, C: number): number[] {
  let sum = 0, unselected = 0, ones = v.length > 0 ? 1 : 0;
  const heads = new Array(G).fill(0);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      let prod = 1;
      for (let g = 0; g < G; g++) {
        const x = v[(n * G + g) * C + c];
        sum += x;
        heads[g] += x;
        prod *= 1 - x;
        if (x !== 1) ones = 0;
      }
      unselected += prod;
    }
  return [sum, unselected, ones, ...heads];
}


function withDeferral<T>(on: boolean, fn: () => T): T {
  const saved = process.env.MSGC_DEFER_GATE_STATS;
  process.env.MSGC_DEFER_GATE_STATS = on ? '1' : '0';
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.MSGC_DEFER_GATE_STATS;
    else process.env.MSGC_DEFER_GATE_STATS = saved;
  }
}

describe('the MSGC_* switches within a forward pass', () => {
  // An MSGC backbone reads MSGC_DEFER_GATE_STATS and MSGC_COMPACT once, at the start of its forward pass
  // (withEnvSwitches); elsewhere each use reads process.env.
  test('read once inside withEnvSwitches, at each use outside it', () => {
    const ctx = msgc.zeros([1, 8, 1, 1]);
    const compact = process.env.MSGC_COMPACT;
    withDeferral(true, () => {
      expect(deferGateStats(ctx)).toBe(true);
      withEnvSwitches(() => {
        process.env.MSGC_DEFER_GATE_STATS = '0';
        process.env.MSGC_COMPACT = compact === '1' ? '0' : '1';
        // the reading from the start of the pass, and nested passes keep it
        expect(deferGateStats(ctx)).toBe(true);
        expect(envSwitch('MSGC_COMPACT')).toBe(compact);
        withEnvSwitches(() => expect(envSwitch('MSGC_DEFER_GATE_STATS')).toBe('1'));
        if (compact === undefined) delete process.env.MSGC_COMPACT;
        else process.env.MSGC_COMPACT = compact;
      });
      // after the pass, the environment as it is now
      expect(deferGateStats(ctx)).toBe(false);
      expect(() => withEnvSwitches(() => { throw new Error('inside'); })).toThrow('inside');
      process.env.MSGC_DEFER_GATE_STATS = '1';
      expect(deferGateStats(ctx)).toBe(true);
    });
    ctx.dispose();
  });
});

describe('gateSummary', () => {
  test.each([
    [3, 4, 37, 'binary'], [2, 1, 64, 'binary'], [1, 3, 5, 'fractional'], [2, 2, 3, 'open'], [0, 4, 8, 'binary'],
  ] as [number, number, number, string][])('[%d, %d, %d] %s gates against float64', (N, G, C, kind) => {
    const r = randomArray(N * G * C, 5 + N + G + C, 0, 1);
    const v = r.map((x) => (kind === 'open' ? 1 : kind === 'fractional' ? x : x < 0.5 ? 0 : 1));
    const m = msgc.tensor(v, [N, G, C]);
    const got = new msgc.Tensor(native.gateSummary(m.h));
    expect(got.shape).toEqual([3 + G]);
    const ref = gateSummaryReference(v, N, G, C);
    const out = got.toFloat32Array();
    ref.forEach((e, i) => expect(Math.abs(out[i] - e)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(e))));
    expect(out[2]).toBe(kind === 'open' ? 1 : 0);
    m.dispose();
    got.dispose();
  });

  test('bad input throws', () => {
    const t = msgc.zeros([2, 3]);
    expect(() => native.gateSummary(t.h)).toThrow(/mask must have 3 dims|\[N, heads, channels\]/);
    t.dispose();
  });
});

describe('deferred gate statistics (MSGC_DEFER_GATE_STATS=1; on the GPU at batch ≤ 4)', () => {
  test.each([
    ['resnet20', { smallInput: true, msgc: { heads: 4 } }, 32],
    ['resnet20', { smallInput: true, msgc: { heads: 4, attention: true } }, 32],
    ['resnet50', { msgc: { heads: 4 } }, 64],
    ['mobilenetv2', { smallInput: true, msgc: { heads: 4 } }, 32],
    ['densenet74', { msgc: { heads: 4 } }, 32],
  ] as [string, Record<string, unknown>, number][])('%s %o: nothing read during the pass; the same MACs and outputs', (name, opts, size) => {
    msgc.manualSeed(3);
    const model = msgc.models.createModel(name, opts);
    model.eval();
    gatesAtHalfDensity(model);
    const x = msgc.randn([2, 3, size, size], { seed: 4 });
    const base = msgc.liveTensorCount();
    const pass = () => msgc.noGrad(() => msgc.tidy(() => model.forward(x).toFloat32Array()));
    const eager = withDeferral(false, () => ({ y: pass(), macs: model.lastMacs(), densities: model.lastDensities() }));
    expect(eager.macs.ratio).toBeLessThan(0.9);  // (the gates really close)
    const lazy = withDeferral(true, () => {
      const reads = deferredGateStatReads();
      pass();
      const y = pass();  // (a second pass frees the first one's unread summaries)
      expect(deferredGateStatReads()).toBe(reads);  // no statistic was read during either pass
      const held = msgc.liveTensorCount() - base;
      expect(held).toBeGreaterThan(0);  // (the summaries wait on the device)
      const macs = model.lastMacs();
      expect(deferredGateStatReads()).toBe(reads + 1);  // all blocks' statistics in one copy
      expect(msgc.liveTensorCount()).toBe(base);  // read, they are freed
      const densities = model.lastDensities();
      expect(deferredGateStatReads()).toBe(reads + 1);
      return { y, macs, densities, held };
    });
    for (const k of ['perImage', 'dynamic', 'bonus', 'ratio', 'dense', 'constant'] as const) {
      expect(Math.abs(lazy.macs[k] - eager.macs[k])).toBeLessThanOrEqual(1e-9 * Math.abs(eager.macs[k]) + 1e-6);
    }
    expect(lazy.densities).toEqual(eager.densities);
    expect(relativeMaxDiff(lazy.y, eager.y)).toBeLessThan(1e-4);
    x.dispose();
    model.dispose();
  });

  test('disposing a model frees the statistics its last pass left unread', () => {
    const before = msgc.liveTensorCount();
    msgc.manualSeed(5);
    const model = msgc.models.createModel('resnet20', { smallInput: true, msgc: { heads: 4 } });
    model.eval();
    const x = msgc.randn([1, 3, 32, 32], { seed: 6 });
    withDeferral(true, () => msgc.noGrad(() => msgc.tidy(() => { model.forward(x); })));
    x.dispose();
    model.dispose();
    expect(msgc.liveTensorCount()).toBe(before);
  });
});
