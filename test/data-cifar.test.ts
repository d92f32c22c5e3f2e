// data-cifar.test.ts: CIFAR-10 / CIFAR-100 binary readers on small files built byte by byte.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadCIFAR10, loadCIFAR100, loadDataset, readCifarFiles, Rng, CIFAR10_MEAN, CIFAR10_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_COARSE_CLASSES } from '../lib/data';

let tmp: string;
const savedEnv = process.env.MSGC_DATA;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-cifar-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  if (savedEnv === undefined) delete process.env.MSGC_DATA;
  else process.env.MSGC_DATA = savedEnv;
});
beforeEach(() => {
  delete process.env.MSGC_DATA;
});

/** The image bytes of record `k` of file `f`: 3072 bytes, a function of (f, k, position). */
function pixels(f: number, k: number): Buffer {
  const b = Buffer.alloc(3072);
  for (let i = 0; i < 3072; i++) b[i] = (i * 7 + k * 13 + f * 101) & 255;
  return b;
}

/** A CIFAR file: per record the label byte(s), then the 3072 image bytes. */
function cifarFile(f: number, labels: number[][]): Buffer {
  return Buffer.concat(labels.map((ls, k) => Buffer.concat([Buffer.from(ls), pixels(f, k)])));
}

function write(rel: string, bytes: Buffer): string {
  const p = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, bytes);
  return p;
}

function writeCifar10(dir: string): void {
  for (let f = 1; f <= 5; f++) write(`${dir}/data_batch_${f}.bin`, cifarFile(f, [[f], [9 - f]]));
  write(`${dir}/test_batch.bin`, cifarFile(0, [[3], [0], [9]]));
}

test('class name lists have the published sizes', () => {
  expect(CIFAR10_CLASSES).toHaveLength(10);
  expect(CIFAR100_FINE_CLASSES).toHaveLength(100);
  expect(new Set(CIFAR100_FINE_CLASSES).size).toBe(100);
  expect(CIFAR100_COARSE_CLASSES).toHaveLength(20);
  expect(CIFAR100_FINE_CLASSES[0]).toBe('apple');
  expect(CIFAR100_FINE_CLASSES[99]).toBe('worm');
});

test('CIFAR-10: the five training files in order, and the test file; images are CHW as stored', () => {
  writeCifar10('c10/cifar-10-batches-bin');
  const train = loadCIFAR10({ dir: path.join(tmp, 'c10'), split: 'train' }); // found in the archive's subfolder
  expect(train.length).toBe(10);
  expect([train.channels, train.height, train.width, train.numClasses]).toEqual([3, 32, 32, 10]);
  expect(Array.from(train.labels)).toEqual([1, 8, 2, 7, 3, 6, 4, 5, 5, 4]);
  expect(train.classNames).toEqual(CIFAR10_CLASSES);
  // record 1 of data_batch_3 is sample 5
  expect(Buffer.from(train.get(5).image).equals(pixels(3, 1))).toBe(true);
  // R plane then G then B: pixel (y=2, x=5) of the green plane is byte 1024 + 2*32 + 5
  expect(train.get(5).image[1024 + 2 * 32 + 5]).toBe(pixels(3, 1)[1024 + 69]);
  const testSplit = loadCIFAR10({ dir: path.join(tmp, 'c10', 'cifar-10-batches-bin'), split: 'test' });
  expect(Array.from(testSplit.labels)).toEqual([3, 0, 9]);
  expect(Buffer.from(testSplit.get(2).image).equals(pixels(0, 2))).toBe(true);
  // batches.meta.txt provides the names when present
  write('c10/cifar-10-batches-bin/batches.meta.txt', Buffer.from(CIFAR10_CLASSES.map((c) => c.toUpperCase()).join('\n') + '\n\n'));
  expect(loadCIFAR10({ dir: path.join(tmp, 'c10'), split: 'test' }).classNames?.[0]).toBe('AIRPLANE');
  // $MSGC_DATA
  process.env.MSGC_DATA = path.join(tmp, 'c10');
  expect(loadCIFAR10({ split: 'test' }).length).toBe(3);
});

test('CIFAR-100: fine and coarse labels', () => {
  write('c100/cifar-100-binary/train.bin', cifarFile(0, [[19, 99], [0, 0], [5, 42]]));
  write('c100/cifar-100-binary/test.bin', cifarFile(1, [[3, 7]]));
  const fine = loadCIFAR100({ dir: path.join(tmp, 'c100'), split: 'train' });
  expect(fine.numClasses).toBe(100);
  expect(Array.from(fine.labels)).toEqual([99, 0, 42]);
  expect(fine.classNames?.[99]).toBe('worm');
  expect(Buffer.from(fine.get(2).image).equals(pixels(0, 2))).toBe(true);
  const coarse = loadCIFAR100({ dir: path.join(tmp, 'c100'), split: 'train', labels: 'coarse' });
  expect(coarse.numClasses).toBe(20);
  expect(Array.from(coarse.labels)).toEqual([19, 0, 5]);
  expect(coarse.classNames?.[19]).toBe('vehicles_2');
  const t = loadCIFAR100({ dir: path.join(tmp, 'c100', 'cifar-100-binary'), split: 'test', labels: 'fine' });
  expect(Array.from(t.labels)).toEqual([7]);
});

