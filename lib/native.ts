// native.ts: loads the compiled addon (a prebuilt binary from prebuilds/, or build/Release from a source
// build) through node-gyp-build, and describes the backend it provides.
import * as path from 'path';

/** Opaque handle to a native tensor (see native/napi/tensor_binding.cc). */
export interface NativeHandle {
  readonly shape: number[];
  /** writes the shape into the binding's shapeBuffer and returns the rank (-1: too many dims, read `shape`) */
  dims(): number;
  readonly layout: 'plain' | 'blocked';
  readonly device: string;
  readonly disposed: boolean;
  toFloat32Array(): Float32Array;
  copyFrom(data: Float32Array): void;
  item(): number;
  /** reports the storage to V8 as external memory (for tensors whose lifetime the garbage collector governs) */
  account(): void;
  dispose(): void;
}

type H = NativeHandle;
type Pair = [number, number];

/** The functions the addon exports; argument order mirrors native/napi/*.cc. */
export interface NativeBinding {
  NativeTensor: Function;
  /** NativeHandle.dims() writes here */
  shapeBuffer: Float64Array;
  buildInfo: { backend: string; library: string };
  fromFloat32(data: Float32Array, shape: number[]): H;
  full(shape: number[], value: number): H;
  randomNormal(shape: number[], seed: number, mean: number, std: number): H;
  randomUniform(shape: number[], seed: number, low: number, high: number): H;
  manualSeed(seed: number): void;
  liveTensorCount(): number;
  nextSeed(): number;
  getRngState(): string;
  setRngState(state: string): void;
  memoryStats(): { liveTensors: number; liveBuffers: number; liveHandles: number; liveBytes: number; cachedBytes: number; peakBytes: number; cacheLimitBytes: number; externalBytes: number; primitiveCacheEntries: number; primitiveCacheCapacity: number;
    cudaLiveBuffers: number; cudaLiveBytes: number; cudaCachedBytes: number; cudaPeakBytes: number };
  /** a copy of the tensor on 'cpu' or 'cuda' (the tensor itself when it is there already) */
  toDevice(x: H, device: string): H;
  cudaInfo(): CudaInfo;
  cudaSynchronize(): void;
  emptyCache(): void;
  setNumThreads(n: number): void;
  /** the SIMD kernels of the gathered MSGC execution on this CPU */
  gatheredKernels(): 'avx512' | 'avx2' | 'portable';
  /** MSGC_* switches the native code reads (tests, benchmarks); jest's process.env is a copy */
  setEnv(name: string, value: string | null): void;
  getEnv(name: string): string | null;
  getNumThreads(): number;
  setFlushDenormals(on: boolean): boolean;
  getFlushDenormals(): boolean;
  conv2dForward(x: H, w: H, b: H | null, stride: Pair, padding: Pair, dilation: Pair, groups: number): H;
  conv2dBnActEval(x: H, w: H, b: H | null, stride: Pair, padding: Pair, dilation: Pair, groups: number,
    rm: H, rv: H, gamma: H | null, beta: H | null, eps: number, act: number): H;
  conv2dBackward(x: H, w: H, stride: Pair, padding: Pair, dilation: Pair, groups: number, gy: H,
    needX: boolean, needW: boolean, needB: boolean): [H | null, H | null, H | null];
  batchNorm2dForward(x: H, rm: H, rv: H, w: H | null, b: H | null, training: boolean, momentum: number, eps: number): [H, H, H];
  batchNorm2dBackward(x: H, gy: H, mean: H, variance: H, w: H | null, training: boolean, eps: number,
    needWeightBias: boolean): [H, H | null, H | null];
  batchNormActEval(x: H, rm: H, rv: H, w: H | null, b: H | null, eps: number, act: number, residual: H | null): H;
  batchNormActEval(x: H, rm: H, rv: H, w: H | null, b: H | null, eps: number, act: number, residual: H | null, pooled: true): [H, H];
  activationForward(kind: number, x: H): H;
  activationBackward(kind: number, saved: H, gy: H): H;
  /** y = act(a + r) (act: -1 none, 0 ReLU, 1 ReLU6), with y's per-channel means when pooled: [y, means | null] */
  residualTailForward(a: H, r: H | null, act: number, pooled: boolean): [H, H | null];
  /** g = (gy + gChannels broadcast over H, W) · act'(y), for a and for r: [ga | null, gr | null] */
  residualTailBackward(y: H, gy: H, gChannels: H | null, act: number, needA: boolean, needR: boolean): [H | null, H | null];
  pool2dForward(kind: number, x: H, kernel: Pair, stride: Pair, padding: Pair, training?: boolean): [H, H | null];
  pool2dBackward(kind: number, x: H, kernel: Pair, stride: Pair, padding: Pair, gy: H, ws: H | null): H;
  linearForward(x: H, w: H, b: H | null): H;
  linearBackward(x: H, w: H, gy: H, needX: boolean, needW: boolean, needB: boolean): [H | null, H | null, H | null];
  crossEntropyForward(logits: H, labels: Int32Array, labelSmoothing: number): [H, H];
  crossEntropyBackward(probs: H, labels: Int32Array, labelSmoothing: number, gLoss: number): H;
  distillationForward(student: H, teacher: H, temperature: number): [H, H];
  distillationBackward(diff: H, temperature: number, gLoss: number): H;
  binary(kind: number, a: H, b: H): H;
  reduceToShape(g: H, shape: number[]): H;
  scale(x: H, alpha: number): H;
  sumAll(x: H): H;
  broadcastScalar(s: H, shape: number[], alpha: number): H;
  addInPlace(dst: H, src: H, alpha: number): void;
  expandChannels(src: H, like: H, alpha: number): H;
  addChannelsInPlace(dst: H, src: H, alpha: number): void;
  reshape(x: H, shape: number[]): H;
  toPlain(x: H): H;
  clone(x: H): H;
  concatChannels(xs: H[]): H;
  sliceChannels(x: H, start: number, end: number): H;
  sliceChannelsBackward(gy: H, xShape: number[], start: number): H;
  msgcConv2dForward(x: H, w: H, scale: H, stride: Pair, padding: Pair, heads: number): H;
  msgcConv2dForwardGathered(x: H, w: H, scale: H, stride: Pair, padding: Pair, heads: number, outputMask?: H | null): H;
  msgcConv2dBnActEval(x: H, w: H, scale: H, stride: Pair, padding: Pair, heads: number, outMask: H | null,
    rm: H, rv: H, gamma: H | null, beta: H | null, eps: number, act: number, residual: H | null, pooled: false, masked?: boolean): H;
  msgcConv2dBnActEval(x: H, w: H, scale: H, stride: Pair, padding: Pair, heads: number, outMask: H | null,
    rm: H, rv: H, gamma: H | null, beta: H | null, eps: number, act: number, residual: H | null, pooled: true, masked?: boolean): [H, H];
  msgcConv2dBnActEval(x: H, w: H, scale: H, stride: Pair, padding: Pair, heads: number, outMask: H | null,
    rm: H, rv: H, gamma: H | null, beta: H | null, eps: number, act: number, residual: H | null, pooled: boolean, masked?: boolean,
    compactOutput?: boolean, inputMask?: H | null): H | [H, H];
  depthwiseConv2dBnActCompactEval(x: H, mask: H, w: H, rm: H, rv: H, gamma: H | null, beta: H | null, eps: number, act: number,
    stride: Pair, padding: Pair): H;
  msgcConv2dBackward(x: H, w: H, scale: H, stride: Pair, padding: Pair, heads: number, gy: H,
    needX: boolean, needW: boolean, needScale: boolean, inputAct?: number): [H | null, H | null, H | null];
  gateForward(logits: H, temperature: number, training: boolean, seed: number): [H, H | null];
  squeezeHeadEval(ctx: H, w1: H, mean: H, variance: H, gamma: H | null, beta: H | null, eps: number, w2: H, b2: H, threshold: boolean): H;
  squeezeHeadEval(ctx: H, w1: H, mean: H, variance: H, gamma: H | null, beta: H | null, eps: number, w2: H, b2: H, threshold: false, heads: number): H;
  squeezeHeadEval(ctx: H, w1: H, mean: H, variance: H, gamma: H | null, beta: H | null, eps: number, w2: H, b2: H, threshold: true, heads: number): [H, number, number, number];
  /** The gates alone (withStats false): their statistics come from gateSummary, read when needed. */
  squeezeHeadEval(ctx: H, w1: H, mean: H, variance: H, gamma: H | null, beta: H | null, eps: number, w2: H, b2: H, threshold: true, heads: number, withStats: false): H;
  squeezeHeadTrainForward(ctx: H, w1: H, runningMean: H, runningVar: H, gamma: H | null, beta: H | null, momentum: number,
    eps: number, w2: H, b2: H): [H, H, H, H, H];
  squeezeHeadTrainBackward(ctx: H, w1: H, gamma: H | null, w2: H, h1: H, mean: H, invStd: H, h: H, gz: H, needCtx: boolean,
    needParams: boolean): [H | null, H | null, H | null, H | null, H | null, H | null];
  /** mask, soft, h1, mean, invStd, h, then the gates' sum, unselected, allOnes (maskStats) */
  gateHeadTrainForward(ctx: H, w1: H, runningMean: H, runningVar: H, gamma: H | null, beta: H | null, momentum: number,
    eps: number, w2: H, b2: H, heads: number, temperature: number, invSigma: number, seed: number): [H, H, H, H, H, H, number, number, number];
  gateHeadTrainBackward(ctx: H, w1: H, gamma: H | null, w2: H, h1: H, mean: H, invStd: H, h: H, soft: H, gm: H,
    temperature: number, needCtx: boolean, needParams: boolean): [H | null, H | null, H | null, H | null, H | null, H | null];
  maskStats(m: H): [number, number, number];
  /** [sum, unselected, allOnes, head sums...] as a tensor on m's device (nothing read back) */
  gateSummary(m: H): H;
  gateBackward(soft: H, gy: H, temperature: number): H;
  sgdStep(p: H, g: H, buf: H | null, lr: number, momentum: number, weightDecay: number, nesterov: boolean): void;
  sumSquares(x: H): number;
  scaleInPlace(x: H, alpha: number): void;
}

