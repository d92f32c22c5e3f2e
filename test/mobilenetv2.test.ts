// mobilenetv2.test.ts: MobileNetV2 — MAC accounting against the spec's table (§4.5) and an independent
// re-implementation of the §4.4 formulas, parameter counts against torchvision's, torchvision names, host-block
// equivalence with gates forced open, dense checkpoints loading into the boosted model, the per-batch MAC tally and a
// small training step.
import * as msgc from '../lib';
import { InvertedResidual, mobilenetV2 } from '../lib/models/mobilenetv2';
import { native } from '../lib/native';
import { closeness, randomArray } from './helpers/gradcheck';
import { expectOpenGatesMatchDense } from './helpers/models';

const { F } = msgc;
const startLive = msgc.liveTensorCount();
// Many small kernels: on a shared 2-core machine, two-thread OpenMP teams stall whenever another process holds a
// core (this file went from ~10 s to ~45 s under load), so run single-threaded and restore the setting afterwards.
const threads = native.getNumThreads();
msgc.setNumThreads(1);

/** MG(C_ctx, C_out, G, r) of spec §4.4 */
const MG = (c: number, o: number, g: number, r: number) => (c + 1) * Math.floor(c / r) + Math.floor(c / r) * o * g;

/** Independent §4.4 accounting for MobileNetV2 (width 1.0); `small`: stride-1 stem and CIFAR stage strides. */
function specMbv2(att: boolean, G: number, size: number, classes: number, small = false) {
  const settings = [
    [1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1],
  ];
  const cifarStrides = [1, 1, 2, 1, 2, 1, 1];
  const out = (x: number, s: number) => Math.floor((x + 2 - 3) / s) + 1;
  let hw = out(size, small ? 1 : 2);
  let main = 3 * 32 * 9 * hw * hw + 32 * hw * hw;
  let gated = 0;
  let heads = 0;
  let extra = 0;
  let pwdw = 0; // Σ (F_pw + F_dw): the bonus when no head selects anything
  let inp = 32;
  settings.forEach(([t, c, n, s], stage) => {
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? (small ? cifarStrides[stage] : s) : 1;
      const hid = inp * t;
      const o = out(hw, stride);
      const Fpw = t === 1 ? 0 : inp * hid * hw * hw + hid * hw * hw;
      const Fdw = 9 * hid * o * o + hid * o * o;
      main += Fpw + Fdw;
      pwdw += Fpw + Fdw;
      gated += hid * c * o * o + (att ? G * hid * o * o : 0);
      extra += att ? G * hid * o * o : 0;
      heads += MG(inp, hid, G, 4) * (att ? 2 : 1) + hw * hw * inp;
      inp = c;
      hw = o;
    }
  });
  main += hw * hw * 320 * 1280 + 1280 * hw * hw + 1280 * classes + 1280 * hw * hw;
  return { macs: { dense: main + gated - extra, main, gated, heads, extra }, pwdw };
}

describe('MAC accounting', () => {
  test('MobileNetV2 without attention reproduces spec §4.5 to the unit', () => {
    const m = mobilenetV2({ msgc: { heads: 4 } });
    expect(msgc.countMacs(m, [3, 224, 224])).toEqual({ dense: 306942784, main: 188828480, gated: 118114304, heads: 1742832, extra: 0 });
    m.dispose();
  });

  test.each([
    [false, 4, 224, 1000, false],
    [true, 4, 224, 1000, false],
    [true, 2, 224, 1000, false],
    [false, 4, 32, 10, true],
    [true, 4, 32, 100, true],
  ])('attention %s, G %d at %d² with %d classes (small input %s) matches the §4.4 formulas', (att, G, size, classes, small) => {
    const m = mobilenetV2({ msgc: { heads: G, attention: att }, numClasses: classes, smallInput: small });
    expect(msgc.countMacs(m, [3, size, size])).toEqual(specMbv2(att, G, size, classes, small).macs);
    m.dispose();
  });

  test('the dense model counts F_ori as its whole cost', () => {
    const d = mobilenetV2();
    const dm = msgc.countMacs(d, [3, 224, 224]);
    expect(dm).toEqual({ dense: 306942784, main: 306942784, gated: 0, heads: 0, extra: 0 });
    d.dispose();
  });

  test('the per-part table sums to the total', () => {
    const m = mobilenetV2({ msgc: { heads: 4 } });
    const { total, rows } = msgc.macsTable(m, [3, 224, 224]);
    expect(rows.map((r) => r.name)).toEqual([...Array.from({ length: 19 }, (_, i) => `features.${i}`), 'avgpool+classifier']);
    expect(rows.reduce((a, r) => a + r.macs.main + r.macs.gated + r.macs.heads, 0)).toBe(total.main + total.gated + total.heads);
    m.dispose();
  });
});