test('corrupt files: length not a multiple of the record, labels out of range; errors name the file', () => {
  const dir = path.join(tmp, 'bad10');
  writeCifar10('bad10');
  // truncated: one byte short
  const b3 = path.join(dir, 'data_batch_3.bin');
  fs.writeFileSync(b3, cifarFile(3, [[1], [2]]).subarray(0, 2 * 3073 - 1));
  expect(() => loadCIFAR10({ dir, split: 'train' })).toThrow(new RegExp(`${b3}: corrupt CIFAR file: 6145 bytes is not a positive multiple of the 3073-byte record`));
  // empty
  fs.writeFileSync(b3, Buffer.alloc(0));
  expect(() => loadCIFAR10({ dir, split: 'train' })).toThrow(new RegExp(`${b3}: corrupt CIFAR file: 0 bytes`));
  // label 10
  fs.writeFileSync(b3, cifarFile(3, [[1], [10]]));
  expect(() => loadCIFAR10({ dir, split: 'train' })).toThrow(new RegExp(`${b3}: label 10 of record 1 is outside 0..9`));
  // a CIFAR-100 file read as CIFAR-10: 3074-byte records
  const c100 = write('bad100/train.bin', cifarFile(0, [[1, 2], [3, 4], [5, 6]]));
  expect(() => readCifarFiles([c100], { labelBytes: 1, labelIndex: 0, numClasses: 10 })).toThrow(new RegExp(`${c100}: corrupt CIFAR file: 9222 bytes`));
  // CIFAR-100 fine label 100, coarse label 20
  fs.writeFileSync(c100, cifarFile(0, [[1, 2], [3, 100]]));
  expect(() => loadCIFAR100({ dir: path.dirname(c100), split: 'train' })).toThrow(new RegExp(`${c100}: label 100 of record 1 is outside 0..99`));
  fs.writeFileSync(c100, cifarFile(0, [[20, 2]]));
  expect(() => loadCIFAR100({ dir: path.dirname(c100), split: 'train', labels: 'coarse' })).toThrow(new RegExp(`${c100}: label 20 of record 0 is outside 0..19`));
  expect(loadCIFAR100({ dir: path.dirname(c100), split: 'train', labels: 'fine' }).labels[0]).toBe(2);
});

test('"not found" lists the places searched, the missing files and where to download', () => {
  const dir = path.join(tmp, 'partial');
  write('partial/data_batch_1.bin', cifarFile(1, [[1]]));
  process.env.MSGC_DATA = path.join(tmp, 'no-env');
  let msg = '';
  try {
    loadCIFAR10({ dir, split: 'train' });
  } catch (err) {
    msg = (err as Error).message;
  }
  expect(msg).toMatch(/^CIFAR-10 \(train split\) not found\. Looked in:/);
  expect(msg).toContain(`  ${dir} (no data_batch_2.bin, no data_batch_3.bin, no data_batch_4.bin, no data_batch_5.bin)`);
  expect(msg).toContain(`  ${path.join(dir, 'cifar-10-batches-bin')} (no such folder)`);
  expect(msg).toContain(`  ${path.join(tmp, 'no-env')} (no such folder)`);
  expect(msg).toContain('cifar-10-binary.tar.gz');
  delete process.env.MSGC_DATA;
  expect(() => loadCIFAR100({ dir, split: 'test' })).toThrow(/CIFAR-100 \(test split\) not found[\s\S]*no test\.bin[\s\S]*cifar-100-binary\.tar\.gz/);
  expect(() => loadCIFAR100({ dir, split: 'test', labels: 'medium' as 'fine' })).toThrow(/labels must be 'fine' or 'coarse'/);
});

test('loadDataset dispatches cifar10 / cifar100 with CIFAR statistics and crop+flip training augmentation', async () => {
  writeCifar10('ld/cifar-10-batches-bin');
  const tr = await loadDataset('CIFAR-10', { dir: path.join(tmp, 'ld'), split: 'train' });
  expect(tr.name).toBe('cifar10');
  expect(tr.dataset.length).toBe(10);
  expect(tr.mean).toEqual(CIFAR10_MEAN);
  expect(tr.transform).toBe(tr.trainTransform);
  // eval: exactly normalize; train: same shape, differs by the random crop/flip
  const batch = () => ({ data: Float32Array.from({ length: 2 * 3072 }, (_, i) => (i % 251) / 251), shape: [2, 3, 32, 32] as [number, number, number, number] });
  const ev = tr.evalTransform(batch(), new Rng(0));
  expect(ev.data[5]).toBeCloseTo((5 / 251 - CIFAR10_MEAN[0]) / tr.std[0], 5);
  const aug = tr.trainTransform(batch(), new Rng(0));
  expect(aug.shape).toEqual([2, 3, 32, 32]);
  write('ld100/test.bin', cifarFile(0, [[1, 2]]));
  const c100 = await loadDataset('cifar100', { dir: path.join(tmp, 'ld100'), split: 'test', labels: 'coarse' });
  expect(c100.dataset.numClasses).toBe(20);
  expect(c100.transform).toBe(c100.evalTransform);
  await expect(loadDataset('svhn', {})).rejects.toThrow(/unknown dataset "svhn"; known: fashion-mnist, mnist, cifar10, cifar100, imagefolder/);
});
