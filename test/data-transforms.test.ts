// data-transforms.test.ts: float conversion, normalize, randomCrop, horizontalFlip and the seeded generator, checked
// against float64 / hand-computed references.
import {
  BatchData, Rng, compose, flipImages, horizontalFlip, horizontalFlipMask, mixSeed, normalize, padCrop, permutation, randomCrop,
  randomCropOffsets, toFloat, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD,
} from '../lib/data';

function batchOf(n: number, c: number, h: number, w: number, f: (i: number) => number): BatchData {
  return { data: Float32Array.from({ length: n * c * h * w }, (_, i) => f(i)), shape: [n, c, h, w] };
}

describe('Rng', () => {
  test('same seed → same stream; different seeds differ; ranges hold', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const sa = Array.from({ length: 50 }, () => a.nextUint32());
    const sb = Array.from({ length: 50 }, () => b.nextUint32());
    const sc = Array.from({ length: 50 }, () => c.nextUint32());
    expect(sa).toEqual(sb);
    expect(sa).not.toEqual(sc);
    const r = new Rng(7);
    const hist = new Array(6).fill(0);
    let inRange = true;
    for (let i = 0; i < 6000; i++) {
      const f = r.float();
      inRange = inRange && f >= 0 && f < 1;
      hist[r.int(6)]++;
    }
    expect(inRange).toBe(true);
    for (const h of hist) expect(Math.abs(h - 1000)).toBeLessThan(150);
    expect(() => r.int(0)).toThrow(/positive integer/);
    expect(mixSeed(1, 2)).not.toBe(mixSeed(2, 1));
    expect(mixSeed(1, 2)).toBe(mixSeed(1, 2));
    expect(mixSeed(2 ** 32)).not.toBe(mixSeed(0));
  });

  test('permutation is a permutation and depends on the seed', () => {
    const p = permutation(1000, new Rng(1));
    expect(Array.from(p).sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(Array.from(permutation(1000, new Rng(1)))).toEqual(Array.from(p));
    expect(Array.from(permutation(1000, new Rng(2)))).not.toEqual(Array.from(p));
  });
});

test('toFloat divides uint8 by 255 (correctly rounded float32) and copies float32 images', () => {
  const u = Uint8Array.from({ length: 256 }, (_, i) => i);
  const b = toFloat([u], 1, 16, 16);
  expect(b.shape).toEqual([1, 1, 16, 16]);
  for (let i = 0; i < 256; i++) expect(b.data[i]).toBe(Math.fround(i / 255));
  const f = Float32Array.from([0.25, 0.5, 0.75, 1]);
  const bf = toFloat([f, f], 1, 2, 2);
  expect(Array.from(bf.data)).toEqual([0.25, 0.5, 0.75, 1, 0.25, 0.5, 0.75, 1]);
  expect(() => toFloat([u], 1, 4, 4)).toThrow(/image 0 has 256 values, expected 1×4×4 = 16/);
});

test('normalize matches (v/255 - mean[c]) / std[c] computed in float64, per channel and broadcast', () => {
  const n = 2;
  const c = 3;
  const hw = 5;
  const u8 = Uint8Array.from({ length: n * c * hw }, (_, i) => (i * 53 + 11) % 256);
  const imgs = [u8.subarray(0, c * hw), u8.subarray(c * hw)];
  const out = normalize(CIFAR10_MEAN, CIFAR10_STD)(toFloat(imgs, c, 1, hw), new Rng(0));
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      for (let j = 0; j < hw; j++) {
        const k = (i * c + ch) * hw + j;
        const ref = (u8[k] / 255 - CIFAR10_MEAN[ch]) / CIFAR10_STD[ch];
        expect(Math.abs(out.data[k] - ref)).toBeLessThan(1e-6);
      }
    }
  }
  // a one-element mean/std applies to every channel
  const g = normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)(toFloat([Uint8Array.from([0, 255, 128])], 3, 1, 1), new Rng(0));
  [0, 255, 128].forEach((v, k) => expect(Math.abs(g.data[k] - (v / 255 - 0.286) / 0.353)).toBeLessThan(1e-6));
  expect(() => normalize(IMAGENET_MEAN, IMAGENET_STD)(toFloat([new Uint8Array(2)], 2, 1, 1), new Rng(0))).toThrow(/3 means for a batch of 2 channels/);
  expect(() => normalize([0.5], [0])).toThrow(/std\[0\] must be positive/);
  expect(() => normalize([0.5, 0.5], [1])).toThrow(/same length/);
});

