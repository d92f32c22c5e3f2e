// scope.ts: deterministic memory management. Every tensor made inside tidy(fn) is disposed when fn returns,
// except what fn returns (a tensor, or tensors inside arrays/objects) and tensors marked with keep().
// noGrad(fn) turns off graph recording for fn.
import type { Tensor } from './tensor';

const scopes: (Set<Tensor> | null)[] = [];
let gradEnabled = true;

/**
 * Registers a new tensor with the innermost tidy scope. A tensor that no scope will dispose is reported to V8 as
 * external memory (so that garbage collection reclaims forgotten ones sooner); a scope's tensors are reported only
 * if they outlive it, as reporting every short-lived intermediate made V8 collect on each forward pass.
 */
export function track(t: Tensor): void {
  const top = scopes.length ? scopes[scopes.length - 1] : null;
  if (top) top.add(t);
  else t._account();
}

/** Removes `t` from every open scope so that it outlives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) if (s) s.delete(t);
  t._account();
  return t;
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
  const parent = scopes.length ? scopes[scopes.length - 1] : null;
  for (const t of scope) {
    if (keepSet.has(t)) {
      if (parent) parent.add(t);
      else t._account();
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

/** Runs fn with tensors created inside it untracked by any tidy scope (used for gradients and optimiser state). */
export function untracked<T>(fn: () => T): T {
  scopes.push(null);
  try {
    return fn();
  } finally {
    scopes.pop();
  }
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
