// testing.ts: helpers shared by the test files — a leak baseline that is stable across files in one jest
// worker, an assertion that a call throws a real Error with a given message, and an identity 1x1 conv weight.
import * as msgc from '../../lib';
import { closeness } from './gradcheck';
import { Tensor } from '../../lib';

/**
 * liveTensorCount once the unreachable handles of earlier test files in this worker have been collected (their
 * finalizers need a garbage collection and event-loop turns), so that they cannot vanish during this file.
 */
export async function settledLiveCount(): Promise<number> {
  let gcNow = (globalThis as { gc?: () => void }).gc;
  if (typeof gcNow !== 'function') {
    try {
      require('v8').setFlagsFromString('--expose-gc');
      gcNow = require('vm').runInNewContext('gc');
    } catch {
      gcNow = undefined;
    }
  }
  for (let i = 0; i < 3; i++) {
    if (gcNow) gcNow();
    await new Promise((r) => setImmediate(r));
  }
  return msgc.liveTensorCount();
}

/** Asserts that fn throws a real Error (from any realm) whose message matches re. */
export function expectError(fn: () => unknown, re: RegExp): void {
  let thrown: unknown = undefined;
  let threw = false;
  try {
    disposeResult(fn());
  } catch (e) {
    thrown = e;
    threw = true;
  }
  if (!threw) throw new Error(`expected an error matching ${re}, but the call returned`);
  expect(Object.prototype.toString.call(thrown)).toBe('[object Error]');
  expect((thrown as Error).message).toMatch(re);
}

/** Disposes tensors an unexpected successful call returned, so a failing check does not also leak. */
export function disposeResult(r: unknown): void {
  if (r && typeof r === 'object') {
    if (Array.isArray(r)) r.forEach(disposeResult);
    else if (typeof (r as { dispose?: unknown }).dispose === 'function') (r as { dispose(): void }).dispose();
  }
}

/** Throws with `what` unless actual is within tol (absolute + relative) of expected everywhere. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 1e-4): void {
  const worst = closeness(actual, expected, tol, tol);
  if (!(worst <= 1)) throw new Error(`${what}: worst closeness ${worst} (tolerance ${tol} abs + rel)`);
}

/** The identity 1x1 convolution weight [C, C, 1, 1] (to get blocked-layout copies of a tensor). */
export function eye(C: number): Tensor {
  const w = new Float32Array(C * C);
  for (let i = 0; i < C; i++) w[i * C + i] = 1;
  return msgc.tensor(w, [C, C, 1, 1]);
}


/**
 * Sets (or, with undefined, removes) an MSGC_* switch the native code reads. Jest gives each test file a copy of
 * process.env, so assigning process.env never reaches getenv in the addon; this goes through native.setEnv (and
 * keeps process.env in step for the JavaScript side).
 */
export function setNativeEnv(name: string, value: string | undefined): void {
  const { native } = require('../../lib/native');
  native.setEnv(name, value ?? null);
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
