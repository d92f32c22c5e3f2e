// msgc.ts: the MSGC operators — F.msgcConv2d (middle-spectrum grouped convolution with per-sample, per-head
// input-channel scales) and F.gumbelSigmoidGate (the binary straight-through gate that produces the masks). The rules
// of msgcConv2d's 'auto' execution are in msgc_rules.ts.
import { gatheredKernels, native, NativeHandle } from '../native';
import { narrowHeadsUnite, preferGathered, preferOutputSkipping } from './msgc_rules';
import { relu, relu6 } from './activation';
import { actCode, batchNormAct, batchNormActPooled, checkBnAct, FoldedBatchNorm } from './norm';
import { isGradEnabled } from '../tensor/scope';
import { recordOp, Tensor, wrapOptional } from '../tensor/tensor';
import { checkTensor, IntOrPair, optionalTensor, pair } from './util';

export interface MsgcConv2dOptions {
  stride?: IntOrPair;
  padding?: IntOrPair;
  /** G: output channels split into G contiguous groups, one per head */
  heads: number;
  /**
   * How to run the forward pass. 'masked' multiplies the input by the scales, zeros included. 'gathered' runs
   * only the selected channels (scale ≠ 0) of each sample and head, so it gets faster as the gates close.
   * 'auto' (default) picks 'gathered' when preferGathered() expects it to be faster for the shape and the
   * measured density, 'masked' otherwise. Both give the same numbers up to float rounding, and both record the
   * same backward (the masked one: the gate gradient needs the input gradient of every channel, selected or
   * not — spec §2.8 — so the backward cannot skip closed channels).
   */
  execution?: 'auto' | 'masked' | 'gathered';
  /**
   * [N, K, O] (optional; inference only): the outputs the caller needs. Output o of sample n is needed when
   * outputMask[n, k, o] ≠ 0 for some k; the gathered execution computes only those and returns zeros for the
   * others (producer/consumer skipping, spec §2.10: e.g. the next MSGC conv's gates over these channels, K = its
   * heads, or a consumer's input gate, K = 1): with 'auto' when preferOutputSkipping() expects it to pay, with an
   * explicit 'gathered' wherever heads have 32 outputs or more; otherwise, and in the masked execution, every output
   * is computed. Do not pass it in training: the zeros would enter a following
   * batch norm's batch statistics.
   */
  outputMask?: Tensor | null;
  /** filled in by the call: whether the gathered execution ran, and whether it skipped the unneeded outputs */
  stats?: { gathered: boolean; skippedOutputs?: boolean };
  /**
   * What the caller already knows of the scales, so that 'auto' need not read them back from native memory:
   * density (share of entries ≠ 0), allOnes (every entry exactly 1), unionDensity (share of (sample, input
   * channel) pairs some head selects), unneededOutputs (share of (sample, output) pairs no row of outputMask
   * needs). The host blocks pass them from the gate values they read for the MAC tally.
   */
  hints?: { density?: number; allOnes?: boolean; unionDensity?: number; unneededOutputs?: number };
  /**
   * F.msgcConv2d only: x is the input of this activation, and the conv runs on act(x) (msgcConv2d(relu6(x), ...)),
   * as the ReLU6 between MobileNetV2's depthwise conv and its projection. Recording gradients on the CPU, the
   * activation is no node of its own: the conv's backward takes the input gradient through it while it writes it
   * (gx · act'(act(x)): ReLU passes where act(x) > 0, ReLU6 where 0 < act(x) < 6), instead of the activation's
   * backward pass over the gradient. Elsewhere it is the composition. (At exactly x = 6 the composition's ReLU6
   * passes the gradient and this one does not, as with F.residualTail.)
   */
  inputActivation?: 'relu' | 'relu6' | null;
}

export { narrowHeadsUnite, preferGathered, preferOutputSkipping };

export type MsgcExecution = 'auto' | 'masked' | 'gathered';
let defaultExecution: MsgcExecution = 'auto';

/**
 * The execution msgcConv2d uses when a call does not set options.execution — how to switch a whole model (its
 * blocks call msgcConv2d without the option), e.g. to compare modes or to benchmark one. Returns the previous one.
 */
