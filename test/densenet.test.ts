// densenet.test.ts: DenseNet-74 (CondenseNet-74 layout) — MAC accounting against an independent re-implementation of
// the spec's §4.4 formulas and its §6 target, parameter counts against an independent count and spec §5.5, names,
// dense-layer equivalence with gates forced open, dense checkpoints loading into the boosted model, the per-batch MAC
// tally and a small training step.
import * as msgc from '../lib';
import { BackboneOptions } from '../lib/models/common';
import { DenseLayer, DenseNet, densenet74 } from '../lib/models/densenet';
import { native } from '../lib/native';
import { closeness, randomArray } from './helpers/gradcheck';
import { expectOpenGatesMatchDense } from './helpers/models';

const { F } = msgc;
const startLive = msgc.liveTensorCount();
// Many small kernels: on a shared 2-core machine, two-thread OpenMP teams stall whenever another process holds a
// core (this file went from ~10 s to ~45 s under load), so run single-threaded and restore the setting afterwards.
const threads = native.getNumThreads();
msgc.setNumThreads(1);

/**
 * DenseNet-74 takes ~1 s to build (30 M parameters with the heads), so the tests share a few instances, built on
 * first use and disposed in afterAll. MAC counting and parameter checks never change weights; the whole-model tests
 * below say which shared model they modify (and run after the tests that need it unmodified).
 */
const built: Record<string, DenseNet> = {};
const SHARED: Record<string, BackboneOptions> = {
  dense: {},
  boosted: { msgc: { heads: 4 } },
  att: { msgc: { heads: 4, attention: true } },
  smallDense: { numClasses: 10, smallInput: true },
  small: { numClasses: 10, smallInput: true, msgc: { heads: 4 } },
  smallAtt2: { numClasses: 10, smallInput: true, msgc: { heads: 2, attention: true } },
};
function shared(name: keyof typeof SHARED): DenseNet {
  if (!built[name]) {
    msgc.manualSeed(100 + Object.keys(SHARED).indexOf(name));
    built[name] = densenet74(SHARED[name]);
  }
  return built[name];
}

const STAGES = [4, 6, 8, 10, 8];
const GROWTH = [8, 16, 32, 64, 128];

/** MG(C_ctx, C_out, G, r) of spec §4.4 */
const MG = (c: number, o: number, g: number, r: number) => (c + 1) * Math.floor(c / r) + Math.floor(c / r) * o * g;

/** Every dense layer of DenseNet-74 with its input channels and spatial size, for a square input. */
function layers(size: number, small: boolean) {
  const out: { C: number; g: number; hw: number }[] = [];
  let hw = small ? size : Math.floor((size - 1) / 2) + 1;
  let C = 16;
  const pools: { C: number; hw: number }[] = [];
  STAGES.forEach((n, s) => {
    for (let j = 0; j < n; j++) {
      out.push({ C, g: GROWTH[s], hw });
      C += GROWTH[s];
    }
    if (s < STAGES.length - 1) {
      hw = Math.floor(hw / 2);
      pools.push({ C, hw });
    }
  });
  return { layers: out, pools, C, hw, stemHw: small ? size : Math.floor((size - 1) / 2) + 1 };
}

/** Independent §4.4 accounting. */
function specDenseNet(att: boolean, G: number, size: number, classes: number, small = false) {
  const a = layers(size, small);
  let main = 9 * 3 * 16 * a.stemHw * a.stemHw;
  let gated = 0;
  let heads = 0;
  let extra = 0;
  let dgc1 = 0;
  for (const { C, g, hw } of a.layers) {
    const HW = hw * hw;
    const hid = 4 * g;
    const r = C >= 200 ? 8 : 4;
    main += C * HW;
    dgc1 += C * hid * HW;
    gated += C * hid * HW + hid * (9 * g + 1) * HW + (att ? G * hid * HW : 0);
    extra += att ? G * hid * HW : 0;
    heads += MG(C, C, 1, r) + MG(C, hid, G, r) + (att ? MG(C, hid, G, r) : 0) + HW * C;
  }
  for (const { C, hw } of a.pools) main += 4 * C * hw * hw;
  main += a.hw * a.hw * a.C * 2 + a.C * classes;
  return { macs: { dense: main + gated - extra, main, gated, heads, extra }, dgc1 };
}

