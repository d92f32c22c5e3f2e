// tally.ts: helpers MSGC host blocks use to report their dynamic MACs (spec §4.2–4.3) after a forward pass.
import { holdGatheredKernels, native } from '../../native';
import * as F from '../../ops/index';
import { isGradEnabled, keep, noGrad, tidy } from '../../tensor/scope';
import { tensor } from '../../tensor/creation';
import { recordOp, Tensor } from '../../tensor/tensor';
import { BlockMacTally } from '../../macs/types';

/** What a host block needs to know of its gate values m [N, G, C] (the MAC tally, msgcConv2d's hints). */
export interface GateStats {
  /** mean of m */
  density: number;
  /** mean over (n, c) of Π_i (1 − m[n, i, c]): for binary gates, the fraction of channels no head selects */
  unselected: number;
  /** every entry is exactly 1 (and there is at least one) */
  allOnes: boolean;
}

/**
 * Statistics the native code computed along with the gates m it wrote (GateHead's fused eval): no second call.
 * (Kept on the tensor, not in a WeakMap: see Tensor._pooled.)
 */
function known(m: Tensor): GateStats | undefined {
  return (m._gateStats as GateStats | null) ?? undefined;
}

/**
 * Largest batch whose eval gate statistics stay on the GPU until the MACs are asked for (lastMacs(), evaluate()).
 * Reading them back during the forward pass waits for the GPU, once per gate head: at small batches that wait
 * is a large part of the forward's latency. Above it they are read as the gates are made, so that a layer whose
 * gates are all open can take cuDNN's dense convolution (msgcConv2d's allOnes hint): faster there than our kernel
 * at large batches, and the wait is small next to the batch's compute.
 */
export const DEFER_GATE_STATS_MAX_BATCH = 4;

let switches: { defer: string | undefined; compact: string | undefined } | null = null;

/**
 * The MSGC_* switches the blocks read on every forward pass (MSGC_DEFER_GATE_STATS, MSGC_COMPACT): within
 * withEnvSwitches (an MSGC backbone's forward pass) as they were at its start, elsewhere from process.env at each
 * use. (A read of process.env is a call into C++: reading the switches once instead of ~33 times took 11-27 µs off
 * MobileNetV2's JavaScript per forward at batch 1, old and new code alternating in one process; ResNet-18's 16
 * reads were within noise.)
 */
export function envSwitch(name: 'MSGC_DEFER_GATE_STATS' | 'MSGC_COMPACT'): string | undefined {
  if (switches) return name === 'MSGC_COMPACT' ? switches.compact : switches.defer;
  return process.env[name];
}

/**
 * Runs fn with the MSGC_* switches and the gathered kernels' kind (gatheredKernels in native.ts) read once, at its
 * start (nested calls keep the outer reading).
 */
export function withEnvSwitches<T>(fn: () => T): T {
  if (switches) return fn();
  switches = { defer: process.env.MSGC_DEFER_GATE_STATS, compact: process.env.MSGC_COMPACT };
  holdGatheredKernels(true);
  try {
    return fn();
  } finally {
    switches = null;
    holdGatheredKernels(false);
  }
}

/**
 * Whether eval gates made from this context leave their statistics on the device (DeferredGateStats): on cuda at
 * batch ≤ DEFER_GATE_STATS_MAX_BATCH. MSGC_DEFER_GATE_STATS=1 / 0 forces it on / off (on the CPU too: tests).
 */
export function deferGateStats(ctx: Tensor): boolean {
  const env = envSwitch('MSGC_DEFER_GATE_STATS');
  if (env === '1') return true;
  if (env === '0') return false;
  return ctx.device === 'cuda' && ctx.shape[0] <= DEFER_GATE_STATS_MAX_BATCH;
}

let deferredReads = 0;
/** How many deferred gate statistics were read back so far (tests: none during a forward pass). */
export function deferredGateStatReads(): number {
  return deferredReads;
}

/**
 * GateStats of gates m [N, G, C] held as a summary tensor on m's device (native gateSummary: sum, unselected,
 * allOnes, per-head sums), read back on the first access to a number, so that making the gates never waits for
 * the GPU. The summary is kept out of tidy scopes; it is freed once read, or by release() (the owning block's
 * next forward pass).
 */
