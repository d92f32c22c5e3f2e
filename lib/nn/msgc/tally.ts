// tally.ts: helpers MSGC host blocks use to report their dynamic MACs (spec §4.2–4.3) after a forward pass.
import { native } from '../../native';
import * as F from '../../ops/index';
import { isGradEnabled } from '../../tensor/scope';
import { Tensor } from '../../tensor/tensor';
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

/** Statistics the native code computed along with the gates it wrote (GateHead's fused eval): no second call. */
const known = new WeakMap<Tensor, GateStats>();

function fromSums(m: Tensor, sum: number, unselected: number, ones: number): GateStats {
  const [N, , C] = m.shape;
  const n = m.size;
  return { density: n ? sum / n : 0, unselected: N * C ? unselected / (N * C) : 0, allOnes: n > 0 && ones === 1 };
}

/**
 * Records the statistics (maskStats' sum, unselected, allOnes) of gates m as they were written, for gateStats().
 * Only for tensors nothing writes afterwards (a gate head's output).
 */
export function rememberGateStats(m: Tensor, sum: number, unselected: number, ones: number): void {
  known.set(m, fromSums(m, sum, unselected, ones));
}

/**
 * GateStats of m [N, G, C], computed natively in float64, without copying the gates to JavaScript (a copy and
 * three JavaScript passes over MobileNetV2's [32, 4, 960] gates took about 0.6 ms per block); for the eval gates
 * of a GateHead, the ones computed with them.
 */
export function gateStats(m: Tensor): GateStats {
  const k = known.get(m);
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
  let acc: Tensor | null = null;
  masks.forEach((m, i) => {
    const term = F.scale(F.mean(m), costs[i]);
    acc = acc ? F.add(acc, term) : term;
  });
  return acc;
}

export function tally(dynamic: number, dyn: Tensor | null, bonus: number, density: number[], bonusSkipped = 0): BlockMacTally {
  return { dynamic, dynamicTensor: dyn, bonus, bonusSkipped, density };
}
