// teacher_cache.ts: a memory cache of a distillation teacher's logits, keyed by the exact contents of each input
// batch. Two fine-tunings distilled from the same teacher over the same seeded loader (the demo's MSGC and dense
// fine-tunings) see the same augmented batches, so the second one can reuse the first one's teacher forwards
// instead of recomputing them: the teacher runs in eval mode without autograd, a deterministic function of the
// batch and its weights, so a hit returns exactly what the forward would.
import { tensor } from '../tensor/creation';
import { Tensor } from '../tensor/tensor';

export interface TeacherCacheOptions {
  /** the most bytes of logits kept (default 256 MiB); batches past it are computed and not stored */
  maxBytes?: number;
}

/** What fit needs of a teacher to tie a cache to its weights. */
interface WithState {
  stateDict(): Record<string, Tensor>;
}

// two independent 32-bit hashes (FNV-1a and a multiply-rotate mix) of a word array, as 16 hex digits
function hash64(words: Uint32Array, seed: number): string {
  let a = 0x811c9dc5 ^ seed;
  let b = 0x9e3779b9 ^ Math.imul(seed, 0x85ebca6b);
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    a = Math.imul(a ^ w, 0x01000193);
    b = Math.imul((b ^ w) + 0x7f4a7c15, 0xc2b2ae35);
    b = (b << 13) | (b >>> 19);
  }
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}

function fingerprint(data: Float32Array, shape: number[]): string {
  return `${shape.join('x')}:${hash64(new Uint32Array(data.buffer, data.byteOffset, data.length), data.length)}`;
}

/**
 * Teacher logits by input batch, for fit's `distill.cache`. A hit needs the same batch contents bit for bit and
 * the same teacher weights: fit fingerprints the teacher's state (parameters and BatchNorm statistics) and
 * empties the cache when it changed. Use one cache per teacher; it holds plain Float32Arrays, no native memory.
 */
export class TeacherLogitCache {
  readonly maxBytes: number;
  private entries = new Map<string, { logits: Float32Array; shape: number[] }>();
  private teacherPrint: string | null = null;
  private bytesUsed = 0;
  /** lookups answered from the cache */
  hits = 0;
  /** lookups that ran the teacher */
  misses = 0;

  constructor(options: TeacherCacheOptions = {}) {
    const maxBytes = options.maxBytes ?? 256 * 1024 * 1024;
    if (!(typeof maxBytes === 'number' && maxBytes >= 0 && Number.isFinite(maxBytes))) {
      throw new Error(`TeacherLogitCache: maxBytes must be a non-negative finite number, got ${maxBytes}`);
    }
    this.maxBytes = maxBytes;
  }

  /** batches stored */
  get size(): number {
    return this.entries.size;
  }

  /** bytes of logits stored */
  get bytes(): number {
    return this.bytesUsed;
  }

  clear(): void {
    this.entries.clear();
    this.bytesUsed = 0;
    this.teacherPrint = null;
  }

  /**
   * @internal fit calls this once per run with its teacher: a teacher whose weights differ from the ones the
   * entries came from empties the cache.
   */
  bindTeacher(teacher: unknown): void {
    if (!teacher || typeof (teacher as WithState).stateDict !== 'function') {
      throw new Error('fit: distill.cache needs a teacher with stateDict() (a model), to tie the cached logits to its weights');
    }
    const state = (teacher as WithState).stateDict();
    const parts = Object.keys(state).sort().map((k) => `${k}=${fingerprint(state[k].toFloat32Array(), state[k].shape)}`);
    const joined = parts.join(';');
    const print = hash64(Uint32Array.from(joined, (ch) => ch.charCodeAt(0)), 1) + `:${parts.length}`;
    if (this.teacherPrint !== null && this.teacherPrint !== print) {
      this.entries.clear();
      this.bytesUsed = 0;
    }
    this.teacherPrint = print;
  }

  /**
   * @internal The teacher's logits for batch x: from the cache, or computed by `compute` (called without
   * autograd by the caller) and stored while under maxBytes. Returns a new tensor the caller owns.
   */
  logits(x: Tensor, compute: () => Tensor): Tensor {
    const key = fingerprint(x.toFloat32Array(), x.shape);
    const hit = this.entries.get(key);
    if (hit) {
      this.hits++;
      return tensor(hit.logits, hit.shape);
    }
    this.misses++;
    const t = compute();
    const bytes = t.size * 4;
    if (this.bytesUsed + bytes <= this.maxBytes) {
      this.entries.set(key, { logits: t.toFloat32Array(), shape: t.shape.slice() });
      this.bytesUsed += bytes;
    }
    return t;
  }
}
