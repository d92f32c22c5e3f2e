// linear.ts: F.linear, y = x W^T + b.
import { native } from '../native';
import { recordOp, Tensor, wrapOptional } from '../tensor/tensor';
import { checkTensor, optionalTensor } from './util';

/** x: [N, in], weight: [out, in], bias: [out] | null -> [N, out] */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const op = 'linear';
  checkTensor(op, 'x', x);
  checkTensor(op, 'weight', weight);
  const b = optionalTensor(op, 'bias', bias);
  const y = new Tensor(native.linearForward(x.h, weight.h, b ? b.h : null));
  return recordOp(y, op, [x, weight, b], (g) => {
    const [gx, gw, gb] = native.linearBackward(x.h, weight.h, g.h, x.requiresGrad, weight.requiresGrad, !!b && b.requiresGrad);
    return [wrapOptional(gx), wrapOptional(gw), wrapOptional(gb)];
  });
}
