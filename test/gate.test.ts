// gate.test.ts: the Gumbel(logistic)-sigmoid straight-through gate (spec §2.3): eval is a deterministic,
// seed-independent threshold at logit 0; training draws logistic noise (checked by its moments and by the
// on-probability sigmoid(l)) and back-propagates the tempered-sigmoid derivative.
import * as msgc from '../lib';
import { randomArray } from './helpers/gradcheck';

const { F } = msgc;
const startLive = msgc.liveTensorCount();

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
