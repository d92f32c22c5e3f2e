// tally.ts: helpers MSGC host blocks use to report their dynamic MACs (spec §4.2–4.3) after a forward pass.
import * as F from '../../ops/index';
import { isGradEnabled } from '../../tensor/scope';
import { Tensor } from '../../tensor/tensor';
import { BlockMacTally } from '../../macs/types';

export function meanValue(values: Float32Array): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return values.length ? s / values.length : 0;
}

/** mean over (n, c) of Π_i (1 − m[n, i, c]) for m: [N, G, C] — the fraction of channels no head selects. */
export function unselectedFraction(m: Float32Array, N: number, G: number, C: number): number {
  if (N * C === 0) return 0;
  let total = 0;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      let p = 1;
      for (let i = 0; i < G; i++) p *= 1 - m[(n * G + i) * C + c];
      total += p;
    }
  return total / (N * C);
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
