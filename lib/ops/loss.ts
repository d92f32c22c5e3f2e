// loss.ts: F.crossEntropy with integer labels, mean reduction and optional label smoothing.
import { native } from '../native';
import { recordOp, Tensor } from '../tensor/tensor';
import { checkTensor } from './util';

export interface CrossEntropyOptions {
  labelSmoothing?: number;
}

/** logits: [N, K]; labels: N integers in [0, K). Returns a scalar tensor (shape []). */
export function crossEntropy(logits: Tensor, labels: Int32Array | number[], options: CrossEntropyOptions = {}): Tensor {
  const op = 'crossEntropy';
  checkTensor(op, 'logits', logits);
  if (!(labels instanceof Int32Array) && !Array.isArray(labels)) throw new Error(`${op}: labels must be an Int32Array or an array of integers`);
  if (Array.isArray(labels)) {
    if (labels.some((v) => !Number.isInteger(v))) throw new Error(`${op}: labels must be integers`);
    // values beyond int32 would wrap around into a valid class in the Int32Array
    const i = labels.findIndex((v) => v < -2147483648 || v > 2147483647);
    if (i >= 0) throw new Error(`${op}: labels[${i}] = ${labels[i]} is outside [0, ${logits.shape[1]})`);
  }
  const lab = labels instanceof Int32Array ? labels : Int32Array.from(labels);
  const eps = options.labelSmoothing ?? 0;
  const [lossH, probsH] = native.crossEntropyForward(logits.h, lab, eps);
  const loss = new Tensor(lossH);
  const probs = new Tensor(probsH);
  return recordOp(loss, op, [logits], (g) => [new Tensor(native.crossEntropyBackward(probs.h, lab, eps, g.item()))], [probs]);
}
