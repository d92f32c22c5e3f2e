// train-schedule.test.ts: LR and MAC-target schedules (spec §3.2, §6), the MAC budget loss (one-sided, slope λ),
// and the spec's optimiser parameter groups.
import * as msgc from '../lib';
import { macBudgetLoss } from '../lib/train/budget';
import { parameterGroups } from '../lib/train/groups';
import { cosineLr, gateNoiseScale, macTarget, progressOf } from '../lib/train/schedule';
import { randomArray } from './helpers/gradcheck';

const startLive = msgc.liveTensorCount();

test('cosine learning rate stepped per epoch', () => {
  expect(cosineLr(0.1, 0, 10)).toBeCloseTo(0.1, 12);
  expect(cosineLr(0.1, 5, 10)).toBeCloseTo(0.05, 12);
  expect(cosineLr(0.1, 9, 10)).toBeCloseTo(0.05 * (1 + Math.cos((Math.PI * 9) / 10)), 12);
  // warm-up: linear ramp, then the cosine over the remaining epochs
  expect(cosineLr(0.1, 0, 10, 2)).toBeCloseTo(0.1 / 3, 12);
  expect(cosineLr(0.1, 1, 10, 2)).toBeCloseTo(0.2 / 3, 12);
  expect(cosineLr(0.1, 2, 10, 2)).toBeCloseTo(0.1, 12);
});

test('MAC target ramp: τ(0) = 1, τ(0.25) = (1 + τ_end)/2, τ(≥ 0.5) = τ_end', () => {
  for (const t of [0.5, 0.49, 0.65]) {
    expect(macTarget(0, { target: t })).toBe(1);
    expect(macTarget(0.25, { target: t })).toBeCloseTo((1 + t) / 2, 12);
    expect(macTarget(0.5, { target: t })).toBeCloseTo(t, 12);
    expect(macTarget(0.75, { target: t })).toBe(t);
    expect(macTarget(0.999, { target: t })).toBe(t);
  }
  expect(macTarget(0.1, { target: 0.5, pStart: 0.2, pStop: 0.6 })).toBe(1);
  expect(macTarget(0.4, { target: 0.5, pStart: 0.2, pStop: 0.6 })).toBeCloseTo(0.75, 12);
  expect(progressOf(1, 5, 10, 4)).toBeCloseTo(15 / 40, 12);
});

describe('MAC budget loss', () => {
  const model = msgc.models.resnet20({ numClasses: 10, msgc: { heads: 4 } });
  afterAll(() => model.dispose());

  test('zero below the target, λ·(r − τ) above with slope λ/F_ori in F_dyn', () => {
    msgc.manualSeed(2);
    model.train();
    msgc.tidy(() => {
      model.forward(msgc.tensor(randomArray(4 * 3 * 8 * 8, 1), [4, 3, 8, 8]));
      const macs = model.lastMacs();
      const below = macBudgetLoss(macs, macs.ratio + 0.01, 30);
      expect(below.loss).toBeNull();
      expect(below.value).toBe(0);
      const tau = macs.ratio - 0.2;
      const above = macBudgetLoss(macs, tau, 30);
      expect(above.loss!.item()).toBeCloseTo(30 * 0.2, 4);
      expect(above.value).toBeCloseTo(30 * 0.2, 10);
      // slope: d L / d F_dyn = λ / F_ori, seen through the linear map on the dynamic tensor
      const lambda2 = macBudgetLoss(macs, tau, 60);
      expect(lambda2.loss!.item()).toBeCloseTo(2 * above.loss!.item(), 4);
      above.loss!.backward();
    });
    // the gradient reached the gate heads
    const g = model.namedParameters().find(([n]) => n === 'layer3.2.mask2.conv2.bias')![1].grad!;
    expect(g.toFloat32Array().some((v) => v !== 0)).toBe(true);
    for (const p of model.parameters()) if (p.grad) { p.grad.dispose(); p.grad = null; }
  });
});

test('parameter groups follow spec §6: gates ×5 lr without decay, BN without decay, the rest with decay', () => {
  const m = msgc.models.resnet20({ numClasses: 10, msgc: { heads: 4, attention: true } });
  const groups = parameterGroups(m, { weightDecay: 1e-4 });
  const byName = new Map<msgc.Tensor, string>(m.namedParameters().map(([n, p]) => [p, n]));
  const names = (g: string) => groups.find((x) => x.name === g)!.params.map((p) => byName.get(p)!);
  expect(groups.map((g) => [g.name, g.lrScale, g.weightDecay])).toEqual([
    ['gates', 5, 0],
    ['batchnorm', 1, 0],
    ['weights', 1, 1e-4],
  ]);
  expect(names('gates').every((n) => n.includes('mask'))).toBe(true);
  expect(names('gates')).toContain('layer1.0.mask1.bn.weight');
  expect(names('batchnorm')).toContain('bn1.weight');
  expect(names('batchnorm')).toContain('layer1.0.att1.bn.bias'); // attention BN: BN group
  expect(names('weights')).toContain('layer1.0.att1.conv2.bias'); // attention convs: decayed
  expect(names('weights')).toContain('fc.bias');
  expect(names('weights').some((n) => /bn\d?\.(weight|bias)$/.test(n) && !n.includes('att'))).toBe(false);
  const total = groups.reduce((a, g) => a + g.params.length, 0);
  expect(total).toBe(m.parameters().length);
  // the SGD honours per-group lr scale and decay: one step from the same gradient
  const p1 = msgc.tensor([1], [1], { requiresGrad: true });
  const p2 = msgc.tensor([1], [1], { requiresGrad: true });
  const opt = new msgc.SGD([{ params: [p1], lrScale: 5, weightDecay: 0 }, { params: [p2], weightDecay: 0.5 }], { lr: 0.1 });
  p1.grad = msgc.tensor([1], [1]);
  p2.grad = msgc.tensor([1], [1]);
  opt.step();
  expect(p1.item()).toBeCloseTo(1 - 0.5, 6);
  expect(p2.item()).toBeCloseTo(1 - 0.1 * 1.5, 6);
  for (const t of [p1, p2]) t.dispose();
  opt.dispose();
  m.dispose();
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});

