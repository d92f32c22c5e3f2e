// transforms.ts: per-batch float conversion and augmentation on NCHW Float32Array batches.
//
// Datasets keep their images as uint8 (or already-scaled float32) arrays in JS memory; a float batch is made only
// when a DataLoader assembles one. The order, like torchvision's ToTensor → augment → Normalize, is:
//
//   1. toFloat      uint8 values v become v / 255 (in [0, 1]); float32 images are used as they are
//   2. augment      randomCrop (zero padding), horizontalFlip, ... on the [0, 1] values
//   3. normalize    (x - mean[c]) / std[c] per channel
//
// The loader does step 1 itself (collate); `transform` is steps 2 and 3, usually
// compose(randomCrop(...), horizontalFlip(), normalize(mean, std)) for training and normalize(mean, std) for
// evaluation. Zero padding happens before normalization, exactly like torchvision's RandomCrop(padding) on a
// ToTensor image (the padded pixels become -mean/std after normalize).
//
// Randomness: every transform draws from the Rng it is given, never from Math.random, so a seed reproduces the
// same augmentation. The DataLoader gives each batch its own Rng seeded from (seed, epoch, batch index), which makes
// the result independent of prefetching and of the order in which batches are prepared.
//
// Transforms may modify `batch.data` in place and return it (normalize, horizontalFlip do; randomCrop returns a
// new array).

/** An NCHW float batch: data.length === n * c * h * w. */
export interface BatchData {
  data: Float32Array;
  shape: [number, number, number, number];
}

/** A batch transform: may modify `batch` in place; returns the (possibly new) batch. */
export type Transform = (batch: BatchData, rng: Rng) => BatchData;

// ---------------------------------------------------------------------------------------------------------------
// Standard statistics (per channel, on [0, 1] values).

/** Fashion-MNIST training set (60000 images): mean 0.2860, std 0.3530. */
export const FASHION_MNIST_MEAN = [0.286];
export const FASHION_MNIST_STD = [0.353];
/** MNIST training set: mean 0.1307, std 0.3081. */
export const MNIST_MEAN = [0.1307];
export const MNIST_STD = [0.3081];
/** CIFAR-10 training set, per-pixel std (not the often-copied 0.2023/0.1994/0.2010, which is a std of image means). */
export const CIFAR10_MEAN = [0.4914, 0.4822, 0.4465];
export const CIFAR10_STD = [0.247, 0.2435, 0.2616];
/** CIFAR-100 training set. */
export const CIFAR100_MEAN = [0.5071, 0.4865, 0.4409];
export const CIFAR100_STD = [0.2673, 0.2564, 0.2762];
/** ImageNet (the torchvision pretrained-model convention). */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

// ---------------------------------------------------------------------------------------------------------------
// Seeded random numbers.

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** Mixes a list of integers (seed, epoch, batch index, ...) into one 32-bit seed. */
export function mixSeed(...parts: number[]): number {
  let h = 0x243f6a88;
  for (const p of parts) {
    if (!Number.isFinite(p)) throw new Error(`mixSeed: expected finite numbers, got ${p}`);
    // both 32-bit halves, so that seeds beyond 2^32 still matter
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    for (const v of [lo, hi]) {
      h = Math.imul(h ^ v, 0x9e3779b1);
      h ^= h >>> 15;
      h = Math.imul(h, 0x85ebca77);
      h ^= h >>> 13;
    }
  }
  return h >>> 0;
}

/** xoshiro128** seeded through splitmix32: a small, fast, reproducible generator. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    const st = { s: mixSeed(seed) | 0 };
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st);
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** A uniform float in [0, 1) (53 random bits). */
  float(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`Rng.int: n must be a positive integer, got ${n}`);
    return Math.floor(this.float() * n);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Fisher–Yates shuffle of 0..n-1 with the given generator. */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------------
// Step 1: float conversion.

const BYTE_TO_UNIT = new Float32Array(256);
for (let i = 0; i < 256; i++) BYTE_TO_UNIT[i] = i / 255;

