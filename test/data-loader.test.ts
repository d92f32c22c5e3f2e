// data-loader.test.ts: ArrayDataset and DataLoader — epoch-seeded shuffling, last-batch handling, batch values,
// transforms, prefetching and tensor lifetimes.
import { liveTensorCount } from '../lib/tensor/creation';
import type { BatchSource } from '../lib/train/fit';
import { ArrayDataset, Batch, BatchData, DataLoader, Rng, Transform, mixSeed, randomCrop, horizontalFlip, compose, normalize } from '../lib/data';

/** n samples of 1×2×3 whose pixel j of sample i is (i * 7 + j) mod 256; label i mod 5. */
function makeDataset(n: number): ArrayDataset {
  const images = Uint8Array.from({ length: n * 6 }, (_, k) => (Math.floor(k / 6) * 7 + (k % 6)) % 256);
  const labels = Int32Array.from({ length: n }, (_, i) => i % 5);
  return new ArrayDataset(images, labels, { channels: 1, height: 2, width: 3, numClasses: 5 });
}

async function collect(loader: DataLoader): Promise<{ x: number[][]; y: number[][]; idx: number[][] }> {
  const out = { x: [] as number[][], y: [] as number[][], idx: [] as number[][] };
  for await (const b of loader) {
    out.x.push(Array.from(b.x.toFloat32Array()));
    out.y.push(Array.from(b.y));
    out.idx.push(Array.from(b.indices));
    b.x.dispose();
  }
  return out;
}

describe('ArrayDataset', () => {
  test('get returns views; subset copies; inconsistent inputs are rejected', () => {
    const ds = makeDataset(4);
    expect(Array.from(ds.get(2).image)).toEqual([14, 15, 16, 17, 18, 19]);
    expect(ds.get(2).label).toBe(2);
    const sub = ds.subset([3, 1]);
    expect(sub.length).toBe(2);
    expect(Array.from(sub.get(0).image)).toEqual(Array.from(ds.get(3).image));
    expect(Array.from(sub.labels)).toEqual([3, 1]);
    expect(() => ds.get(4)).toThrow(/index 4 is outside 0..3/);
    expect(() => new ArrayDataset(new Uint8Array(5), new Int32Array(1), { channels: 1, height: 2, width: 3, numClasses: 2 })).toThrow(/need 1×1×2×3 = 6 image values, got 5/);
    expect(() => new ArrayDataset(new Uint8Array(6), Int32Array.from([2]), { channels: 1, height: 2, width: 3, numClasses: 2 })).toThrow(/label 2 of sample 0 is outside 0..1/);
  });
});

