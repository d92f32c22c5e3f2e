// distill.test.ts: F.distillation (T² · mean over the batch of KL(softmax(t/T) ‖ softmax(s/T))) against a float64
// reference and central differences, its bad-input errors, and fit's `distill` option: one training step equals
// the step computed by hand from (1 − α) · cross-entropy + α · distillation, with the teacher kept in eval mode;
// `distill.cache` (TeacherLogitCache) trains exactly as the teacher forward it replaces, hits only batches with the
// same contents and the same teacher weights.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { fit, Batch, BatchSource } from '../lib/train/fit';
import { closeness, gradCheck, randomArray } from './helpers/gradcheck';
import { expectError, settledLiveCount } from './helpers/testing';

const F = msgc.F;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});

/** float64 loss and d loss / d student. */
function kdRef(s: ArrayLike<number>, t: ArrayLike<number>, N: number, K: number, T: number): { loss: number; grad: Float64Array } {
  const logSoftmax = (z: ArrayLike<number>, n: number) => {
    const row = Array.from({ length: K }, (_, k) => z[n * K + k] / T);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    return row.map((v) => v - lse);
  };
  let total = 0;
  const grad = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    const ls = logSoftmax(s, n);
    const lt = logSoftmax(t, n);
    for (let k = 0; k < K; k++) {
      total += Math.exp(lt[k]) * (lt[k] - ls[k]);
      // d/ds of T² · Σ pt (log pt − log ps) / N = T · (ps − pt) / N
      grad[n * K + k] = (T * (Math.exp(ls[k]) - Math.exp(lt[k]))) / N;
    }
  }
  return { loss: (T * T * total) / N, grad };
}

describe('F.distillation', () => {
  const cases = [
    { N: 4, K: 5, T: 4 },
    { N: 1, K: 3, T: 1 },
    { N: 7, K: 10, T: 2.5 },
    { N: 3, K: 1, T: 4 },
    { N: 16, K: 100, T: 8 },
  ];
  for (const c of cases) {
    test(`forward and gradient against float64: N=${c.N} K=${c.K} T=${c.T}`, () => {
      msgc.tidy(() => {
        const s = randomArray(c.N * c.K, c.N * 13 + c.K, -5, 5);
        const t = randomArray(c.N * c.K, c.N * 17 + c.K, -5, 5);
        const x = msgc.tensor(s, [c.N, c.K], { requiresGrad: true });
        const teacher = msgc.tensor(t, [c.N, c.K], { requiresGrad: true });
        const loss = F.distillation(x, teacher, { temperature: c.T });
        expect(loss.shape).toEqual([]);
        const ref = kdRef(s, t, c.N, c.K, c.T);
        expect(closeness([loss.item()], [ref.loss], 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        F.scale(loss, 1.5).backward();
        expect(closeness(x.grad!.toFloat32Array(), Array.from(ref.grad, (v) => 1.5 * v), 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        expect(teacher.grad).toBeNull(); // the teacher's logits are constants
      });
    });
  }

  test('zero when the student matches the teacher; default temperature 4', () => {
    msgc.tidy(() => {
      const z = randomArray(12, 5, -3, 3);
      expect(Math.abs(F.distillation(msgc.tensor(z, [3, 4]), msgc.tensor(z, [3, 4])).item())).toBeLessThan(1e-6);
      const t = randomArray(12, 6, -3, 3);
      const ref = kdRef(z, t, 3, 4, 4).loss;
      expect(closeness([F.distillation(msgc.tensor(z, [3, 4]), msgc.tensor(t, [3, 4])).item()], [ref], 1e-6, 1e-5)).toBeLessThanOrEqual(1);
    });
  });

  test('large logits stay finite and match the stable float64 value', () => {
    msgc.tidy(() => {
      const s = [1000, 0, -1000, 999, -1000, -1000, -999.5, -1000];
      const t = [-1000, 1000, 0, 500, 3, 2, 1, 0];
      const x = msgc.tensor(s, [2, 4], { requiresGrad: true });
      const loss = F.distillation(x, msgc.tensor(t, [2, 4]), { temperature: 2 });
      const ref = kdRef(s, t, 2, 4, 2);
      expect(Number.isFinite(loss.item())).toBe(true);
      expect(closeness([loss.item()], [ref.loss], 1e-4, 1e-5)).toBeLessThanOrEqual(1);
      loss.backward();
      expect(closeness(x.grad!.toFloat32Array(), ref.grad, 1e-6, 1e-5)).toBeLessThanOrEqual(1);
    });
  });

  test('central differences, through a linear layer', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(3 * 4, 21, -1, 1), [3, 4], { requiresGrad: true });
      const w = msgc.tensor(randomArray(5 * 4, 22, -1, 1), [5, 4], { requiresGrad: true });
      const t = msgc.tensor(randomArray(3 * 5, 23, -3, 3), [3, 5]);
      const r = gradCheck(([x, w]) => F.distillation(F.linear(x, w, null), t, { temperature: 3 }), [x, w]);
      expect(r.checked).toBeGreaterThan(0);
    });
  });

  test('bad input', () => {
    msgc.tidy(() => {
      const s = msgc.tensor(randomArray(6, 31), [2, 3]);
      const kd = F.distillation as unknown as (...a: unknown[]) => Tensor;
      expectError(() => kd(s, msgc.zeros([2, 4])), /distillation: teacher logits have shape \[2, 4\], expected the student's \[2, 3\]/);
      expectError(() => kd(s, msgc.zeros([3, 3])), /distillation: teacher logits have shape \[3, 3\]/);
      expectError(() => kd(s, msgc.zeros([6])), /distillation: teacher logits has 1 dims.*expected 2/);
      expectError(() => kd(msgc.zeros([2, 3, 1]), s), /distillation: student logits has 3 dims.*expected 2/);
      expectError(() => kd(msgc.zeros([2, 0]), msgc.zeros([2, 0])), /distillation: logits need at least one class/);
      expectError(() => kd(s, s, { temperature: 0 }), /distillation: temperature must be a positive finite number, got 0/);
      expectError(() => kd(s, s, { temperature: -1 }), /distillation: temperature must be a positive finite number/);
      expectError(() => kd(s, s, { temperature: Infinity }), /distillation: temperature must be a positive finite number/);
      expectError(() => kd(s, s, { temperature: NaN }), /distillation: temperature must be a positive finite number/);
      expectError(() => kd(s, null), /distillation: teacher must be a Tensor, got null/);
      expectError(() => kd([[1, 2, 3]], s), /distillation: student must be a Tensor, got object/);
    });
  });
});

/** One fixed batch of 8 random 3×8×8 images. */
class OneBatch implements BatchSource {
  readonly length = 1;
  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    yield { x: msgc.tensor(randomArray(8 * 3 * 8 * 8, 41, -1, 1), [8, 3, 8, 8]), y: Int32Array.from([0, 1, 2, 3, 3, 2, 1, 0]) };
  }
}

