// tensor.ts: the Tensor handle and the autograd tape. A Tensor wraps a native handle (memory stays native);
// an op that records a GradNode makes its output remember how to send gradients to its inputs. backward()
// walks the graph in reverse topological order, accumulates into .grad of leaves that require grad, and frees
// the graph (saved intermediates) as it goes.
import { native, NativeHandle } from '../native';
import { adoptSaved, isGradEnabled, keep, owned, track } from './scope';

export interface GradNode {
  name: string;
  inputs: (Tensor | null)[];
  /**
   * Gradients for each input (null where not needed), given the output gradient. With channelGrad, a second argument
   * may come: a [N, C, 1, 1] gradient that stands for its broadcast over H and W (see isChannelBroadcast), to be added
   * to gradOutput by the node itself.
   */
  backward(gradOutput: Tensor, channelGrad?: Tensor): (Tensor | null)[];
  /** Tensors only this node uses (saved statistics, workspaces); disposed when the node is released. */
  saved: Tensor[];
  /** the backward takes a channel-broadcast gradient apart (its own pass adds it; no pass of the engine's) */
  channelGrad?: boolean;
}

let nextId = 1;

// A handle's shape through the binding's shared buffer (dims()): ~0.1 µs, where the `shape` accessor, which builds
// the array through N-API one element at a time, took ~0.7 µs of each new Tensor
const shapeBuffer = native.shapeBuffer;
function shapeOf(handle: NativeHandle): number[] {
  const rank = handle.dims();
  if (rank < 0) return handle.shape;
  const s: number[] = [];
  for (let i = 0; i < rank; i++) {
    const d = shapeBuffer[i];
    s.push(d <= 0x7fffffff ? d | 0 : d);
  }
  return s;
}

export class Tensor {
  /** @internal */ readonly __isTensor = true;
  readonly id: number;
  requiresGrad: boolean;
  /** Accumulated gradient (leaves with requiresGrad only). */
  grad: Tensor | null = null;
  /** @internal */ _node: GradNode | null = null;
  /** @internal set when backward() freed the node that made this tensor */
  _graphFreed = false;
  private handle: NativeHandle | null;
  private cachedShape: number[];
  // the handle's device, read once (each read of the handle's accessor is an N-API call that makes a string)
  private cachedDevice: string | null = null;
  /**
   * @internal what the MSGC blocks computed along with this tensor: its global average pool (the next block's gate
   * context; models/common.ts) and, for gates, their statistics (nn/msgc/tally.ts). Fields rather than WeakMaps
   * keyed by the tensor: every WeakMap entry of a short-lived tensor is an ephemeron the garbage collector processes
   * (MobileNetV2 at batch 1, 2 threads: the MSGC model's garbage collection per forward 158-166 -> 106-120 µs, with
   * the handles' finalizers still then a scavenge's main cost).
   */
  _pooled: Tensor | null = null;
  /** @internal see _pooled */
  _gateStats: object | null = null;

  /** @internal use msgc.tensor(), zeros(), ... to create tensors */
  constructor(handle: NativeHandle, requiresGrad = false) {
    this.handle = handle;
    this.cachedShape = shapeOf(handle);
    this.requiresGrad = requiresGrad;
    this.id = nextId++;
    track(this);
  }

  /** @internal the native handle; throws when disposed */
  get h(): NativeHandle {
    if (!this.handle) throw new Error(`Tensor ${this.id} (shape [${this.cachedShape.join(', ')}]) was disposed; it can no longer be used`);
    return this.handle;
  }

