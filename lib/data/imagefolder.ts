// imagefolder.ts: a torchvision-style ImageFolder (root/<class>/**/*.jpg|jpeg|png) decoded into memory with sharp.
//
// Classes are the sub-folders of root sorted by name (code-unit order, like Python's sorted()), label = position.
// Images are searched recursively inside each class folder and taken in sorted path order. Unlike torchvision,
// names starting with '.' are skipped (.ipynb_checkpoints folders, macOS ._x.jpg files), and a class folder
// without images is an error.
//
// Every image gets the evaluation transform: resize so that the shorter side is `resize` (bilinear; the longer side
// becomes floor(resize * long / short), like torchvision Resize(int)), then a center crop to `size` (offsets
// round((h - th) / 2) with Python's round-half-to-even, zero padding where the image is smaller, like
// torchvision CenterCrop). EXIF orientation is not applied (PIL does not either). The result is a uint8
// N×C×H×W ArrayDataset in memory, so this suits small datasets (Imagenette, a few thousand images); random
// augmentation then happens per batch (transforms.ts).
//
// sharp is loaded on first use, so importing msgc does not load libvips.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ArrayDataset } from './loader';

/** The part of sharp's API used here (typed locally: sharp's own typings differ between its ESM and CJS entries). */
export interface SharpPipeline {
  metadata(): Promise<{ width?: number; height?: number; hasAlpha?: boolean }>;
  resize(width: number, height: number, options: { fit: 'fill'; kernel: 'linear' }): SharpPipeline;
  greyscale(): SharpPipeline;
  toColourspace(space: 'srgb'): SharpPipeline;
  removeAlpha(): SharpPipeline;
  raw(): SharpPipeline;
  toBuffer(options: { resolveWithObject: true }): Promise<{ data: Buffer; info: { width: number; height: number; channels: number } }>;
}
export type SharpModule = (input: string | Buffer, options?: { raw: { width: number; height: number; channels: 1 | 3 } }) => SharpPipeline;

let sharpModule: SharpModule | null = null;

/** The sharp module, loaded on first use; a clear error when it is missing or cannot load. */
export function loadSharp(): SharpModule {
  if (sharpModule) return sharpModule;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const m = require('sharp') as SharpModule | { default: SharpModule };
    sharpModule = typeof m === 'function' ? m : m.default;
    if (typeof sharpModule !== 'function') throw new Error('the module does not export the sharp() function');
  } catch (err) {
    sharpModule = null;
    throw new Error(
      `loadImageFolder needs the 'sharp' package to decode images, and it could not be loaded: ${(err as Error).message}\n` +
        'Install it with `npm install sharp` (it ships prebuilt binaries for common platforms; see https://sharp.pixelplumbing.com/install).',
    );
  }
  return sharpModule;
}

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png'];

export interface ImageFolderOptions {
  root: string;
  /** output size: [height, width] or a square side */
  size: [number, number] | number;
  /** the shorter side before the center crop (default: max(size), i.e. crop the center of the resized image) */
  resize?: number;
  /** 3 (RGB, default) or 1 (greyscale) */
  channels?: 1 | 3;
  /** file extensions to take, lower-case with the dot (default .jpg .jpeg .png) */
  extensions?: string[];
  /** images decoded at the same time (default: the CPU count, at most 8) */
  concurrency?: number;
  /** called after each decoded image */
  onProgress?: (done: number, total: number) => void;
}

export interface ImageFolderListing {
  classNames: string[];
  files: { file: string; label: number }[];
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Lists root/<class>/**: class names (sorted) and every image file with its label. */
export function listImageFolder(root: string, extensions: string[] = IMAGE_EXTENSIONS): ImageFolderListing {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch (err) {
    throw new Error(`loadImageFolder: cannot read the root folder ${root}: ${(err as Error).message}`);
  }
  const isDir = (full: string, e: fs.Dirent): boolean => e.isDirectory() || (e.isSymbolicLink() && fs.statSync(full, { throwIfNoEntry: false })?.isDirectory() === true);
  const classNames = entries
    .filter((e) => !e.name.startsWith('.') && isDir(path.join(root, e.name), e))
    .map((e) => e.name)
    .sort(byCodeUnits);
  if (!classNames.length) throw new Error(`loadImageFolder: ${root} has no class folders (expected ${path.join(root, '<class>', '<image>.jpg')})`);
  const exts = extensions.map((e) => e.toLowerCase());
  const files: { file: string; label: number }[] = [];
  const empty: string[] = [];
  classNames.forEach((cls, label) => {
    const found: string[] = [];
    const walk = (dir: string): void => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, e.name);
        if (e.name.startsWith('.')) continue;
        if (isDir(full, e)) walk(full);
        else if (exts.includes(path.extname(e.name).toLowerCase())) found.push(full);
      }
    };
    walk(path.join(root, cls));
    found.sort(byCodeUnits);
    if (!found.length) empty.push(cls);
    for (const file of found) files.push({ file, label });
  });
  if (empty.length) {
    throw new Error(`loadImageFolder: no ${exts.join('/')} images in the class folder${empty.length > 1 ? 's' : ''} ${empty.map((c) => path.join(root, c)).join(', ')}`);
  }
  return { classNames, files };
}

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The resized size for shorter side `resize` (torchvision Resize(int): the long side is truncated). */
export function resizedSize(h: number, w: number, resize: number): [number, number] {
  if (h <= w) return [resize, Math.max(1, Math.floor((resize * w) / h))];
  return [Math.max(1, Math.floor((resize * h) / w)), resize];
}