describe('DataLoader', () => {
  test('unshuffled: dataset order, x = images / 255 as float32 [B, C, H, W], y = labels', async () => {
    const ds = makeDataset(10);
    const loader = new DataLoader(ds, { batchSize: 4 });
    expect(loader.length).toBe(3);
    const seen: number[] = [];
    for await (const b of loader) {
      expect(b.x.shape).toEqual([b.indices.length, 1, 2, 3]);
      const x = b.x.toFloat32Array();
      b.indices.forEach((i, k) => {
        const img = ds.get(i).image;
        for (let j = 0; j < 6; j++) expect(x[k * 6 + j]).toBe(Math.fround(img[j] / 255));
        expect(b.y[k]).toBe(ds.labels[i]);
      });
      seen.push(...b.indices);
      b.x.dispose();
    }
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  test('last batch: smaller by default, dropped with dropLast', async () => {
    const ds = makeDataset(10);
    const keep = await collect(new DataLoader(ds, { batchSize: 4, shuffle: true, seed: 3 }));
    expect(keep.idx.map((b) => b.length)).toEqual([4, 4, 2]);
    const drop = new DataLoader(ds, { batchSize: 4, shuffle: true, seed: 3, dropLast: true });
    expect(drop.length).toBe(2);
    const dropped = await collect(drop);
    expect(dropped.idx.map((b) => b.length)).toEqual([4, 4]);
    expect(dropped.idx).toEqual(keep.idx.slice(0, 2)); // same order, last batch cut
    expect(new DataLoader(ds, { batchSize: 5, dropLast: true }).length).toBe(2);
    expect(new DataLoader(ds, { batchSize: 11, dropLast: true }).length).toBe(0);
    expect(new DataLoader(ds, { batchSize: 11 }).length).toBe(1);
  });

  test('shuffling: a permutation per epoch, fixed by (seed, epoch)', async () => {
    const ds = makeDataset(50);
    const orderOf = async (seed: number, epoch: number) => {
      const l = new DataLoader(ds, { batchSize: 8, shuffle: true, seed });
      l.setEpoch(epoch);
      return (await collect(l)).idx.flat();
    };
    const a = await orderOf(1, 0);
    expect([...a].sort((p, q) => p - q)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(a).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(await orderOf(1, 0)).toEqual(a);
    const e1 = await orderOf(1, 1);
    expect(e1).not.toEqual(a);
    expect([...e1].sort((p, q) => p - q)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(await orderOf(2, 0)).not.toEqual(a);

    // each iteration advances the epoch; setEpoch rewinds it
    const l = new DataLoader(ds, { batchSize: 8, shuffle: true, seed: 1 });
    expect(l.epoch).toBe(0);
    expect((await collect(l)).idx.flat()).toEqual(a);
    expect(l.epoch).toBe(1);
    expect((await collect(l)).idx.flat()).toEqual(e1);
    l.setEpoch(0);
    expect((await collect(l)).idx.flat()).toEqual(a);
    expect(Array.from(l.order(1))).toEqual(e1);
    expect(() => l.setEpoch(-1)).toThrow(/non-negative integer/);
  });

  test('transforms get a generator seeded by (seed, epoch, batch): reproducible, independent of prefetch', async () => {
    const ds = makeDataset(40);
    const transform = compose(randomCrop([2, 3], 1), horizontalFlip(), normalize([0.5], [0.5]));
    const run = async (prefetch: number, seed = 4, epoch = 2) => {
      const l = new DataLoader(ds, { batchSize: 6, shuffle: true, seed, transform, prefetch });
      l.setEpoch(epoch);
      return collect(l);
    };
    const a = await run(0);
    expect(await run(0)).toEqual(a);
    expect(await run(3)).toEqual(a);
    expect((await run(0, 4, 3)).x).not.toEqual(a.x);
    expect((await run(0, 5, 2)).x).not.toEqual(a.x);
    // the sync generator yields the same batches
    const l = new DataLoader(ds, { batchSize: 6, shuffle: true, seed: 4, transform });
    const sync: number[][] = [];
    for (const b of l.batches(2)) {
      sync.push(Array.from(b.x.toFloat32Array()));
      b.x.dispose();
    }
    expect(sync).toEqual(a.x);
    // batch b of epoch e: the transform applied to the plain batch with Rng(mixSeed(seed, e, b)) — checked through prepare()
    const plain = new DataLoader(ds, { batchSize: 6, shuffle: true, seed: 4 });
    const order = plain.order(2);
    const p1 = plain.prepare(order, 1, 2);
    const manual = transform({ data: p1.data, shape: p1.shape }, new Rng(mixSeed(4, 2, 1)));
    expect(Array.from(manual.data)).toEqual(a.x[1]);
  });

  test('a transform may change the image size; a wrong batch size from it is an error', async () => {
    const ds = makeDataset(5);
    const grow: Transform = (b: BatchData) => {
      const [n, c] = b.shape;
      return { data: new Float32Array(n * c * 4 * 4).fill(1), shape: [n, c, 4, 4] };
    };
    const [first] = new DataLoader(ds, { batchSize: 2, transform: grow }).batches();
    expect(first.x.shape).toEqual([2, 1, 4, 4]);
    first.x.dispose();
    const bad: Transform = (b) => ({ data: b.data.subarray(0, 6), shape: [1, 1, 2, 3] });
    const it = new DataLoader(ds, { batchSize: 2, transform: bad })[Symbol.asyncIterator]();
    await expect(it.next()).rejects.toThrow(/transform returned shape \[1, 1, 2, 3\] .* for a batch of 2/);
  });

  test('prefetch prepares up to `prefetch` batches ahead while the consumer awaits', async () => {
    const ds = makeDataset(40);
    let calls = 0;
    const counting: Transform = (b) => {
      calls++;
      return b;
    };
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const it = new DataLoader(ds, { batchSize: 4, transform: counting, prefetch: 2 })[Symbol.asyncIterator]();
    const b0 = await it.next();
    expect(calls).toBe(1);
    await sleep(30);
    expect(calls).toBe(3); // batches 1 and 2 are ready
    const b1 = await it.next();
    expect(calls).toBe(3); // served from the queue
    await sleep(30);
    expect(calls).toBe(4);
    (b0.value as Batch).x.dispose();
    (b1.value as Batch).x.dispose();
    await it.return?.();
    await sleep(30);
    expect(calls).toBe(4); // nothing more after return()
    const off = new DataLoader(ds, { batchSize: 4, transform: counting, prefetch: 0 })[Symbol.asyncIterator]();
    calls = 0;
    const c0 = await off.next();
    await sleep(30);
    expect(calls).toBe(1);
    (c0.value as Batch).x.dispose();
  });

  test('tensors: one per batch, owned by the consumer; liveTensorCount returns to its start', async () => {
    const ds = makeDataset(30);
    const start = liveTensorCount();
    const loader = new DataLoader(ds, { batchSize: 4, shuffle: true, transform: horizontalFlip(), prefetch: 2 });
    const held: Batch[] = [];
    for await (const b of loader) held.push(b);
    expect(liveTensorCount()).toBe(start + loader.length);
    for (const b of held) b.x.dispose();
    expect(liveTensorCount()).toBe(start);
    // stopping early leaks nothing: prefetched batches are plain arrays
    for await (const b of loader) {
      b.x.dispose();
      await new Promise((r) => setTimeout(r, 5));
      break;
    }
    expect(liveTensorCount()).toBe(start);
    for (const b of loader.batches()) b.x.dispose();
    expect(liveTensorCount()).toBe(start);
  });

  test('fits the BatchSource shape that fit() and evaluate() iterate', () => {
    const source: BatchSource = new DataLoader(makeDataset(3), { batchSize: 2 });
    expect(source.length).toBe(2);
    expect(() => new DataLoader(makeDataset(3), { batchSize: 0 })).toThrow(/batchSize must be a positive integer/);
    expect(() => new DataLoader(makeDataset(3), { prefetch: -1 })).toThrow(/prefetch must be a non-negative integer/);
  });
});
