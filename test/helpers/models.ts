// models.ts: checks shared by the backbone test files.
import * as msgc from '../../lib';
import { Backbone } from '../../lib/models/common';
import { closeness, randomArray } from './gradcheck';

/**
 * With every gate forced open (and attention 1), the boosted model in eval mode computes what the dense model
 * computes, and its MAC tally is the full gated cost with no bonus. Inputs are [2, 3, 16, 16], 10 classes.
 */
export function expectOpenGatesMatchDense(dense: Backbone, boosted: Backbone): void {
  dense.eval();
  boosted.eval();
  msgc.tidy(() => {
    const x = msgc.tensor(randomArray(2 * 3 * 16 * 16, 12), [2, 3, 16, 16]);
    const a = msgc.noGrad(() => dense.forward(x));
    const b = msgc.noGrad(() => boosted.forward(x));
    expect(b.shape).toEqual([2, 10]);
    expect(closeness(b.toFloat32Array(), a.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    const lm = boosted.lastMacs();
    const stat = msgc.countMacs(boosted, [3, 16, 16]);
    expect(lm.dynamic).toBe(stat.gated);
    expect(lm.bonus).toBe(0);
    expect(lm.perImage).toBe(stat.main + stat.heads + stat.gated);
    expect(dense.lastMacs()).toMatchObject({ perImage: stat.dense, ratio: 1, dynamic: 0 });
  });
}

/**
 * Sets every gate head's last conv to weight 0 and bias ±1 (a seeded coin per output), so that each gate is open
 * with probability 1/2 and its logit is ±1: no gate flips between backends or execution paths.
 */
export function gatesAtHalfDensity(model: msgc.nn.Module): void {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  for (const [name, p] of model.namedParameters()) {
    if (!/mask\d?\.conv2\.(weight|bias)$/.test(name)) continue;
    if (name.endsWith('weight')) p.assign(new Float32Array(p.size));
    else p.assign(Float32Array.from({ length: p.size }, () => (rnd() < 0.5 ? 1 : -1)));
  }
}

/** max |a − b| / max |b|: two forward passes' outputs compared relative to the reference's scale */
export function relativeMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale > 0 ? worst / scale : worst;
}
