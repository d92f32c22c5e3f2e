// models/index.ts: the model zoo (`msgc.models`).
export { resnet18, resnet34, resnet50, resnet20, resnet56, ResNet, BasicBlock, Bottleneck } from './resnet';
export { Backbone, BackboneOptions, MsgcOptions } from './common';
export { createModel, modelNames, registerModel } from './registry';