export function setMsgcExecution(mode: MsgcExecution): MsgcExecution {
  if (mode !== 'auto' && mode !== 'masked' && mode !== 'gathered') {
    throw new Error(`setMsgcExecution: mode must be 'auto', 'masked' or 'gathered', got ${String(mode)}`);
  }
  const prev = defaultExecution;
  defaultExecution = mode;
  return prev;
}

/** The execution msgcConv2d calls without options.execution use (see setMsgcExecution). */
export function getMsgcExecution(): MsgcExecution {
  return defaultExecution;
}

/**
 * Measured 'auto' (setMsgcTuning; off by default, or MSGC_TUNE=1): which execution is faster depends on the CPU
 * as much as on the shape. On the AMD EPYC (Zen 5, AVX-512, 2 threads) of 2026-12-04 MobileNetV2 at batch 32 and
 * gate density 0.5 ran its 1×1 projections faster masked on most shapes, where preferGathered's rule (from
 * another AVX-512 machine) picks gathered: the model took 94.5-96.4 ms with every MSGC conv masked against
 * 98.5-102.8 with the rule (alternating forwards, two runs). With tuning on, an inference call (no gradient
 * recorded) that 'auto' would decide by rule instead runs each execution kTuneCalls times — the first of each a
 * warm-up (weight layouts, primitive caches) — alternating, times them, and from then on uses the faster (the
 * smaller best time) for that op, shape, stride, padding, head count and gate density (in tenths). Like
 * PyTorch's cudnn.benchmark: the first calls of each shape run slower, and a run may pick differently from the
 * next on a noisy machine (the two executions agree to float rounding, not bit for bit). Not on the GPU, whose
 * gathered kernel does not get slower with density.
 */
const kTuneCalls = 4;
interface TuneEntry {
  masked: number[];
  gathered: number[];
  choice: 'masked' | 'gathered' | null;
}
const tuneTable = new Map<string, TuneEntry>();
let tuning = typeof process !== 'undefined' && process.env.MSGC_TUNE === '1';
let tuneTime: (path: 'masked' | 'gathered', ms: number) => number = (_path, ms) => ms;

/** Turns the measured 'auto' on or off (see kTuneCalls above); returns the previous setting. */
export function setMsgcTuning(on: boolean): boolean {
  if (typeof on !== 'boolean') throw new Error(`setMsgcTuning: expected true or false, got ${String(on)}`);
  const prev = tuning;
  tuning = on;
  return prev;
}

/**
 * What the measured 'auto' has decided so far: per key (op, shapes, stride, padding, heads, density in tenths)
 * the execution it chose, or null while it still measures. clear: forget it all (e.g. after moving to another
 * machine's thread count).
 */
export function msgcTuningTable(clear = false): Map<string, 'masked' | 'gathered' | null> {
  const out = new Map<string, 'masked' | 'gathered' | null>();
  for (const [k, e] of tuneTable) out.set(k, e.choice);
  if (clear) tuneTable.clear();
  return out;
}

/** @internal tests: map a call's measured time (ms) to the one the tuner records (identity by default) */
export function setMsgcTuningTimer(fn: ((path: 'masked' | 'gathered', ms: number) => number) | null): void {
  tuneTime = fn ?? ((_path, ms) => ms);
}

/** The native call of a planned forward, timed for the tuner when the plan measures. */
function timedForward<T>(plan: MsgcPlan, run: () => T): T {
  if (!plan.tune) return run();
  const t0 = process.hrtime.bigint();
  const r = run();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const e = plan.tune;
  const path = plan.gathered ? 'gathered' : 'masked';
  e[path].push(tuneTime(path, ms));
  if (e.masked.length >= kTuneCalls && e.gathered.length >= kTuneCalls) {
    const best = (a: number[]) => Math.min(...a.slice(1));
    e.choice = best(e.gathered) < best(e.masked) ? 'gathered' : 'masked';
  }
  return r;
}

/**
 * Fraction of entries ≠ 0 (the gate density, read from native memory: N·G·C floats), whether all are 1, and with
 * `union` the fraction of (sample, channel) pairs some head selects (the heads' union; scale [N, G, C]).
 */
