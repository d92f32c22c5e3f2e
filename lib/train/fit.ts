// fit.ts: msgc.fit (training) and msgc.evaluate — Keras-style loops over batch sources, with the spec's recipe:
// SGD (Nesterov) with the §6 parameter groups, cosine LR stepped per epoch (optional warm-up), label smoothing,
// the MAC budget loss with its per-iteration target ramp (§3.2), callbacks, a progress bar on stderr, per-epoch
// atomic checkpoints with exact resume, and best-epoch tracking.
import * as fs from 'fs';
import * as path from 'path';
import { writeJsonAtomic } from '../io/atomic';
import { loadCheckpoint, saveCheckpoint } from '../io/checkpoint';
import { save } from '../io/safetensors';
import { Backbone } from '../models/common';
import * as F from '../ops/index';
import { getRngState, manualSeed, setRngState } from '../tensor/creation';
import { noGrad, tidy } from '../tensor/scope';
import { Tensor } from '../tensor/tensor';
import { macBudgetLoss } from './budget';
import { parameterGroups } from './groups';
import { recalibrateBatchNorm } from './recalibrate';
import { topKCorrect } from './metrics';
import { SGD, clipGradNorm } from './optim';
import { ProgressBar } from './progress';
import { cosineLr, gateNoiseScale, macTarget, progressOf } from './schedule';
import { GateHead } from '../nn/msgc/heads';
import { TeacherLogitCache } from './teacher_cache';

/** A batch: images [B, C, H, W] (owned by the consumer) and labels. */
export interface Batch {
  x: Tensor;
  y: Int32Array;
}

/** What fit/evaluate iterate: a DataLoader, or anything with the same shape. */
export interface BatchSource {
  /** batches per epoch */
  readonly length: number;
  /** fixes the shuffle/augmentation stream of an epoch (called before each epoch) */
  setEpoch?(epoch: number): void;
  [Symbol.asyncIterator](): AsyncIterator<Batch>;
}

export interface BudgetOptions {
  /** τ_end, the final MAC ratio (e.g. 0.5) */
  target: number;
  /** λ (spec: 30) */
  lambda?: number;
  pStart?: number;
  pStop?: number;
}

export interface EpochLogs {
  epoch: number;
  lr: number;
  loss: number;
  top1: number;
  /** mean train-mode MAC ratio (with gate noise) */
  macRatio: number;
  macTarget: number | null;
  imagesPerSecond: number;
  seconds: number;
  /** mean gradient norm before clipping (only with clipGradNorm) */
  gradNorm?: number;
  val?: EvalResult;
}

export interface BatchLogs {
  epoch: number;
  step: number;
  loss: number;
  top1: number;
  macRatio: number;
}

export interface Callbacks {
  onEpochBegin?(epoch: number): void | Promise<void>;
  onEpochEnd?(epoch: number, logs: EpochLogs): void | Promise<void>;
  onBatchEnd?(logs: BatchLogs): void | Promise<void>;
}

export interface FitOptions {
  epochs: number;
  /** base learning rate (gate heads get gateLrScale × this) */
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  gateLrScale?: number;
  warmupEpochs?: number;
  /** training label smoothing (spec: 0.1) */
  labelSmoothing?: number;
  /** MAC budget for MSGC models; ignored for dense ones */
  budget?: BudgetOptions;
  validation?: BatchSource;
  callbacks?: Callbacks;
  /** progress bar on stderr (default true) */
  verbose?: boolean;
  /** checkpoints, metrics.json and model.safetensors go here */
  outDir?: string;
  /** continue from outDir's checkpoint when there is one */
  resume?: boolean;
  /** seeds the global generator at the start (not on resume: the checkpoint's state is restored instead) */
  seed?: number;
  /** label of the progress bar */
  name?: string;
  /**
   * After the last epoch, re-estimate the host BatchNorms' running statistics with the gates in eval mode over
   * this many training batches (see recalibrateBatchNorm). 0 / absent: off (the spec's recipe).
   */
  recalibrateBatchNorm?: number;
  /**
   * [pFrom, pTo]: scale the gates' training noise from 1 (the spec) at progress pFrom linearly down to 0 at pTo,
   * so that late in a short schedule the network trains with the deterministic gates it is evaluated with
   * (logits that stay near 0 make the spec's noisy gates a strong dropout). From pTo on the gates are frozen
   * (GateHead.frozen: eval gates, no gradient into the gate heads) while the rest of the network keeps training.
   * Absent: the spec's constant noise.
   */
  gateNoiseAnneal?: [number, number];
  /**
   * Knowledge distillation from a trained teacher (not in the spec's recipe): the loss becomes
   * (1 − alpha) · cross-entropy + alpha · F.distillation(student, teacher, { temperature }), with the teacher run in
   * eval mode without autograd on the same (augmented) batch. For a fair MSGC-vs-dense comparison give both
   * fine-tunings the same teacher.
   */
  distill?: DistillOptions;
  /**
   * Clip the gradients' global L2 norm to this value before every step (clipGradNorm; off when absent). The epoch
   * logs then report the mean norm before clipping (gradNorm), and a non-finite norm stops training with an error.
   */
  clipGradNorm?: number;
}