function load(): NativeBinding {
  const root = path.join(__dirname, '..');
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require('node-gyp-build')(root) as NativeBinding;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(
      `msgc: could not load the native addon (${reason}).\n` +
        'Fixes, in order:\n' +
        '  1. Reinstall so the prebuilt binary for your platform is picked up: npm rebuild msgc\n' +
        '  2. Build from source: install cmake, a C++17 compiler and oneDNN (Debian/Ubuntu: ' +
        'apt-get install cmake g++ libdnnl-dev), then run: npm rebuild msgc --build-from-source\n' +
        '  3. If a libdnnl error is shown, the binary cannot find oneDNN: install libdnnl (apt-get install libdnnl2) ' +
        'or use the prebuilt package, which carries it.\n' +
        '  4. If a libcudnn error is shown, the binary was built with the CUDA backend and cannot find cuDNN: put ' +
        "cuDNN's library folder on LD_LIBRARY_PATH, or rebuild without CUDA: MSGC_CUDA=OFF npm rebuild msgc --build-from-source",
    );
  }
}

/** What the loaded binary and this machine offer on the GPU (see cuda.info()). */
export interface CudaInfo {
  /** the binary has the CUDA backend */
  compiled: boolean;
  /** ... and a GPU is usable now */
  available: boolean;
  /** why not, when not available ('' otherwise) */
  reason: string;
  name?: string;
  computeCapability?: string;
  multiprocessors?: number;
  memoryBytes?: number;
  /** CUDA runtime and driver versions (e.g. 13000 for 13.0), cuDNN's (e.g. 91300; 0 without cuDNN) */
  runtimeVersion?: number;
  driverVersion?: number;
  cudnnVersion?: number;
}