/** Center crop (zero padding where the source is smaller) of an HWC uint8 image into CHW out[offset...]. */
export function centerCropHWCtoCHW(src: Uint8Array, h: number, w: number, c: number, th: number, tw: number, out: Uint8Array, offset: number): void {
  // negative when the source is smaller than the crop: torchvision pads (floor of half the difference on the top/left)
  const top = h >= th ? roundHalfEven((h - th) / 2) : -Math.floor((th - h) / 2);
  const left = w >= tw ? roundHalfEven((w - tw) / 2) : -Math.floor((tw - w) / 2);
  for (let ch = 0; ch < c; ch++) {
    const plane = offset + ch * th * tw;
    for (let y = 0; y < th; y++) {
      const sy = y + top;
      if (sy < 0 || sy >= h) continue; // out is zero-filled
      for (let x = 0; x < tw; x++) {
        const sx = x + left;
        if (sx < 0 || sx >= w) continue;
        out[plane + y * tw + x] = src[(sy * w + sx) * c + ch];
      }
    }
  }
}

async function decodeOne(sharp: SharpModule, file: string, channels: 1 | 3, resize: number): Promise<{ data: Uint8Array; h: number; w: number }> {
  try {
    const meta = await sharp(file).metadata();
    if (!meta.width || !meta.height) throw new Error('no image dimensions');
    const [rh, rw] = resizedSize(meta.height, meta.width, resize);
    const convert = (img: SharpPipeline): SharpPipeline => (channels === 1 ? img.greyscale() : img.toColourspace('srgb')).removeAlpha();
    let out: { data: Buffer; info: { width: number; height: number; channels: number } };
    if (!meta.hasAlpha) {
      // one pipeline (sharp may shrink JPEGs while decoding, which is much faster)
      out = await convert(sharp(file).resize(rw, rh, { fit: 'fill', kernel: 'linear' })).raw().toBuffer({ resolveWithObject: true });
    } else {
      // drop the alpha channel before resizing, like PIL's convert('RGB'): sharp resizes premultiplied 8-bit values,
      // which shifts the colour of (semi-)transparent pixels
      const flat = await convert(sharp(file)).raw().toBuffer({ resolveWithObject: true });
      out =
        flat.info.width === rw && flat.info.height === rh
          ? flat
          : await sharp(flat.data, { raw: { width: flat.info.width, height: flat.info.height, channels } })
              .resize(rw, rh, { fit: 'fill', kernel: 'linear' })
              .raw()
              .toBuffer({ resolveWithObject: true });
    }
    const { data, info } = out;
    if (info.channels !== channels || info.width !== rw || info.height !== rh) {
      throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${rw}×${rh}×${channels}`);
    }
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), h: rh, w: rw };
  } catch (err) {
    throw new Error(`loadImageFolder: cannot decode ${file}: ${(err as Error).message}`);
  }
}

/** Loads root/<class>/* images into a uint8 ArrayDataset (C×size), resized and center-cropped. */
export async function loadImageFolder(options: ImageFolderOptions): Promise<ArrayDataset> {
  const [th, tw] = typeof options.size === 'number' ? [options.size, options.size] : options.size;
  if (!Number.isInteger(th) || !Number.isInteger(tw) || th < 1 || tw < 1) throw new Error(`loadImageFolder: size must be a positive integer or [h, w], got ${JSON.stringify(options.size)}`);
  const resize = options.resize ?? Math.max(th, tw);
  if (!Number.isInteger(resize) || resize < 1) throw new Error(`loadImageFolder: resize must be a positive integer, got ${options.resize}`);
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new Error(`loadImageFolder: channels must be 1 or 3, got ${channels}`);
  const concurrency = options.concurrency ?? Math.min(8, Math.max(1, os.cpus().length));
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`loadImageFolder: concurrency must be a positive integer, got ${concurrency}`);

  const { classNames, files } = listImageFolder(options.root, options.extensions);
  const sharp = loadSharp();
  const size = channels * th * tw;
  const images = new Uint8Array(files.length * size);
  const labels = Int32Array.from(files, (f) => f.label);
  let next = 0;
  let done = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < files.length) {
      const i = next++;
      try {
        const { data, h, w } = await decodeOne(sharp, files[i].file, channels, resize);
        centerCropHWCtoCHW(data, h, w, channels, th, tw, images, i * size);
      } catch (err) {
        failed = true;
        throw err;
      }
      done++;
      options.onProgress?.(done, files.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length) }, worker));
  return new ArrayDataset(images, labels, { channels, height: th, width: tw, numClasses: classNames.length, classNames });
}
