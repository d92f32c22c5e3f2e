// creation.ts: making tensors (from data, constants, random), seeding, and memory statistics.
import { native, NativeHandle } from '../native';
import { Tensor } from './tensor';

export interface CreateOptions {
  requiresGrad?: boolean;
  /** where the tensor lives: 'cpu' (the default) or 'cuda' (made on the CPU, then copied: the same values) */
  device?: 'cpu' | 'cuda';
}

/** A new tensor from a CPU handle, moved to options.device when that is 'cuda'. */
function place(op: string, h: NativeHandle, options: CreateOptions): Tensor {
  const device = options.device ?? 'cpu';
  if (device === 'cpu') return new Tensor(h, !!options.requiresGrad);
  if (device !== 'cuda') {
    h.dispose();
    throw new Error(`${op}: device must be 'cpu' or 'cuda', got ${String(device)}`);
  }
  try {
    return new Tensor(native.toDevice(h, 'cuda'), !!options.requiresGrad);
  } finally {
    h.dispose();
  }
}

function checkShape(op: string, shape: number[]): number[] {
  if (!Array.isArray(shape)) throw new Error(`${op}: shape must be an array of non-negative integers, got ${typeof shape}`);
  shape.forEach((d, i) => {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${op}: shape[${i}] must be a non-negative integer, got ${d}`);
  });
  return shape;
}

/** A tensor holding `data` (row-major) with the given shape. */
export function tensor(data: Float32Array | number[], shape: number[], options: CreateOptions = {}): Tensor {
  checkShape('tensor', shape);
  const arr = data instanceof Float32Array ? data : Float32Array.from(data as number[]);
  return place('tensor', native.fromFloat32(arr, shape), options);
}

export function full(shape: number[], value: number, options: CreateOptions = {}): Tensor {
  return place('full', native.full(checkShape('full', shape), value), options);
}
export function zeros(shape: number[], options: CreateOptions = {}): Tensor {
  return full(shape, 0, options);
}
export function ones(shape: number[], options: CreateOptions = {}): Tensor {
  return full(shape, 1, options);
}

export interface RandomOptions extends CreateOptions {
  /** Fixes the stream; without it the global generator (see manualSeed) supplies one. */
  seed?: number;
}

/** Normal samples N(mean, std²). */
export function randn(shape: number[], options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  return place('randn', native.randomNormal(checkShape('randn', shape), options.seed ?? -1, options.mean ?? 0, options.std ?? 1), options);
}

/** Uniform samples in [low, high). */
export function rand(shape: number[], options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  return place('rand', native.randomUniform(checkShape('rand', shape), options.seed ?? -1, options.low ?? 0, options.high ?? 1), options);
}

/** Seeds the global generator used when no per-call seed is given. */
export function manualSeed(seed: number): void {
  native.manualSeed(seed);
}

/** The global generator's state (a decimal string), to save in checkpoints. */
export function getRngState(): string {
  return native.getRngState();
}

/** Restores a state from getRngState(): the random stream continues exactly from there. */
export function setRngState(state: string): void {
  native.setRngState(state);
}

/** Number of native tensors alive (handles not yet disposed or collected). */
export function liveTensorCount(): number {
  return native.liveTensorCount();
}

export function memoryStats(): ReturnType<typeof native.memoryStats> {
  return native.memoryStats();
}

/** Returns cached native buffers to the system. */
export function emptyCache(): void {
  native.emptyCache();
}

/**
 * Sets the number of threads native ops use (OpenMP; the default is OMP_NUM_THREADS or the number of cores). Takes
 * effect on the next op, including ops already run: cached oneDNN primitives are kept per thread count.
 */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}

/**
 * Denormal floats (|x| < 1.2e-38) cost x86 cores about 100 cycles per operation, which can make a layer of an
 * untrained or decaying network many times slower. By default native ops flush them to zero (FTZ/DAZ), as
 * TensorFlow does; `setFlushDenormals(false)` (or MSGC_FLUSH_DENORMALS=0) keeps IEEE gradual underflow.
 * JavaScript arithmetic is never affected. Returns false where the CPU offers no such control.
 */
export function setFlushDenormals(on: boolean): boolean {
  return native.setFlushDenormals(on);
}

/** Whether native ops flush denormals to zero (see setFlushDenormals). */
export function getFlushDenormals(): boolean {
  return native.getFlushDenormals();
}