function scaleStats(scale: Tensor, union: boolean): { density: number; allOnes: boolean; unionDensity?: number } {
  const v = scale.toFloat32Array();
  let nz = 0;
  let ones = 0;
  for (let i = 0; i < v.length; i++) {
    if (v[i] !== 0) nz++;
    if (v[i] === 1) ones++;
  }
  const density = v.length ? nz / v.length : 0, allOnes = ones === v.length;
  if (!union) return { density, allOnes };
  const [N, G, C] = scale.shape.length === 3 ? scale.shape : [v.length, 1, 1];
  let selected = 0;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      let any = false;
      for (let i = 0; i < G && !any; i++) any = v[(n * G + i) * C + c] !== 0;
      if (any) selected++;
    }
  return { density, allOnes, unionDensity: N * C ? selected / (N * C) : 0 };
}

/** Share of (sample, output) pairs that no row of outputMask [N, K, O] needs. */
function unneededShare(mask: Tensor): number {
  const [N, K, O] = mask.shape;
  const v = mask.toFloat32Array();
  let unneeded = 0;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      let any = false;
      for (let k = 0; k < K && !any; k++) any = v[(n * K + k) * O + o] !== 0;
      if (!any) unneeded++;
    }
  return N * O ? unneeded / (N * O) : 0;
}

interface MsgcPlan {
  heads: number;
  stride: [number, number];
  padding: [number, number];
  /** every gate open, no attention: the dense convolution */
  denseForward: boolean;
  gathered: boolean;
  /** the output mask to pass on (null when the outputs are not skipped) */
  outputMask: Tensor | null;
  /** the tuner's entry when this call is one of its measurements (setMsgcTuning) */
  tune?: TuneEntry;
}