  get shape(): number[] {
    return this.cachedShape.slice();
  }
  /** @internal the shape itself, not a copy (read-only: the engine's comparisons, which ran per node and input) */
  get _shape(): readonly number[] {
    return this.cachedShape;
  }
  get rank(): number {
    return this.cachedShape.length;
  }
  get size(): number {
    return this.cachedShape.reduce((a, b) => a * b, 1);
  }
  get device(): string {
    const h = this.h;  // (throws once disposed)
    return this.cachedDevice ?? (this.cachedDevice = h.device);
  }
  /** 'plain' (row-major NCHW) or 'blocked' (a backend's internal layout; values are the same). */
  get layout(): string {
    return this.h.layout;
  }
  get isDisposed(): boolean {
    return this.handle === null;
  }
  /** True when the tensor was produced by a recorded op (it is not a leaf). */
  get isLeaf(): boolean {
    return this._node === null;
  }

  /** Copies the values to JavaScript (row-major NCHW). */
  toFloat32Array(): Float32Array {
    return this.h.toFloat32Array();
  }
  /** Nested arrays, for printing and small tensors. */
  toArray(): unknown {
    const data = Array.from(this.toFloat32Array());
    const build = (dims: number[], offset: number): unknown => {
      if (dims.length === 0) return data[offset];
      const [d, ...rest] = dims;
      const stride = rest.reduce((a, b) => a * b, 1);
      return Array.from({ length: d }, (_, i) => build(rest, offset + i * stride));
    };
    return build(this.cachedShape, 0);
  }
  /** The single value of a one-element tensor. */
  item(): number {
    return this.h.item();
  }

  /** Overwrites the values in place (shape unchanged). Not recorded by autograd. */
  assign(data: Float32Array | number[]): this {
    this.h.copyFrom(data instanceof Float32Array ? data : Float32Array.from(data));
    return this;
  }

  /**
   * This tensor on `device` ('cpu' or 'cuda'): a copy there (plain layout), or this tensor itself when it is
   * already there, as torch.Tensor.to. Recorded by autograd: the gradient is copied back to this tensor's device.
   */
  to(device: 'cpu' | 'cuda'): Tensor {
    if (device !== 'cpu' && device !== 'cuda') throw new Error(`to: device must be 'cpu' or 'cuda', got ${String(device)}`);
    const from = this.device;
    if (from === device) return this;
    const out = new Tensor(native.toDevice(this.h, device));
    return recordOp(out, 'to', [this], (g) => [new Tensor(native.toDevice(g.h, from))]);
  }
  /** this.to('cuda') */
  cuda(): Tensor {
    return this.to('cuda');
  }
  /** this.to('cpu') */
  cpu(): Tensor {
    return this.to('cpu');
  }

  /**
   * @internal moves the storage to `device` in place (Module.to): the same Tensor object, holding a new handle;
   * the old memory is freed now. Not recorded by autograd (parameters and buffers are leaves).
   */
  _moveInPlace(device: 'cpu' | 'cuda'): void {
    if (this.device === device) return;
    const moved = native.toDevice(this.h, device);
    this.h.dispose();
    this.handle = moved;
    this.cachedDevice = null;
    if (this.grad) this.grad._moveInPlace(device);
  }

  /** A new leaf with the same values and no graph. */
  detach(): Tensor {
    return new Tensor(native.toPlain(this.h));
  }
  /** A new plain tensor with the same values (recorded by autograd). */
  clone(): Tensor {
    const out = new Tensor(native.toPlain(this.h));
    return recordOp(out, 'clone', [this], (g) => [g]);
  }

  /** @internal reports the storage to V8 (see track() in scope.ts); idempotent */
  _account(): void {
    if (this.handle) this.handle.account();
  }