export const native: NativeBinding = load();

export interface BackendInfo {
  backend: string;
  library: string;
  devices: string[];
  threads: number;
  /**
   * The SIMD kernels the gathered MSGC execution runs on this CPU: 'avx512', 'avx2' (AVX2 + FMA, e.g. AMD Zen 2/3)
   * or 'portable' (oneDNN's sgemm on packed copies of the selected channels, no wall-clock gain to expect).
   */
  gatheredKernels: 'avx512' | 'avx2' | 'portable';
  /** the GPU side: whether this binary has it, whether a GPU is usable, which one */
  cuda: CudaInfo;
}

let kernelsOfPass: 'avx512' | 'avx2' | 'portable' | null = null;

/**
 * The gathered MSGC kernels of this CPU (native.gatheredKernels(), which MSGC_GATHER_ISA can force): inside an MSGC
 * backbone's forward pass (withEnvSwitches) as read at its start, elsewhere at each use. (MobileNetV2 asked 49 times
 * a forward pass at batch 1, each a call into C++ that made a string.)
 */
export function gatheredKernels(): 'avx512' | 'avx2' | 'portable' {
  return kernelsOfPass ?? native.gatheredKernels();
}

/** @internal withEnvSwitches: hold the kind read now for the pass (true), or read it at each use again (false) */
export function holdGatheredKernels(hold: boolean): void {
  kernelsOfPass = hold ? native.gatheredKernels() : null;
}

/** Which backend the loaded binary provides. */
export function backendInfo(): BackendInfo {
  const cuda = native.cudaInfo();
  return {
    backend: native.buildInfo.backend,
    library: native.buildInfo.library,
    devices: cuda.available ? ['cpu', 'cuda'] : ['cpu'],
    cuda,
    threads: native.getNumThreads(),
    gatheredKernels: native.gatheredKernels(),
  };
}