export class DeferredGateStats implements GateStats {
  private values: Float32Array | null = null;
  private summary: Tensor | null;
  constructor(summary: Tensor, private readonly shape: number[]) {
    this.summary = keep(summary);
  }
  static of(m: Tensor): DeferredGateStats {
    return new DeferredGateStats(new Tensor(native.gateSummary(m.h)), m.shape.slice());
  }
  private read(): Float32Array {
    if (!this.values) {
      this.fill(this.pendingSummary().toFloat32Array());
      deferredReads++;
    }
    return this.values!;
  }
  /** The summary tensor, while unread (readDeferred copies several in one go). */
  pendingSummary(): Tensor {
    if (!this.summary || this.summary.isDisposed) throw new Error('gate statistics: released before they were read (a later forward pass replaced them)');
    return this.summary;
  }
  get isRead(): boolean {
    return this.values !== null;
  }
  /** Takes the values read back (gateSummary's layout) and frees the summary. */
  fill(values: Float32Array): void {
    this.values = values;
    this.release();
  }
  get density(): number {
    const n = this.shape[0] * this.shape[1] * this.shape[2];
    return n ? this.read()[0] / n : 0;
  }
  get unselected(): number {
    const nc = this.shape[0] * this.shape[2];
    return nc ? this.read()[1] / nc : 0;
  }
  get allOnes(): boolean {
    return this.read()[2] === 1;
  }
  /** Σ over (n, c) of each head's gates */
  headSums(): number[] {
    return Array.from(this.read().subarray(3));
  }
  release(): void {
    if (this.summary && !this.summary.isDisposed) this.summary.dispose();
    this.summary = null;
  }
}

/** Gates whose statistics stay on the device: GateHead's eval forward under deferGateStats. */
export function rememberDeferredGateStats(m: Tensor): void {
  m._gateStats = DeferredGateStats.of(m);
}

export function isDeferred(st: GateStats): st is DeferredGateStats {
  return st instanceof DeferredGateStats;
}

function fromSums(m: Tensor, sum: number, unselected: number, ones: number): GateStats {
  // (the shape itself, not a copy, and no destructuring: this runs for every gate head of every forward)
  const s = m._shape;
  const N = s[0], C = s[2];
  const n = m.size;
  return { density: n ? sum / n : 0, unselected: N * C ? unselected / (N * C) : 0, allOnes: n > 0 && ones === 1 };
}

/**
 * Records the statistics (maskStats' sum, unselected, allOnes) of gates m as they were written, for gateStats().
 * Only for tensors nothing writes afterwards (a gate head's output).
 */
export function rememberGateStats(m: Tensor, sum: number, unselected: number, ones: number): void {
  m._gateStats = fromSums(m, sum, unselected, ones);
}

/**
 * GateStats of m [N, G, C], computed natively in float64, without copying the gates to JavaScript (a copy and
 * three JavaScript passes over MobileNetV2's [32, 4, 960] gates took about 0.6 ms per block); for the eval gates
 * of a GateHead, the ones computed with them.
 */
export function gateStats(m: Tensor): GateStats {
  const k = known(m);
  if (k) return k;
  const [sum, unselected, ones] = native.maskStats(m.h);
  return fromSums(m, sum, unselected, ones);
}

/**
 * The differentiable Σ mean(m_ℓ)·F_ℓ over a block's gated convs, recorded only when autograd could use it
 * (the MAC budget loss in training).
 */
export function dynamicTensor(masks: Tensor[], costs: number[]): Tensor | null {
  if (!isGradEnabled() || !masks.some((m) => m.requiresGrad)) return null;
  const stats = masks.map((m) => known(m));
  if (masks.every((m, i) => stats[i] !== undefined && m.device === 'cpu')) {
    // gates whose sums came with them (GateHead's fused training op): Σ_ℓ F_ℓ·mean(m_ℓ) from those sums (float64)
    // as one scalar and one recorded node, where F.mean, F.scale and F.add took three or four native calls and as
    // many nodes a gate (ResNet-56 has 54 gates); the gradient, F_ℓ / size at every entry of m_ℓ, is the same
    let value = 0;
    masks.forEach((m, i) => { value += costs[i] * stats[i]!.density; });
    const shapes = masks.map((m) => m.shape), sizes = masks.map((m) => Math.max(1, m.size));
    return recordOp(tensor([value], []), 'gateCost', masks, (g) =>
      masks.map((m, i) => (m.requiresGrad ? new Tensor(native.broadcastScalar(g.h, shapes[i], costs[i] / sizes[i])) : null)));
  }
  let acc: Tensor | null = null;
  masks.forEach((m, i) => {
    const term = F.scale(F.mean(m), costs[i]);
    acc = acc ? F.add(acc, term) : term;
  });
  return acc;
}