describe('parameters', () => {
  test("dense MobileNetV2 has torchvision's 3,504,872 parameters", () => {
    const m = mobilenetV2();
    expect(m.numParameters()).toBe(3504872);
    m.dispose();
  });

  test('head overhead matches spec §5.5 (+0.81 M, +1.63 M with attention)', () => {
    const d = mobilenetV2();
    const over = (attention: boolean) => {
      const b = mobilenetV2({ msgc: { heads: 4, attention } });
      const r = (b.numParameters() - d.numParameters()) / 1e6;
      b.dispose();
      return r;
    };
    expect(over(false)).toBeCloseTo(0.81, 2);
    expect(over(true)).toBeCloseTo(1.63, 2);
    d.dispose();
  });

  test('torchvision names; the boosted model adds only head parameters', () => {
    const d = mobilenetV2();
    const b = mobilenetV2({ msgc: { heads: 4, attention: true } });
    const dsd = d.stateDict();
    const shape = (k: string) => dsd[k].shape;
    expect(shape('features.0.0.weight')).toEqual([32, 3, 3, 3]);
    expect(shape('features.0.1.running_var')).toEqual([32]);
    // t = 1: dw [conv, bn], project conv, BN
    expect(shape('features.1.conv.0.0.weight')).toEqual([32, 1, 3, 3]);
    expect(shape('features.1.conv.0.1.weight')).toEqual([32]);
    expect(shape('features.1.conv.1.weight')).toEqual([16, 32, 1, 1]);
    expect(shape('features.1.conv.2.num_batches_tracked')).toEqual([]);
    // t = 6: pw [conv, bn], dw [conv, bn], project conv, BN
    expect(shape('features.2.conv.0.0.weight')).toEqual([96, 16, 1, 1]);
    expect(shape('features.2.conv.1.0.weight')).toEqual([96, 1, 3, 3]);
    expect(shape('features.2.conv.2.weight')).toEqual([24, 96, 1, 1]);
    expect(shape('features.2.conv.3.bias')).toEqual([24]);
    expect(shape('features.17.conv.2.weight')).toEqual([320, 960, 1, 1]);
    expect(shape('features.18.0.weight')).toEqual([1280, 320, 1, 1]);
    expect(shape('features.18.1.weight')).toEqual([1280]);
    expect(shape('classifier.1.weight')).toEqual([1000, 1280]);
    expect(shape('classifier.1.bias')).toEqual([1000]);
    expect(Object.keys(dsd).some((k) => k.startsWith('features.19') || k.startsWith('classifier.0'))).toBe(false);
    const bsd = b.stateDict();
    for (const k of Object.keys(dsd)) expect(bsd[k].shape).toEqual(dsd[k].shape);
    const extra = Object.keys(bsd).filter((k) => !(k in dsd));
    for (const k of extra) expect(k).toMatch(/^features\.(\d|1[0-7])\.(mask|att)\.(conv1|bn|conv2)\./);
    expect(extra.filter((k) => k.endsWith('mask.conv2.bias')).length).toBe(17);
    expect(extra.filter((k) => k.endsWith('att.conv2.bias')).length).toBe(17);
    expect(bsd['features.3.mask.conv1.weight'].shape).toEqual([6, 24, 1, 1]); // floor(24 / 4) hidden units
    expect(bsd['features.3.mask.conv2.weight'].shape).toEqual([4 * 144, 6, 1, 1]);
    d.dispose();
    b.dispose();
  });

  test('init: Kaiming fan_out convs, BN 1/0, classifier N(0, 0.01) with zero bias, heads keep theirs', () => {
    msgc.manualSeed(21);
    const m = mobilenetV2({ msgc: { heads: 4, attention: true } });
    const sd = m.stateDict();
    const std = (k: string) => {
      const v = sd[k].toFloat32Array();
      let s = 0;
      for (const x of v) s += x * x;
      return Math.sqrt(s / v.length);
    };
    expect(std('features.18.0.weight')).toBeCloseTo(Math.sqrt(2 / 1280), 3);
    expect(std('features.17.conv.1.0.weight') / Math.sqrt(2 / (960 * 9))).toBeCloseTo(1, 1);
    expect(std('classifier.1.weight')).toBeCloseTo(0.01, 3);
    expect(sd['classifier.1.bias'].toFloat32Array().every((v) => v === 0)).toBe(true);
    expect(sd['features.5.conv.3.weight'].toFloat32Array().every((v) => v === 1)).toBe(true);
    expect(sd['features.5.mask.conv2.bias'].toFloat32Array().every((v) => v === 2)).toBe(true);
    expect(sd['features.5.att.conv2.weight'].toFloat32Array().every((v) => v === 0)).toBe(true);
    expect(sd['features.5.att.conv2.bias'].toFloat32Array().every((v) => v === 1)).toBe(true);
    m.dispose();
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
    if (/(^|\.)mask\.conv2\.weight$/.test(name)) p.assign(new Float32Array(p.size));
    if (/(^|\.)mask\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(50));
  }
}

function randomiseStats(m: msgc.nn.Module): void {
  let seed = 40;
  for (const [name, b] of m.namedBuffers()) {
    if (name.endsWith('running_mean')) b.assign(randomArray(b.size, seed++, -0.2, 0.2));
    if (name.endsWith('running_var')) b.assign(randomArray(b.size, seed++, 0.5, 1.5));
  }
}

describe('InvertedResidual with gates open equals its dense block', () => {
  test.each([
    ['t=1, stride 1, residual', 16, 16, 1, 1, false],
    ['t=1, stride 1, 32→16 (no residual), attention', 32, 16, 1, 1, true],
    ['t=6, stride 1, residual', 8, 8, 1, 6, false],
    ['t=6, stride 1, residual, attention', 8, 8, 1, 6, true],
    ['t=6, stride 2', 8, 16, 2, 6, false],
    ['t=6, stride 2, attention', 8, 16, 2, 6, true],
  ] as [string, number, number, number, number, boolean][])('%s', (_, inp, oup, stride, t, attention) => {
    msgc.manualSeed(3);
    const dense = new InvertedResidual(inp, oup, stride, t, null);
    const boosted = new InvertedResidual(inp, oup, stride, t, { heads: 4, attention });
    expect(dense.useResidual).toBe(stride === 1 && inp === oup);
    // non-trivial BN statistics and affine parameters so that eval mode is meaningful
    randomiseStats(dense);
    for (const [name, p] of dense.namedParameters()) if (p.shape.length === 1) p.assign(randomArray(p.size, name.length, 0.5, 1.5));
    openGates(boosted, dense, /^(mask|att)\./);
    dense.eval();
    boosted.eval();
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * inp * 8 * 8, 7), [2, inp, 8, 8]);
      const a = msgc.noGrad(() => dense.forward(x));
      const b = msgc.noGrad(() => boosted.forward(x));
      expect(b.shape).toEqual([2, oup, 8 / stride, 8 / stride]);
      expect(closeness(b.toFloat32Array(), a.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      // every gate open: F_dyn = F_dgc, no bonus
      expect(boosted.lastTally!.density).toEqual([1]);
      expect(boosted.lastTally!.bonus).toBe(0);
      expect(boosted.lastTally!.dynamic).toBe(boosted.countMacs(inp, 8, 8).macs.gated);
    });
    dense.dispose();
    boosted.dispose();
  });
});

