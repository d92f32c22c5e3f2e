// index.ts: the public surface of msgc.
export { Tensor } from './tensor/tensor';
export { tidy, noGrad, keep, isGradEnabled } from './tensor/scope';
export {
  tensor, zeros, ones, full, randn, rand, manualSeed, liveTensorCount, memoryStats, emptyCache, setNumThreads,
  CreateOptions, RandomOptions,
} from './tensor/creation';
export * as F from './ops/index';
export { SGD, SGDOptions, ParamGroup } from './train/optim';
export { backendInfo, BackendInfo } from './native';
