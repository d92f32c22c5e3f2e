// data-imagefolder.test.ts: loadImageFolder on tiny PNG/JPEG files written with sharp: class order and labels,
// pixel values of uniform images, the resize + center crop geometry, and clear errors.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { loadImageFolder, listImageFolder, resizedSize, loadDataset } from '../lib/data';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-imagefolder-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function file(rel: string): string {
  const p = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  return p;
}

async function solid(rel: string, w: number, h: number, rgb: [number, number, number], format: 'png' | 'jpeg' = 'png'): Promise<string> {
  const img = sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  const p = file(rel);
  await (format === 'png' ? img.png() : img.jpeg({ quality: 95 })).toFile(p);
  return p;
}

/** A PNG from an HWC pixel function. */
async function painted(rel: string, w: number, h: number, channels: 1 | 2 | 3 | 4, f: (x: number, y: number) => number[]): Promise<string> {
  const buf = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) f(x, y).forEach((v, c) => (buf[(y * w + x) * channels + c] = v));
  const p = file(rel);
  await sharp(buf, { raw: { width: w, height: h, channels } }).png().toFile(p);
  return p;
}

/** Pixel (c, y, x) of sample i of a CHW uint8 dataset. */
function px(ds: { images: Uint8Array | Float32Array; channels: number; height: number; width: number }, i: number, c: number, y: number, x: number): number {
  return ds.images[((i * ds.channels + c) * ds.height + y) * ds.width + x];
}

test('classes are the sorted sub-folders; labels follow the folder; uniform colours survive exactly (PNG) or closely (JPEG)', async () => {
  const root = path.join(tmp, 'set1');
  await solid('set1/zebra/z1.png', 40, 30, [200, 100, 50]);
  await solid('set1/zebra/nested/z2.PNG', 30, 40, [10, 20, 30]);
  await solid('set1/apple/a1.jpg', 24, 24, [0, 128, 255], 'jpeg');
  await solid('set1/mango/m1.jpeg', 16, 48, [90, 180, 45], 'jpeg');
  await solid('set1/mango/m0.png', 16, 16, [255, 255, 255]);
  fs.writeFileSync(file('set1/mango/notes.txt'), 'not an image');
  await solid('set1/.ipynb_checkpoints/x.png', 8, 8, [0, 0, 0]);
  fs.writeFileSync(file('set1/README.md'), 'top-level files are not classes');

  const listing = listImageFolder(root);
  expect(listing.classNames).toEqual(['apple', 'mango', 'zebra']);
  expect(listing.files.map((f) => [path.relative(root, f.file), f.label])).toEqual([
    ['apple/a1.jpg', 0],
    ['mango/m0.png', 1],
    ['mango/m1.jpeg', 1],
    ['zebra/nested/z2.PNG', 2],
    ['zebra/z1.png', 2],
  ]);

  const ds = await loadImageFolder({ root, size: 8 });
  expect(ds.length).toBe(5);
  expect([ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([3, 8, 8, 3]);
  expect(ds.classNames).toEqual(['apple', 'mango', 'zebra']);
  expect(Array.from(ds.labels)).toEqual([0, 1, 1, 2, 2]);
  expect(ds.images).toBeInstanceOf(Uint8Array);
  const expectUniform = (i: number, rgb: number[], tol: number) => {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 8; y++) {
        for (let x = 0; x < 8; x++) {
          const v = px(ds, i, c, y, x);
          if (Math.abs(v - rgb[c]) > tol) throw new Error(`sample ${i} channel ${c} (${y}, ${x}) = ${v}, expected ${rgb[c]} ± ${tol}`);
        }
      }
    }
  };
  expectUniform(1, [255, 255, 255], 0);
  expectUniform(3, [10, 20, 30], 0);
  expectUniform(4, [200, 100, 50], 0);
  expectUniform(0, [0, 128, 255], 4); // JPEG: lossy
  expectUniform(2, [90, 180, 45], 4);

  // greyscale: one channel; RGB → grey of a grey colour is that grey
  await solid('set2/a/g.png', 12, 10, [128, 128, 128]);
  const grey = await loadImageFolder({ root: path.join(tmp, 'set2'), size: [5, 6], channels: 1 });
  expect([grey.channels, grey.height, grey.width]).toEqual([1, 5, 6]);
  expect(Array.from(new Set(grey.images))).toEqual([128]);
});