/** msgcConv2d's argument checks and choice of execution ('auto': the rules above). (Each shape is read, a copy, once.) */
function planMsgc(op: string, x: Tensor, weight: Tensor, scale: Tensor, options: MsgcConv2dOptions): MsgcPlan {
  checkTensor(op, 'x', x);
  checkTensor(op, 'weight', weight);
  checkTensor(op, 'scale', scale);
  if (!options || !Number.isInteger(options.heads) || options.heads < 1) {
    throw new Error(`${op}: options.heads must be a positive integer, got ${options ? options.heads : options}`);
  }
  if (options.inputActivation) {
    throw new Error(`${op}: options.inputActivation is taken by F.msgcConv2d only; apply the activation to x first`);
  }
  const heads = options.heads;
  const stride = pair(op, 'stride', options.stride ?? 1, 1);
  const padding = pair(op, 'padding', options.padding ?? 0, 0);
  const execution = options.execution ?? defaultExecution;
  if (execution !== 'auto' && execution !== 'masked' && execution !== 'gathered') {
    throw new Error(`${op}: options.execution must be 'auto', 'masked' or 'gathered', got ${String(execution)}`);
  }
  let gathered = execution === 'gathered';
  // 'auto' with every gate open and no attention (trained models keep whole layers dense): the scales change
  // nothing, so the forward is the dense convolution itself (oneDNN, batched), faster than either MSGC path
  let denseForward = false;
  let tune: TuneEntry | undefined;
  const xs = x._shape, ws = weight._shape, ss = scale._shape;  // (no copies: read only)
  const fourD = xs.length === 4 && ws.length === 4;
  // output pixels (shapes are checked natively; only the rules use this)
  const outPixels = fourD
    ? (Math.floor((xs[2] + 2 * padding[0] - ws[2]) / stride[0]) + 1) * (Math.floor((xs[3] + 2 * padding[1] - ws[3]) / stride[1]) + 1)
    : 0;
  const onCuda = x.device === 'cuda';
  let kernels: 'avx512' | 'avx2' | 'portable' | undefined;
  if (execution === 'auto' && onCuda) {
    // the GPU kernel's gathered reduction costs nothing extra at any density, and its channel selection runs on the
    // GPU: no statistics are read back (that would wait for the GPU), so the dense shortcut needs the hints
    const h = options.hints;
    denseForward = !!(h && h.allOnes) && fourD && ss.length === 3 && ss[1] === heads && ss[2] === ws[1] && ws[0] % heads === 0;
    // except small 1×1 convs at batch 1-2: such a call takes a few µs, the launch dominates, and the gathered path
    // launches one kernel more (the channel compaction). On an H200 (bench/cuda_ops.js, 2026-12-04) MobileNetV2's
    // projections at batch 1 (≤ 15 M MACs per sample) ran masked in 15 µs, gathered in 19 at every density.
    const pointwiseMacs = fourD && ws[2] * ws[3] === 1 ? outPixels * ws[0] * ws[1] : Infinity;
    gathered = !denseForward && !(xs[0] <= 2 && pointwiseMacs < 25e6);
  } else if (execution === 'auto' && fourD && ss.length === 3 && ss[0] === xs[0]) {
    const N = xs[0];
    const [O, C, kh, kw] = ws;
    const h = options.hints;
    kernels = gatheredKernels();
    // narrow heads may run as one head over their union (narrowHeadsUnite: for k×k convs, by the union's share)
    const narrow = !options.outputMask && narrowHeadsUnite(O, heads, kernels);
    const st: { density: number; allOnes: boolean; unionDensity?: number } = h && h.density !== undefined && h.allOnes !== undefined
      ? { density: h.density, allOnes: h.allOnes, unionDensity: h.unionDensity } : scaleStats(scale, narrow);
    denseForward = st.allOnes && ss[2] === C && O % heads === 0 && ss[1] === heads;
    const recording = isGradEnabled() && (x.requiresGrad || weight.requiresGrad || scale.requiresGrad);
    // (hints without the union's density: that of independent heads, rather than reading the scales back)
    if (narrow && st.unionDensity === undefined) st.unionDensity = 1 - Math.pow(1 - st.density, heads);
    const union = narrow && narrowHeadsUnite(O, heads, kernels, kh * kw, st.unionDensity);
    // (x's layout, a native read, only where the narrow-head rule needs it)
    const blocked = kernels === 'avx512' && kh * kw === 1 && N <= 2 && O / heads <= 8 && x.layout === 'blocked';
    gathered = !denseForward && preferGathered(st.density, { outPixels, batch: N, headChannels: O / heads, kernel: kh * kw, channels: C, recording, kernels,
      union, unionDensity: st.unionDensity, blocked });
    if (tuning && !denseForward && !recording) {
      const key = `${op} ${xs.join('x')} w${ws.join('x')} s${stride.join(',')} p${padding.join(',')} G${heads} d${Math.round(st.density * 10) / 10}${options.outputMask ? ' out' : ''}`;
      let e = tuneTable.get(key);
      if (!e) tuneTable.set(key, (e = { masked: [], gathered: [], choice: null }));
      if (e.choice) gathered = e.choice === 'gathered';
      else {
        gathered = e.gathered.length < e.masked.length;  // (alternating, masked first)
        tune = e;
      }
    }
  }
  let outputMask = options.outputMask ?? null;
  if (outputMask !== null) {
    checkTensor(op, 'outputMask', outputMask);
    // (on cuda the outputs are computed anyway: the kernel would only zero them, which the consumer ignores)
    if (!gathered || !fourD || outputMask.rank !== 3 || onCuda) {
      outputMask = null;
    } else {
      // (an explicit 'gathered' skips wherever heads have 32 outputs or more; 'auto' where the rule expects a gain)
      const headOutputs = ws[0] / heads;
      const skips = execution === 'gathered' ? headOutputs >= 32
        : preferOutputSkipping(options.hints?.unneededOutputs ?? unneededShare(outputMask), outPixels, headOutputs,
          { kernel: ws[2] * ws[3], batch: xs[0], kernels });
      if (!skips) outputMask = null;
    }
  }
  if (options.stats) {
    options.stats.gathered = gathered;
    options.stats.skippedOutputs = outputMask !== null;
  }
  return { heads, stride, padding, denseForward, gathered, outputMask, tune };
}

/**
 * y[n, group i] = W_i ⋆ (scale[n, i, :] ⊙ x[n]) where head i owns output channels [i·O/G, (i+1)·O/G).
 * x: [N, C, H, W], weight: [O, C, k, k] (the dense conv's weight, no bias), scale: [N, G, C] (gates, optionally
 * times attention). With scale ≡ 1 this is the dense convolution. Gradients flow to x, weight and scale.
 */
export function msgcConv2d(x: Tensor, weight: Tensor, scale: Tensor, options: MsgcConv2dOptions): Tensor {
  const act = options?.inputActivation ?? null;
  if (act) return msgcConv2dAfterAct(x, weight, scale, options, act);
  return runMsgc(x, weight, scale, planMsgc('msgcConv2d', x, weight, scale, options));
}

