// loader.ts: datasets held in JS memory and the DataLoader that turns them into float tensor batches.
//
// A Dataset keeps its images as typed arrays (uint8 for everything loaded from disk); the DataLoader makes one
// float32 [B, C, H, W] tensor per batch: gather the images of the batch (toFloat, ÷255) → transform (augment →
// normalize) → msgc.tensor. Only the batch being consumed is a native tensor; prefetched batches are plain
// Float32Arrays, so stopping an iteration early leaks nothing.
//
// Ownership: the consumer owns `batch.x` and must dispose it after the step (fit() and evaluate() do). It is created
// by the loader, outside any tidy the step opens, so a tidy around the step does not free it — call
// batch.x.dispose() (or create the tensor inside your tidy from loader.prepare(...) yourself).
import { Tensor } from '../tensor/tensor';
import { tensor } from '../tensor/creation';
import { BatchData, Rng, Transform, imageToFloat, mixSeed, permutation } from './transforms';

/** One sample: a CHW image (uint8 0..255, or float32 already scaled to [0, 1]) and its class index. */
export interface Sample {
  image: Uint8Array | Float32Array;
  label: number;
}

export interface Dataset {
  readonly length: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames?: string[];
  get(i: number): Sample;
}

export interface ArrayDatasetOptions {
  channels: number;
  height: number;
  width: number;
  numClasses: number;
  classNames?: string[];
}

/**
 * A dataset held in two arrays: images (N×C×H×W, uint8 or float32 in [0, 1]) and labels (N, 0..numClasses-1).
 * get(i) returns views into them, not copies.
 */
export class ArrayDataset implements Dataset {
  readonly images: Uint8Array | Float32Array;
  readonly labels: Int32Array;
  readonly length: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames?: string[];

  constructor(images: Uint8Array | Float32Array, labels: Int32Array, options: ArrayDatasetOptions) {
    const { channels, height, width, numClasses } = options;
    for (const [k, v] of Object.entries({ channels, height, width, numClasses })) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`ArrayDataset: ${k} must be a positive integer, got ${v}`);
    }
    const size = channels * height * width;
    if (images.length !== labels.length * size) {
      throw new Error(`ArrayDataset: ${labels.length} labels need ${labels.length}×${channels}×${height}×${width} = ${labels.length * size} image values, got ${images.length}`);
    }
    for (let i = 0; i < labels.length; i++) {
      const l = labels[i];
      if (l < 0 || l >= numClasses) throw new Error(`ArrayDataset: label ${l} of sample ${i} is outside 0..${numClasses - 1}`);
    }
    if (options.classNames && options.classNames.length !== numClasses) {
      throw new Error(`ArrayDataset: ${options.classNames.length} class names for ${numClasses} classes`);
    }
    this.images = images;
    this.labels = labels;
    this.length = labels.length;
    this.channels = channels;
    this.height = height;
    this.width = width;
    this.numClasses = numClasses;
    if (options.classNames) this.classNames = options.classNames.slice();
  }

  get imageSize(): number {
    return this.channels * this.height * this.width;
  }

  get(i: number): Sample {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new Error(`ArrayDataset.get: index ${i} is outside 0..${this.length - 1}`);
    const s = this.imageSize;
    return { image: this.images.subarray(i * s, (i + 1) * s), label: this.labels[i] };
  }

  /** A new dataset with copies of the samples at `indices` (e.g. a validation split). */
  subset(indices: ArrayLike<number>): ArrayDataset {
    const s = this.imageSize;
    const images = this.images instanceof Uint8Array ? new Uint8Array(indices.length * s) : new Float32Array(indices.length * s);
    const labels = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      const { image, label } = this.get(indices[k]);
      images.set(image, k * s);
      labels[k] = label;
    }
    return new ArrayDataset(images, labels, this);
  }
}

