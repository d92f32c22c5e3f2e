// demo.ts: `msgc demo`, the main job. On Fashion-MNIST: train a small-input ResNet dense from scratch, then
// fine-tune it twice for the same number of epochs — once as MSGC with a MAC budget (target 0.5 by default),
// once dense (the fair baseline the spec's §7.2 asks for) — evaluate both on the test set, and print a table
// (Top-1, MACs, MAC ratio, images/s). Writes OUT/report.json and OUT/accuracy-vs-macs.svg; each stage's
// checkpoints, metrics.json and model.safetensors go to OUT/<stage>/.
import * as fs from 'fs';
import * as path from 'path';
import { writeJsonAtomic } from '../io/atomic';
import { Backbone } from '../models/common';
import { renderChart } from '../report/svg';
import { backendInfo } from '../native';
import { evaluate, EvalResult, fit, History } from '../train/fit';
import { TeacherLogitCache } from '../train/teacher_cache';
import { buildModel, loadSplits, loadWeights, ModelSpec, Splits, writeRunJson } from './run';

export interface DemoOptions {
  model: string;
  dataset: string;
  data?: string;
  out: string;
  epochs: number;
  finetuneEpochs: number;
  batchSize: number;
  lr: number;
  finetuneLr: number;
  /** linear warm-up epochs at the start of both fine-tunings (0: none) */
  finetuneWarmup?: number;
  target: number;
  heads: number;
  /** MSGC with attention heads (spec §2.4) */
  attention?: boolean;
  recalibrateBn: number;
  rampEnd: number;
  gateNoiseAnneal: [number, number] | null;
  /** weight α of knowledge distillation from the dense stage's model in both fine-tunings (0: off) */
  distill: number;
  distillTemperature: number;
  /** clip both fine-tunings' gradient norm to this (absent or 0: no clipping) */
  clipGradNorm?: number;
  trainSamples?: number;
  testSamples?: number;
  seed: number;
  progress: boolean;
  json?: boolean;
}

interface StageResult {
  stage: string;
  history: History;
  eval: EvalResult;
  trainSeconds: number;
  trainImagesPerSecond: number;
}

function log(o: DemoOptions, line: string): void {
  if (!o.json) console.error(line);
}

async function stage(o: DemoOptions, splits: Splits, name: string, spec: ModelSpec, epochs: number, lr: number, from: string | null, target: number | null, teacherSpec: ModelSpec | null = null,
  teacherCache?: TeacherLogitCache): Promise<StageResult> {
  const dir = path.join(o.out, name);
  const model: Backbone = buildModel(spec);
  let teacher: Backbone | null = null;
  try {
    if (from) loadWeights(model, from);
    if (teacherSpec && from) {
      teacher = buildModel(teacherSpec);
      loadWeights(teacher, from);
    }
    // fine-tuning stages clip the gradient norm (0: off)
    const clip = from && o.clipGradNorm ? o.clipGradNorm : undefined;
    writeRunJson(dir, { modelSpec: spec, dataset: o.dataset, stage: name, from, epochs, lr, warmupEpochs: from ? o.finetuneWarmup ?? 0 : 0, target,
      distill: teacher ? { teacher: from, alpha: o.distill, temperature: o.distillTemperature } : null,
      clipGradNorm: clip ?? null });
    log(o, `\n[${name}] ${spec.model}${spec.msgc ? ` + MSGC (G=${spec.msgc.heads}${spec.msgc.attention ? ', attention' : ''}, MAC target ${target} reached at ${o.rampEnd} of the run, gate noise ${o.gateNoiseAnneal ? `annealed over ${o.gateNoiseAnneal.join('-')}` : 'constant'})` : ' dense'}, ${epochs} epochs, lr ${lr}${from ? `, from ${path.relative(process.cwd(), from)}` : ''}${teacher ? `, distilled from it (α ${o.distill}, T ${o.distillTemperature})` : ''}`);
    const t0 = Date.now();
    const history = await fit(model, splits.train, {
      epochs,
      lr,
      warmupEpochs: from ? o.finetuneWarmup ?? 0 : 0,
      weightDecay: 5e-4,
      labelSmoothing: 0.1,
      budget: target !== null ? { target, pStop: o.rampEnd } : undefined,
      gateNoiseAnneal: target !== null ? o.gateNoiseAnneal ?? undefined : undefined,
      outDir: dir,
      resume: true,
      seed: o.seed,
      verbose: o.progress && !o.json,
      name,
      // fine-tuning stages (MSGC and dense alike) end with BatchNorm statistics re-estimated under eval-mode
      // gates: on this short schedule many gate logits stay near 0, noisy in training, deterministic in eval
      recalibrateBatchNorm: from ? o.recalibrateBn : 0,
      distill: teacher ? { teacher, alpha: o.distill, temperature: o.distillTemperature, cache: teacherCache } : undefined,
      clipGradNorm: clip,
    });
    const trainSeconds = (Date.now() - t0) / 1000;
    const ev = await evaluate(model, splits.test, { verbose: o.progress && !o.json, name: `${name} test` });
    const images = history.epochs.reduce((a, e) => a + e.imagesPerSecond * e.seconds, 0);
    const seconds = history.epochs.reduce((a, e) => a + e.seconds, 0);
    log(o, `[${name}] test top-1 ${(100 * ev.top1).toFixed(2)}%, MACs ${(ev.macsPerImage / 1e6).toFixed(2)} M (ratio ${ev.macRatio.toFixed(3)}), ${ev.imagesPerSecond.toFixed(0)} images/s`);
    return { stage: name, history, eval: ev, trainSeconds, trainImagesPerSecond: seconds > 0 ? images / seconds : 0 };
  } finally {
    model.dispose();
    teacher?.dispose();
  }
}

