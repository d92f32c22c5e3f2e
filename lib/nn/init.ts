// init.ts: parameter initialisers (torch.nn.init semantics), drawing from the global seeded generator.
import { full, rand, randn, zeros } from '../tensor/creation';
import { Tensor } from '../tensor/tensor';

export function fanIn(shape: number[]): number {
  return shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : shape[0];
}

export function fanOut(shape: number[]): number {
  return shape.length > 1 ? shape[0] * shape.slice(2).reduce((a, b) => a * b, 1) : shape[0];
}

/** kaiming_normal_(mode, nonlinearity='relu'): N(0, 2 / fan). */
export function kaimingNormal(shape: number[], mode: 'fan_in' | 'fan_out' = 'fan_out'): Tensor {
  const fan = mode === 'fan_in' ? fanIn(shape) : fanOut(shape);
  return randn(shape, { std: Math.sqrt(2 / Math.max(1, fan)) });
}

/** torch's default for Conv/Linear weights: kaiming_uniform_(a=√5) = U(-1/√fan_in, 1/√fan_in). */
export function defaultWeight(shape: number[]): Tensor {
  const bound = 1 / Math.sqrt(Math.max(1, fanIn(shape)));
  return rand(shape, { low: -bound, high: bound });
}

/** torch's default bias: U(-1/√fan_in, 1/√fan_in) of the layer's weight. */
export function defaultBias(n: number, weightShape: number[]): Tensor {
  const bound = 1 / Math.sqrt(Math.max(1, fanIn(weightShape)));
  return rand([n], { low: -bound, high: bound });
}

export function normal(shape: number[], std: number): Tensor {
  return randn(shape, { std });
}

export function constant(shape: number[], value: number): Tensor {
  return value === 0 ? zeros(shape) : full(shape, value);
}
