// norm.ts: F.batchNorm2d (torch semantics: momentum 0.1 weights the new batch statistic, biased variance in the
// forward, unbiased variance into the running estimate).
import { native } from '../native';
import { recordOp, Tensor, wrapOptional } from '../tensor/tensor';
import { checkTensor, optionalTensor } from './util';

export interface BatchNormOptions {
  training: boolean;
  momentum?: number;
  eps?: number;
}

/** x: [N, C, H, W] or [N, C]; runningMean/runningVar/weight/bias: [C]. Updates the running stats when training. */
export function batchNorm2d(
  x: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  options: BatchNormOptions,
): Tensor {
  const op = 'batchNorm2d';
  checkTensor(op, 'x', x);
  checkTensor(op, 'runningMean', runningMean);
  checkTensor(op, 'runningVar', runningVar);
  const w = optionalTensor(op, 'weight', weight);
  const b = optionalTensor(op, 'bias', bias);
  if (!options || typeof options.training !== 'boolean') throw new Error(`${op}: options.training (boolean) is required`);
  const training = options.training;
  const momentum = options.momentum ?? 0.1;
  const eps = options.eps ?? 1e-5;
  const [yh, meanH, varH] = native.batchNorm2dForward(x.h, runningMean.h, runningVar.h, w ? w.h : null, b ? b.h : null,
    training, momentum, eps);
  const y = new Tensor(yh);
  const mean = new Tensor(meanH);
  const variance = new Tensor(varH);
  return recordOp(y, op, [x, null, null, w, b], (g) => {
    const needWB = (!!w && w.requiresGrad) || (!!b && b.requiresGrad);
    const [gx, gw, gb] = native.batchNorm2dBackward(x.h, g.h, mean.h, variance.h, w ? w.h : null, training, eps, needWB);
    const gxT = new Tensor(gx);
    const gwT = wrapOptional(gw);
    const gbT = wrapOptional(gb);
    return [gxT, null, null, w && w.requiresGrad ? gwT : (gwT?.dispose(), null), b && b.requiresGrad ? gbT : (gbT?.dispose(), null)];
  }, [mean, variance]);
}
