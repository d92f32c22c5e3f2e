// ops/index.ts: the functional namespace `F`, named like torch.nn.functional.
export { conv2d, Conv2dOptions } from './conv';
export { batchNorm2d, BatchNormOptions, batchNormAct, batchNormActPooled, BatchNormActOptions, conv2dBnAct, FoldedBatchNorm } from './norm';
export { relu, relu6, sigmoid } from './activation';
export { maxPool2d, avgPool2d, adaptiveAvgPool2d, Pool2dOptions } from './pool';
export { linear } from './linear';
export { crossEntropy, CrossEntropyOptions, distillation, DistillationOptions } from './loss';
export { add, sub, mul, scale, sum, mean } from './elementwise';
export { reshape, flatten, concat, slice } from './shape';
export { msgcConv2d, MsgcConv2dOptions, msgcConv2dBnAct, msgcConv2dBnActPooled, MsgcConv2dBnActOptions, preferGathered, MsgcExecution, setMsgcExecution, getMsgcExecution, setMsgcTuning, msgcTuningTable, setMsgcTuningTimer, preferOutputSkipping, narrowHeadsUnite, gumbelSigmoidGate, GateOptions } from './msgc';
export { msgcConv2dBnActCompact, MsgcCompactOptions, depthwiseConv2dBnActCompact } from './compact';
