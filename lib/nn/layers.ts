// layers.ts: the standard layers (torch.nn names and parameter names): Conv2d, BatchNorm2d, Linear, activations,
// pools, Flatten, Identity, Sequential.
import * as F from '../ops/index';
import { IntOrPair } from '../ops/util';
import { ones, zeros } from '../tensor/creation';
import { Tensor } from '../tensor/tensor';
import { defaultBias, defaultWeight } from './init';
import { Module } from './module';

export interface Conv2dLayerOptions {
  stride?: IntOrPair;
  padding?: IntOrPair;
  dilation?: IntOrPair;
  groups?: number;
  bias?: boolean;
}

export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  weight: Tensor;
  bias: Tensor | null;

  constructor(inChannels: number, outChannels: number, kernelSize: IntOrPair, options: Conv2dLayerOptions = {}) {
    super();
    const pair = (v: IntOrPair): [number, number] => (typeof v === 'number' ? [v, v] : v);
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = pair(kernelSize);
    this.stride = pair(options.stride ?? 1);
    this.padding = pair(options.padding ?? 0);
    this.dilation = pair(options.dilation ?? 1);
    this.groups = options.groups ?? 1;
    if (inChannels % this.groups || outChannels % this.groups) {
      throw new Error(`Conv2d: in (${inChannels}) and out (${outChannels}) channels must be divisible by groups (${this.groups})`);
    }
    const shape = [outChannels, inChannels / this.groups, ...this.kernelSize];
    this.weight = this.registerParameter('weight', defaultWeight(shape))!;
    this.bias = this.registerParameter('bias', options.bias === false ? null : defaultBias(outChannels, shape));
  }

  /** Replaces the weight's values (e.g. with an initialiser's output); `t` is consumed. */
  initWeight(t: Tensor): void {
    this.weight.assign(t.toFloat32Array());
    t.dispose();
  }
  initBias(t: Tensor): void {
    if (!this.bias) throw new Error('Conv2d.initBias: this layer has no bias');
    this.bias.assign(t.toFloat32Array());
    t.dispose();
  }

  outputSize(h: number, w: number): [number, number] {
    const o = (x: number, i: 0 | 1) =>
      Math.floor((x + 2 * this.padding[i] - this.dilation[i] * (this.kernelSize[i] - 1) - 1) / this.stride[i]) + 1;
    return [o(h, 0), o(w, 1)];
  }

  forward(x: Tensor): Tensor {
    return F.conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }
}

export class BatchNorm2d extends Module {
  readonly numFeatures: number;
  readonly eps: number;
  /** weight of a new batch in the running statistics (recalibrateBatchNorm varies it) */
  momentum: number;
  weight: Tensor | null;
  bias: Tensor | null;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked: Tensor;
  private batches = 0;

  constructor(numFeatures: number, options: { eps?: number; momentum?: number; affine?: boolean } = {}) {
    super();
    this.numFeatures = numFeatures;
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    const affine = options.affine ?? true;
    this.weight = this.registerParameter('weight', affine ? ones([numFeatures]) : null);
    this.bias = this.registerParameter('bias', affine ? zeros([numFeatures]) : null);
    this.runningMean = this.registerBuffer('running_mean', zeros([numFeatures]));
    this.runningVar = this.registerBuffer('running_var', ones([numFeatures]));
    this.numBatchesTracked = this.registerBuffer('num_batches_tracked', zeros([]));
  }

  /**
   * torch's num_batches_tracked: one more batch seen in training. forward() calls it; code that runs this layer's
   * training-mode normalisation itself (a fused native op updating the running statistics) calls it once per batch.
   */
  countBatch(): void {
    if (!this.training) return;
    this.batches = this.numBatchesTracked.item() + 1;
    this.numBatchesTracked.assign([this.batches]);
  }