/** Independent parameter count: dense backbone, and the gate (+ attention) heads. */
function specParams(classes: number, G = 4) {
  const a = layers(224, false);
  let dense = 3 * 16 * 9;
  let heads = 0;
  let att = 0;
  const head = (c: number, o: number, g: number, r: number) => {
    const b = Math.floor(c / r);
    return c * b + 2 * b + b * o * g + o * g; // conv1, BN, conv2 + bias
  };
  for (const { C, g } of a.layers) {
    const hid = 4 * g;
    const r = C >= 200 ? 8 : 4;
    dense += 2 * C + C * hid + 2 * hid + hid * g * 9;
    heads += head(C, C, 1, r) + head(C, hid, G, r);
    att += head(C, hid, G, r);
  }
  dense += 2 * a.C + a.C * classes + classes;
  return { dense, heads, att };
}

describe('MAC accounting', () => {
  test.each([
    ['boosted', 224],
    ['boosted', 64],
    ['att', 224],
    ['att', 97],
    ['small', 32],
    ['small', 16],
    ['smallAtt2', 32],
  ] as const)('%s at %d² matches the §4.4 formulas', (name, size) => {
    const o = SHARED[name];
    const { heads, attention } = o.msgc as { heads: number; attention?: boolean };
    const spec = specDenseNet(!!attention, heads, size, o.numClasses ?? 1000, !!o.smallInput);
    expect(msgc.countMacs(shared(name), [3, size, size])).toEqual(spec.macs);
  });

  test('dense F_ori ≈ 2061 M: the spec §6 target 0.258 · F_ori lands on ≈ 532 M', () => {
    const dm = msgc.countMacs(shared('dense'), [3, 224, 224]);
    expect(dm).toEqual({ dense: dm.main, main: dm.main, gated: 0, heads: 0, extra: 0 });
    expect(dm.dense).toBe(specDenseNet(false, 4, 224, 1000).macs.dense);
    expect(dm.dense).toBe(2060927968);
    expect(Math.round((0.258 * dm.dense) / 1e6)).toBe(532);
    // the boosted models share F_ori
    expect(msgc.countMacs(shared('boosted'), [3, 224, 224]).dense).toBe(dm.dense);
    expect(msgc.countMacs(shared('att'), [3, 224, 224]).dense).toBe(dm.dense);
  });

  test('the per-part table sums to the total', () => {
    const { total, rows } = msgc.macsTable(shared('boosted'), [3, 224, 224]);
    expect(rows.length).toBe(1 + 36 + 4 + 1);
    expect(rows[1].name).toBe('features.denseblock1.denselayer1');
    expect(rows.reduce((a, r) => a + r.macs.main + r.macs.gated + r.macs.heads, 0)).toBe(total.main + total.gated + total.heads);
  });
});