export async function demoCommand(o: DemoOptions): Promise<void> {
  const started = Date.now();
  const info = backendInfo();
  log(o, `msgc demo: ${o.model} on ${o.dataset} (backend ${info.backend}, ${info.library}, ${info.threads} threads, ${info.gatheredKernels} gathered kernels); output in ${path.resolve(o.out)}`);
  fs.mkdirSync(o.out, { recursive: true });
  const splits = await loadSplits(o.dataset, { dir: o.data, batchSize: o.batchSize, seed: o.seed, trainSamples: o.trainSamples, testSamples: o.testSamples });
  log(o, `data: ${splits.trainSet.length} training images (${splits.train.length} batches of ${o.batchSize}), ${splits.testSet.length} test images, ${splits.channels}x${splits.height}x${splits.width}, ${splits.numClasses} classes`);
  const base: ModelSpec = { model: o.model, numClasses: splits.numClasses, inChannels: splits.channels, smallInput: true, msgc: false };
  const boostedSpec: ModelSpec = { ...base, msgc: { heads: o.heads, attention: !!o.attention } };
  // (its own folder with attention, so that a resumed run never mixes the two models' checkpoints)
  const kd = o.distill > 0 ? '-kd' : '';
  const msgcStage = (o.attention ? 'msgc-att-finetune' : 'msgc-finetune') + kd;
  const teacher = o.distill > 0 ? base : null;

  const dense = await stage(o, splits, 'dense', base, o.epochs, o.lr, null, null);
  const denseWeights = path.join(o.out, 'dense', 'model.safetensors');
  // both fine-tunings distil from the dense stage's model over the same seeded batches: the second one reuses the
  // first one's teacher logits (TeacherLogitCache; identical results, one teacher forward per batch saved)
  const teacherCache = teacher ? new TeacherLogitCache() : undefined;
  const msgc = await stage(o, splits, msgcStage, boostedSpec, o.finetuneEpochs, o.finetuneLr, denseWeights, o.target, teacher, teacherCache);
  const denseFt = await stage(o, splits, 'dense-finetune' + kd, base, o.finetuneEpochs, o.finetuneLr, denseWeights, null, teacher, teacherCache);

  const rows = [dense, denseFt, msgc].map((r) => ({
    model: r.stage === msgcStage ? `${o.model} + MSGC${o.attention ? ' att' : ''}${kd ? ' KD' : ''} (target ${o.target})` : `${o.model} ${r.stage === 'dense' ? 'dense' : 'dense, fine-tuned'}${r.stage !== 'dense' && kd ? ' (KD)' : ''}`,
    stage: r.stage,
    epochs: r.history.epochs.length,
    top1: r.eval.top1,
    top5: r.eval.top5,
    loss: r.eval.loss,
    macsPerImage: r.eval.macsPerImage,
    denseMacs: r.eval.denseMacs,
    macRatio: r.eval.macRatio,
    evalImagesPerSecond: r.eval.imagesPerSecond,
    trainImagesPerSecond: r.trainImagesPerSecond,
    trainSeconds: r.trainSeconds,
  }));
  const claim = {
    macRatioAtMostHalf: msgc.eval.macRatio <= 0.5 + 1e-9,
    top1AtLeastDenseFinetuned: msgc.eval.top1 >= denseFt.eval.top1,
  };
  const report = {
    date: new Date().toISOString(),
    backend: info,
    options: o,
    data: { dataset: o.dataset, train: splits.trainSet.length, test: splits.testSet.length, shape: [splits.channels, splits.height, splits.width] },
    rows,
    claim,
    seconds: (Date.now() - started) / 1000,
  };
  writeJsonAtomic(path.join(o.out, 'report.json'), report);
  const svg = renderChart({
    title: `${o.dataset}: test top-1 vs MACs per image`,
    xLabel: 'MACs per image (millions)',
    yLabel: 'top-1 (%)',
    series: rows.map((r) => ({ name: r.model, points: [{ x: Number((r.macsPerImage / 1e6).toFixed(3)), y: Number((100 * r.top1).toFixed(2)), label: `${(100 * r.top1).toFixed(2)}%` }] })),
  });
  fs.writeFileSync(path.join(o.out, 'accuracy-vs-macs.svg'), svg);
  if (o.json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  console.log('');
  console.log(`${'model'.padEnd(34)} ${'top-1'.padStart(7)} ${'MACs (M)'.padStart(9)} ${'ratio'.padStart(6)} ${'eval img/s'.padStart(10)} ${'train img/s'.padStart(11)}`);
  for (const r of rows) {
    console.log(`${r.model.padEnd(34)} ${(100 * r.top1).toFixed(2).padStart(6)}% ${(r.macsPerImage / 1e6).toFixed(2).padStart(9)} ${r.macRatio.toFixed(3).padStart(6)} ${r.evalImagesPerSecond.toFixed(0).padStart(10)} ${r.trainImagesPerSecond.toFixed(0).padStart(11)}`);
  }
  console.log('');
  console.log(`MSGC at ${msgc.eval.macRatio.toFixed(3)}x the dense MACs: top-1 ${(100 * msgc.eval.top1).toFixed(2)}% vs ${(100 * denseFt.eval.top1).toFixed(2)}% for the equally fine-tuned dense model` +
    ` (${claim.macRatioAtMostHalf && claim.top1AtLeastDenseFinetuned ? 'the paper\'s claim holds at this scale' : 'the paper\'s claim does not hold in this run'}).`);
  console.log(`report: ${path.join(o.out, 'report.json')}, chart: ${path.join(o.out, 'accuracy-vs-macs.svg')} (${report.seconds.toFixed(0)} s)`);
}