/** msgcConv2d(act(a), weight, scale) (options.inputActivation): one node on the CPU when recording, else the composition. */
function msgcConv2dAfterAct(a: Tensor, weight: Tensor, scale: Tensor, options: MsgcConv2dOptions, act: 'relu' | 'relu6'): Tensor {
  const op = 'msgcConv2d';
  if (act !== 'relu' && act !== 'relu6') {
    throw new Error(`${op}: options.inputActivation must be 'relu', 'relu6' or null, got ${String(act)}`);
  }
  checkTensor(op, 'x', a);
  // (Object.assign: see gatedConvBn in models/common.ts on V8's slow path for spreads with added properties)
  const rest: MsgcConv2dOptions = Object.assign({}, options, { inputActivation: null });
  const fused = a.device === 'cpu' && isGradEnabled() && [a, weight, scale].some((t) => t && t.requiresGrad);
  if (!fused) {
    const x = act === 'relu' ? relu(a) : relu6(a);
    const y = runMsgc(x, weight, scale, planMsgc(op, x, weight, scale, rest));
    if (!x.requiresGrad) x.dispose();  // recorded: the conv's node holds it
    return y;
  }
  const code = actCode(act);
  const x = new Tensor(native.activationForward(code, a.h));  // (no node: the conv's backward takes its gradient)
  return runMsgc(x, weight, scale, planMsgc(op, x, weight, scale, rest), a, code);
}

/**
 * msgcConv2d's forward as planned, with its backward recorded. With `from` (options.inputActivation), x = act(from)
 * (act: actCode): the node's input is `from`, it keeps x, and its backward takes the input gradient through act.
 */
function runMsgc(x: Tensor, weight: Tensor, scale: Tensor, plan: MsgcPlan, from: Tensor | null = null, act = -1): Tensor {
  const { heads, stride, padding, denseForward, gathered, outputMask } = plan;
  const y = new Tensor(timedForward(plan, () => denseForward
    ? native.conv2dForward(x.h, weight.h, null, stride, padding, [1, 1], 1)
    : gathered
      ? native.msgcConv2dForwardGathered(x.h, weight.h, scale.h, stride, padding, heads, outputMask ? outputMask.h : null)
      : native.msgcConv2dForward(x.h, weight.h, scale.h, stride, padding, heads)));
  const input = from ?? x;
  return recordOp(y, 'msgcConv2d', [input, weight, scale], (g) => {
    const [gx, gw, gs] = native.msgcConv2dBackward(x.h, weight.h, scale.h, stride, padding, heads, g.h,
      input.requiresGrad, weight.requiresGrad, scale.requiresGrad, act);
    return [wrapOptional(gx), wrapOptional(gw), wrapOptional(gs)];
  }, from ? [x] : []);
}

export interface MsgcConv2dBnActOptions extends MsgcConv2dOptions {
  /** applied last; null: none */
  activation?: 'relu' | 'relu6' | null;
  /** added after the BatchNorm, before the activation (a residual connection); same shape as the output */
  residual?: Tensor | null;
}

/**
 * msgcConv2dBnAct's and msgcConv2dBnActPooled's common part: the fused native call (fused), or for the
 * composition the MSGC conv's output as planned (conv).
 */
function fusedMsgcBn(op: string, x: Tensor, weight: Tensor, scale: Tensor, bn: FoldedBatchNorm, options: MsgcConv2dBnActOptions,
  pooled: boolean): { fused: NativeHandle | [NativeHandle, NativeHandle] } | { conv: Tensor } {
  const { g, beta, act } = checkBnAct(op, bn, options?.activation);
  const residual = optionalTensor(op, 'residual', options?.residual ?? null);
  const plan = planMsgc(op, x, weight, scale, options);
  const recording = isGradEnabled() && [x, weight, scale, g, beta, residual].some((t) => t && t.requiresGrad);
  if (recording || plan.denseForward) return { conv: runMsgc(x, weight, scale, plan) };
  // gathered: the BN in the kernels' epilogue; masked: per sample, in cache, where the masked conv runs per-sample
  // convs (otherwise the native composition)
  const { heads, stride, padding, outputMask } = plan;
  const run = () => native.msgcConv2dBnActEval(x.h, weight.h, scale.h, stride, padding, heads,
    outputMask ? outputMask.h : null, bn.runningMean.h, bn.runningVar.h, g ? g.h : null, beta ? beta.h : null, bn.eps ?? 1e-5,
    actCode(act), residual ? residual.h : null, pooled, !plan.gathered);
  return { fused: timedForward(plan, run) };
}

