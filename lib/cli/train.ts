// train.ts: `msgc train` and `msgc eval`.
import * as path from 'path';
import { countMacs } from '../macs/count';
import { evaluate, fit } from '../train/fit';
import { buildModel, loadSplits, loadWeights, ModelSpec, readRunJson, writeRunJson } from './run';

export interface TrainCommandOptions {
  model: string;
  msgc?: boolean;
  target?: number;
  heads: number;
  attention?: boolean;
  dataset: string;
  data?: string;
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  warmupEpochs: number;
  labelSmoothing: number;
  recalibrateBn: number;
  rampEnd: number;
  gateNoiseAnneal: [number, number] | null;
  trainSamples?: number;
  from?: string;
  /** output folder of a previous msgc train whose model distills into this one */
  teacher?: string;
  distillAlpha: number;
  distillTemperature: number;
  clipGradNorm?: number;
  out: string;
  resume?: boolean;
  seed: number;
  progress: boolean;
  json?: boolean;
}

export async function trainCommand(o: TrainCommandOptions): Promise<void> {
  const boosted = !!o.msgc || o.target !== undefined;
  const splits = await loadSplits(o.dataset, { dir: o.data, batchSize: o.batchSize, seed: o.seed, trainSamples: o.trainSamples });
  const spec: ModelSpec = {
    model: o.model,
    numClasses: splits.numClasses,
    inChannels: splits.channels,
    smallInput: splits.height <= 64,
    msgc: boosted ? { heads: o.heads, attention: !!o.attention } : false,
  };
  // MSGC runs clip the gradients' global norm at 5 unless told otherwise (msgc demo's fine-tunings do: an MSGC
  // fine-tuning without it lost 4 points of training accuracy in one epoch while its gate-head weight norms
  // doubled; the dense model's norm stays near 0.5, so the clip never acts there); dense runs do not clip
  const clip = o.clipGradNorm ?? (boosted ? 5 : 0);
  const model = buildModel(spec);
  let teacher: ReturnType<typeof buildModel> | null = null;
  try {
    if (o.from) loadWeights(model, o.from);
    if (o.teacher) {
      teacher = buildModel(readRunJson(o.teacher).spec);
      loadWeights(teacher, path.join(o.teacher, 'model.safetensors'));
    }
    writeRunJson(o.out, { modelSpec: spec, dataset: o.dataset, options: { ...o, clipGradNorm: clip } });
    const history = await fit(model, splits.train, {
      epochs: o.epochs,
      lr: o.lr,
      weightDecay: o.weightDecay,
      warmupEpochs: o.warmupEpochs,
      labelSmoothing: o.labelSmoothing,
      recalibrateBatchNorm: o.recalibrateBn,
      budget: boosted ? { target: o.target ?? 0.5, pStop: o.rampEnd } : undefined,
      gateNoiseAnneal: o.gateNoiseAnneal ?? undefined,
      validation: splits.test,
      outDir: o.out,
      resume: o.resume,
      seed: o.resume ? undefined : o.seed,
      verbose: o.progress && !o.json,
      distill: teacher ? { teacher, alpha: o.distillAlpha, temperature: o.distillTemperature } : undefined,
      clipGradNorm: clip || undefined, // (0: off, as in msgc demo)
    });
    const last = history.epochs[history.epochs.length - 1];
    const summary = {
      out: path.resolve(o.out),
      epochs: history.epochs.length,
      bestEpoch: history.bestEpoch,
      bestTop1: history.bestTop1,
      last: last && { loss: last.loss, top1: last.top1, macRatio: last.macRatio, imagesPerSecond: last.imagesPerSecond, val: last.val },
      denseMacs: countMacs(model, [splits.channels, splits.height, splits.width]).dense,
    };
    if (o.json) console.log(JSON.stringify(summary, null, 2));
    else if (last?.val) {
      console.log(`done: top-1 ${(100 * last.val.top1).toFixed(2)}% (best ${(100 * (history.bestTop1 ?? 0)).toFixed(2)}% at epoch ${(history.bestEpoch ?? 0) + 1}), ` +
        `MACs ${(last.val.macsPerImage / 1e6).toFixed(2)} M / ${(last.val.denseMacs / 1e6).toFixed(2)} M (ratio ${last.val.macRatio.toFixed(3)}); weights in ${path.join(o.out, 'model.safetensors')}`);
    }
  } finally {
    model.dispose();
    teacher?.dispose();
  }
}

export interface EvalCommandOptions {
  run?: string;
  weights?: string;
  model?: string;
  msgc?: boolean;
  heads: number;
  attention?: boolean;
  dataset?: string;
  data?: string;
  batchSize: number;
  progress: boolean;
  json?: boolean;
  /** 'cuda': the model on the GPU (a CUDA build) */
  device?: string;
}

export async function evalCommand(o: EvalCommandOptions): Promise<void> {
  let spec: ModelSpec | null = null;
  let dataset = o.dataset ?? 'fashion-mnist';
  let weights = o.weights;
  if (o.run) {
    const r = readRunJson(o.run);
    spec = r.spec;
    dataset = o.dataset ?? r.dataset;
    weights = weights ?? path.join(o.run, 'model.safetensors');
  }
  const splits = await loadSplits(dataset, { dir: o.data, batchSize: o.batchSize, seed: 0, trainSamples: 1 });
  if (!spec) {
    if (!o.model) throw new Error('eval: give --run DIR (a msgc train output) or --model with --weights');
    spec = { model: o.model, numClasses: splits.numClasses, inChannels: splits.channels, smallInput: splits.height <= 64, msgc: o.msgc ? { heads: o.heads, attention: !!o.attention } : false };
  }
  if (!weights) throw new Error('eval: --weights FILE is required without --run');
  const model = buildModel(spec);
  try {
    loadWeights(model, weights);
    const device = o.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new Error(`eval: --device must be cpu or cuda, got ${device}`);
    if (device === 'cuda') model.to('cuda');
    const r = await evaluate(model, splits.test, { verbose: o.progress && !o.json });
    if (o.json) console.log(JSON.stringify({ weights, dataset, device, ...r }, null, 2));
    else {
      console.log(`top-1 ${(100 * r.top1).toFixed(2)}%  top-5 ${(100 * r.top5).toFixed(2)}%  loss ${r.loss.toFixed(4)}  ` +
        `MACs ${(r.macsPerImage / 1e6).toFixed(2)} M / ${(r.denseMacs / 1e6).toFixed(2)} M (ratio ${r.macRatio.toFixed(3)})  ${r.imagesPerSecond.toFixed(0)} images/s`);
    }
  } finally {
    model.dispose();
  }
}
