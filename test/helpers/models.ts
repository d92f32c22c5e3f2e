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