/** What the loader yields. `x` belongs to the consumer: dispose it after the step. */
export interface Batch {
  /** float32 [B, C, H, W], after the transform */
  x: Tensor;
  /** class indices, length B */
  y: Int32Array;
  /** dataset indices of the B samples, in batch order */
  indices: Int32Array;
}

/** A batch before it becomes a tensor (what prefetching keeps ready). */
export interface PreparedBatch extends BatchData {
  y: Int32Array;
  indices: Int32Array;
}

export interface DataLoaderOptions {
  /** samples per batch (default 32) */
  batchSize?: number;
  /** reshuffle every epoch (default false: dataset order) */
  shuffle?: boolean;
  /** seeds the shuffle and the augmentation (default 0); with the epoch it fixes both */
  seed?: number;
  /** drop the last batch when it is smaller than batchSize (default false) */
  dropLast?: boolean;
  /** augmentation + normalization, applied to each float batch (values in [0, 1]); see transforms.ts */
  transform?: Transform | null;
  /** number of batches prepared ahead in the background, between the consumer's awaits (default 2; 0 = off) */
  prefetch?: number;
}

/**
 * Iterates a Dataset in batches of float32 tensors.
 *
 *   const loader = new DataLoader(train, { batchSize: 128, shuffle: true, seed: 1, transform });
 *   for (let e = 0; e < epochs; e++) {
 *     loader.setEpoch(e);
 *     for await (const { x, y } of loader) { ...step...; x.dispose(); }
 *   }
 *
 * The order of an epoch is a function of (seed, epoch) only, and so is the augmentation of each batch (its
 * generator is seeded from (seed, epoch, batch index)). Each iteration uses the current epoch and then advances it
 * by one, so that repeated iterations without setEpoch() still see new orders; setEpoch(e) chooses the epoch of
 * the next iteration.
 *
 * Prefetching: after handing out a batch, the loader schedules (setImmediate) the preparation of the next ones
 * (up to `prefetch` ready Float32Array batches). That work runs on the main thread whenever the consumer awaits
 * something (I/O, timers); a consumer that never yields to the event loop simply gets each batch prepared on demand,
 * with no extra cost.
 */
export class DataLoader implements AsyncIterable<Batch> {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly transform: Transform | null;
  readonly prefetch: number;
  private epochValue = 0;

