// schedule.ts: learning-rate and MAC-target schedules (spec §3.2, §6).

/** Cosine decay stepped per epoch, lr_e = lr0 · ½(1 + cos(π·e/E)), after an optional linear warm-up. */
export function cosineLr(baseLr: number, epoch: number, epochs: number, warmupEpochs = 0): number {
  if (warmupEpochs > 0 && epoch < warmupEpochs) return (baseLr * (epoch + 1)) / (warmupEpochs + 1);
  const span = Math.max(1, epochs - warmupEpochs);
  const e = epoch - warmupEpochs;
  return baseLr * 0.5 * (1 + Math.cos((Math.PI * e) / span));
}

export interface TargetRamp {
  /** τ_end: the final MAC ratio target */
  target: number;
  /** progress at which the ramp starts (spec: 0) */
  pStart?: number;
  /** progress at which τ reaches τ_end (spec: 0.5) */
  pStop?: number;
}

/** τ(p) = 1 for p ≤ pStart, then linear down to τ_end at pStop, flat after (spec §3.2). */
export function macTarget(progress: number, ramp: TargetRamp): number {
  const pStart = ramp.pStart ?? 0;
  const pStop = ramp.pStop ?? 0.5;
  if (progress <= pStart) return 1;
  return Math.max(ramp.target, 1 + ((progress - pStart) / (pStop - pStart)) * (ramp.target - 1));
}

/** Training progress p = (epoch · itersPerEpoch + it) / (epochs · itersPerEpoch), in [0, 1). */
export function progressOf(epoch: number, iteration: number, itersPerEpoch: number, epochs: number): number {
  return (epoch * itersPerEpoch + iteration) / (epochs * itersPerEpoch);
}

/**
 * Gate-noise scale σ(p) for fit()'s gateNoiseAnneal [pFrom, pTo]: 1 up to pFrom, linear down to 0 at pTo, 0 after
 * (GateHead floors it at 1e-3).
 */
export function gateNoiseScale(progress: number, anneal: [number, number]): number {
  const [from, to] = anneal;
  if (progress <= from) return 1;
  if (progress >= to) return 0;
  return 1 - (progress - from) / (to - from);
}
