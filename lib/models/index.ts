// models/index.ts: the model zoo (`msgc.models`).
export { resnet18, resnet34, resnet50, resnet20, resnet56, ResNet, BasicBlock, Bottleneck } from './resnet';
export { mobilenetV2, MobileNetV2, InvertedResidual, MOBILENETV2_SETTINGS } from './mobilenetv2';
export { densenet74, DenseNet, DenseLayer, DenseBlock, DenseNetConfig, DENSENET74 } from './densenet';
export { Backbone, BackboneOptions, MsgcOptions } from './common';
export { createModel, modelNames, registerModel } from './registry';