  constructor(dataset: Dataset, options: DataLoaderOptions = {}) {
    const batchSize = options.batchSize ?? 32;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`DataLoader: batchSize must be a positive integer, got ${batchSize}`);
    const prefetch = options.prefetch ?? 2;
    if (!Number.isInteger(prefetch) || prefetch < 0) throw new Error(`DataLoader: prefetch must be a non-negative integer, got ${prefetch}`);
    const seed = options.seed ?? 0;
    if (!Number.isFinite(seed)) throw new Error(`DataLoader: seed must be a finite number, got ${seed}`);
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.shuffle = !!options.shuffle;
    this.seed = seed;
    this.dropLast = !!options.dropLast;
    this.transform = options.transform ?? null;
    this.prefetch = prefetch;
  }

  /** Number of batches per epoch. */
  get length(): number {
    const n = this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The epoch the next iteration will use. */
  get epoch(): number {
    return this.epochValue;
  }

  /** Chooses the epoch (shuffle order and augmentation stream) of the next iteration. */
  setEpoch(epoch: number): void {
    if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`DataLoader.setEpoch: epoch must be a non-negative integer, got ${epoch}`);
    this.epochValue = epoch;
  }

  /** The sample order of an epoch: a permutation of 0..N-1 when shuffling, else 0..N-1. */
  order(epoch: number): Int32Array {
    const n = this.dataset.length;
    if (!this.shuffle) {
      const o = new Int32Array(n);
      for (let i = 0; i < n; i++) o[i] = i;
      return o;
    }
    return permutation(n, new Rng(mixSeed(this.seed, epoch, 0x5f3759df)));
  }

  /** Prepares batch `b` of an epoch (whose order() is `order`) as Float32Array data: gather → toFloat → transform. */
  prepare(order: Int32Array, b: number, epoch: number): PreparedBatch {
    const ds = this.dataset;
    const start = b * this.batchSize;
    const end = Math.min(start + this.batchSize, order.length);
    if (!(start < end)) throw new Error(`DataLoader.prepare: batch ${b} is outside 0..${this.length - 1}`);
    const size = ds.channels * ds.height * ds.width;
    const n = end - start;
    const indices = order.slice(start, end);
    const y = new Int32Array(n);
    const data = new Float32Array(n * size);
    for (let k = 0; k < n; k++) {
      const { image, label } = ds.get(indices[k]);
      if (image.length !== size) throw new Error(`DataLoader: sample ${indices[k]} has ${image.length} values, expected ${ds.channels}×${ds.height}×${ds.width}`);
      imageToFloat(image, data, k * size);
      y[k] = label;
    }
    let batch: BatchData = { data, shape: [n, ds.channels, ds.height, ds.width] };
    if (this.transform) {
      batch = this.transform(batch, new Rng(mixSeed(this.seed, epoch, b)));
      const [bn, c, h, w] = batch.shape;
      if (bn !== n || batch.data.length !== bn * c * h * w) throw new Error(`DataLoader: the transform returned shape [${batch.shape.join(', ')}] with ${batch.data.length} values for a batch of ${n}`);
    }
    return { data: batch.data, shape: batch.shape, y, indices };
  }

  private toBatch(p: PreparedBatch): Batch {
    return { x: tensor(p.data, p.shape), y: p.y, indices: p.indices };
  }

  /** Synchronous batches of an epoch (default: the current one, which then advances), for simple scripts. */
  *batches(epoch?: number): Generator<Batch, void, undefined> {
    const e = epoch ?? this.epochValue++;
    const order = this.order(e);
    const nb = this.length;
    for (let b = 0; b < nb; b++) yield this.toBatch(this.prepare(order, b, e));
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch> {
    const epoch = this.epochValue++;
    const order = this.order(epoch);
    const nb = this.length;
    const ready = new Map<number, PreparedBatch>();
    let nextToYield = 0; // the batch next() hands out next
    let nextToPrepare = 0; // batches below this one are ready or handed out
    let scheduled = false;
    let closed = false;
    let failure: unknown = null;

    const pump = (): void => {
      scheduled = false;
      if (closed || failure || nextToPrepare >= nb || ready.size >= this.prefetch) return;
      try {
        ready.set(nextToPrepare, this.prepare(order, nextToPrepare, epoch));
        nextToPrepare++;
      } catch (err) {
        failure = err; // reported by the next() that needs this batch
        return;
      }
      schedule();
    };
    const schedule = (): void => {
      if (scheduled || closed || failure || this.prefetch === 0 || nextToPrepare >= nb || ready.size >= this.prefetch) return;
      scheduled = true;
      setImmediate(pump);
    };

    return {
      next: async (): Promise<IteratorResult<Batch>> => {
        if (closed || nextToYield >= nb) {
          closed = true;
          ready.clear();
          return { done: true, value: undefined };
        }
        let p = ready.get(nextToYield);
        if (p) {
          ready.delete(nextToYield);
        } else {
          if (failure) {
            closed = true;
            throw failure;
          }
          // not prepared yet (nextToYield === nextToPrepare): do it now
          try {
            p = this.prepare(order, nextToYield, epoch);
          } catch (err) {
            closed = true;
            throw err;
          }
          nextToPrepare = nextToYield + 1;
        }
        nextToYield++;
        schedule();
        return { done: false, value: this.toBatch(p) };
      },
      return: async (): Promise<IteratorResult<Batch>> => {
        closed = true;
        ready.clear();
        return { done: true, value: undefined };
      },
    };
  }
}
