// resnet.test.ts: the ResNet family — MAC accounting against the spec's table (§4.5) and an independent
// re-implementation of the §4.4 formulas, parameter counts against torchvision's, host-block equivalence with
// gates forced open, dense checkpoints loading into the boosted model, and the per-batch MAC tally.
import * as msgc from '../lib';
import { BasicBlock, Bottleneck } from '../lib/models/resnet';
import { closeness, randomArray } from './helpers/gradcheck';
import { expectOpenGatesMatchDense } from './helpers/models';

const { models, F } = msgc;
const startLive = msgc.liveTensorCount();

/** MG(C_ctx, C_out, G, r) of spec §4.4 */
const MG = (c: number, o: number, g: number, r: number) => (c + 1) * Math.floor(c / r) + Math.floor(c / r) * o * g;

/** Independent §4.4 accounting for ImageNet ResNets at 224 (7×7 stem + max-pool). */
function specResNet(kind: 'basic' | 'bottleneck', depths: number[], att: boolean, G = 4) {
  let main = 49 * 3 * 64 * 112 * 112 + 64 * 112 * 112 + 4 * 64 * 56 * 56;
  let gated = 0;
  let heads = 0;
  let extra = 0;
  let cin = 64;
  let hw = 56;
  const widths = [64, 128, 256, 512];
  depths.forEach((n, stage) => {
    for (let b = 0; b < n; b++) {
      const s = b === 0 && stage > 0 ? 2 : 1;
      const out = Math.floor((hw + 2 - 3) / s) + 1;
      const H = hw * hw;
      const Ho = out * out;
      if (kind === 'basic') {
        const P = widths[stage];
        gated += (att ? cin * H : 0) + 9 * cin * P * Ho + P * Ho + (9 * P + 1) * P * Ho + (att ? G * P * Ho : 0);
        extra += att ? cin * H + G * P * Ho : 0;
        heads += (MG(cin, cin, 1, 4) + MG(cin, P, G, 4)) * (att ? 2 : 1) + H * cin;
        if (s !== 1 || cin !== P) main += cin * P * Ho;
        cin = P;
      } else {
        const w = widths[stage];
        gated += cin * w * H + w * H + (att ? G * w * H : 0) + 9 * w * w * Ho + w * Ho + (w + 1) * 4 * w * Ho;
        extra += att ? G * w * H : 0;
        heads += MG(cin, cin, 1, 8) + MG(cin, w, G, 8) + MG(cin, w, 1, 8) + (att ? MG(cin, w, G, 8) : 0) + H * cin;
        if (s !== 1 || cin !== 4 * w) main += cin * 4 * w * Ho;
        cin = 4 * w;
      }
      hw = out;
    }
  });
  main += cin * (7 * 7 + 1000);
  return { dense: main + gated - extra, main, gated, heads, extra };
}

describe('MAC accounting', () => {
  test('ResNet-18 without attention reproduces spec §4.5 to the unit', () => {
    const m = models.resnet18({ msgc: { heads: 4 } });
    expect(msgc.countMacs(m, [3, 224, 224])).toEqual({ dense: 1817209344, main: 139424256, gated: 1677785088, heads: 1781984, extra: 0 });
    m.dispose();
  });

  test.each([
    ['resnet18', 'basic', [2, 2, 2, 2], true],
    ['resnet34', 'basic', [3, 4, 6, 3], false],
    ['resnet34', 'basic', [3, 4, 6, 3], true],
    ['resnet50', 'bottleneck', [3, 4, 6, 3], false],
    ['resnet50', 'bottleneck', [3, 4, 6, 3], true],
  ] as const)('%s (%s, attention %s) matches the §4.4 formulas', (name, kind, depths, att) => {
    const m = models.createModel(name, { msgc: { heads: 4, attention: att } });
    expect(msgc.countMacs(m, [3, 224, 224])).toEqual(specResNet(kind, [...depths], att));
    m.dispose();
  });

  test('the dense models count F_ori as their whole cost', () => {
    const d = models.resnet18();
    const b = models.resnet18({ msgc: {} });
    const dm = msgc.countMacs(d, [3, 224, 224]);
    expect(dm.dense).toBe(msgc.countMacs(b, [3, 224, 224]).dense);
    expect(dm).toEqual({ dense: dm.dense, main: dm.dense, gated: 0, heads: 0, extra: 0 });
    d.dispose();
    b.dispose();
  });

  test('bad input shapes are rejected', () => {
    const m = models.resnet20();
    expect(() => msgc.countMacs(m, [3, 32] as number[])).toThrow(/countMacs: input must be \[C, H, W\]/);
    expect(() => msgc.countMacs({} as never, [3, 32, 32])).toThrow(/countMacs: model/);
    m.dispose();
  });
});