/** The numbers of a BlockMacTally, computed from gate statistics. */
export type TallyNumbers = Omit<BlockMacTally, 'dynamicTensor'>;

/** A block's tally whose numbers are computed on first access (from DeferredGateStats: reading them waits). */
class DeferredTally implements BlockMacTally {
  private numbers: TallyNumbers | null = null;
  constructor(private compute: (() => TallyNumbers) | null, readonly dynamicTensor: Tensor | null, private readonly stats: DeferredGateStats[]) {}
  private get n(): TallyNumbers {
    if (!this.numbers) {
      this.numbers = this.compute!();
      this.compute = null;
    }
    return this.numbers;
  }
  get dynamic(): number { return this.n.dynamic; }
  get bonus(): number { return this.n.bonus; }
  get bonusSkipped(): number { return this.n.bonusSkipped; }
  get density(): number[] { return this.n.density; }
  release(): void {
    for (const s of this.stats) s.release();
  }
  /** Its deferred statistics not read yet (and not released). */
  unread(): DeferredGateStats[] {
    return this.numbers ? [] : this.stats.filter((s) => !s.isRead);
  }
}

/**
 * Reads every unread deferred statistic of these tallies with one copy from the device (their summaries joined
 * there), instead of one copy, and so one wait for the GPU, per gate head: lastMacs() after a forward pass.
 */
export function readDeferred(tallies: (BlockMacTally | null)[]): void {
  const pending: DeferredGateStats[] = [];
  for (const t of tallies) if (t instanceof DeferredTally) pending.push(...t.unread());
  if (pending.length < 2) return;
  const parts = pending.map((st) => st.pendingSummary());
  if (parts.some((p) => p.device !== parts[0].device)) return;
  const all = noGrad(() => tidy(() => F.concat(parts.map((p) => F.reshape(p, [1, p.size])), 1).toFloat32Array()));
  deferredReads++;
  let at = 0;
  for (let i = 0; i < pending.length; i++) {
    pending[i].fill(all.slice(at, at + parts[i].size));
    at += parts[i].size;
  }
}

/**
 * A block's tally from its gate statistics: computed now, or, when any of them is deferred, when first read (so
 * that the forward pass never waits for the GPU).
 */
export function tallyOf(compute: () => TallyNumbers, dyn: Tensor | null, stats: GateStats[]): BlockMacTally {
  const deferred = stats.filter(isDeferred);
  if (!deferred.length) {
    // (fields named, not `{ ...compute(), dynamicTensor }`: V8 (Node 20) spreads an object into a literal with
    // more properties through a slow path, ~0.9 µs hot, ~10 µs a block in ResNet-18's forward at batch 1)
    const n = compute();
    return { dynamic: n.dynamic, bonus: n.bonus, bonusSkipped: n.bonusSkipped, density: n.density, dynamicTensor: dyn };
  }
  return new DeferredTally(compute, dyn, deferred);
}

/**
 * The tally of a block whose input-gated conv (gates m1, F_dgc1) produces the input of an MSGC conv (m2, F_dgc2):
 * ResNet's basic block and DenseNet's layer. Bonus (spec §4.3): the first conv's outputs no head of the second
 * selects; `skipped`: whether this pass really left them out.
 */
export function producerConsumerTally(g1: GateStats, g2: GateStats, dgc1: number, dgc2: number, skipped: boolean, dyn: Tensor | null): BlockMacTally {
  return tallyOf(() => {
    const d1 = g1.density;
    const d2 = g2.density;
    const bonus = g2.unselected * d1 * dgc1;
    return { dynamic: d1 * dgc1 + d2 * dgc2, bonus, density: [d1, d2], bonusSkipped: skipped ? bonus : 0 };
  }, dyn, [g1, g2]);
}

/** Frees what a previous tally still holds on the device (its unread deferred statistics). */
export function releaseTally(t: BlockMacTally | null): void {
  if (t instanceof DeferredTally) t.release();
}
