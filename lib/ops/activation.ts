// activation.ts: F.relu, F.relu6, F.sigmoid.
import { native } from '../native';
import { recordOp, Tensor } from '../tensor/tensor';
import { checkTensor } from './util';

const RELU = 0;
const RELU6 = 1;
const SIGMOID = 2;

export function relu(x: Tensor): Tensor {
  checkTensor('relu', 'x', x);
  const y = new Tensor(native.activationForward(RELU, x.h));
  return recordOp(y, 'relu', [x], (g) => [new Tensor(native.activationBackward(RELU, x.h, g.h))]);
}

/** min(max(x, 0), 6) */
export function relu6(x: Tensor): Tensor {
  checkTensor('relu6', 'x', x);
  const y = new Tensor(native.activationForward(RELU6, x.h));
  return recordOp(y, 'relu6', [x], (g) => [new Tensor(native.activationBackward(RELU6, x.h, g.h))]);
}

export function sigmoid(x: Tensor): Tensor {
  checkTensor('sigmoid', 'x', x);
  const y = new Tensor(native.activationForward(SIGMOID, x.h));
  // the derivative y(1 - y) reads the output, which the node belongs to
  return recordOp(y, 'sigmoid', [x], (g) => [new Tensor(native.activationBackward(SIGMOID, y.h, g.h))]);
}