describe('parameters', () => {
  test.each([
    ['resnet18', 11689512],
    ['resnet34', 21797672],
    ['resnet50', 25557032],
  ])('dense %s has torchvision\'s %d parameters', (name, count) => {
    const m = models.createModel(name);
    expect(m.numParameters()).toBe(count);
    m.dispose();
  });

  test('head overhead matches spec §5.5 (R18 +0.86 M / +1.73 M, R50 +10.71 M / +14.89 M)', () => {
    const over = (name: string, attention: boolean) => {
      const d = models.createModel(name);
      const b = models.createModel(name, { msgc: { heads: 4, attention } });
      const r = (b.numParameters() - d.numParameters()) / 1e6;
      d.dispose();
      b.dispose();
      return r;
    };
    expect(over('resnet18', false)).toBeCloseTo(0.86, 2);
    expect(over('resnet18', true)).toBeCloseTo(1.73, 2);
    expect(over('resnet50', false)).toBeCloseTo(10.71, 2);
    expect(over('resnet50', true)).toBeCloseTo(14.89, 2);
  });

  test('torchvision names; the boosted model adds only head parameters', () => {
    const d = models.resnet18();
    const b = models.resnet18({ msgc: { heads: 4, attention: true } });
    const dk = Object.keys(d.stateDict());
    const bk = Object.keys(b.stateDict());
    expect(dk).toContain('layer1.0.conv1.weight');
    expect(dk).toContain('layer2.0.downsample.0.weight');
    expect(dk).toContain('layer2.0.downsample.1.running_var');
    expect(dk).toContain('bn1.num_batches_tracked');
    expect(dk).toContain('fc.bias');
    for (const k of dk) expect(bk).toContain(k);
    for (const k of bk.filter((x) => !dk.includes(x))) expect(k).toMatch(/\.(mask|att)\d\./);
    d.dispose();
    b.dispose();
  });
});

/** Copies `from`'s weights into `to` by name and forces every gate open (bias +50) in eval mode. */
function openGates(to: msgc.nn.Module, from: msgc.nn.Module): void {
  const r = to.loadStateDict(from.stateDict(), { strict: false });
  expect(r.unexpectedKeys).toEqual([]);
  for (const k of r.missingKeys) expect(k).toMatch(/^(mask|att)\d\./);
  for (const [name, p] of to.namedParameters()) {
    if (/^mask\d\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(50));
  }
}