export interface DistillOptions {
  /** any model with the student's output shape (its weights are not trained) */
  teacher: { forward(x: Tensor): Tensor; eval(): unknown; train(mode?: boolean): unknown; readonly training: boolean };
  /** weight of the distillation term (default 0.5) */
  alpha?: number;
  /** softmax temperature (default 4) */
  temperature?: number;
  /**
   * Reuse the teacher's logits of batches seen before (TeacherLogitCache): two fine-tunings distilled from the
   * same teacher over the same seeded loader then run the teacher once. The teacher needs stateDict(); a cache
   * filled with other teacher weights is emptied first. Results are identical with and without it.
   */
  cache?: TeacherLogitCache;
}

export interface History {
  epochs: EpochLogs[];
  bestEpoch: number | null;
  bestTop1: number | null;
}

export interface EvalResult {
  top1: number;
  top5: number;
  loss: number;
  /** mean MACs per image actually used (dynamic for MSGC models) */
  macsPerImage: number;
  /** F_ori for the same input */
  denseMacs: number;
  macRatio: number;
  imagesPerSecond: number;
  samples: number;
}

interface CheckpointExtra {
  history: History;
}

function nowSeconds(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

/**
 * Evaluates in eval mode without autograd: Top-1/Top-5, plain cross-entropy, MACs per image. Runs where the model
 * is: after `model.to('cuda')` each batch is copied to the GPU and the logits back.
 */
export async function evaluate(model: Backbone, data: BatchSource, options: { verbose?: boolean; name?: string } = {}): Promise<EvalResult> {
  const wasTraining = model.training;
  model.eval();
  const params = model.parameters();
  const device = params.length ? (params[0].device as 'cpu' | 'cuda') : 'cpu';
  let samples = 0;
  let c1 = 0;
  let c5 = 0;
  let lossSum = 0;
  let macSum = 0;
  let dense = 0;
  const bar = new ProgressBar(!!options.verbose, options.name ?? 'eval');
  bar.start(data.length, { epoch: '', loss: '-', acc: '-', macs: '-', ips: '-' });
  const t0 = nowSeconds();
  let step = 0;
  try {
    for await (const batch of data) {
      const n = batch.y.length;
      tidy(() => {
        // the batch goes where the model is (Module.to('cuda') for the GPU); the metrics are computed on the CPU
        const x = batch.x.device === device ? batch.x : batch.x.to(device);
        const out = noGrad(() => model.forward(x));
        const logits = out.device === 'cpu' ? out : out.cpu();
        const values = logits.toFloat32Array();
        c1 += topKCorrect(values, batch.y, 1);
        c5 += topKCorrect(values, batch.y, 5);
        lossSum += noGrad(() => F.crossEntropy(logits, batch.y)).item() * n;
        const macs = model.lastMacs();
        macSum += macs.perImage * n;
        dense = macs.dense;
      });
      batch.x.dispose();
      samples += n;
      step++;
      bar.update(step, { epoch: '', loss: (lossSum / samples).toFixed(4), acc: ((100 * c1) / samples).toFixed(2), macs: (macSum / samples / dense).toFixed(3), ips: (samples / (nowSeconds() - t0)).toFixed(0) });
    }
  } finally {
    bar.stop();
    model.train(wasTraining);
  }
  const seconds = nowSeconds() - t0;
  const macsPerImage = samples ? macSum / samples : 0;
  return {
    top1: samples ? c1 / samples : 0,
    top5: samples ? c5 / samples : 0,
    loss: samples ? lossSum / samples : 0,
    macsPerImage,
    denseMacs: dense,
    macRatio: dense ? macsPerImage / dense : 1,
    imagesPerSecond: seconds > 0 ? samples / seconds : 0,
    samples,
  };
}

/** Trains `model` on `data`; returns the per-epoch history (also written to outDir/metrics.json). */
export async function fit(model: Backbone, data: BatchSource, options: FitOptions): Promise<History> {
  const o = options;
  if (!Number.isInteger(o.epochs) || o.epochs < 1) throw new Error(`fit: epochs must be a positive integer, got ${o.epochs}`);
  if (!(o.lr > 0)) throw new Error(`fit: lr must be positive, got ${o.lr}`);
  if (o.budget && !(o.budget.target > 0 && o.budget.target <= 1)) throw new Error(`fit: budget.target must be in (0, 1], got ${o.budget.target}`);
  if (o.resume && !o.outDir) throw new Error('fit: resume needs outDir (where the checkpoint is)');
  const smoothing = o.labelSmoothing ?? 0.1;
  const budget = o.budget && model.msgc ? o.budget : null;
  const opt = new SGD(parameterGroups(model, { weightDecay: o.weightDecay ?? 1e-4, gateLrScale: o.gateLrScale }), {
    lr: o.lr,
    momentum: o.momentum ?? 0.9,
    nesterov: o.nesterov ?? true,
  });
  const paramNames = new Map<Tensor, string>(model.namedParameters().map(([n, p]) => [p, n]));
  const byName = new Map<string, Tensor>(model.namedParameters());
  let history: History = { epochs: [], bestEpoch: null, bestTop1: null };
  let startEpoch = 0;
  if (o.seed !== undefined) manualSeed(o.seed);
  if (o.resume && o.outDir) {
    const ck = loadCheckpoint<CheckpointExtra>(o.outDir, model);
    if (ck) {
      for (const [name, buf] of ck.momentum) {
        const p = byName.get(name);
        if (p) opt.setMomentum(p, buf);
        buf.dispose();
      }
      setRngState(ck.state.rngState);
      history = ck.state.extra.history;
      startEpoch = ck.state.epoch;
    }
  }
  const itersPerEpoch = data.length;
  const gates = model.namedModules().map(([, m]) => m).filter((m): m is GateHead => m instanceof GateHead);
  if (o.gateNoiseAnneal) {
    const [a, b] = o.gateNoiseAnneal;
    if (!(a >= 0 && b > a && b <= 1)) throw new Error(`fit: gateNoiseAnneal must be [pFrom, pTo] with 0 <= pFrom < pTo <= 1, got [${a}, ${b}]`);
  }
  const distill = o.distill ?? null;
  const alpha = distill?.alpha ?? 0.5;
  const temperature = distill?.temperature ?? 4;
  if (distill) {
    if (!distill.teacher || typeof distill.teacher.forward !== 'function') throw new Error('fit: distill.teacher must be a model (with forward)');
    if (!(alpha >= 0 && alpha <= 1)) throw new Error(`fit: distill.alpha must be in [0, 1], got ${alpha}`);
    if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`fit: distill.temperature must be a positive finite number, got ${temperature}`);
    if (distill.cache !== undefined && !(distill.cache instanceof TeacherLogitCache)) throw new Error('fit: distill.cache must be a TeacherLogitCache');
    distill.cache?.bindTeacher(distill.teacher);
  }
  const teacherCache = distill?.cache ?? null;
  const teacherWasTraining = distill ? distill.teacher.training : false;
  const clip = o.clipGradNorm;
  if (clip !== undefined && !(typeof clip === 'number' && Number.isFinite(clip) && clip > 0)) throw new Error(`fit: clipGradNorm must be a positive finite number, got ${clip}`);
  const params = model.parameters();
  const bar = new ProgressBar(o.verbose ?? true, o.name ?? 'train');
  try {
    distill?.teacher.eval();
    for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      opt.lr = cosineLr(o.lr, epoch, o.epochs, o.warmupEpochs ?? 0);
      data.setEpoch?.(epoch);
      await o.callbacks?.onEpochBegin?.(epoch);
      model.train();
      let seen = 0;
      let lossSum = 0;
      let correct = 0;
      let ratioSum = 0;
      let normSum = 0;
      let step = 0;
      let target: number | null = null;
      const t0 = nowSeconds();
      bar.start(itersPerEpoch, { epoch: `${epoch + 1}/${o.epochs}`, loss: '-', acc: '-', macs: '-', ips: '-' });
      for await (const batch of data) {
        const n = batch.y.length;
        const progress = progressOf(epoch, step, itersPerEpoch, o.epochs);
        target = budget ? macTarget(progress, budget) : null;
        if (o.gateNoiseAnneal) {
          const sigma = gateNoiseScale(progress, o.gateNoiseAnneal);
          for (const g of gates) {
            g.noiseScale = sigma;
            g.frozen = sigma === 0;
          }
        }
        const r = tidy(() => {
          const teacherForward = () => noGrad(() => distill!.teacher.forward(batch.x));
          const teacherLogits = distill ? (teacherCache ? teacherCache.logits(batch.x, teacherForward) : teacherForward()) : null;
          const logits = model.forward(batch.x);
          const ce = F.crossEntropy(logits, batch.y, { labelSmoothing: smoothing });
          let loss = ce;
          if (teacherLogits) {
            const kd = F.distillation(logits, teacherLogits, { temperature });
            loss = F.add(F.scale(ce, 1 - alpha), F.scale(kd, alpha));
          }
          const macs = model.lastMacs();
          if (budget && target !== null) {
            const b = macBudgetLoss(macs, target, budget.lambda ?? 30);
            if (b.loss) loss = F.add(ce, b.loss);
          }
          opt.zeroGrad();
          loss.backward();
          let norm = 0;
          if (clip !== undefined) {
            norm = clipGradNorm(params, clip);
            if (!Number.isFinite(norm)) throw new Error(`fit: the gradient norm is ${norm} at epoch ${epoch + 1}, step ${step + 1}: training diverged`);
          }
          opt.step();
          return { ce: ce.item(), correct: topKCorrect(logits.toFloat32Array(), batch.y, 1), ratio: macs.ratio, norm };
        });
        batch.x.dispose();
        seen += n;
        lossSum += r.ce * n;
        correct += r.correct;
        ratioSum += r.ratio * n;
        normSum += r.norm;
        step++;
        bar.update(step, {
          epoch: `${epoch + 1}/${o.epochs}`,
          loss: (lossSum / seen).toFixed(4),
          acc: ((100 * correct) / seen).toFixed(2),
          macs: (ratioSum / seen).toFixed(3),
          ips: (seen / (nowSeconds() - t0)).toFixed(0),
        });
        await o.callbacks?.onBatchEnd?.({ epoch, step, loss: r.ce, top1: r.correct / n, macRatio: r.ratio });
      }
      opt.zeroGrad();
      bar.stop();
      const seconds = nowSeconds() - t0;
      const logs: EpochLogs = {
        epoch,
        lr: opt.lr,
        loss: seen ? lossSum / seen : 0,
        top1: seen ? correct / seen : 0,
        macRatio: seen ? ratioSum / seen : 1,
        macTarget: target,
        imagesPerSecond: seconds > 0 ? seen / seconds : 0,
        seconds,
      };
      if (clip !== undefined && step) logs.gradNorm = normSum / step;
      if (o.validation) logs.val = await evaluate(model, o.validation, { verbose: o.verbose ?? true, name: 'val' });
      history.epochs.push(logs);
      const score = logs.val ? logs.val.top1 : logs.top1;
      const improved = history.bestTop1 === null || score > history.bestTop1;
      if (improved) {
        history.bestTop1 = score;
        history.bestEpoch = epoch;
      }
      if (o.outDir) {
        const momentum = new Map<string, Tensor>();
        for (const [p, buf] of opt.state()) momentum.set(paramNames.get(p)!, buf);
        saveCheckpoint<CheckpointExtra>(o.outDir, epoch + 1, model, momentum, getRngState(), { history });
        writeJsonAtomic(path.join(o.outDir, 'metrics.json'), history);
        if (improved) save(model.stateDict(), path.join(o.outDir, 'model-best.safetensors'), { epoch: String(epoch) });
      }
      await o.callbacks?.onEpochEnd?.(epoch, logs);
    }
    if (o.recalibrateBatchNorm) {
      data.setEpoch?.(o.epochs);
      await recalibrateBatchNorm(model, data, { batches: o.recalibrateBatchNorm });
    }
    if (o.outDir) {
      fs.mkdirSync(o.outDir, { recursive: true });
      save(model.stateDict(), path.join(o.outDir, 'model.safetensors'), { epochs: String(o.epochs) });
      writeJsonAtomic(path.join(o.outDir, 'metrics.json'), history);
    }
  } finally {
    distill?.teacher.train(teacherWasTraining);
    for (const g of gates) {
      g.noiseScale = 1;
      g.frozen = false;
    }
    bar.stop();
    opt.zeroGrad();
    opt.dispose();
  }
  return history;
}