describe('whole model', () => {
  test('a dense checkpoint loads into the boosted model: same outputs with gates open, only head keys missing', () => {
    msgc.manualSeed(11);
    const dense = mobilenetV2({ numClasses: 10, smallInput: true });
    const boosted = mobilenetV2({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention: true } });
    randomiseStats(dense);
    const r = boosted.loadStateDict(dense.stateDict(), { strict: false });
    expect(r.unexpectedKeys).toEqual([]);
    expect(r.missingKeys.length).toBe(17 * 2 * 8); // mask/att: conv1.weight, bn (weight, bias, 3 buffers), conv2 weight + bias
    for (const k of r.missingKeys) expect(k).toMatch(/^features\.\d+\.(mask|att)\./);
    openGates(boosted, dense, /^features\.\d+\.(mask|att)\./);
    expectOpenGatesMatchDense(dense, boosted);
    dense.dispose();
    boosted.dispose();
  });

  test('closed gates credit the whole expansion + depthwise cost as bonus', () => {
    const m = mobilenetV2({ numClasses: 10, smallInput: true, msgc: { heads: 4 } });
    for (const [name, p] of m.namedParameters()) {
      if (/mask\.conv2\.weight$/.test(name)) p.assign(new Float32Array(p.size));
      if (/mask\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(-50)); // every head closed
    }
    m.eval();
    msgc.tidy(() => {
      msgc.noGrad(() => m.forward(msgc.tensor(randomArray(2 * 3 * 16 * 16, 13), [2, 3, 16, 16])));
      const lm = m.lastMacs();
      const spec = specMbv2(false, 4, 16, 10, true);
      expect(lm.dynamic).toBe(0);
      expect(lm.bonus).toBe(spec.pwdw);
      expect(lm.perImage).toBe(spec.macs.main + spec.macs.heads - spec.pwdw);
      expect(lm.dynamicTensor).toBeNull();
      expect(Object.values(m.lastDensities())).toEqual(Array.from({ length: 17 }, () => [0]));
    });
    m.dispose();
  });

  test.each([false, true])('training step (attention %s): finite gradients for every parameter, ratio in (0, 1.01]', (attention) => {
    msgc.manualSeed(5);
    const m = mobilenetV2({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention } });
    m.train();
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * 3 * 32 * 32, 14), [2, 3, 32, 32]);
      const logits = m.forward(x);
      expect(logits.shape).toEqual([2, 10]);
      const lm = m.lastMacs();
      expect(lm.ratio).toBeGreaterThan(0);
      expect(lm.ratio).toBeLessThanOrEqual(1.01);
      expect(lm.ratio).toBeGreaterThan(0.7); // ~88% of the gates are on at the init (bias 2.0)
      expect(lm.dynamicTensor).not.toBeNull();
      expect(Math.abs(lm.dynamicTensor!.item() - lm.dynamic) / lm.dynamic).toBeLessThan(1e-5);
      const loss = F.add(F.crossEntropy(logits, [3, 7]), F.scale(lm.dynamicTensor!, 1 / lm.dense));
      loss.backward();
    });
    let withGrad = 0;
    for (const [name, p] of m.namedParameters()) {
      expect([name, p.grad !== null]).toEqual([name, true]);
      const g = p.grad!.toFloat32Array();
      expect([name, g.every(Number.isFinite)]).toEqual([name, true]);
      if (/mask\.conv2\.bias$/.test(name)) expect(g.some((v) => v !== 0)).toBe(true);
      withGrad++;
    }
    expect(withGrad).toBe(m.parameters().length);
    m.dispose();
  });
});

