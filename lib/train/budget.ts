// budget.ts: the MAC budget loss (spec §3.2): L_mac = λ·(r − τ) when r ≥ τ, else 0, with r = F / F_ori and
// F = F_main + F_dyn + F_heads − F_bonus of the current mini-batch. Only F_dyn carries gradient (through the
// gates); the on/off decision is taken on the scalar value.
import * as F from '../ops/index';
import { LastMacs } from '../macs/types';
import { full } from '../tensor/creation';
import { Tensor } from '../tensor/tensor';

export interface BudgetLossResult {
  /** the loss to add (null when the budget is met or nothing is differentiable) */
  loss: Tensor | null;
  /** r, the batch's MAC ratio */
  ratio: number;
  /** τ the ratio was compared with */
  target: number;
  /** λ·(r − τ) or 0, as a number */
  value: number;
}

export function macBudgetLoss(macs: LastMacs, target: number, lambda = 30): BudgetLossResult {
  const ratio = macs.ratio;
  if (ratio < target || !macs.dynamicTensor) return { loss: null, ratio, target, value: ratio >= target ? lambda * (ratio - target) : 0 };
  // λ·((constant + F_dyn)/F_ori − τ): the constant part only shifts the value, the gradient is λ/F_ori · dF_dyn
  const scaled = F.scale(macs.dynamicTensor, lambda / macs.dense);
  const shift = lambda * (macs.constant / macs.dense - target);
  const loss = F.add(scaled, full([], shift));
  return { loss, ratio, target, value: lambda * (ratio - target) };
}