/** Writes `image` into out[offset...] as float32: uint8 values divided by 255, float32 values copied. */
export function imageToFloat(image: Uint8Array | Float32Array, out: Float32Array, offset: number): void {
  if (image instanceof Float32Array) {
    out.set(image, offset);
    return;
  }
  const lut = BYTE_TO_UNIT;
  for (let i = 0, n = image.length; i < n; i++) out[offset + i] = lut[image[i]];
}

/** Stacks CHW images (all of shape [c, h, w]) into an NCHW float batch (toFloat, step 1). */
export function toFloat(images: (Uint8Array | Float32Array)[], c: number, h: number, w: number): BatchData {
  const size = c * h * w;
  const data = new Float32Array(images.length * size);
  images.forEach((img, i) => {
    if (img.length !== size) throw new Error(`toFloat: image ${i} has ${img.length} values, expected ${c}×${h}×${w} = ${size}`);
    imageToFloat(img, data, i * size);
  });
  return { data, shape: [images.length, c, h, w] };
}

// ---------------------------------------------------------------------------------------------------------------
// Step 2: augmentation.

function checkBatch(op: string, b: BatchData): void {
  const [n, c, h, w] = b.shape;
  if (b.data.length !== n * c * h * w) throw new Error(`${op}: data has ${b.data.length} values, shape [${b.shape.join(', ')}] needs ${n * c * h * w}`);
}

function cropSize(size: number | [number, number]): [number, number] {
  const [th, tw] = typeof size === 'number' ? [size, size] : size;
  if (!Number.isInteger(th) || !Number.isInteger(tw) || th <= 0 || tw <= 0) throw new Error(`randomCrop: size must be positive integers, got ${JSON.stringify(size)}`);
  return [th, tw];
}

/**
 * Deterministic part of randomCrop: pads each image with `padding` zeros on every side, then takes the
 * size[0]×size[1] window whose top-left corner (in padded coordinates) is (tops[i], lefts[i]).
 */
export function padCrop(batch: BatchData, size: number | [number, number], padding: number, tops: ArrayLike<number>, lefts: ArrayLike<number>): BatchData {
  checkBatch('padCrop', batch);
  const [n, c, h, w] = batch.shape;
  const [th, tw] = cropSize(size);
  if (!Number.isInteger(padding) || padding < 0) throw new Error(`padCrop: padding must be a non-negative integer, got ${padding}`);
  const ph = h + 2 * padding;
  const pw = w + 2 * padding;
  if (th > ph || tw > pw) throw new Error(`padCrop: crop ${th}×${tw} is larger than the padded image ${ph}×${pw}`);
  if (tops.length < n || lefts.length < n) throw new Error(`padCrop: need ${n} offsets, got ${tops.length} tops and ${lefts.length} lefts`);
  const src = batch.data;
  const out = new Float32Array(n * c * th * tw); // zeros: the padding
  for (let i = 0; i < n; i++) {
    const top = tops[i];
    const left = lefts[i];
    if (!(top >= 0 && top <= ph - th && left >= 0 && left <= pw - tw)) throw new Error(`padCrop: offset (${top}, ${left}) of image ${i} is outside 0..${ph - th} × 0..${pw - tw}`);
    // source rows/cols covered by the window: y = top + r - padding
    const r0 = Math.max(0, padding - top);
    const r1 = Math.min(th, h + padding - top);
    const c0 = Math.max(0, padding - left);
    const c1 = Math.min(tw, w + padding - left);
    if (r1 <= r0 || c1 <= c0) continue;
    for (let ch = 0; ch < c; ch++) {
      const sBase = (i * c + ch) * h * w;
      const dBase = (i * c + ch) * th * tw;
      for (let r = r0; r < r1; r++) {
        const sy = top + r - padding;
        const sOff = sBase + sy * w + (left + c0 - padding);
        out.set(src.subarray(sOff, sOff + (c1 - c0)), dBase + r * tw + c0);
      }
    }
  }
  return { data: out, shape: [n, c, th, tw] };
}

export interface RandomCropOffsets {
  tops: Int32Array;
  lefts: Int32Array;
}