describe('randomCrop', () => {
  // one 1×3×4 image holding 1..12
  const img = (): BatchData => batchOf(1, 1, 3, 4, (i) => i + 1);

  test('padCrop equals the hand-computed window of the zero-padded image', () => {
    // padded (padding 1) is 5×6:
    //   0  0  0  0  0  0
    //   0  1  2  3  4  0
    //   0  5  6  7  8  0
    //   0  9 10 11 12  0
    //   0  0  0  0  0  0
    expect(Array.from(padCrop(img(), 3, 1, [0], [0]).data)).toEqual([0, 0, 0, 0, 1, 2, 0, 5, 6]);
    expect(Array.from(padCrop(img(), 3, 1, [2], [3]).data)).toEqual([7, 8, 0, 11, 12, 0, 0, 0, 0]);
    expect(Array.from(padCrop(img(), [2, 4], 1, [1], [1]).data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(padCrop(img(), [2, 4], 1, [1], [1]).shape).toEqual([1, 1, 2, 4]);
    // no padding: a plain crop
    expect(Array.from(padCrop(img(), 2, 0, [1], [2]).data)).toEqual([7, 8, 11, 12]);
    expect(() => padCrop(img(), 3, 1, [3], [0])).toThrow(/offset \(3, 0\) of image 0 is outside 0..2 × 0..3/);
    expect(() => padCrop(img(), 6, 1, [0], [0])).toThrow(/larger than the padded image 5×6/);
  });

  test('randomCrop = padCrop at the offsets drawn from the same generator, per image and channel', () => {
    const b = batchOf(8, 2, 6, 5, (i) => (i % 97) + 1);
    const { tops, lefts } = randomCropOffsets(8, 6, 5, 6, 2, new Rng(9));
    const viaOffsets = padCrop(b, 6, 2, tops, lefts);
    const viaRandom = randomCrop(6, 2)(b, new Rng(9));
    expect(Array.from(viaRandom.data)).toEqual(Array.from(viaOffsets.data));
    expect(viaRandom.shape).toEqual([8, 2, 6, 6]);
    // independent reference: build the padded image explicitly, then slice
    for (let i = 0; i < 8; i++) {
      expect(tops[i]).toBeGreaterThanOrEqual(0);
      expect(tops[i]).toBeLessThanOrEqual(6 + 4 - 6);
      expect(lefts[i]).toBeLessThanOrEqual(5 + 4 - 6);
      for (let ch = 0; ch < 2; ch++) {
        const padded: number[][] = Array.from({ length: 10 }, () => new Array(9).fill(0));
        for (let y = 0; y < 6; y++) for (let x = 0; x < 5; x++) padded[y + 2][x + 2] = b.data[((i * 2 + ch) * 6 + y) * 5 + x];
        for (let y = 0; y < 6; y++) {
          for (let x = 0; x < 6; x++) {
            expect(viaRandom.data[((i * 2 + ch) * 6 + y) * 6 + x]).toBe(padded[tops[i] + y][lefts[i] + x]);
          }
        }
      }
    }
    // the input is left untouched; every offset occurs over many draws
    expect(b.data[0]).toBe(1);
    const seen = new Set<string>();
    const o = randomCropOffsets(2000, 3, 4, 3, 1, new Rng(3));
    for (let i = 0; i < 2000; i++) seen.add(`${o.tops[i]},${o.lefts[i]}`);
    expect(seen.size).toBe(3 * 4);
  });

  test('same seed → same crops, another seed → other crops', () => {
    const b = () => batchOf(16, 1, 8, 8, (i) => i);
    const t = randomCrop(8, 4);
    expect(Array.from(t(b(), new Rng(5)).data)).toEqual(Array.from(t(b(), new Rng(5)).data));
    expect(Array.from(t(b(), new Rng(5)).data)).not.toEqual(Array.from(t(b(), new Rng(6)).data));
  });
});

describe('horizontalFlip', () => {
  test('mirrors each row of the chosen images, in place', () => {
    const b = batchOf(2, 2, 2, 3, (i) => i);
    // image 0 flipped, image 1 not
    flipImages(b, [1, 0]);
    expect(Array.from(b.data)).toEqual([2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]);
    const all = horizontalFlip(1)(batchOf(1, 1, 1, 4, (i) => i), new Rng(0));
    expect(Array.from(all.data)).toEqual([3, 2, 1, 0]);
    const none = horizontalFlip(0)(batchOf(1, 1, 1, 4, (i) => i), new Rng(0));
    expect(Array.from(none.data)).toEqual([0, 1, 2, 3]);
    expect(() => horizontalFlip(1.5)).toThrow(/p must be in \[0, 1\]/);
  });

  test('flips with probability p, reproducibly', () => {
    const m = horizontalFlipMask(4000, 0.5, new Rng(11));
    const flipped = m.reduce((a, v) => a + v, 0);
    expect(Math.abs(flipped - 2000)).toBeLessThan(200);
    expect(Array.from(horizontalFlipMask(64, 0.5, new Rng(11)))).toEqual(Array.from(m.subarray(0, 64)));
    const run = (seed: number) => Array.from(horizontalFlip()(batchOf(32, 1, 2, 2, (i) => i), new Rng(seed)).data);
    expect(run(1)).toEqual(run(1));
    expect(run(1)).not.toEqual(run(2));
  });
});

test('compose applies left to right from one generator: crop → flip → normalize', () => {
  const t = compose(randomCrop(4, 1), horizontalFlip(1), null, normalize([0.5], [0.25]));
  const src = () => batchOf(3, 1, 4, 4, (i) => (i % 16) / 16);
  const out = t(src(), new Rng(21));
  // reference from the same draws, in the same order
  const rng = new Rng(21);
  const { tops, lefts } = randomCropOffsets(3, 4, 4, 4, 1, rng);
  const ref = flipImages(padCrop(src(), 4, 1, tops, lefts), horizontalFlipMask(3, 1, rng));
  for (let i = 0; i < ref.data.length; i++) expect(out.data[i]).toBeCloseTo((ref.data[i] - 0.5) / 0.25, 6);
});