test('resize shorter side then center crop, like torchvision Resize(int) + CenterCrop', async () => {
  expect(resizedSize(20, 40, 10)).toEqual([10, 20]);
  expect(resizedSize(40, 30, 10)).toEqual([13, 10]); // floor(10 * 40 / 30)
  expect(resizedSize(30, 30, 7)).toEqual([7, 7]);

  // no scaling (shorter side already 10): the crop takes columns 5..14 of a 20×10 image
  const stripes = (x: number) => (x < 5 ? [255, 0, 0] : x < 15 ? [0, 255, 0] : [0, 0, 255]);
  await painted('geo/a/stripes.png', 20, 10, 3, (x) => stripes(x));
  // RGBA input: alpha is dropped; 10×10 → 4×4, placed at columns 2..5 of the 4×8 output
  await painted('geo/b/ga.png', 10, 10, 4, () => [30, 60, 90, 40]);
  // 6 wide, 4 high: into 4×8, the image sits at columns 1..6 (zero padding of (8 - 6) / 2 = 1 on the left)
  await painted('geo/c/small.png', 6, 4, 3, () => [70, 70, 70]);
  const ds = await loadImageFolder({ root: path.join(tmp, 'geo'), size: [4, 8], resize: 4 });
  expect(ds.length).toBe(3);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 4; y++) {
      expect(px(ds, 1, c, y, 3)).toBe([30, 60, 90][c]);
      expect(px(ds, 2, c, y, 0)).toBe(0);
      expect(px(ds, 2, c, y, 7)).toBe(0);
      for (let x = 1; x <= 6; x++) expect(px(ds, 2, c, y, x)).toBe(70);
    }
  }

  const exact = await loadImageFolder({ root: path.join(tmp, 'geo'), size: 10 }); // resize = 10: stripes unscaled
  for (let y = 0; y < 10; y++) {
    for (let x = 0; x < 10; x++) {
      expect([px(exact, 0, 0, y, x), px(exact, 0, 1, y, x), px(exact, 0, 2, y, x)]).toEqual([0, 255, 0]);
    }
  }

  // grey + alpha into RGB: the grey value in all three channels, alpha dropped
  await painted('ga/a/ga.png', 9, 7, 2, () => [100, 200]);
  const ga = await loadImageFolder({ root: path.join(tmp, 'ga'), size: 3, resize: 4 });
  expect(Array.from(new Set(ga.images))).toEqual([100]);
  expect(ga.images.length).toBe(3 * 3 * 3);

  // halves: 40×20 (left red, right blue) → shorter side 10 → 20×10 → center 10×10 = resized columns 5..14
  await painted('geo2/a/halves.png', 40, 20, 3, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]));
  const halves = await loadImageFolder({ root: path.join(tmp, 'geo2'), size: 10 });
  for (let y = 0; y < 10; y++) {
    for (let x = 0; x < 4; x++) expect([px(halves, 0, 0, y, x), px(halves, 0, 2, y, x)]).toEqual([255, 0]);
    for (let x = 6; x < 10; x++) expect([px(halves, 0, 0, y, x), px(halves, 0, 2, y, x)]).toEqual([0, 255]);
  }
});

test('errors: corrupt image (names the file), empty root, class without images, bad options', async () => {
  await solid('bad/a/ok.png', 8, 8, [1, 2, 3]);
  const bad = file('bad/b/broken.png');
  fs.writeFileSync(bad, Buffer.from('this is not a PNG file at all'));
  await expect(loadImageFolder({ root: path.join(tmp, 'bad'), size: 4 })).rejects.toThrow(new RegExp(`cannot decode ${bad}`));
  // a truncated PNG
  const good = fs.readFileSync(await solid('trunc/a/t.png', 64, 64, [5, 5, 5]));
  const truncated = file('trunc/a/t.png');
  fs.writeFileSync(truncated, good.subarray(0, Math.floor(good.length / 2)));
  await expect(loadImageFolder({ root: path.join(tmp, 'trunc'), size: 4 })).rejects.toThrow(new RegExp(`cannot decode ${truncated}`));

  const empty = file('empty/');
  fs.mkdirSync(empty, { recursive: true });
  await expect(loadImageFolder({ root: empty, size: 4 })).rejects.toThrow(/has no class folders/);
  fs.mkdirSync(file('noimg/cats'), { recursive: true });
  fs.writeFileSync(file('noimg/cats/readme.txt'), 'x');
  await solid('noimg/dogs/d.png', 4, 4, [0, 0, 0]);
  await expect(loadImageFolder({ root: path.join(tmp, 'noimg'), size: 4 })).rejects.toThrow(new RegExp(`no .jpg/.jpeg/.png images in the class folder ${path.join(tmp, 'noimg', 'cats')}`));
  await expect(loadImageFolder({ root: path.join(tmp, 'does-not-exist'), size: 4 })).rejects.toThrow(/cannot read the root folder/);
  await expect(loadImageFolder({ root: path.join(tmp, 'bad'), size: 0 })).rejects.toThrow(/size must be a positive integer/);
  await expect(loadImageFolder({ root: path.join(tmp, 'bad'), size: 4, channels: 2 as 3 })).rejects.toThrow(/channels must be 1 or 3/);
});

test('loadDataset("imagefolder") uses dir/train and dir/val with ImageNet statistics', async () => {
  await solid('split/train/cat/1.png', 12, 12, [255, 0, 0]);
  await solid('split/train/dog/1.png', 12, 12, [0, 0, 255]);
  await solid('split/val/cat/1.png', 12, 12, [255, 0, 0]);
  await solid('split/val/dog/1.png', 12, 12, [0, 0, 255]);
  const tr = await loadDataset('ImageFolder', { dir: path.join(tmp, 'split'), split: 'train', size: 6 });
  expect(tr.name).toBe('imagefolder');
  expect(tr.dataset.length).toBe(2);
  expect(tr.mean).toEqual([0.485, 0.456, 0.406]);
  const te = await loadDataset('imagefolder', { dir: path.join(tmp, 'split'), split: 'test', size: 6 });
  expect(te.dataset.classNames).toEqual(['cat', 'dog']);
  expect(te.transform).toBe(te.evalTransform);
  await expect(loadDataset('imagefolder', { dir: path.join(tmp, 'bad'), split: 'train', size: 6 })).rejects.toThrow(/no .*train folder/);
});
