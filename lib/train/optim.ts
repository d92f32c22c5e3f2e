// optim.ts: SGD with momentum, Nesterov and weight decay (torch.optim.SGD semantics, dampening 0), with
// parameter groups that override lr / weightDecay (e.g. gate heads at 5x lr without decay); clipGradNorm.
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
    if (options === null || typeof options !== 'object') throw new Error(`SGD: options must be an object with an lr, got ${options === null ? 'null' : typeof options}`);
    const { lr, momentum = 0, nesterov = false, weightDecay = 0 } = options;
    if (!(typeof lr === 'number' && Number.isFinite(lr) && lr > 0)) throw new Error(`SGD: lr must be positive, got ${lr}`);
    if (!(typeof momentum === 'number' && momentum >= 0 && momentum < 1)) throw new Error(`SGD: momentum must be in [0, 1), got ${momentum}`);
    if (typeof nesterov !== 'boolean') throw new Error(`SGD: nesterov must be a boolean, got ${typeof nesterov}`);
    if (nesterov && momentum <= 0) throw new Error('SGD: Nesterov momentum requires momentum > 0');
    if (!(typeof weightDecay === 'number' && Number.isFinite(weightDecay) && weightDecay >= 0)) throw new Error(`SGD: weightDecay must be >= 0, got ${weightDecay}`);
    this.lr = lr;
    this.momentum = momentum;
    this.nesterov = nesterov;
    this.weightDecay = weightDecay;
    if (!Array.isArray(params)) throw new Error(`SGD: params must be an array of tensors or parameter groups, got ${params === null ? 'null' : typeof params}`);
    const list = params as unknown[];
    this.groups = list.length && list[0] instanceof Tensor ? [{ params: params as Tensor[] }] : (params as ParamGroup[]);
    this.groups.forEach((g, i) => {
      if (g === null || typeof g !== 'object' || !Array.isArray(g.params)) throw new Error(`SGD: group ${i} must be an object with a params array`);
      for (const p of g.params) if (!(p instanceof Tensor)) throw new Error('SGD: every parameter must be a Tensor');
      const bad = (v: unknown, min: number) => v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= min);
      if (bad(g.lr, 0)) throw new Error(`SGD: group ${i} lr must be >= 0, got ${g.lr}`);
      if (bad(g.lrScale, 0)) throw new Error(`SGD: group ${i} lrScale must be >= 0, got ${g.lrScale}`);
      if (bad(g.weightDecay, 0)) throw new Error(`SGD: group ${i} weightDecay must be >= 0, got ${g.weightDecay}`);
    });
  }

  /** Applies one update to every parameter that has a gradient. */
  step(): void {
    for (const group of this.groups) {
      const lr = (group.lr ?? this.lr) * (group.lrScale ?? 1);
      const wd = group.weightDecay ?? this.weightDecay;
      // lr may be changed between steps (schedules); 0 is allowed, a negative or non-finite one is not
      if (!(typeof lr === 'number' && Number.isFinite(lr) && lr >= 0)) throw new Error(`SGD.step: lr must be >= 0, got ${lr}`);
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

/**
 * torch.nn.utils.clip_grad_norm_: the L2 norm of all the parameters' gradients taken together (float64); when it
 * exceeds maxNorm, every gradient is scaled in place by maxNorm / (norm + 1e-6). Returns the norm before clipping
 * (a non-finite norm is returned and nothing is scaled). Parameters without a gradient are skipped.
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  if (!Array.isArray(params)) throw new Error(`clipGradNorm: params must be an array of tensors, got ${params === null ? 'null' : typeof params}`);
  if (!(typeof maxNorm === 'number' && Number.isFinite(maxNorm) && maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be a positive finite number, got ${maxNorm}`);
  let sq = 0;
  for (const p of params) {
    if (!(p instanceof Tensor)) throw new Error('clipGradNorm: every parameter must be a Tensor');
    if (p.grad) sq += native.sumSquares(p.grad.h);
  }
  const norm = Math.sqrt(sq);
  if (Number.isFinite(norm) && norm > maxNorm) {
    const coef = maxNorm / (norm + 1e-6);
    for (const p of params) if (p.grad) native.scaleInPlace(p.grad.h, coef);
  }
  return norm;
}