// In training the projection takes the depthwise conv's ReLU6 (F.msgcConv2d's inputActivation), whose derivative its
// backward applies: the block's output and every parameter's gradient equal those of the block written out with the
// ReLU6 as its own op (each op of which is checked against float64 elsewhere), the same gate noise (a fixed seed).
// The depthwise BN's scale is 4 so that both of ReLU6's clamps are hit; 7² maps take the 1×1 kernels of our own,
// 14² the per-sample path.
test.each([7, 14])('training: the block through the projection\'s fused ReLU6 equals the composition (%i²)', (H) => {
  msgc.manualSeed(3);
  const b = new InvertedResidual(16, 16, 1, 6, { heads: 4, attention: false });
  b.train();
  const dwBn = b.dw.layers[1] as msgc.nn.BatchNorm2d;
  dwBn.weight!.assign(new Float32Array(dwBn.weight!.size).fill(4));
  const x = msgc.tensor(randomArray(4 * 16 * H * H, 91), [4, 16, H, H]);
  const params = b.parameters();
  const run = (written: boolean) => msgc.tidy(() => {
    for (const p of params) if (p.grad) { p.grad.dispose(); p.grad = null; }
    msgc.manualSeed(11);
    let y: msgc.Tensor;
    if (!written) {
      y = b.forward(x);
      // (no ReLU6 node between the depthwise BN and the projection)
      const names: string[] = [];
      const walk = (t: msgc.Tensor, depth: number) => {
        if (!t._node || depth > 4) return;
        names.push(t._node.name);
        for (const i of t._node.inputs) if (i) walk(i, depth + 1);
      };
      walk(y, 0);
      expect(names).toContain('msgcConv2d');
      expect(names).not.toContain('relu6');
    } else {
      const m = b.mask!.forward(F.adaptiveAvgPool2d(x, 1));
      const h = b.dw.forward(b.pw!.forward(x));
      y = b.projectBn.forwardAct(F.msgcConv2d(h, b.project.weight, m, { heads: 4 }), null, x);
    }
    y.backward(msgc.tensor(randomArray(y.size, 92), y.shape));
    return [y.toFloat32Array(), ...params.map((p) => p.grad!.toFloat32Array())];
  });
  const fused = run(false), written = run(true);
  expect(closeness(fused[0], written[0], 1e-5, 1e-5)).toBeLessThanOrEqual(1);
  // (labelled by parameter, so that a failure names it)
  const names = b.namedParameters().map(([n]) => n);
  params.forEach((_, k) => expect([names[k], closeness(fused[k + 1], written[k + 1], 1e-5, 1e-4) <= 1]).toEqual([names[k], true]));
  x.dispose();
  b.dispose();
});

test('heads must divide every projection width', () => {
  expect(() => mobilenetV2({ msgc: { heads: 3 } })).toThrow(/MobileNetV2: 16 output channels are not divisible by 3 heads/);
  expect(() => new InvertedResidual(8, 12, 1, 6, { heads: 8, attention: false })).toThrow(/12 output channels are not divisible by 8 heads/);
  expect(() => new InvertedResidual(8, 8, 3, 6, null)).toThrow(/stride must be 1 or 2/);
});

afterAll(() => {
  msgc.setNumThreads(threads);
  expect(msgc.liveTensorCount()).toBe(startLive);
});
