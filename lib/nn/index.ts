// nn/index.ts: modules and layers (`msgc.nn`).
export { Module, LoadResult } from './module';
export {
  Conv2d, BatchNorm2d, Linear, ReLU, ReLU6, Sigmoid, Identity, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Sequential,
} from './layers';
export { GateHead, AttentionHead, HeadOptions, headMacs } from './msgc/heads';
export * as init from './init';