describe('parameters', () => {
  test('dense backbone ≈ 16.84 M and heads +13.26 M / +20.44 M with attention (spec §5.5)', () => {
    const spec = specParams(1000);
    const d = shared('dense');
    const b = shared('boosted');
    const ba = shared('att');
    expect(d.numParameters()).toBe(spec.dense);
    expect(b.numParameters() - d.numParameters()).toBe(spec.heads);
    expect(ba.numParameters() - b.numParameters()).toBe(spec.att);
    expect(d.numParameters() / 1e6).toBeCloseTo(16.84, 2);
    expect((b.numParameters() - d.numParameters()) / 1e6).toBeCloseTo(13.26, 2);
    expect((ba.numParameters() - d.numParameters()) / 1e6).toBeCloseTo(20.44, 2);
  });

  test('torchvision-like names; the boosted model adds only head parameters', () => {
    const dsd = shared('dense').stateDict();
    const shape = (k: string) => dsd[k].shape;
    expect(shape('features.conv0.weight')).toEqual([16, 3, 3, 3]);
    expect(shape('features.denseblock1.denselayer1.norm1.weight')).toEqual([16]);
    expect(shape('features.denseblock1.denselayer1.conv1.weight')).toEqual([32, 16, 1, 1]);
    expect(shape('features.denseblock1.denselayer1.norm2.running_mean')).toEqual([32]);
    expect(shape('features.denseblock1.denselayer1.conv2.weight')).toEqual([8, 32, 3, 3]);
    expect(shape('features.denseblock5.denselayer8.conv1.weight')).toEqual([512, 1936, 1, 1]);
    expect(shape('features.norm5.weight')).toEqual([2064]);
    expect(shape('classifier.weight')).toEqual([1000, 2064]);
    expect(shape('classifier.bias')).toEqual([1000]);
    expect(Object.keys(dsd).some((k) => k.includes('transition') || k.includes('conv0.bias'))).toBe(false);
    const bsd = shared('att').stateDict();
    for (const k of Object.keys(dsd)) expect(bsd[k].shape).toEqual(dsd[k].shape);
    const extra = Object.keys(bsd).filter((k) => !(k in dsd));
    for (const k of extra) expect(k).toMatch(/^features\.denseblock\d\.denselayer\d+\.(mask1|mask2|att2)\.(conv1|bn|conv2)\./);
    expect(extra.filter((k) => k.endsWith('conv2.bias')).length).toBe(36 * 3);
    // squeeze rate 4 below 200 input channels, 8 from 200 on
    expect(bsd['features.denseblock3.denselayer1.mask1.conv1.weight'].shape).toEqual([36, 144, 1, 1]);
    expect(bsd['features.denseblock3.denselayer8.mask2.conv1.weight'].shape).toEqual([46, 368, 1, 1]);
    expect(bsd['features.denseblock3.denselayer8.mask2.conv2.weight'].shape).toEqual([4 * 128, 46, 1, 1]);
    expect(bsd['features.denseblock3.denselayer7.att2.conv1.weight'].shape).toEqual([42, 336, 1, 1]);
  });

  test('init: convs N(0, √(2/(k²·out))), classifier bias 0, heads keep theirs', () => {
    const sd = shared('att').stateDict();
    const std = (k: string) => {
      const v = sd[k].toFloat32Array();
      let s = 0;
      for (const x of v) s += x * x;
      return Math.sqrt(s / v.length);
    };
    expect(std('features.denseblock5.denselayer8.conv1.weight') / Math.sqrt(2 / 512)).toBeCloseTo(1, 2);
    expect(std('features.denseblock4.denselayer1.conv2.weight') / Math.sqrt(2 / (9 * 64))).toBeCloseTo(1, 1);
    expect(sd['classifier.bias'].toFloat32Array().every((v) => v === 0)).toBe(true);
    expect(std('classifier.weight')).toBeLessThan(1 / Math.sqrt(2064)); // torch's default U(±1/√fan_in) kept
    expect(sd['features.norm5.weight'].toFloat32Array().every((v) => v === 1)).toBe(true);
    expect(sd['features.denseblock2.denselayer1.mask1.conv2.bias'].toFloat32Array().every((v) => v === 2)).toBe(true);
    expect(sd['features.denseblock2.denselayer1.mask2.conv2.bias'].toFloat32Array().every((v) => v === 2)).toBe(true);
    expect(sd['features.denseblock2.denselayer1.att2.conv2.weight'].toFloat32Array().every((v) => v === 0)).toBe(true);
    expect(sd['features.denseblock2.denselayer1.att2.conv2.bias'].toFloat32Array().every((v) => v === 1)).toBe(true);
  });
});

/** Copies `from`'s weights into `to` by name; forces every gate open (conv2 weight 0, bias +50). */
function openGates(to: msgc.nn.Module, from: msgc.nn.Module, headKey: RegExp): void {
  const r = to.loadStateDict(from.stateDict(), { strict: false });
  expect(r.unexpectedKeys).toEqual([]);
  expect(r.missingKeys.length).toBeGreaterThan(0);
  for (const k of r.missingKeys) expect(k).toMatch(headKey);
  // logits = +50 whatever the context (deep random-init features can make W2·h large)
  for (const [name, p] of to.namedParameters()) {
    if (/(^|\.)mask\d\.conv2\.weight$/.test(name)) p.assign(new Float32Array(p.size));
    if (/(^|\.)mask\d\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(50));
  }
}

function randomiseStats(m: msgc.nn.Module): void {
  let seed = 40;
  for (const [name, b] of m.namedBuffers()) {
    if (name.endsWith('running_mean')) b.assign(randomArray(b.size, seed++, -0.2, 0.2));
    if (name.endsWith('running_var')) b.assign(randomArray(b.size, seed++, 0.5, 1.5));
  }
}