describe('gate-noise annealing', () => {
  test('σ(p): 1 up to pFrom, linear to 0 at pTo, 0 after', () => {
    expect(gateNoiseScale(0, [0.5, 0.9])).toBe(1);
    expect(gateNoiseScale(0.5, [0.5, 0.9])).toBe(1);
    expect(gateNoiseScale(0.7, [0.5, 0.9])).toBeCloseTo(0.5, 12);
    expect(gateNoiseScale(0.9, [0.5, 0.9])).toBe(0);
    expect(gateNoiseScale(0.99, [0.5, 0.9])).toBe(0);
  });

  // a gate head whose logits are the constant bias (last conv weight 0), for N samples
  function headWithLogits(values: number[], N: number) {
    const head = new msgc.nn.GateHead({ contextChannels: 8, channels: values.length, heads: 1, squeezeRate: 4 });
    head.conv2.weight.assign(new Float32Array(head.conv2.weight.size));
    head.conv2.bias!.assign(values);
    const ctx = msgc.tensor(randomArray(N * 8, 3), [N, 8, 1, 1]);
    return { head, ctx };
  }

  test('with noise scale σ a gate opens with probability sigmoid(l/σ)', () => {
    const logits = [-1, -0.3, 0, 0.4, 1.2];
    const N = 4000;
    for (const sigma of [1, 0.5, 0.2]) {
      const { head, ctx } = headWithLogits(logits, N);
      head.noiseScale = sigma;
      const m = msgc.tidy(() => head.forward(ctx).toFloat32Array());
      logits.forEach((l, c) => {
        let open = 0;
        for (let n = 0; n < N; n++) open += m[n * logits.length + c];
        const p = 1 / (1 + Math.exp(-l / sigma));
        // 4.5 standard deviations of a binomial proportion
        expect(Math.abs(open / N - p)).toBeLessThan(4.5 * Math.sqrt((p * (1 - p)) / N) + 1e-9);
      });
      head.dispose();
      ctx.dispose();
    }
  });

  test('a frozen head in training computes the eval gates (running BN statistics) and passes no gradient', () => {
    const N = 6;
    const head = new msgc.nn.GateHead({ contextChannels: 8, channels: 5, heads: 2, squeezeRate: 4 });
    // running statistics far from any batch's, so batch-statistics gates would differ
    head.bn.runningMean.assign(randomArray(2, 7, -1, 1));
    head.bn.runningVar.assign(randomArray(2, 8, 0.2, 3));
    const ctxData = randomArray(N * 8, 9, -2, 2);
    const ctx = msgc.tensor(ctxData, [N, 8, 1, 1], { requiresGrad: true });
    // float64 reference of the eval head: conv1 -> BN(running) -> ReLU -> conv2 + bias -> logit >= 0
    const w1 = head.conv1.weight.toFloat32Array(), w2 = head.conv2.weight.toFloat32Array(), b2 = head.conv2.bias!.toFloat32Array();
    const mean = head.bn.runningMean.toFloat32Array(), vr = head.bn.runningVar.toFloat32Array();
    const gamma = head.bn.weight!.toFloat32Array(), beta = head.bn.bias!.toFloat32Array();
    const want: number[] = [];
    for (let n = 0; n < N; n++) {
      const h = [0, 1].map((b) => {
        let z = 0;
        for (let c = 0; c < 8; c++) z += w1[b * 8 + c] * ctxData[n * 8 + c];
        return Math.max(0, ((z - mean[b]) / Math.sqrt(vr[b] + head.bn.eps)) * gamma[b] + beta[b]);
      });
      for (let k = 0; k < 10; k++) want.push(b2[k] + w2[k * 2] * h[0] + w2[k * 2 + 1] * h[1] >= 0 ? 1 : 0);
    }
    head.train();
    head.frozen = true;
    const before = head.bn.runningMean.toFloat32Array();
    msgc.tidy(() => {
      const m = head.forward(ctx);
      expect(Array.from(m.toFloat32Array())).toEqual(want);
      expect(m.requiresGrad).toBe(false);
    });
    expect(Array.from(head.bn.runningMean.toFloat32Array())).toEqual(Array.from(before)); // no statistics update
    head.dispose();
    ctx.dispose();
  });

  test('as σ -> 0 the training gate is the eval threshold with the tempered-sigmoid gradient of l', () => {
    const logits = [-1.5, -0.4, 0.3, 2];
    const N = 3;
    const { head, ctx } = headWithLogits(logits, N);
    head.noiseScale = 0;
    const bias = head.conv2.bias!;
    msgc.tidy(() => {
      const m = head.forward(ctx);
      expect(Array.from(m.toFloat32Array())).toEqual(Array.from({ length: N }, () => logits.map((l) => (l >= 0 ? 1 : 0))).flat());
      msgc.F.sum(m).backward();
    });
    const tau = 2 / 3;
    const g = bias.grad!.toFloat32Array();
    logits.forEach((l, c) => {
      const s = 1 / (1 + Math.exp(-l / tau));
      expect(g[c]).toBeCloseTo((N * s * (1 - s)) / tau, 2);
    });
    head.dispose();
    ctx.dispose();
  });
});
