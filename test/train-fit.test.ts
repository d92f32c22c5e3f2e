// train-fit.test.ts: fit/evaluate — the loss falls on a learnable task, the budget pushes MACs down, an
// interrupted checkpoint save leaves the previous checkpoint loadable, and resume continues bit-exactly.
import fs = require('fs');
import * as os from 'os';
import * as path from 'path';
import * as msgc from '../lib';
import { loadCheckpoint } from '../lib/io/checkpoint';
import { evaluate, fit, Batch, BatchSource } from '../lib/train/fit';
import { randomArray } from './helpers/gradcheck';

const startLive = msgc.liveTensorCount();

/** Images whose class is the quadrant holding a bright square; order depends on (seed, epoch). */
class Squares implements BatchSource {
  private epoch = 0;
  constructor(readonly count: number, readonly batch: number, readonly seed: number) {}
  get length(): number {
    return Math.ceil(this.count / this.batch);
  }
  setEpoch(e: number): void {
    this.epoch = e;
  }
  private sample(i: number): { x: Float32Array; y: number } {
    const noise = randomArray(3 * 8 * 8, this.seed * 100003 + i, -0.3, 0.3);
    const y = (i * 7 + this.seed) % 4;
    const oy = y < 2 ? 0 : 4;
    const ox = y % 2 === 0 ? 0 : 4;
    for (let c = 0; c < 3; c++) for (let h = 1; h < 3; h++) for (let w = 1; w < 3; w++) noise[(c * 8 + oy + h) * 8 + ox + w] += 1.5;
    return { x: noise, y };
  }
  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    const order = Array.from({ length: this.count }, (_, i) => i);
    const r = randomArray(this.count, 1000 + this.epoch * 31 + this.seed, 0, 1);
    order.sort((a, b) => r[a] - r[b]);
    for (let s = 0; s < this.count; s += this.batch) {
      const idx = order.slice(s, s + this.batch);
      const x = new Float32Array(idx.length * 192);
      const y = new Int32Array(idx.length);
      idx.forEach((i, k) => {
        const d = this.sample(i);
        x.set(d.x, k * 192);
        y[k] = d.y;
      });
      yield { x: msgc.tensor(x, [idx.length, 3, 8, 8]), y };
    }
  }
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-fit-'));
}

function weightsOf(m: msgc.nn.Module): Map<string, Uint32Array> {
  return new Map(Object.entries(m.stateDict()).map(([k, t]) => [k, new Uint32Array(t.toFloat32Array().buffer)]));
}

test('fit lowers the loss and evaluate reports accuracy, loss and MACs', async () => {
  msgc.manualSeed(1);
  const model = msgc.models.resnet20({ numClasses: 4 });
  const data = new Squares(64, 16, 1);
  const epochs: number[] = [];
  const h = await fit(model, data, { epochs: 4, lr: 0.05, verbose: false, labelSmoothing: 0, callbacks: { onEpochEnd: (e) => { epochs.push(e); } } });
  expect(epochs).toEqual([0, 1, 2, 3]);
  expect(h.epochs[3].loss).toBeLessThan(h.epochs[0].loss);
  const r = await evaluate(model, new Squares(64, 16, 2));
  expect(r.samples).toBe(64);
  expect(r.top1).toBeGreaterThan(0.5);
  expect(r.top5).toBe(1); // 4 classes
  expect(r.macRatio).toBe(1);
  expect(r.denseMacs).toBe(msgc.countMacs(model, [3, 8, 8]).dense);
  model.dispose();
});

test('the MAC budget drives an MSGC model below its starting MACs', async () => {
  msgc.manualSeed(2);
  const model = msgc.models.resnet20({ numClasses: 4, msgc: { heads: 4 } });
  const data = new Squares(64, 16, 3);
  const h = await fit(model, data, { epochs: 4, lr: 0.05, verbose: false, budget: { target: 0.5, pStop: 0.5 } });
  expect(h.epochs[0].macTarget).not.toBeNull();
  expect(h.epochs[3].macTarget).toBe(0.5);
  expect(h.epochs[3].macRatio).toBeLessThan(h.epochs[0].macRatio);
  model.dispose();
});

test('gate-noise annealing freezes the gate heads once the noise reaches 0; the rest keeps training', async () => {
  msgc.manualSeed(4);
  const model = msgc.models.resnet20({ numClasses: 4, msgc: { heads: 4 } });
  const data = new Squares(64, 16, 5);
  const isGate = (k: string) => /\.mask\d?\./.test(k);
  let atFreeze: Map<string, Uint32Array> | null = null;
  // 4 epochs of 4 steps, noise 0 from progress 0.5: epochs 2 and 3 train with frozen gates
  await fit(model, data, {
    epochs: 4, lr: 0.05, verbose: false, budget: { target: 0.5, pStop: 0.25 }, gateNoiseAnneal: [0, 0.5],
    callbacks: { onEpochEnd: (e) => { if (e === 1) atFreeze = weightsOf(model); } },
  });
  const end = weightsOf(model);
  let gates = 0;
  let moved = 0;
  for (const [k, v] of atFreeze!) {
    // gate heads: parameters and BN statistics untouched after the freeze (bit for bit)
    if (isGate(k)) {
      gates++;
      expect(Array.from(end.get(k)!)).toEqual(Array.from(v));
    } else if (/conv\d\.weight$/.test(k) && end.get(k)!.some((x, i) => x !== v[i])) {
      moved++;
    }
  }
  expect(gates).toBeGreaterThan(0);
  expect(moved).toBeGreaterThan(10);
  for (const [, m] of model.namedModules()) if (m instanceof msgc.nn.GateHead) expect(m.frozen).toBe(false); // reset after fit
  model.dispose();
});

