// recalibrate.ts: re-estimating BatchNorm running statistics under eval-mode gates.
//
// In training the gates are noisy (spec §2.3: logistic noise, a gate with logit l is open with probability
// sigmoid(l)), so the running statistics of the BatchNorms after gated convs describe activations computed with
// randomly dropped channels. In eval the gates are deterministic thresholds; on the paper's 120-epoch schedule the
// logits end far from 0 and the two agree, but on a short schedule many logits stay near 0 and the eval
// activations differ from what the statistics describe (the variance shift dropout has without rescaling). This
// pass runs the model with every gate and attention head in eval mode and every other BatchNorm in train mode,
// and replaces their running mean/variance by the exact average over `batches` batches (torch's momentum=None).
// It changes no parameter; on a dense model it just replaces the moving averages by exact ones.
import { Backbone } from '../models/common';
import { BatchNorm2d } from '../nn/layers';
import { AttentionHead, GateHead } from '../nn/msgc/heads';
import { noGrad, tidy } from '../tensor/scope';
import type { BatchSource } from './fit';

export interface RecalibrateOptions {
  /** batches to average over (default 50, or all of them if fewer) */
  batches?: number;
}

/** The model's BatchNorms outside gate/attention heads, in forward order. */
export function hostBatchNorms(model: Backbone): BatchNorm2d[] {
  const heads: string[] = [];
  const out: BatchNorm2d[] = [];
  for (const [name, m] of model.namedModules()) {
    if (m instanceof GateHead || m instanceof AttentionHead) heads.push(`${name}.`);
    else if (m instanceof BatchNorm2d && !heads.some((h) => name.startsWith(h))) out.push(m);
  }
  return out;
}

/** Recomputes the running statistics of the host BatchNorms with the gates in eval mode; returns the batches used. */
export async function recalibrateBatchNorm(model: Backbone, data: BatchSource, options: RecalibrateOptions = {}): Promise<number> {
  const limit = options.batches ?? 50;
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`recalibrateBatchNorm: batches must be a positive integer, got ${limit}`);
  const wasTraining = model.training;
  const bns = hostBatchNorms(model);
  const momenta = bns.map((b) => b.momentum);
  let k = 0;
  try {
    model.eval();
    for (const b of bns) b.train(true);
    for await (const batch of data) {
      // cumulative average: the k-th batch (0-based) gets weight 1/(k+1)
      for (const b of bns) b.momentum = 1 / (k + 1);
      tidy(() => {
        noGrad(() => model.forward(batch.x));
      });
      batch.x.dispose();
      if (++k >= limit) break;
    }
  } finally {
    bns.forEach((b, i) => (b.momentum = momenta[i]));
    model.train(wasTraining);
  }
  return k;
}
