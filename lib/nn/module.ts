// module.ts: the Module base — named parameters, buffers and submodules with torchvision-style dotted names
// (`layer1.0.conv1.weight`, `bn1.running_mean`), train/eval, state dicts and deterministic disposal.
import { keep } from '../tensor/scope';
import { Tensor } from '../tensor/tensor';

export interface LoadResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

export abstract class Module {
  training = true;
  private readonly params = new Map<string, Tensor | null>();
  private readonly bufs = new Map<string, Tensor>();
  private readonly mods = new Map<string, Module>();

  abstract forward(x: Tensor): Tensor;

  /** Registers a trainable tensor (requiresGrad is set; the tensor outlives any tidy scope). */
  protected registerParameter(name: string, t: Tensor | null): Tensor | null {
    if (t) {
      t.requiresGrad = true;
      keep(t);
    }
    this.params.set(name, t);
    return t;
  }

  /** Registers a non-trainable state tensor (running statistics), saved in the state dict. */
  protected registerBuffer(name: string, t: Tensor): Tensor {
    keep(t);
    this.bufs.set(name, t);
    return t;
  }

  /** Registers a child module under `name` (its tensors get the `name.` prefix). */
  registerModule<M extends Module>(name: string, m: M): M {
    this.mods.set(name, m);
    return m;
  }

  /** Replaces a parameter's tensor (e.g. to re-initialise), disposing the old one. */
  protected setParameter(name: string, t: Tensor): void {
    const old = this.params.get(name);
    if (old && old !== t) old.dispose();
    this.registerParameter(name, t);
  }

  namedChildren(): [string, Module][] {
    return [...this.mods.entries()];
  }

  /** Every module in the tree with its dotted name ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, m] of this.mods) out.push(...m.namedModules(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [name, p] of this.params) if (p) out.push([prefix ? `${prefix}.${name}` : name, p]);
    for (const [name, m] of this.mods) out.push(...m.namedParameters(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [name, b] of this.bufs) out.push([prefix ? `${prefix}.${name}` : name, b]);
    for (const [name, m] of this.mods) out.push(...m.namedBuffers(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  /** Number of trainable scalars. */
  numParameters(): number {
    return this.parameters().reduce((a, p) => a + p.size, 0);
  }

  /** Sets training mode on this module and every descendant. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Parameters and buffers by dotted name (the live tensors, not copies; save() reads them). */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [k, v] of this.namedParameters()) out[k] = v;
    for (const [k, v] of this.namedBuffers()) out[k] = v;
    return out;
  }

  /**
   * Copies values from `dict` into this module's parameters and buffers by name. With strict (the default),
   * missing or unexpected keys throw; a shape mismatch always throws. Returns the keys that did not match.
   */
  loadStateDict(dict: Record<string, Tensor>, options: { strict?: boolean } = {}): LoadResult {
    const strict = options.strict ?? true;
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((k) => !(k in dict));
    const unexpectedKeys = Object.keys(dict).filter((k) => !(k in own));
    if (strict && (missingKeys.length || unexpectedKeys.length)) {
      const show = (ks: string[]) => (ks.length > 8 ? `${ks.slice(0, 8).join(', ')}, … (${ks.length})` : ks.join(', '));
      throw new Error(
        `loadStateDict: keys do not match (strict).` +
          (missingKeys.length ? ` Missing: ${show(missingKeys)}.` : '') +
          (unexpectedKeys.length ? ` Unexpected: ${show(unexpectedKeys)}.` : '') +
          ' Pass { strict: false } to load the matching keys only.',
      );
    }
    for (const [k, target] of Object.entries(own)) {
      const src = dict[k];
      if (!src) continue;
      const ts = target.shape;
      const ss = src.shape;
      const sameSize = ts.reduce((a, b) => a * b, 1) === ss.reduce((a, b) => a * b, 1);
      // a one-element tensor loads into a scalar slot and back (num_batches_tracked is [] in PyTorch)
      if (ts.join(',') !== ss.join(',') && !(sameSize && ts.length + ss.length <= 1)) {
        throw new Error(`loadStateDict: '${k}' has shape [${ss.join(', ')}] in the state dict, but the module expects [${ts.join(', ')}]`);
      }
      target.assign(src.toFloat32Array());
    }
    return { missingKeys, unexpectedKeys };
  }

  /**
   * Moves every parameter and buffer of this module tree to `device` ('cpu' or 'cuda') in place, as
   * torch.nn.Module.to: the same Tensor objects (an optimizer built on them keeps working), their memory on the
   * new device, the old freed now. On cuda, models run their eval forward (see README: the CUDA backend).
   */
  to(device: 'cpu' | 'cuda'): this {
    if (device !== 'cpu' && device !== 'cuda') throw new Error(`Module.to: device must be 'cpu' or 'cuda', got ${String(device)}`);
    for (const [, m] of this.namedModules()) {
      for (const p of m.params.values()) if (p) p._moveInPlace(device);
      for (const b of m.bufs.values()) b._moveInPlace(device);
    }
    return this;
  }

  /** Frees every parameter and buffer of this module tree now. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const p of m.params.values()) if (p) p.dispose();
      for (const b of m.bufs.values()) b.dispose();
    }
  }
}