describe('DenseLayer with gates open equals its dense layer', () => {
  test.each([
    ['C_in 16, g 8', 16, 8, 4, false],
    ['C_in 24, g 8, attention', 24, 8, 4, true],
    ['C_in 40, g 16, 2 heads', 40, 16, 2, false],
    ['C_in 208 (squeeze rate 8), g 8, attention', 208, 8, 4, true],
  ] as [string, number, number, number, boolean][])('%s', (_, C, g, heads, attention) => {
    msgc.manualSeed(3);
    const dense = new DenseLayer(C, g, null);
    const boosted = new DenseLayer(C, g, { heads, attention });
    expect(boosted.squeezeRate).toBe(C >= 200 ? 8 : 4);
    randomiseStats(dense);
    for (const [name, p] of dense.namedParameters()) if (p.shape.length === 1) p.assign(randomArray(p.size, name.length, -0.5, 1.5));
    openGates(boosted, dense, /^(mask1|mask2|att2)\./);
    dense.eval();
    boosted.eval();
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * C * 6 * 6, 7), [2, C, 6, 6]);
      const a = msgc.noGrad(() => dense.forward(x));
      const b = msgc.noGrad(() => boosted.forward(x));
      expect(b.shape).toEqual([2, C + g, 6, 6]);
      const av = a.toFloat32Array();
      expect(closeness(b.toFloat32Array(), av, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      // the first C channels are the input itself
      expect(Array.from(av.subarray(0, C * 36))).toEqual(Array.from(x.toFloat32Array().subarray(0, C * 36)));
      expect(boosted.lastTally!.density).toEqual([1, 1]);
      expect(boosted.lastTally!.bonus).toBe(0);
      expect(boosted.lastTally!.dynamic).toBe(boosted.countMacs(C, 6, 6).macs.gated);
    });
    dense.dispose();
    boosted.dispose();
  });

  test('the gate context is taken after the pre-activation BN-ReLU', () => {
    // heads that open every gate for a positive context and close them all for a zero one; the input is positive,
    // so only ReLU(BN(x)) (not x itself) can turn the context off
    msgc.manualSeed(4);
    const layer = new DenseLayer(16, 8, { heads: 4, attention: false });
    for (const [name, p] of layer.namedParameters()) {
      if (/^mask\d\.conv[12]\.weight$/.test(name)) p.assign(new Float32Array(p.size).fill(1));
      if (/^mask\d\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(-1));
    }
    layer.eval();
    const x = msgc.tensor(randomArray(2 * 16 * 4 * 4, 8, 1, 2), [2, 16, 4, 4]);
    for (const [shift, density] of [[-100, 0], [100, 1]]) {
      layer.norm1.bias!.assign(new Float32Array(16).fill(shift));
      msgc.tidy(() => {
        msgc.noGrad(() => layer.forward(x));
      });
      expect(layer.lastTally!.density).toEqual([density, density]);
    }
    x.dispose();
    layer.dispose();
  });
});

/** Every gate of the heads matching `re` fixed open or closed (conv2 weight 0, bias ±50), whatever the context. */
function forceGates(m: msgc.nn.Module, re: RegExp, open: boolean): void {
  for (const [name, p] of m.namedParameters()) {
    if (!re.test(name)) continue;
    if (name.endsWith('conv2.weight')) p.assign(new Float32Array(p.size));
    if (name.endsWith('conv2.bias')) p.assign(new Float32Array(p.size).fill(open ? 50 : -50));
  }
}

