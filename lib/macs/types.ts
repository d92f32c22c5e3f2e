// types.ts: MAC accounting records (spec §4). All values are multiply-accumulates per image.
import { Tensor } from '../tensor/tensor';

/** Static accounting of a model for one input size. */
export interface MacCount {
  /** F_ori: the dense baseline (denominator of the MAC ratio) */
  dense: number;
  /** F_main: parts that are never gated (stem, downsample, transitions, classifier, …) */
  main: number;
  /** Σ F_dgc: the dense cost of every gated conv (attention terms included) */
  gated: number;
  /** F_heads: gate and attention heads plus the pools feeding them */
  heads: number;
  /** F_extra: the attention multiplications (att models only) */
  extra: number;
}

export function emptyMacs(): MacCount {
  return { dense: 0, main: 0, gated: 0, heads: 0, extra: 0 };
}

export function addMacs(a: MacCount, b: MacCount): MacCount {
  return { dense: a.dense + b.dense, main: a.main + b.main, gated: a.gated + b.gated, heads: a.heads + b.heads, extra: a.extra + b.extra };
}

/** Finishes a count: dense = main + gated − extra (spec §4.1). */
export function withDense(m: Omit<MacCount, 'dense'> | MacCount): MacCount {
  // (fields named: an object spread with an added property takes a slow path in V8; lastMacs() counts every block)
  return { dense: m.main + m.gated - m.extra, main: m.main, gated: m.gated, heads: m.heads, extra: m.extra };
}

/** One row of a per-layer MAC table (`msgc macs`). */
export interface MacRow {
  name: string;
  /** input [C, H, W] of the part */
  input: number[];
  macs: MacCount;
}

/** A block's dynamic MACs from its last forward pass. */
export interface BlockMacTally {
  /** Σ mean(m_ℓ)·F_dgc_ℓ of the last batch */
  dynamic: number;
  /** the same, differentiable through the gates (only when recorded for autograd) */
  dynamicTensor: Tensor | null;
  /** detached credit for producer/consumer channels no head needs (spec §4.3) */
  bonus: number;
  /** the part of the bonus that was really skipped (not computed) in the last forward pass */
  bonusSkipped: number;
  /** mean gate density per gated conv, for reports */
  density: number[];
}

/** The MACs of the last forward pass (spec §4.2–4.3). */
export interface LastMacs {
  /** F_main + F_dyn + F_heads − F_bonus, averaged over the batch */
  perImage: number;
  /** F_dyn as a number */
  dynamic: number;
  /** F_dyn differentiable through the gates (null when the forward ran without autograd) */
  dynamicTensor: Tensor | null;
  /** F_bonus (detached) */
  bonus: number;
  /**
   * the MACs that really ran per image: perImage plus the bonus channels that were computed anyway (the spec
   * credits them; the gathered execution skips them in eval — producer/consumer skipping, spec §2.10)
   */
  executed: number;
  /** F_ori for the same input size */
  dense: number;
  /** perImage / dense */
  ratio: number;
  /** F_main + F_heads − F_bonus: add dynamicTensor to get a differentiable perImage */
  constant: number;
}