/** Draws the randomCrop offsets for n images (uniform in 0..h+2p-th and 0..w+2p-tw, top first, per image). */
export function randomCropOffsets(n: number, h: number, w: number, size: number | [number, number], padding: number, rng: Rng): RandomCropOffsets {
  const [th, tw] = cropSize(size);
  const maxTop = h + 2 * padding - th;
  const maxLeft = w + 2 * padding - tw;
  if (maxTop < 0 || maxLeft < 0) throw new Error(`randomCrop: crop ${th}×${tw} is larger than the padded image ${h + 2 * padding}×${w + 2 * padding}`);
  const tops = new Int32Array(n);
  const lefts = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    tops[i] = rng.int(maxTop + 1);
    lefts[i] = rng.int(maxLeft + 1);
  }
  return { tops, lefts };
}

/**
 * torchvision RandomCrop(size, padding) with zero padding: pads every side by `padding`, then takes a random
 * size×size window (offsets from randomCropOffsets, one pair per image).
 */
export function randomCrop(size: number | [number, number], padding = 0): Transform {
  cropSize(size);
  if (!Number.isInteger(padding) || padding < 0) throw new Error(`randomCrop: padding must be a non-negative integer, got ${padding}`);
  return (batch, rng) => {
    const [n, , h, w] = batch.shape;
    const { tops, lefts } = randomCropOffsets(n, h, w, size, padding, rng);
    return padCrop(batch, size, padding, tops, lefts);
  };
}

/** Mirrors (left ↔ right) the images i with flip[i] truthy, in place. */
export function flipImages(batch: BatchData, flip: ArrayLike<boolean | number>): BatchData {
  checkBatch('flipImages', batch);
  const [n, c, h, w] = batch.shape;
  const d = batch.data;
  for (let i = 0; i < n; i++) {
    if (!flip[i]) continue;
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        const row = ((i * c + ch) * h + y) * w;
        for (let a = row, b = row + w - 1; a < b; a++, b--) {
          const t = d[a];
          d[a] = d[b];
          d[b] = t;
        }
      }
    }
  }
  return batch;
}

/** Draws the horizontalFlip decisions for n images (one rng.float() per image, flip when < p). */
export function horizontalFlipMask(n: number, p: number, rng: Rng): Uint8Array {
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = rng.float() < p ? 1 : 0;
  return mask;
}

/** torchvision RandomHorizontalFlip(p): each image is mirrored with probability p. In place. */
export function horizontalFlip(p = 0.5): Transform {
  if (!(p >= 0 && p <= 1)) throw new Error(`horizontalFlip: p must be in [0, 1], got ${p}`);
  return (batch, rng) => flipImages(batch, horizontalFlipMask(batch.shape[0], p, rng));
}

// ---------------------------------------------------------------------------------------------------------------
// Step 3: normalization.

/**
 * (x - mean[c]) / std[c] per channel, in place, on [0, 1] values (after toFloat). A one-element mean/std applies
 * to every channel.
 */
export function normalize(mean: number[], std: number[]): Transform {
  if (!mean.length || mean.length !== std.length) throw new Error(`normalize: mean and std must be non-empty and of the same length, got ${mean.length} and ${std.length}`);
  std.forEach((s, i) => {
    if (!(s > 0)) throw new Error(`normalize: std[${i}] must be positive, got ${s}`);
  });
  const m = mean.slice();
  const inv = std.map((s) => 1 / s);
  return (batch) => {
    checkBatch('normalize', batch);
    const [n, c, h, w] = batch.shape;
    if (m.length !== 1 && m.length !== c) throw new Error(`normalize: ${m.length} means for a batch of ${c} channels`);
    const d = batch.data;
    const plane = h * w;
    for (let i = 0; i < n; i++) {
      for (let ch = 0; ch < c; ch++) {
        const mu = m.length === 1 ? m[0] : m[ch];
        const k = inv.length === 1 ? inv[0] : inv[ch];
        const base = (i * c + ch) * plane;
        for (let j = base, e = base + plane; j < e; j++) d[j] = (d[j] - mu) * k;
      }
    }
    return batch;
  };
}

/** Applies transforms left to right, all drawing from the same generator. */
export function compose(...transforms: (Transform | null | undefined)[]): Transform {
  const ts = transforms.filter((t): t is Transform => !!t);
  return (batch, rng) => {
    let b = batch;
    for (const t of ts) b = t(b, rng);
    return b;
  };
}
