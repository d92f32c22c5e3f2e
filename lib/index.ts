// index.ts: the public surface of msgc.
export { Tensor } from './tensor/tensor';
export { tidy, noGrad, keep, isGradEnabled } from './tensor/scope';
export { cuda } from './tensor/device';
export {
  tensor, zeros, ones, full, randn, rand, manualSeed, getRngState, setRngState, liveTensorCount, memoryStats, emptyCache, setNumThreads, setFlushDenormals, getFlushDenormals,
  CreateOptions, RandomOptions,
} from './tensor/creation';
export * as F from './ops/index';
export { SGD, SGDOptions, ParamGroup, clipGradNorm } from './train/optim';
export { fit, evaluate, FitOptions, History, EpochLogs, BatchLogs, Callbacks, EvalResult, BudgetOptions, Batch, BatchSource } from './train/fit';
export { macBudgetLoss } from './train/budget';
export { TeacherLogitCache, TeacherCacheOptions } from './train/teacher_cache';
export { recalibrateBatchNorm, RecalibrateOptions } from './train/recalibrate';
export { cosineLr, macTarget } from './train/schedule';
export { parameterGroups } from './train/groups';
export { backendInfo, BackendInfo, CudaInfo } from './native';
export * as nn from './nn/index';
export * as models from './models/index';
export * as data from './data/index';
export { countMacs, macsTable } from './macs/count';
export { MacCount, LastMacs, MacRow } from './macs/types';
export { save, load, saveSafetensors, loadSafetensors, readSafetensorsHeader, encodeSafetensors, decodeSafetensors, parseSafetensorsHeader, StateDict, SafetensorsHeader, SafetensorsTensorInfo } from './io/safetensors';