/**
 * act(batchNorm_eval(msgcConv2d(x, weight, scale)) + residual): an MSGC conv followed by its eval-mode BatchNorm
 * (running statistics), an optional residual and activation. When no gradient is recorded, the BatchNorm, residual
 * and activation are applied by the gathered kernels to each block of outputs while it is still in cache (no
 * separate pass over the output), or in the masked execution to each sample's output right after its conv where
 * that runs per sample; otherwise it is the composition of msgcConv2d and F.batchNormAct, with their gradients. Values agree with the composition to float rounding. Outputs an
 * outputMask skips hold BN(0) (through the activation), as in the composition.
 */
export function msgcConv2dBnAct(x: Tensor, weight: Tensor, scale: Tensor, bn: FoldedBatchNorm, options: MsgcConv2dBnActOptions): Tensor {
  const r = fusedMsgcBn('msgcConv2dBnAct', x, weight, scale, bn, options, false);
  if ('fused' in r) return new Tensor(r.fused as NativeHandle);
  const y = r.conv;
  const out = batchNormAct(y, bn.runningMean, bn.runningVar, bn.weight, bn.bias,
    { training: false, eps: bn.eps, activation: options.activation ?? null, residual: options.residual ?? null });
  if (!y.requiresGrad) y.dispose();  // recorded: the BN's node holds it
  return out;
}

/**
 * msgcConv2dBnAct and the global average pool of its output ([N, O, 1, 1]: the next MSGC block's gate context),
 * summed by the fused kernels from each block of outputs they write; otherwise the composition of msgcConv2d and
 * F.batchNormActPooled.
 */
export function msgcConv2dBnActPooled(x: Tensor, weight: Tensor, scale: Tensor, bn: FoldedBatchNorm, options: MsgcConv2dBnActOptions):
  { y: Tensor; pooled: Tensor } {
  const r = fusedMsgcBn('msgcConv2dBnActPooled', x, weight, scale, bn, options, true);
  if ('fused' in r) {
    const [yh, ph] = r.fused as [NativeHandle, NativeHandle];
    return { y: new Tensor(yh), pooled: new Tensor(ph) };
  }
  const y = r.conv;
  const out = batchNormActPooled(y, bn.runningMean, bn.runningVar, bn.weight, bn.bias,
    { training: false, eps: bn.eps, activation: options.activation ?? null, residual: options.residual ?? null });
  if (!y.requiresGrad) y.dispose();
  return out;
}

export interface GateOptions {
  training: boolean;
  /** τ of the tempered sigmoid (spec: 2/3) */
  temperature?: number;
  /** noise seed; by default drawn from the global generator (see manualSeed) */
  seed?: number;
}

/**
 * Binary gates from logits (spec §2.3). Training: logistic noise, mask = 1[sigmoid((l + g)/τ) ≥ 0.5], gradient
 * of the tempered sigmoid (straight-through). Eval: mask = 1[l ≥ 0], deterministic, no gradient.
 */
export function gumbelSigmoidGate(logits: Tensor, options: GateOptions): Tensor {
  const op = 'gumbelSigmoidGate';
  checkTensor(op, 'logits', logits);
  if (!options || typeof options.training !== 'boolean') throw new Error(`${op}: options.training (boolean) is required`);
  const temperature = options.temperature ?? 2 / 3;
  if (!(temperature > 0)) throw new Error(`${op}: temperature must be positive, got ${temperature}`);
  const seed = options.seed ?? native.nextSeed();
  const [maskH, softH] = native.gateForward(logits.h, temperature, options.training, seed);
  const mask = new Tensor(maskH);
  if (!softH) return mask;
  const soft = new Tensor(softH);
  return recordOp(mask, op, [logits], (g) => [new Tensor(native.gateBackward(soft.h, g.h, temperature))], [soft]);
}