describe('fit with distill', () => {
  test('one step equals the hand-computed step on (1 − α)·CE + α·KD; the teacher stays in eval mode', async () => {
    const alpha = 0.3;
    const T = 2;
    const lr = 0.1;
    const smoothing = 0.1;
    msgc.manualSeed(7);
    const teacher = msgc.models.resnet20({ numClasses: 4 });
    msgc.manualSeed(8);
    const student = msgc.models.resnet20({ numClasses: 4 });
    const reference = msgc.models.resnet20({ numClasses: 4 });
    reference.loadStateDict(student.stateDict());
    // teacher BN statistics away from the defaults, so that its eval and training outputs differ
    await fit(teacher, new OneBatch(), { epochs: 1, lr: 0.05, verbose: false });
    teacher.train();
    let teacherModeInStep: boolean | null = null;
    const wrapped = {
      forward: (x: Tensor) => {
        teacherModeInStep = teacher.training;
        return teacher.forward(x);
      },
      eval: () => teacher.eval(),
      train: (m?: boolean) => teacher.train(m),
      get training() {
        return teacher.training;
      },
    };
    await fit(student, new OneBatch(), { epochs: 1, lr, momentum: 0, nesterov: false, weightDecay: 0, labelSmoothing: smoothing, verbose: false, distill: { teacher: wrapped, alpha, temperature: T } });
    expect(teacherModeInStep).toBe(false);
    expect(teacher.training).toBe(true); // restored

    // by hand: the same batch, the teacher in eval mode without autograd, plain SGD (no momentum, no decay)
    const name = 'layer2.1.conv1.weight';
    const param = () => reference.namedParameters().find(([n]) => n === name)![1];
    const before = param().toFloat32Array();
    const gradOf = (a: number) => msgc.tidy(() => {
      const b = { x: msgc.tensor(randomArray(8 * 3 * 8 * 8, 41, -1, 1), [8, 3, 8, 8]), y: Int32Array.from([0, 1, 2, 3, 3, 2, 1, 0]) };
      teacher.eval();
      const t = msgc.noGrad(() => teacher.forward(b.x));
      reference.train();
      const logits = reference.forward(b.x);
      const loss = F.add(F.scale(F.crossEntropy(logits, b.y, { labelSmoothing: smoothing }), 1 - a), F.scale(F.distillation(logits, t, { temperature: T }), a));
      param().grad?.dispose();
      param().grad = null;
      loss.backward();
      return param().grad!.toFloat32Array();
    });
    const got = student.namedParameters().find(([n]) => n === name)![1].toFloat32Array();
    const g = gradOf(alpha);
    const want = Array.from(before, (v, i) => v - lr * g[i]);
    expect(closeness(got, want, 1e-6, 1e-4)).toBeLessThanOrEqual(1);
    // the distillation term matters at this tolerance: the cross-entropy-only step is elsewhere
    const ceOnly = gradOf(0);
    expect(closeness(got, Array.from(before, (v, i) => v - lr * ceOnly[i]), 1e-6, 1e-4)).toBeGreaterThan(1);
    teacher.dispose();
    student.dispose();
    reference.dispose();
  });

  test('bad distill options throw', async () => {
    const model = msgc.models.resnet20({ numClasses: 4 });
    const teacher = msgc.models.resnet20({ numClasses: 4 });
    await expect(fit(model, new OneBatch(), { epochs: 1, lr: 0.1, verbose: false, distill: { teacher, alpha: 1.5 } })).rejects.toThrow(/distill.alpha must be in \[0, 1\]/);
    await expect(fit(model, new OneBatch(), { epochs: 1, lr: 0.1, verbose: false, distill: { teacher, temperature: 0 } })).rejects.toThrow(/distill.temperature/);
    await expect(fit(model, new OneBatch(), { epochs: 1, lr: 0.1, verbose: false, distill: { teacher: {} as never } })).rejects.toThrow(/distill.teacher must be a model/);
    model.dispose();
    teacher.dispose();
  });
});

