// optim.ts: SGD with momentum, Nesterov and weight decay (torch.optim.SGD semantics, dampening 0), with
// parameter groups that override lr / weightDecay (e.g. gate heads at 5x lr without decay).
import { native } from '../native';
import { untracked } from '../tensor/scope';
import { Tensor } from '../tensor/tensor';

export interface SGDOptions {
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

export interface ParamGroup {
  params: Tensor[];
  lr?: number;
  /** multiplies the optimiser's lr (applied on top of a schedule) */
  lrScale?: number;
  weightDecay?: number;
  name?: string;
}

export class SGD {
  lr: number;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly groups: ParamGroup[];
  private buffers = new Map<Tensor, Tensor>();

  constructor(params: Tensor[] | ParamGroup[], options: SGDOptions) {
    const { lr, momentum = 0, nesterov = false, weightDecay = 0 } = options;
    if (!(lr > 0)) throw new Error(`SGD: lr must be positive, got ${lr}`);
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`SGD: momentum must be in [0, 1), got ${momentum}`);
    if (nesterov && momentum <= 0) throw new Error('SGD: Nesterov momentum requires momentum > 0');
    if (!(weightDecay >= 0)) throw new Error(`SGD: weightDecay must be >= 0, got ${weightDecay}`);
    this.lr = lr;
    this.momentum = momentum;
    this.nesterov = nesterov;
    this.weightDecay = weightDecay;
    const list = params as unknown[];
    this.groups = list.length && list[0] instanceof Tensor ? [{ params: params as Tensor[] }] : (params as ParamGroup[]);
    for (const g of this.groups) {
      for (const p of g.params) if (!(p instanceof Tensor)) throw new Error('SGD: every parameter must be a Tensor');
    }
  }

  /** Applies one update to every parameter that has a gradient. */
  step(): void {
    for (const group of this.groups) {
      const lr = (group.lr ?? this.lr) * (group.lrScale ?? 1);
      const wd = group.weightDecay ?? this.weightDecay;
      for (const p of group.params) {
        if (!p.grad) continue;
        let buf: Tensor | null = null;
        if (this.momentum > 0) {
          buf = this.buffers.get(p) ?? null;
          if (!buf) {
            buf = untracked(() => new Tensor(native.full(p.shape, 0)));
            this.buffers.set(p, buf);
          }
        }
        native.sgdStep(p.h, p.grad.h, buf ? buf.h : null, lr, this.momentum, wd, this.nesterov);
      }
    }
  }

  /** Frees every gradient (the next backward starts from zero). */
  zeroGrad(): void {
    for (const group of this.groups) {
      for (const p of group.params) {
        if (p.grad) {
          p.grad.dispose();
          p.grad = null;
        }
      }
    }
  }

  /** Momentum buffers by parameter, for checkpoints. */
  state(): Map<Tensor, Tensor> {
    return this.buffers;
  }

  /** Restores the momentum buffer of `param` from `values` (copied; the caller keeps `values`). */
  setMomentum(param: Tensor, values: Tensor): void {
    if (values.shape.join(',') !== param.shape.join(',')) {
      throw new Error(`SGD.setMomentum: buffer has shape [${values.shape.join(', ')}], expected [${param.shape.join(', ')}]`);
    }
    const old = this.buffers.get(param);
    if (old) old.dispose();
    this.buffers.set(param, untracked(() => new Tensor(native.toPlain(values.h))));
  }

  /** Frees the momentum buffers. */
  dispose(): void {
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
  }
}