describe('host blocks with gates open equal their dense blocks', () => {
  test.each([
    ['BasicBlock stride 1', () => [new BasicBlock(16, 16, 1, null), new BasicBlock(16, 16, 1, { heads: 4, attention: false })]],
    ['BasicBlock stride 2 + downsample, attention', () => [new BasicBlock(8, 16, 2, null), new BasicBlock(8, 16, 2, { heads: 4, attention: true })]],
    ['Bottleneck stride 1', () => [new Bottleneck(32, 8, 1, null), new Bottleneck(32, 8, 1, { heads: 4, attention: false })]],
    ['Bottleneck stride 2, attention', () => [new Bottleneck(16, 8, 2, null), new Bottleneck(16, 8, 2, { heads: 2, attention: true })]],
  ] as [string, () => msgc.nn.Module[]][])('%s', (_, make) => {
    msgc.manualSeed(3);
    const [dense, boosted] = make();
    // non-trivial BN statistics so that eval mode is meaningful
    for (const [name, b] of dense.namedBuffers()) {
      if (name.endsWith('running_mean')) b.assign(randomArray(b.size, 5, -0.2, 0.2));
      if (name.endsWith('running_var')) b.assign(randomArray(b.size, 6, 0.5, 1.5));
    }
    openGates(boosted, dense);
    dense.eval();
    boosted.eval();
    msgc.tidy(() => {
      const C = (dense as BasicBlock).inplanes;
      const x = msgc.tensor(randomArray(2 * C * 8 * 8, 7), [2, C, 8, 8]);
      const a = msgc.noGrad(() => dense.forward(x)).toFloat32Array();
      const b = msgc.noGrad(() => boosted.forward(x)).toFloat32Array();
      expect(closeness(b, a, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
    dense.dispose();
    boosted.dispose();
  });
});

describe('a dense checkpoint loads into the boosted model', () => {
  test('same outputs with gates open, only head keys missing', () => {
    msgc.manualSeed(11);
    const dense = models.resnet20({ numClasses: 10 });
    const boosted = models.resnet20({ numClasses: 10, msgc: { heads: 4 } });
    const r = boosted.loadStateDict(dense.stateDict(), { strict: false });
    expect(r.unexpectedKeys).toEqual([]);
    expect(r.missingKeys.length).toBeGreaterThan(0);
    for (const k of r.missingKeys) expect(k).toMatch(/\.mask\d\./);
    expect(() => boosted.loadStateDict(dense.stateDict())).toThrow(/loadStateDict: keys do not match \(strict\)\. Missing: layer1\.0\.mask1/);
    for (const [name, p] of boosted.namedParameters()) if (/mask\d\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(50));
    expectOpenGatesMatchDense(dense, boosted);
    dense.dispose();
    boosted.dispose();
  });

  test('a shape mismatch throws with the key name', () => {
    const a = models.resnet20({ numClasses: 10 });
    const b = models.resnet20({ numClasses: 7 });
    expect(() => b.loadStateDict(a.stateDict())).toThrow(/'fc.weight' has shape \[10, 64\] in the state dict, but the module expects \[7, 64\]/);
    a.dispose();
    b.dispose();
  });
});

describe('per-batch MAC tally', () => {
  test('closed MSGC gates credit the unused conv1 outputs as bonus', () => {
    const m = models.resnet20({ numClasses: 10, msgc: { heads: 4 } });
    for (const [name, p] of m.namedParameters()) {
      if (/mask1\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(50)); // inputs open
      if (/mask2\.conv2\.bias$/.test(name)) p.assign(new Float32Array(p.size).fill(-50)); // every head closed
    }
    m.eval();
    msgc.tidy(() => {
      msgc.noGrad(() => m.forward(msgc.tensor(randomArray(2 * 3 * 8 * 8, 13), [2, 3, 8, 8])));
      const lm = m.lastMacs();
      const stat = msgc.countMacs(m, [3, 8, 8]);
      // per block: dyn = F_dgc1 (m1 = 1, m2 = 0) and bonus = F_dgc1 (no head selects anything)
      let dgc1 = 0;
      for (const [, mod] of m.namedModules()) {
        if (mod instanceof BasicBlock) {
          const d = mod.lastTally!;
          expect(d.density).toEqual([1, 0]);
          dgc1 += d.dynamic;
        }
      }
      expect(lm.dynamic).toBe(dgc1);
      expect(lm.bonus).toBe(dgc1);
      expect(lm.perImage).toBe(stat.main + stat.heads);
      expect(lm.dynamicTensor).toBeNull(); // no autograd in noGrad
    });
    m.dispose();
  });

  test('the dynamic MAC tensor is differentiable through the gate heads', () => {
    msgc.manualSeed(5);
    const m = models.resnet20({ numClasses: 10, msgc: { heads: 4, attention: true } });
    m.train();
    msgc.tidy(() => {
      m.forward(msgc.tensor(randomArray(4 * 3 * 8 * 8, 14), [4, 3, 8, 8]));
      const lm = m.lastMacs();
      expect(lm.dynamicTensor).not.toBeNull();
      expect(Math.abs(lm.dynamicTensor!.item() - lm.dynamic) / lm.dynamic).toBeLessThan(1e-5);
      expect(lm.ratio).toBeGreaterThan(0.5);
      expect(lm.ratio).toBeLessThan(1.05);
      F.scale(lm.dynamicTensor!, 1 / lm.dense).backward();
    });
    let gated = 0;
    for (const [name, p] of m.namedParameters()) {
      const g = p.grad ? p.grad.toFloat32Array() : null;
      const nonzero = !!g && g.some((v) => v !== 0);
      if (/\.mask\d\./.test(name) && name.endsWith('conv2.bias')) {
        expect(nonzero).toBe(true);
        // pushing logits up raises MACs
        expect(g!.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
        gated++;
      }
      // the gates see the block input, so earlier layers receive gradient too; the classifier and the last
      // block's attention heads cannot influence any gate
      if (/^fc\.|^layer3\.2\.att\d\./.test(name)) expect(nonzero).toBe(false);
    }
    expect(gated).toBe(18);
    m.dispose();
  });
});

test('train/eval propagate to every submodule', () => {
  const m = models.resnet20({ msgc: {} });
  m.eval();
  expect(m.namedModules().every(([, x]) => !x.training)).toBe(true);
  m.train();
  expect(m.namedModules().every(([, x]) => x.training)).toBe(true);
  m.dispose();
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});