  forward(x: Tensor): Tensor {
    this.countBatch();
    return F.batchNorm2d(x, this.runningMean, this.runningVar, this.weight, this.bias, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
    });
  }

  /** forwardAct and the global average pool of its output, from one pass in eval (F.batchNormActPooled). */
  forwardActPooled(x: Tensor, activation: 'relu' | 'relu6' | null, residual: Tensor | null = null): { y: Tensor; pooled: Tensor } {
    this.countBatch();
    return F.batchNormActPooled(x, this.runningMean, this.runningVar, this.weight, this.bias, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
      activation,
      residual,
    });
  }

  /**
   * activation(this(x) + residual), fused into one pass in eval mode when no gradient is recorded (F.batchNormAct);
   * the same values and gradients as the separate ops otherwise.
   */
  forwardAct(x: Tensor, activation: 'relu' | 'relu6' | null, residual: Tensor | null = null): Tensor {
    this.countBatch();
    return F.batchNormAct(x, this.runningMean, this.runningVar, this.weight, this.bias, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
      activation,
      residual,
    });
  }
}

export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, options: { bias?: boolean } = {}) {
    super();
    this.weight = this.registerParameter('weight', defaultWeight([outFeatures, inFeatures]))!;
    this.bias = this.registerParameter('bias', options.bias === false ? null : defaultBias(outFeatures, [outFeatures, inFeatures]));
  }
  forward(x: Tensor): Tensor {
    return F.linear(x, this.weight, this.bias);
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return F.relu(x);
  }
}

export class ReLU6 extends Module {
  forward(x: Tensor): Tensor {
    return F.relu6(x);
  }
}

export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return F.sigmoid(x);
  }
}

export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

export class MaxPool2d extends Module {
  constructor(readonly options: F.Pool2dOptions) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.maxPool2d(x, this.options);
  }
}

export class AvgPool2d extends Module {
  constructor(readonly options: F.Pool2dOptions) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.avgPool2d(x, this.options);
  }
}

export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: IntOrPair = 1) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.adaptiveAvgPool2d(x, this.outputSize);
  }
}

export class Flatten extends Module {
  constructor(readonly startDim = 1) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.flatten(x, this.startDim);
  }
}

/**
 * act(bn(conv(x))): in eval mode one convolution with the BatchNorm folded in (F.conv2dBnAct, which falls back to
 * the composition when a gradient is recorded); in training the conv and BatchNorm2d.forwardAct.
 */
export function convBnAct(conv: Conv2d, bn: BatchNorm2d, x: Tensor, act: 'relu' | 'relu6' | null): Tensor {
  if (bn.training) return bn.forwardAct(conv.forward(x), act);
  return F.conv2dBnAct(x, conv.weight, conv.bias, bn, { stride: conv.stride, padding: conv.padding, dilation: conv.dilation, groups: conv.groups, activation: act });
}

/** Children named '0', '1', … run in order. */
export class Sequential extends Module {
  readonly layers: Module[];
  constructor(...layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.registerModule(String(i), m));
  }
  /**
   * Runs the layers in order. Inference fusion: a Conv2d followed by an eval-mode BatchNorm2d (and ReLU or ReLU6)
   * runs as one convolution with the BN folded in (F.conv2dBnAct; the composition when a gradient is recorded); a
   * BatchNorm2d followed by ReLU or ReLU6 runs as one pass (BatchNorm2d.forwardAct).
   */
  forward(x: Tensor): Tensor {
    let h = x;
    const L = this.layers;
    for (let i = 0; i < L.length; i++) {
      const m = L[i];
      const next = L[i + 1];
      if (m instanceof Conv2d && next instanceof BatchNorm2d && !next.training) {
        const after = L[i + 2];
        const act = after instanceof ReLU ? 'relu' : after instanceof ReLU6 ? 'relu6' : null;
        h = convBnAct(m, next, h, act);
        i += act ? 2 : 1;
      } else if (m instanceof BatchNorm2d && (next instanceof ReLU || next instanceof ReLU6)) {
        h = m.forwardAct(h, next instanceof ReLU ? 'relu' : 'relu6');
        i++;
      } else {
        h = m.forward(h);
      }
    }
    return h;
  }
}
