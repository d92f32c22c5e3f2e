// cifar.ts: the CIFAR-10 and CIFAR-100 binary versions (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz).
//
// CIFAR-10: data_batch_1.bin .. data_batch_5.bin (train, 50000) and test_batch.bin (10000); each record is 1 label
// byte (0..9) then 3072 bytes of image (1024 R, 1024 G, 1024 B, rows of 32) — already CHW.
// CIFAR-100: train.bin (50000) and test.bin (10000); each record is a coarse label byte (0..19), a fine label byte
// (0..99), then the same 3072 image bytes.
// A file whose length is not a positive multiple of the record size, or with a label out of range, is an error
// naming the file.
import * as fs from 'fs';
import * as path from 'path';
import { ArrayDataset } from './loader';
import { searchDirs, Split } from './idx';

export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

export const CIFAR100_COARSE_CLASSES = [
  'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables', 'household_electrical_devices',
  'household_furniture', 'insects', 'large_carnivores', 'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
  'large_omnivores_and_herbivores', 'medium_mammals', 'non-insect_invertebrates', 'people', 'reptiles', 'small_mammals',
  'trees', 'vehicles_1', 'vehicles_2',
];

export const CIFAR100_FINE_CLASSES = [
  'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle', 'bowl', 'boy',
  'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
  'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish', 'forest',
  'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard',
  'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid',
  'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine', 'possum',
  'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper',
  'snail', 'snake', 'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone',
  'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf',
  'woman', 'worm',
];

const IMAGE_BYTES = 3072;

export interface CifarFormat {
  /** label bytes before the image: 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine) */
  labelBytes: 1 | 2;
  /** which label byte to use (0-based) */
  labelIndex: number;
  numClasses: number;
}

/**
 * Reads CIFAR binary files into one uint8 dataset (3×32×32). Files are concatenated in the given order.
 */
export function readCifarFiles(files: string[], format: CifarFormat, classNames?: string[]): ArrayDataset {
  if (!files.length) throw new Error('readCifarFiles: no files given');
  const record = format.labelBytes + IMAGE_BYTES;
  const sizes = files.map((f) => {
    let size: number;
    try {
      size = fs.statSync(f).size;
    } catch (err) {
      throw new Error(`${f}: cannot read: ${(err as Error).message}`);
    }
    if (size === 0 || size % record !== 0) {
      throw new Error(`${f}: corrupt CIFAR file: ${size} bytes is not a positive multiple of the ${record}-byte record (${format.labelBytes} label byte${format.labelBytes > 1 ? 's' : ''} + 3072 image bytes); the file may be truncated or of the other CIFAR format`);
    }
    return size / record;
  });
  const n = sizes.reduce((a, b) => a + b, 0);
  const images = new Uint8Array(n * IMAGE_BYTES);
  const labels = new Int32Array(n);
  let k = 0;
  files.forEach((f, fi) => {
    const buf = fs.readFileSync(f);
    if (buf.length !== sizes[fi] * record) throw new Error(`${f}: the file changed while it was read`);
    for (let r = 0; r < sizes[fi]; r++, k++) {
      const o = r * record;
      const label = buf[o + format.labelIndex];
      if (label >= format.numClasses) throw new Error(`${f}: label ${label} of record ${r} is outside 0..${format.numClasses - 1} (byte offset ${o + format.labelIndex}); the file is corrupt or of the other CIFAR format`);
      labels[k] = label;
      images.set(buf.subarray(o + format.labelBytes, o + record), k * IMAGE_BYTES);
    }
  });
  return new ArrayDataset(images, labels, { channels: 3, height: 32, width: 32, numClasses: format.numClasses, classNames });
}

export interface CifarOptions {
  /** the folder of the extracted archive (its cifar-10-batches-bin / cifar-100-binary subfolder is searched too) */
  dir?: string;
  split?: Split;
}

