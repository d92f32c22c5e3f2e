// loss.ts: F.crossEntropy with integer labels, mean reduction and optional label smoothing; F.distillation (the
// knowledge-distillation loss of a student's logits against a teacher's).
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

export interface DistillationOptions {
  /** softmax temperature T (Hinton et al.; default 4) */
  temperature?: number;
}

/**
 * Knowledge distillation: T² · mean over the batch of KL(softmax(teacher / T) ‖ softmax(student / T)).
 * student, teacher: [N, K] logits. The T² keeps the gradient's size comparable to a cross-entropy's as T changes.
 * Only the student gets a gradient (the teacher's logits are treated as constants).
 */
export function distillation(student: Tensor, teacher: Tensor, options: DistillationOptions = {}): Tensor {
  const op = 'distillation';
  checkTensor(op, 'student', student);
  checkTensor(op, 'teacher', teacher);
  const T = options.temperature ?? 4;
  if (!(T > 0) || !Number.isFinite(T)) throw new Error(`${op}: temperature must be a positive finite number, got ${T}`);
  const [lossH, diffH] = native.distillationForward(student.h, teacher.h, T);
  const loss = new Tensor(lossH);
  const diff = new Tensor(diffH);
  return recordOp(loss, op, [student], (g) => [new Tensor(native.distillationBackward(diff.h, T, g.item()))], [diff]);
}
