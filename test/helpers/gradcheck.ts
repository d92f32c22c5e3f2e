// gradcheck.ts: finite-difference checks of backward passes, and a seeded float64 random source for references.
// The scalar checked is L = sum(y * R) for a fixed random R, accumulated in float64 from y's values, so the
// central difference is limited by float32 forward rounding, not by the summation.
import * as msgc from '../../lib';
import { Tensor } from '../../lib';

/** Deterministic uniform [lo, hi) numbers (LCG; independent of msgc's generator). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((hi - lo) * s) / 4294967296;
  }
  return out;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export interface GradCheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  /** how many entries of each input to perturb (spread evenly); all when larger than the input */
  samples?: number;
  seed?: number;
}

export interface GradCheckReport {
  worst: number; // max |analytic - numeric| / (atol + rtol * |numeric|); <= 1 passes
  checked: number;
}

/**
 * Compares the analytic gradients of every input with requiresGrad against central differences of
 * L = sum(fn(inputs) * R). Throws with details on the first mismatch.
 */
export function gradCheck(fn: (inputs: Tensor[]) => Tensor, inputs: Tensor[], options: GradCheckOptions = {}): GradCheckReport {
  const eps = options.eps ?? 1e-2;
  const atol = options.atol ?? 1e-2;
  const rtol = options.rtol ?? 1e-2;
  const samples = options.samples ?? 24;
  let R: Float64Array | null = null;
  const lossOf = (y: Tensor): number => {
    const v = y.toFloat32Array();
    if (!R) {
      const r = randomArray(v.length, options.seed ?? 7);
      R = Float64Array.from(r);
    }
    let s = 0;
    for (let i = 0; i < v.length; i++) s += v[i] * R[i];
    return s;
  };
  // analytic
  for (const t of inputs) {
    if (t.grad) {
      t.grad.dispose();
      t.grad = null;
    }
  }
  msgc.tidy(() => {
    const y = fn(inputs);
    lossOf(y);
    const g = msgc.tensor(Float32Array.from(R!), y.shape);
    y.backward(g);
  });
  let worst = 0;
  let checked = 0;
  inputs.forEach((t, which) => {
    if (!t.requiresGrad) return;
    if (!t.grad) throw new Error(`gradCheck: input ${which} received no gradient`);
    const analytic = t.grad.toFloat32Array();
    const base = t.toFloat32Array();
    const n = base.length;
    const count = Math.min(n, samples);
    for (let k = 0; k < count; k++) {
      const j = count === n ? k : Math.floor((k * n) / count + (n / count) / 2);
      const probe = (delta: number): number => {
        const d = base.slice();
        d[j] += delta;
        t.assign(d);
        return msgc.noGrad(() => msgc.tidy(() => lossOf(fn(inputs))));
      };
      const numeric = (probe(eps) - probe(-eps)) / (2 * eps);
      t.assign(base);
      const err = Math.abs(analytic[j] - numeric) / (atol + rtol * Math.abs(numeric));
      checked++;
      worst = Math.max(worst, err);
      if (err > 1) {
        throw new Error(`gradCheck: input ${which} entry ${j}: analytic ${analytic[j]} vs numeric ${numeric} (eps ${eps})`);
      }
    }
  });
  return { worst, checked };
}

/** max |a - b| / (atol + rtol * |b|) over all entries; <= 1 means close. */
export function closeness(a: ArrayLike<number>, b: ArrayLike<number>, atol = 1e-4, rtol = 1e-4): number {
  if (a.length !== b.length) throw new Error(`closeness: lengths differ (${a.length} vs ${b.length})`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (atol + rtol * Math.abs(b[i])));
  return worst;
}