describe('whole model', () => {
  // runs first: it needs the shared small models with their init (the tests after it modify them)
  test.each(['small', 'smallAtt2'] as const)('training step (%s): finite gradients for every parameter, ratio in (0, 1.01]', (name) => {
    msgc.manualSeed(5);
    const m = shared(name);
    m.train();
    msgc.tidy(() => {
      // 48² rather than 32²: at 32² the heads' fixed cost (~20 M) alone is 12% of F_ori (168 M)
      const x = msgc.tensor(randomArray(2 * 3 * 48 * 48, 14), [2, 3, 48, 48]);
      const logits = m.forward(x);
      expect(logits.shape).toEqual([2, 10]);
      const lm = m.lastMacs();
      expect(lm.ratio).toBeGreaterThan(0.7); // ~88% of the gates are on at the init (bias 2.0)
      expect(lm.ratio).toBeLessThanOrEqual(1.01);
      expect(lm.dynamicTensor).not.toBeNull();
      expect(Math.abs(lm.dynamicTensor!.item() - lm.dynamic) / lm.dynamic).toBeLessThan(1e-5);
      const loss = F.add(F.crossEntropy(logits, [3, 7]), F.scale(lm.dynamicTensor!, 1 / lm.dense));
      loss.backward();
    });
    let n = 0;
    for (const [pname, p] of m.namedParameters()) {
      expect([pname, p.grad !== null]).toEqual([pname, true]);
      expect([pname, p.grad!.toFloat32Array().every(Number.isFinite)]).toEqual([pname, true]);
      if (/mask\d\.conv2\.bias$/.test(pname)) expect(p.grad!.toFloat32Array().some((v) => v !== 0)).toBe(true);
      n++;
    }
    expect(n).toBe(m.parameters().length);
  });

  test('a dense checkpoint loads into the boosted model: same outputs with gates open, only head keys missing', () => {
    // modifies the shared smallAtt2 model (dense weights and statistics, gates forced open)
    const dense = shared('smallDense');
    const boosted = shared('smallAtt2');
    randomiseStats(dense);
    const r = boosted.loadStateDict(dense.stateDict(), { strict: false });
    expect(r.unexpectedKeys).toEqual([]);
    expect(r.missingKeys.length).toBe(36 * 3 * 8); // mask1/mask2/att2: conv1.weight, bn (2 + 3 buffers), conv2 weight + bias
    for (const k of r.missingKeys) expect(k).toMatch(/^features\.denseblock\d\.denselayer\d+\.(mask1|mask2|att2)\./);
    // the full-size models too
    const big = shared('att').loadStateDict(shared('dense').stateDict(), { strict: false });
    expect(big.unexpectedKeys).toEqual([]);
    for (const k of big.missingKeys) expect(k).toMatch(/^features\.denseblock\d\.denselayer\d+\.(mask1|mask2|att2)\./);
    forceGates(boosted, /\.mask\d\./, true);
    expectOpenGatesMatchDense(dense, boosted);
  });

  test('closed MSGC gates credit the unused 1×1-conv outputs as bonus', () => {
    // modifies the shared small model
    const m = shared('small');
    forceGates(m, /\.mask1\./, true); // inputs open
    forceGates(m, /\.mask2\./, false); // every head closed
    m.eval();
    msgc.tidy(() => {
      msgc.noGrad(() => m.forward(msgc.tensor(randomArray(2 * 3 * 16 * 16, 13), [2, 3, 16, 16])));
      const lm = m.lastMacs();
      const spec = specDenseNet(false, 4, 16, 10, true);
      expect(lm.dynamic).toBe(spec.dgc1);
      expect(lm.bonus).toBe(spec.dgc1);
      expect(lm.perImage).toBe(spec.macs.main + spec.macs.heads);
      expect(Object.values(m.lastDensities())).toEqual(Array.from({ length: 36 }, () => [1, 0]));
    });
  });

  test('a custom configuration builds and counts', () => {
    const m = new DenseNet({ stages: [2, 2], growth: [8, 16] }, { numClasses: 5, smallInput: true, msgc: { heads: 4 } });
    expect(m.numFeatures).toBe(16 + 2 * 8 + 2 * 16);
    expect(Object.keys(m.stateDict())).toContain('features.denseblock2.denselayer2.mask2.conv2.bias');
    msgc.tidy(() => {
      const y = msgc.noGrad(() => m.eval().forward(msgc.tensor(randomArray(1 * 3 * 8 * 8, 15), [1, 3, 8, 8])));
      expect(y.shape).toEqual([1, 5]);
    });
    expect(() => new DenseNet({ stages: [2], growth: [8, 8] })).toThrow(/same non-zero length/);
    expect(() => new DenseLayer(16, 6, { heads: 4, attention: false })).toThrow(/not divisible by 4 heads/);
    expect(() => densenet74({ msgc: { heads: 3 } })).toThrow(/DenseNet: growth 8 is not divisible by 3 heads/);
    m.dispose();
  });
});

afterAll(() => {
  msgc.setNumThreads(threads);
  for (const m of Object.values(built)) m.dispose();
  expect(msgc.liveTensorCount()).toBe(startLive);
});
