// run.ts: what `msgc train`, `msgc eval` and `msgc demo` share — building models from a run description,
// loading dataset splits into loaders, and the run.json that lets `eval` rebuild a trained model.
import * as fs from 'fs';
import * as path from 'path';
import { ArrayDataset, DataLoader, loadDataset } from '../data/index';
import { writeJsonAtomic } from '../io/atomic';
import { load } from '../io/safetensors';
import { Backbone, MsgcOptions } from '../models/common';
import { createModel } from '../models/registry';
import { Rng, mixSeed, permutation } from '../data/transforms';

/** Everything needed to rebuild a model (saved as run.json next to its weights). */
export interface ModelSpec {
  model: string;
  numClasses: number;
  inChannels: number;
  smallInput: boolean;
  msgc: false | Required<MsgcOptions>;
}

export function buildModel(spec: ModelSpec): Backbone {
  return createModel(spec.model, { numClasses: spec.numClasses, inChannels: spec.inChannels, smallInput: spec.smallInput, msgc: spec.msgc });
}

/** Loads safetensors weights into `model`; strict unless the file is a dense checkpoint for an MSGC model. */
export function loadWeights(model: Backbone, file: string): { missing: string[] } {
  if (!fs.existsSync(file)) throw new Error(`weights file ${file} does not exist`);
  const dict = load(file);
  try {
    const r = model.loadStateDict(dict, { strict: false });
    if (r.unexpectedKeys.length) throw new Error(`${file} has keys this model lacks: ${r.unexpectedKeys.slice(0, 5).join(', ')}${r.unexpectedKeys.length > 5 ? ', …' : ''}`);
    const missingBackbone = r.missingKeys.filter((k) => !/\.(mask|att)\d?\./.test(k));
    if (missingBackbone.length) throw new Error(`${file} lacks weights for: ${missingBackbone.slice(0, 5).join(', ')}${missingBackbone.length > 5 ? ', …' : ''}`);
    return { missing: r.missingKeys };
  } finally {
    for (const t of Object.values(dict)) t.dispose();
  }
}

export function writeRunJson(dir: string, value: Record<string, unknown>): void {
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(path.join(dir, 'run.json'), value);
}

export function readRunJson(dir: string): { spec: ModelSpec; dataset: string } {
  const file = path.join(dir, 'run.json');
  if (!fs.existsSync(file)) throw new Error(`${file} not found: --run must point to the output folder of msgc train`);
  const v = JSON.parse(fs.readFileSync(file, 'utf8'));
  return { spec: v.modelSpec as ModelSpec, dataset: v.dataset as string };
}

export interface Splits {
  train: DataLoader;
  test: DataLoader;
  trainSet: ArrayDataset;
  testSet: ArrayDataset;
  numClasses: number;
  channels: number;
  height: number;
  width: number;
}

/** Train and test loaders of a dataset; `trainSamples` takes a seeded random subset of the training split. */
export async function loadSplits(name: string, options: { dir?: string; batchSize: number; seed: number; trainSamples?: number; testSamples?: number }): Promise<Splits> {
  const tr = await loadDataset(name, { dir: options.dir, split: 'train' });
  const te = await loadDataset(name, { dir: options.dir, split: 'test' });
  const pick = (ds: ArrayDataset, n: number | undefined, salt: number) => {
    if (!n || n >= ds.length) return ds;
    return ds.subset(permutation(ds.length, new Rng(mixSeed(options.seed, salt))).subarray(0, n));
  };
  const trainSet = pick(tr.dataset, options.trainSamples, 17);
  const testSet = pick(te.dataset, options.testSamples, 29);
  return {
    train: new DataLoader(trainSet, { batchSize: options.batchSize, shuffle: true, seed: options.seed, dropLast: true, transform: tr.trainTransform }),
    test: new DataLoader(testSet, { batchSize: Math.max(options.batchSize, 100), transform: te.evalTransform }),
    trainSet,
    testSet,
    numClasses: tr.dataset.numClasses,
    channels: tr.dataset.channels,
    height: tr.dataset.height,
    width: tr.dataset.width,
  };
}