test('an interrupted checkpoint save leaves the previous checkpoint loadable', async () => {
  const dir = tmpDir();
  msgc.manualSeed(3);
  const model = msgc.models.resnet20({ numClasses: 4 });
  await fit(model, new Squares(32, 16, 4), { epochs: 1, lr: 0.05, verbose: false, outDir: dir });
  const after1 = weightsOf(model);
  // make the second epoch's checkpoint fail mid-way: the JSON rename throws
  const rename = fs.renameSync;
  const spy = jest.spyOn(fs, 'renameSync').mockImplementation((a: fs.PathLike, b: fs.PathLike) => {
    if (String(b).endsWith('checkpoint.json')) throw new Error('disk unplugged');
    return rename(a, b);
  });
  await expect(fit(model, new Squares(32, 16, 4), { epochs: 2, lr: 0.05, verbose: false, outDir: dir, resume: true })).rejects.toThrow(/disk unplugged/);
  spy.mockRestore();
  expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  const fresh = msgc.models.resnet20({ numClasses: 4 });
  const ck = loadCheckpoint(dir, fresh)!;
  expect(ck.state.epoch).toBe(1);
  for (const t of ck.momentum.values()) t.dispose();
  const loaded = weightsOf(fresh);
  for (const [k, v] of after1) expect(Array.from(loaded.get(k)!)).toEqual(Array.from(v));
  model.dispose();
  fresh.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('resume continues exactly: 1 epoch + resume = 3 epochs straight', async () => {
  const run = async (dir: string, split: boolean) => {
    msgc.manualSeed(7);
    const model = msgc.models.resnet20({ numClasses: 4, msgc: { heads: 4 } });
    const opts = { lr: 0.05, verbose: false, outDir: dir, seed: 11, budget: { target: 0.6 } };
    if (split) {
      await fit(model, new Squares(32, 16, 5), { ...opts, epochs: 3, callbacks: { onEpochEnd: (e: number) => { if (e === 0) throw new Error('stop after epoch 0'); } } }).catch((e) => {
        expect(String(e)).toMatch(/stop after epoch 0/);
      });
      model.dispose();
      msgc.manualSeed(999); // a different state: resume must restore the checkpoint's
      const again = msgc.models.resnet20({ numClasses: 4, msgc: { heads: 4 } });
      const h = await fit(again, new Squares(32, 16, 5), { ...opts, epochs: 3, resume: true });
      return { model: again, h };
    }
    const h = await fit(model, new Squares(32, 16, 5), { ...opts, epochs: 3 });
    return { model, h };
  };
  const d1 = tmpDir();
  const d2 = tmpDir();
  const a = await run(d1, false);
  const b = await run(d2, true);
  expect(b.h.epochs.map((e) => e.loss)).toEqual(a.h.epochs.map((e) => e.loss));
  const wa = weightsOf(a.model);
  const wb = weightsOf(b.model);
  for (const [k, v] of wa) expect(Array.from(wb.get(k)!)).toEqual(Array.from(v));
  for (const f of ['metrics.json', 'model.safetensors', 'model-best.safetensors', 'checkpoint.json']) expect(fs.existsSync(path.join(d2, f))).toBe(true);
  a.model.dispose();
  b.model.dispose();
  fs.rmSync(d1, { recursive: true, force: true });
  fs.rmSync(d2, { recursive: true, force: true });
});

test('clipGradNorm: one step uses the clipped gradient; the epoch logs report the norm before clipping', async () => {
  const batch = () => ({ x: msgc.tensor(randomArray(8 * 3 * 8 * 8, 41, -1, 1), [8, 3, 8, 8]), y: Int32Array.from([0, 1, 2, 3, 3, 2, 1, 0]) });
  const oneBatch: BatchSource = { length: 1, async *[Symbol.asyncIterator]() { yield batch(); } };
  msgc.manualSeed(9);
  const model = msgc.models.resnet20({ numClasses: 4 });
  const reference = msgc.models.resnet20({ numClasses: 4 });
  reference.loadStateDict(model.stateDict());
  // the gradient norm by hand (labelSmoothing 0.1, fit's default), then a bound well below it
  const params = reference.parameters();
  msgc.tidy(() => {
    const b = batch();
    reference.train();
    msgc.F.crossEntropy(reference.forward(b.x), b.y, { labelSmoothing: 0.1 }).backward();
  });
  const grads = params.map((p) => p.grad!.toFloat32Array());
  const norm = Math.sqrt(grads.reduce((a, g) => a + g.reduce((s, v) => s + v * v, 0), 0));
  const max = norm / 4;
  const lr = 0.1;
  const h = await fit(model, oneBatch, { epochs: 1, lr, momentum: 0, nesterov: false, weightDecay: 0, verbose: false, clipGradNorm: max });
  expect(Math.abs(h.epochs[0].gradNorm! - norm) / norm).toBeLessThan(1e-5);
  const coef = max / (norm + 1e-6);
  const before = reference.parameters().map((p) => p.toFloat32Array());
  model.parameters().forEach((p, i) => {
    const want = Array.from(before[i], (v, j) => v - lr * coef * grads[i][j]);
    let worst = 0;
    p.toFloat32Array().forEach((v, j) => { worst = Math.max(worst, Math.abs(v - want[j]) / (1e-6 + 1e-4 * Math.abs(want[j]))); });
    expect(worst).toBeLessThanOrEqual(1);
  });
  await expect(fit(model, oneBatch, { epochs: 1, lr, verbose: false, clipGradNorm: 0 })).rejects.toThrow(/fit: clipGradNorm must be a positive finite number, got 0/);
  model.dispose();
  reference.dispose();
});

test('bad options throw', async () => {
  const model = msgc.models.resnet20({ numClasses: 4 });
  const data = new Squares(16, 16, 1);
  await expect(fit(model, data, { epochs: 0, lr: 0.1 })).rejects.toThrow(/fit: epochs/);
  await expect(fit(model, data, { epochs: 1, lr: -1 })).rejects.toThrow(/fit: lr/);
  await expect(fit(model, data, { epochs: 1, lr: 0.1, budget: { target: 2 } })).rejects.toThrow(/budget.target/);
  await expect(fit(model, data, { epochs: 1, lr: 0.1, resume: true })).rejects.toThrow(/resume needs outDir/);
  model.dispose();
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});

describe('recalibrateBatchNorm', () => {
  test('host BatchNorms get exact batch averages under eval-mode gates; head BNs, momentum and mode are kept', async () => {
    msgc.manualSeed(3);
    const model = msgc.models.resnet20({ numClasses: 4, msgc: { heads: 4, attention: false } });
    // gate biases around 0 so that training-mode gates would be noisy and some eval gates closed
    for (const [name, p] of model.namedParameters()) {
      if (/mask\d?\.conv2\.bias$/.test(name)) p.assign(randomArray(p.size, 5, -1, 1));
    }
    const data = new Squares(48, 16, 2); // 3 batches
    const stats = () => new Map(Object.entries(model.stateDict()).filter(([k]) => /running_(mean|var)$/.test(k)).map(([k, t]) => [k, t.toFloat32Array()]));
    const before = stats();
    model.train();
    data.setEpoch(0);
    expect(await msgc.recalibrateBatchNorm(model, data, { batches: 10 })).toBe(3);
    const first = stats();
    expect(model.training).toBe(true);
    for (const [, m] of model.namedModules()) if (m instanceof msgc.nn.BatchNorm2d) expect(m.momentum).toBe(0.1);
    // gate-head BNs untouched, host BNs changed
    for (const [k, v] of first) {
      if (/mask|att/.test(k)) expect(Array.from(v)).toEqual(Array.from(before.get(k)!));
    }
    expect(Array.from(first.get('bn1.running_mean')!)).not.toEqual(Array.from(before.get('bn1.running_mean')!));
    // the stem BN (input: the dense stem conv) against a float64 average of per-batch channel statistics
    const C = 16;
    const mean = new Float64Array(C);
    const vari = new Float64Array(C);
    let batches = 0;
    for await (const b of data) {
      const y = msgc.noGrad(() => msgc.F.conv2d(b.x, model.conv1.weight, null, { padding: 1 }));
      const v = y.toFloat32Array();
      const [N, , H, W] = y.shape;
      for (let c = 0; c < C; c++) {
        let s = 0;
        let s2 = 0;
        for (let n = 0; n < N; n++) for (let i = 0; i < H * W; i++) s += v[(n * C + c) * H * W + i];
        const m = s / (N * H * W);
        for (let n = 0; n < N; n++) for (let i = 0; i < H * W; i++) s2 += (v[(n * C + c) * H * W + i] - m) ** 2;
        mean[c] += m;
        vari[c] += s2 / (N * H * W - 1);
      }
      y.dispose();
      b.x.dispose();
      batches++;
    }
    const gotMean = first.get('bn1.running_mean')!;
    const gotVar = first.get('bn1.running_var')!;
    for (let c = 0; c < C; c++) {
      expect(gotMean[c]).toBeCloseTo(mean[c] / batches, 4);
      expect(gotVar[c]).toBeCloseTo(vari[c] / batches, 3);
    }
    // eval-mode gates: no noise, so another global seed gives the very same statistics
    msgc.manualSeed(99);
    data.setEpoch(0);
    await msgc.recalibrateBatchNorm(model, data);
    for (const [k, v] of stats()) expect(Array.from(v)).toEqual(Array.from(first.get(k)!));
    model.dispose();
  });
});