  /** Frees the native memory now. Safe to call twice. */
  dispose(): void {
    if (this.handle) {
      this.handle.dispose();
      this.handle = null;
    }
    releaseNode(this);
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Marks this tensor to survive the enclosing tidy scopes. */
  keep(): this {
    return keep(this);
  }

  /**
   * Back-propagates from this tensor. Without an argument the tensor must hold one element (a loss); otherwise
   * `gradient` has this tensor's shape. Gradients accumulate into `.grad` of leaves with requiresGrad; the graph
   * is freed afterwards.
   */
  backward(gradient?: Tensor): void {
    runBackward(this, gradient);
  }

  toString(): string {
    return `Tensor(shape=[${this.cachedShape.join(', ')}]${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

function releaseNode(t: Tensor): void {
  const node = t._node;
  if (!node) return;
  t._node = null;
  for (const s of node.saved) s.dispose();
  node.saved.length = 0;
  node.inputs.length = 0;
}

/**
 * Records `out` as the result of an op on `inputs` when autograd is on and some input requires grad.
 * `saved` tensors belong to the node and are freed with it.
 */
export function recordOp(
  out: Tensor,
  name: string,
  inputs: (Tensor | null | undefined)[],
  backward: (g: Tensor, channelGrad?: Tensor) => (Tensor | null)[],
  saved: Tensor[] = [],
  channelGrad = false,
): Tensor {
  const needs = isGradEnabled() && inputs.some((t) => t && t.requiresGrad);
  if (!needs) {
    for (const s of saved) s.dispose();
    return out;
  }
  for (const s of saved) adoptSaved(s);
  out.requiresGrad = true;
  out._node = { name, inputs: inputs.map((t) => t ?? null), backward, saved, channelGrad };
  return out;
}

/** Wraps a handle that may be null. */
export function wrapOptional(h: NativeHandle | null): Tensor | null {
  return h ? new Tensor(h) : null;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A node's backward may return, for a 4-D input [N, C, H, W], a gradient of shape [N, C, 1, 1] that stands for its
 * broadcast over H and W (a global average pool's: gy / (H·W) at every pixel). The engine adds it into the input's
 * other gradients without expanding it (PyTorch's expand() views do the same), and expands it only if it is the
 * input's whole gradient when handed on. (ResNet-50 training at batch 32 spent 6% of a step writing these.)
 */
function isChannelBroadcast(g: readonly number[], x: readonly number[]): boolean {
  return x.length === 4 && g.length === 4 && g[0] === x[0] && g[1] === x[1] && g[2] === 1 && g[3] === 1;
}

function runBackward(root: Tensor, gradient?: Tensor): void {
  if (root.isDisposed) throw new Error('backward: this tensor was disposed; it can no longer be used');
  if (!root.requiresGrad) throw new Error('backward: this tensor does not require grad (no input of the ops that made it has requiresGrad)');
  if (gradient !== undefined && !(gradient instanceof Tensor)) throw new Error(`backward: gradient must be a Tensor, got ${gradient === null ? 'null' : typeof gradient}`);
  if (gradient !== undefined && gradient.isDisposed) throw new Error('backward: gradient was disposed; it can no longer be used');
  if (gradient === undefined && root.size !== 1) {
    throw new Error(`backward: the tensor has shape [${root.shape.join(', ')}]; pass a gradient of that shape or call it on a scalar loss`);
  }
  if (gradient !== undefined && gradient.shape.join(',') !== root.shape.join(',')) {
    throw new Error(`backward: gradient has shape [${gradient.shape.join(', ')}], expected [${root.shape.join(', ')}]`);
  }
  // reverse topological order over nodes that need grad
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length) {
    const [t, done] = stack.pop()!;
    if (done) {
      order.push(t);
      continue;
    }
    if (visited.has(t)) continue;
    visited.add(t);
    if (t.isDisposed) {
      // its node (and what it saved) went with it: the gradient could not reach the tensors before it
      throw new Error(`backward: a tensor of the graph (shape [${t.shape.join(', ')}]) was disposed before backward(), e.g. by the tidy that made it; call backward() inside that tidy`);
    }
    if (t._graphFreed) {
      throw new Error('backward: the graph through this tensor was already freed by an earlier backward(); run the forward again to build a new one');
    }
    stack.push([t, true]);
    if (t._node) for (const i of t._node.inputs) if (i && i.requiresGrad && !visited.has(i)) stack.push([i, false]);
  }
  order.reverse();

  // the gradients are the engine's (owned: not reported to V8, which collected garbage on every step when they
  // were); it frees them as it goes, and reports those it hands out as a leaf's .grad
  owned(() => {
    const grads = new Map<Tensor, Tensor>();
    // channel-broadcast gradients kept apart for nodes that add them in their own backward (GradNode.channelGrad)
    const channelGrads = new Map<Tensor, Tensor>();
    grads.set(root, gradient ? new Tensor(native.clone(gradient.h)) : new Tensor(native.full(root.shape, 1)));
    // the gradient being handed on; freed with the pending ones if a node's backward throws
    let current: Tensor | null = null;
    let currentChannels: Tensor | null = null;
    try {
      for (const t of order) {
        let g = grads.get(t);
        grads.delete(t);
        let gc = channelGrads.get(t) ?? null;
        channelGrads.delete(t);
        currentChannels = gc;
        if (g && !sameShape(g._shape, t._shape)) {
          // a channel-broadcast gradient (see isChannelBroadcast): expanded once it is handed on
          const small = g;
          g = new Tensor(native.expandChannels(small.h, t.h, 1));
          small.dispose();
        }
        if (gc && !g) {
          // (only a broadcast one: as the whole gradient, expanded)
          g = new Tensor(native.expandChannels(gc.h, t.h, 1));
          gc.dispose();
          gc = currentChannels = null;
        }
        current = g ?? null;
        if (!g) {
          t._graphFreed = t._node !== null;
          releaseNode(t);
          continue;
        }
        const node = t._node;
        if (!node) {
          // a leaf (channel-broadcast gradients are kept apart only for nodes that take them)
          if (t.grad && !t.grad.isDisposed) {
            native.addInPlace(t.grad.h, g.h, 1);
            g.dispose();
          } else {
            t.grad = g;
            g._account();
          }
          current = null;
          continue;
        }
        const inputGrads = gc ? node.backward(g, gc) : node.backward(g);
        if (gc) {
          gc.dispose();
          currentChannels = null;
        }
        const seen = new Set<Tensor>();
        node.inputs.forEach((input, k) => {
          let gi = inputGrads[k];
          if (!gi) return;
          if (seen.has(gi)) gi = new Tensor(native.clone(gi.h)); // one tensor returned for two inputs
          seen.add(gi);
          if (!input || !input.requiresGrad) {
            gi.dispose();
            return;
          }
          if (!sameShape(gi._shape, input._shape) && !isChannelBroadcast(gi._shape, input._shape)) {
            gi.dispose();
            throw new Error(`backward: ${node.name} returned a gradient of shape [${gi.shape.join(', ')}] for an input of shape [${input.shape.join(', ')}]`);
          }
          const prev = grads.get(input);
          const small = !sameShape(gi._shape, input._shape);
          if (small && input._node?.channelGrad) {
            // kept apart: the input's node adds it in its own backward pass
            const kept = channelGrads.get(input);
            if (kept) {
              native.addInPlace(kept.h, gi.h, 1);
              gi.dispose();
            } else {
              channelGrads.set(input, gi);
            }
          } else if (!prev) {
            grads.set(input, gi);
          } else if (sameShape(prev._shape, gi._shape)) {
            native.addInPlace(prev.h, gi.h, 1);
            gi.dispose();
          } else if (sameShape(prev._shape, input._shape)) {
            native.addChannelsInPlace(prev.h, gi.h, 1);
            gi.dispose();
          } else {
            native.addChannelsInPlace(gi.h, prev.h, 1);
            prev.dispose();
            grads.set(input, gi);
          }
        });
        if (!seen.has(g)) g.dispose();
        current = null;
        t._graphFreed = true;
        releaseNode(t);
      }
    } finally {
      if (current) current.dispose();
      if (currentChannels) currentChannels.dispose();
      for (const g of grads.values()) g.dispose();
      for (const g of channelGrads.values()) g.dispose();
    }
  });
}
