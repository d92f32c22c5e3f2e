// scope.ts: deterministic memory management. Every tensor made inside tidy(fn) is disposed when fn returns,
// except what fn returns (a tensor, or tensors inside arrays/objects) and tensors marked with keep().
// noGrad(fn) turns off graph recording for fn.
import type { Tensor } from './tensor';

// The scope stack: a tidy scope (the tensors it will dispose), null (untracked: tensors that outlive every scope,
// reported to V8), or OWNED (the backward engine's: tensors it frees itself or hands out; see owned()).
const OWNED = 'owned' as const;
type Scope = Set<Tensor> | null | typeof OWNED;
const scopes: Scope[] = [];
let gradEnabled = true;

function innermost(): Scope {
  return scopes.length ? scopes[scopes.length - 1] : null;
}

/**
 * Registers a new tensor with the innermost tidy scope. A tensor that no scope will dispose is reported to V8 as
 * external memory (so that garbage collection reclaims forgotten ones sooner); a scope's tensors are reported only
 * if they outlive it, as reporting every short-lived intermediate made V8 collect on each forward pass. Tensors
 * made inside owned() are neither tracked nor reported.
 */
export function track(t: Tensor): void {
  const top = innermost();
  if (top instanceof Set) top.add(t);
  else if (top === null) t._account();
}

/** Reports t to V8, and the tensors its autograd node saved (they live as long as t's graph). */
function accountWithSaved(t: Tensor): void {
  t._account();
  if (t._node) for (const s of t._node.saved) s._account();
}

/** Takes t out of every open tidy scope (none of them will dispose it). */
function leaveScopes(t: Tensor): void {
  for (const s of scopes) if (s instanceof Set) s.delete(t);
}

/** Removes `t` from every open scope so that it outlives them. */
export function keep<T extends Tensor>(t: T): T {
  leaveScopes(t);
  accountWithSaved(t);
  return t;
}

/**
 * Hands a tensor an op saved for its backward to the autograd node (recordOp): it leaves every scope and is freed
 * with the node. It is reported to V8 only where the op's output is (no tidy scope around it): inside tidy the
 * output's scope frees the node deterministically, and reporting the saved tensors and the backward's gradients
 * of every training step made V8 collect garbage about five times a step (MobileNetV2 at batch 32: 72 collections,
 * 210 ms, over 13 steps; 18 and 72 ms without). Should the output escape its outermost scope, closeScope / keep
 * report them then.
 */
export function adoptSaved(t: Tensor): void {
  leaveScopes(t);
  if (innermost() === null) t._account();
}

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if ((value as { __isTensor?: boolean }).__isTensor) {
    out.add(value as Tensor);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, seen);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as Record<string, unknown>)) collect(v, out, seen);
  }
}

function closeScope(scope: Set<Tensor>, result: unknown): void {
  const keepSet = new Set<Tensor>();
  collect(result, keepSet, new Set());
  const parent = innermost();
  for (const t of scope) {
    if (keepSet.has(t)) {
      if (parent instanceof Set) parent.add(t);
      else if (parent === null) accountWithSaved(t);
    } else {
      t.dispose();
    }
  }
}

/**
 * Runs fn and disposes every tensor it created except those it returns (tensors, or tensors inside returned arrays,
 * maps and plain objects). Synchronous only: a fn that returns a Promise is an error (use tidy inside the async
 * work instead).
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    scopes.splice(scopes.lastIndexOf(scope), 1);
    closeScope(scope, undefined);
    throw err;
  }
  if (result instanceof Promise) {
    // close the scope first: left open, it would capture (and keep alive) every tensor made afterwards
    scopes.splice(scopes.lastIndexOf(scope), 1);
    closeScope(scope, undefined);
    throw new Error('tidy: fn returned a Promise; tidy scopes are synchronous — await outside tidy, or use tidy inside the async work');
  }
  scopes.splice(scopes.lastIndexOf(scope), 1);
  closeScope(scope, result);
  return result;
}

/** Runs fn with `scope` innermost on the stack. */
function within<T>(scope: Scope, fn: () => T): T {
  scopes.push(scope);
  try {
    return fn();
  } finally {
    scopes.pop();
  }
}

/** Runs fn with tensors created inside it untracked by any tidy scope (used for gradients and optimiser state). */
export function untracked<T>(fn: () => T): T {
  return within(null, fn);
}

/**
 * Runs fn with the tensors created inside it owned by the caller: neither tracked by a tidy scope nor reported to
 * V8. The backward engine's gradients: it frees them as it goes, and reports those it hands out (leaf .grad).
 */
export function owned<T>(fn: () => T): T {
  return within(OWNED, fn);
}

/** Runs fn without recording the autograd graph (inference, optimiser updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}