/** Batches that differ from each other by one pixel (x[0] = b), the same ones every epoch. */
class NearBatches implements BatchSource {
  constructor(readonly length: number) {}
  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    for (let b = 0; b < this.length; b++) {
      const x = randomArray(8 * 3 * 8 * 8, 41, -1, 1);
      x[0] = b;
      yield { x: msgc.tensor(x, [8, 3, 8, 8]), y: Int32Array.from([0, 1, 2, 3, 3, 2, 1, 0]) };
    }
  }
}

describe('fit with distill.cache', () => {
  test('trains bit for bit as without it, reuses only identical batches, and empties itself for other teacher weights', async () => {
    msgc.manualSeed(7);
    const teacher = msgc.models.resnet20({ numClasses: 4 });
    await fit(teacher, new OneBatch(), { epochs: 1, lr: 0.05, verbose: false });
    msgc.manualSeed(8);
    const init = msgc.models.resnet20({ numClasses: 4 });
    const run = async (cache?: msgc.TeacherLogitCache) => {
      const student = msgc.models.resnet20({ numClasses: 4 });
      student.loadStateDict(init.stateDict());
      await fit(student, new NearBatches(2), { epochs: 2, lr: 0.1, seed: 3, verbose: false, distill: { teacher, alpha: 0.5, temperature: 2, cache } });
      const w = student.namedParameters().map(([, p]) => p.toFloat32Array());
      student.dispose();
      return w;
    };
    const plain = await run();
    const cache = new msgc.TeacherLogitCache();
    const cached = await run(cache);
    // two distinct batches (one pixel apart) computed in epoch 1, both reused in epoch 2
    expect([cache.misses, cache.hits, cache.size]).toEqual([2, 2, 2]);
    expect(cache.bytes).toBe(2 * 8 * 4 * 4);
    const again = await run(cache);
    expect([cache.misses, cache.hits]).toEqual([2, 6]);
    for (const w of [cached, again]) {
      expect(w.length).toBe(plain.length);
      w.forEach((a, i) => expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(plain[i].buffer))).toBe(0));
    }
    // other teacher weights: the entries go, and the run still equals the uncached one with that teacher
    await fit(teacher, new OneBatch(), { epochs: 1, lr: 0.05, verbose: false });
    const plain2 = await run();
    const cached2 = await run(cache);
    expect([cache.misses, cache.hits, cache.size]).toEqual([4, 8, 2]);
    cached2.forEach((a, i) => expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(plain2[i].buffer))).toBe(0));
    // (and the teacher change mattered)
    expect(plain2.some((a, i) => Buffer.compare(Buffer.from(a.buffer), Buffer.from(plain[i].buffer)) !== 0)).toBe(true);
    // full cache: computes and stores nothing more
    const tiny = new msgc.TeacherLogitCache({ maxBytes: 8 * 4 * 4 });
    const capped = await run(tiny);
    expect([tiny.size, tiny.misses, tiny.hits]).toEqual([1, 3, 1]);
    capped.forEach((a, i) => expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(plain2[i].buffer))).toBe(0));
    init.dispose();
    teacher.dispose();
  });

  test('bad caches and teachers without weights throw', async () => {
    const model = msgc.models.resnet20({ numClasses: 4 });
    const teacher = msgc.models.resnet20({ numClasses: 4 });
    expect(() => new msgc.TeacherLogitCache({ maxBytes: -1 })).toThrow(/maxBytes must be a non-negative finite number, got -1/);
    await expect(fit(model, new OneBatch(), { epochs: 1, lr: 0.1, verbose: false, distill: { teacher, cache: {} as never } })).rejects.toThrow(/distill.cache must be a TeacherLogitCache/);
    const bare = { forward: (x: Tensor) => teacher.forward(x), eval: () => teacher.eval(), train: (m?: boolean) => teacher.train(m), get training() { return teacher.training; } };
    await expect(fit(model, new OneBatch(), { epochs: 1, lr: 0.1, verbose: false, distill: { teacher: bare, cache: new msgc.TeacherLogitCache() } })).rejects.toThrow(/distill.cache needs a teacher with stateDict\(\)/);
    model.dispose();
    teacher.dispose();
  });
});

afterAll(async () => {
  expect(await settledLiveCount()).toBe(baseline);
});
