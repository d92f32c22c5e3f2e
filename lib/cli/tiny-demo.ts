// tiny-demo.ts: the core demo — a small CNN (conv-BN-ReLU-pool x2, linear) trained with SGD on generated
// images (four bar orientations in noise), printing the loss as it falls and the held-out accuracy. It exercises
// every core op, the autograd tape, tidy scopes and the optimiser.
import * as F from '../ops/index';
import { noGrad, tidy } from '../tensor/scope';
import { liveTensorCount, ones, randn, tensor, zeros } from '../tensor/creation';
import { Tensor } from '../tensor/tensor';
import { SGD } from '../train/optim';

export interface TinyDemoOptions {
  steps?: number;
  batchSize?: number;
  seed?: number;
  log?: (line: string) => void;
}

export interface TinyDemoResult {
  losses: number[];
  accuracy: number;
  imagesPerSecond: number;
}

const SIZE = 16;
const CLASSES = 4;

/** Deterministic images: a bar of class-specific orientation at a random place, plus noise. */
export function makeBars(count: number, seed: number): { x: Float32Array; y: Int32Array } {
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 4294967296);
  const x = new Float32Array(count * SIZE * SIZE);
  const y = new Int32Array(count);
  for (let n = 0; n < count; n++) {
    const k = Math.floor(rnd() * CLASSES);
    y[n] = k;
    const c = 3 + Math.floor(rnd() * (SIZE - 6));
    for (let i = 0; i < SIZE; i++)
      for (let j = 0; j < SIZE; j++) {
        const on = k === 0 ? Math.abs(i - c) <= 1 : k === 1 ? Math.abs(j - c) <= 1 : k === 2 ? Math.abs(i - j - (c - 8)) <= 1 : Math.abs(i + j - (c + 8)) <= 1;
        x[n * SIZE * SIZE + i * SIZE + j] = (on ? 1 : 0) + 0.35 * (rnd() * 2 - 1);
      }
  }
  return { x, y };
}

export function runTinyDemo(options: TinyDemoOptions = {}): TinyDemoResult {
  const steps = options.steps ?? 300;
  const batch = options.batchSize ?? 32;
  const seed = options.seed ?? 1;
  const log = options.log ?? ((l: string) => console.log(l));
  const kaiming = (shape: number[], fanIn: number, s: number) =>
    randn(shape, { seed: s, std: Math.sqrt(2 / fanIn), requiresGrad: true });
  const params = {
    w1: kaiming([8, 1, 3, 3], 9, seed + 1),
    g1: ones([8], { requiresGrad: true }),
    b1: zeros([8], { requiresGrad: true }),
    w2: kaiming([16, 8, 3, 3], 72, seed + 2),
    g2: ones([16], { requiresGrad: true }),
    b2: zeros([16], { requiresGrad: true }),
    fw: kaiming([CLASSES, 16], 16, seed + 3),
    fb: zeros([CLASSES], { requiresGrad: true }),
  };
  const stats = { m1: zeros([8]), v1: ones([8]), m2: zeros([16]), v2: ones([16]) };
  const forward = (x: Tensor, training: boolean): Tensor => {
    let h = F.conv2d(x, params.w1, null, { padding: 1 });
    h = F.relu(F.batchNorm2d(h, stats.m1, stats.v1, params.g1, params.b1, { training }));
    h = F.maxPool2d(h, { kernelSize: 2 });
    h = F.conv2d(h, params.w2, null, { padding: 1 });
    h = F.relu(F.batchNorm2d(h, stats.m2, stats.v2, params.g2, params.b2, { training }));
    return F.linear(F.flatten(F.adaptiveAvgPool2d(h, 1)), params.fw, params.fb);
  };
  const opt = new SGD(Object.values(params), { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
  const train = makeBars(steps * batch, seed);
  const losses: number[] = [];
  const start = process.hrtime.bigint();
  let window = 0;
  for (let step = 0; step < steps; step++) {
    const loss = tidy(() => {
      const xb = tensor(train.x.subarray(step * batch * SIZE * SIZE, (step + 1) * batch * SIZE * SIZE), [batch, 1, SIZE, SIZE]);
      const yb = train.y.subarray(step * batch, (step + 1) * batch);
      const l = F.crossEntropy(forward(xb, true), yb);
      opt.zeroGrad();
      l.backward();
      opt.step();
      return l.item();
    });
    losses.push(loss);
    window += loss;
    if ((step + 1) % 25 === 0) {
      log(`step ${String(step + 1).padStart(4)}  loss ${(window / 25).toFixed(4)}`);
      window = 0;
    }
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const test = makeBars(512, seed + 1000);
  const accuracy = noGrad(() =>
    tidy(() => {
      const logits = forward(tensor(test.x, [512, 1, SIZE, SIZE]), false).toFloat32Array();
      let correct = 0;
      for (let n = 0; n < 512; n++) {
        let best = 0;
        for (let k = 1; k < CLASSES; k++) if (logits[n * CLASSES + k] > logits[n * CLASSES + best]) best = k;
        if (best === test.y[n]) correct++;
      }
      return correct / 512;
    }),
  );
  opt.zeroGrad();
  opt.dispose();
  for (const t of [...Object.values(params), ...Object.values(stats)]) t.dispose();
  log(`held-out accuracy ${(accuracy * 100).toFixed(1)}%  (${((steps * batch) / seconds).toFixed(0)} images/s, live tensors ${liveTensorCount()})`);
  return { losses, accuracy, imagesPerSecond: (steps * batch) / seconds };
}