export interface Cifar100Options extends CifarOptions {
  /** which label to use: 'fine' (100 classes, default) or 'coarse' (20 superclasses) */
  labels?: 'fine' | 'coarse';
}

function readNames(file: string, expected: number): string[] | null {
  try {
    const names = fs.readFileSync(file, 'utf8').split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
    return names.length === expected ? names : null;
  } catch {
    return null;
  }
}

function locate(label: string, dir: string | undefined, subdirs: string[], files: string[], howTo: string, split: Split): string {
  const looked: string[] = [];
  for (const d of searchDirs(dir, subdirs, [])) {
    let ok = false;
    try {
      ok = fs.statSync(d).isDirectory();
    } catch {
      ok = false;
    }
    if (!ok) {
      looked.push(`  ${d} (no such folder)`);
      continue;
    }
    const missing = files.filter((f) => {
      try {
        return !fs.statSync(path.join(d, f)).isFile();
      } catch {
        return true;
      }
    });
    if (!missing.length) return d;
    looked.push(`  ${d} (no ${missing.join(', no ')})`);
  }
  const notes: string[] = [];
  if (!dir) notes.push('no --data / dir was given');
  if (!process.env.MSGC_DATA) notes.push('MSGC_DATA is not set');
  throw new Error(`${label} (${split} split) not found. Looked in:\n${looked.length ? looked.join('\n') : '  (nowhere)'}\n${notes.length ? `(${notes.join('; ')})\n` : ''}${howTo}`);
}

function checkSplit(op: string, split: unknown): Split {
  if (split !== 'train' && split !== 'test') throw new Error(`${op}: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  return split;
}

/** CIFAR-10 binary version: 50000 train / 10000 test images, 3×32×32 uint8, 10 classes. */
export function loadCIFAR10(options: CifarOptions = {}): ArrayDataset {
  const split = checkSplit('loadCIFAR10', options.split ?? 'train');
  const names = split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'];
  const dir = locate(
    'CIFAR-10',
    options.dir,
    ['cifar-10-batches-bin', 'cifar10', 'cifar-10'],
    names,
    'To get it: download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (the binary version), extract it ' +
      '(tar xzf) and pass the folder with --data, or set MSGC_DATA to it.',
    split,
  );
  const classNames = readNames(path.join(dir, 'batches.meta.txt'), 10) ?? CIFAR10_CLASSES;
  return readCifarFiles(names.map((f) => path.join(dir, f)), { labelBytes: 1, labelIndex: 0, numClasses: 10 }, classNames);
}

/** CIFAR-100 binary version: 50000 train / 10000 test images, 3×32×32 uint8, 100 fine or 20 coarse classes. */
export function loadCIFAR100(options: Cifar100Options = {}): ArrayDataset {
  const split = checkSplit('loadCIFAR100', options.split ?? 'train');
  const which = options.labels ?? 'fine';
  if (which !== 'fine' && which !== 'coarse') throw new Error(`loadCIFAR100: labels must be 'fine' or 'coarse', got ${JSON.stringify(which)}`);
  const file = split === 'train' ? 'train.bin' : 'test.bin';
  const dir = locate(
    'CIFAR-100',
    options.dir,
    ['cifar-100-binary', 'cifar100', 'cifar-100'],
    [file],
    'To get it: download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz (the binary version), extract it ' +
      '(tar xzf) and pass the folder with --data, or set MSGC_DATA to it.',
    split,
  );
  const numClasses = which === 'fine' ? 100 : 20;
  const classNames =
    readNames(path.join(dir, which === 'fine' ? 'fine_label_names.txt' : 'coarse_label_names.txt'), numClasses) ??
    (which === 'fine' ? CIFAR100_FINE_CLASSES : CIFAR100_COARSE_CLASSES);
  return readCifarFiles([path.join(dir, file)], { labelBytes: 2, labelIndex: which === 'fine' ? 1 : 0, numClasses }, classNames);
}
