// datasets.ts: one entry point for every dataset msgc can read, with its normalization statistics and default
// train/eval transforms.
//
//   const { dataset, transform } = await loadDataset('cifar10', { dir: './data', split: 'train' });
//   const loader = new DataLoader(dataset, { batchSize: 128, shuffle: true, seed: 1, transform });
import * as fs from 'fs';
import * as path from 'path';
import { ArrayDataset } from './loader';
import { loadFashionMNIST, loadMNIST, Split } from './idx';
import { loadCIFAR10, loadCIFAR100 } from './cifar';
import { loadImageFolder } from './imagefolder';
import {
  CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD,
  MNIST_MEAN, MNIST_STD, Transform, compose, horizontalFlip, normalize, randomCrop,
} from './transforms';

export type DatasetName = 'fashion-mnist' | 'mnist' | 'cifar10' | 'cifar100' | 'imagefolder';
export const DATASET_NAMES: DatasetName[] = ['fashion-mnist', 'mnist', 'cifar10', 'cifar100', 'imagefolder'];

export interface LoadDatasetOptions {
  /** where the files are (see each loader for the search order; for imagefolder: the folder holding train/ and val/ or test/) */
  dir?: string;
  /** default 'train' */
  split?: Split;
  /** cifar100: 'fine' (default) or 'coarse' */
  labels?: 'fine' | 'coarse';
  /** imagefolder: the class-folder root itself (instead of dir/<split>) */
  root?: string;
  /** imagefolder: output size (default 224) */
  size?: [number, number] | number;
  /** imagefolder: shorter side before the center crop (default: the size) */
  resize?: number;
  /** imagefolder: 3 (default) or 1 */
  channels?: 1 | 3;
  /** imagefolder: progress of the decoding */
  onProgress?: (done: number, total: number) => void;
}

export interface DatasetDefaults {
  /** per-channel mean and std of [0, 1] values */
  mean: number[];
  std: number[];
  /** augmentation + normalize, for training */
  trainTransform: Transform;
  /** normalize only */
  evalTransform: Transform;
}

export interface LoadedDataset extends DatasetDefaults {
  name: DatasetName;
  split: Split;
  dataset: ArrayDataset;
  /** trainTransform for the train split, evalTransform for the test split */
  transform: Transform;
}

/** Canonical name of a dataset name or alias ('FashionMNIST', 'fmnist', 'CIFAR-10', 'image-folder', ...). */
export function datasetName(name: string): DatasetName {
  const k = String(name).toLowerCase().replace(/[-_ ]/g, '');
  const map: Record<string, DatasetName> = {
    fashionmnist: 'fashion-mnist',
    fmnist: 'fashion-mnist',
    mnist: 'mnist',
    cifar10: 'cifar10',
    cifar100: 'cifar100',
    imagefolder: 'imagefolder',
  };
  const n = map[k];
  if (!n) throw new Error(`unknown dataset ${JSON.stringify(name)}; known: ${DATASET_NAMES.join(', ')}`);
  return n;
}

/**
 * Normalization statistics and default transforms of a dataset:
 *   fashion-mnist: randomCrop(28, padding 2) + horizontalFlip + normalize(0.2860, 0.3530)
 *   mnist:         randomCrop(28, padding 2) + normalize(0.1307, 0.3081)   (no flip: digits are not symmetric)
 *   cifar10/100:   randomCrop(32, padding 4) + horizontalFlip + normalize(CIFAR stats)
 *   imagefolder:   horizontalFlip + normalize(ImageNet stats)   (images were resized/center-cropped when loaded)
 * The eval transform is the normalize alone.
 */
export function datasetDefaults(name: DatasetName | string, imageSize: [number, number] = [0, 0]): DatasetDefaults {
  const n = datasetName(name);
  let mean: number[];
  let std: number[];
  let augment: Transform[];
  switch (n) {
    case 'fashion-mnist':
      [mean, std] = [FASHION_MNIST_MEAN, FASHION_MNIST_STD];
      augment = [randomCrop(imageSize[0] ? imageSize : 28, 2), horizontalFlip()];
      break;
    case 'mnist':
      [mean, std] = [MNIST_MEAN, MNIST_STD];
      augment = [randomCrop(imageSize[0] ? imageSize : 28, 2)];
      break;
    case 'cifar10':
      [mean, std] = [CIFAR10_MEAN, CIFAR10_STD];
      augment = [randomCrop(imageSize[0] ? imageSize : 32, 4), horizontalFlip()];
      break;
    case 'cifar100':
      [mean, std] = [CIFAR100_MEAN, CIFAR100_STD];
      augment = [randomCrop(imageSize[0] ? imageSize : 32, 4), horizontalFlip()];
      break;
    case 'imagefolder':
      [mean, std] = [IMAGENET_MEAN, IMAGENET_STD];
      augment = [horizontalFlip()];
      break;
  }
  const norm = normalize(mean, std);
  return { mean: mean.slice(), std: std.slice(), trainTransform: compose(...augment, norm), evalTransform: norm };
}

function imageFolderRoot(options: LoadDatasetOptions, split: Split): string {
  if (options.root) return options.root;
  if (!options.dir) throw new Error('loadDataset(imagefolder): give dir (holding train/ and val/ or test/ class folders) or root');
  const tried = split === 'train' ? ['train'] : ['test', 'val'];
  for (const sub of tried) {
    const p = path.join(options.dir, sub);
    if (fs.statSync(p, { throwIfNoEntry: false })?.isDirectory()) return p;
  }
  throw new Error(`loadDataset(imagefolder): no ${tried.map((s) => path.join(options.dir as string, s)).join(' or ')} folder for the ${split} split (pass root to use a folder directly)`);
}

/** Loads a dataset split and returns it with its statistics and default transforms. */
export async function loadDataset(name: DatasetName | string, options: LoadDatasetOptions = {}): Promise<LoadedDataset> {
  const n = datasetName(name);
  const split = options.split ?? 'train';
  if (split !== 'train' && split !== 'test') throw new Error(`loadDataset: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  let dataset: ArrayDataset;
  switch (n) {
    case 'fashion-mnist':
      dataset = loadFashionMNIST({ dir: options.dir, split });
      break;
    case 'mnist':
      dataset = loadMNIST({ dir: options.dir, split });
      break;
    case 'cifar10':
      dataset = loadCIFAR10({ dir: options.dir, split });
      break;
    case 'cifar100':
      dataset = loadCIFAR100({ dir: options.dir, split, labels: options.labels });
      break;
    case 'imagefolder':
      dataset = await loadImageFolder({
        root: imageFolderRoot(options, split),
        size: options.size ?? 224,
        resize: options.resize,
        channels: options.channels,
        onProgress: options.onProgress,
      });
      break;
  }
  const defaults = datasetDefaults(n, [dataset.height, dataset.width]);
  return { name: n, split, dataset, ...defaults, transform: split === 'train' ? defaults.trainTransform : defaults.evalTransform };
}
