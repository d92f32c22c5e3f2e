// testing.ts: helpers shared by the test files — a leak baseline that is stable across files in one jest
// worker, an assertion that a call throws a real Error with a given message, and an identity 1x1 conv weight.
import * as msgc from '../../lib';
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

/** Asserts that fn throws a real Error whose message matches re. */
export function expectError(fn: () => unknown, re: RegExp): void {
  let threw = false;
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    threw = true;
    caught = e;
  }
  expect(threw).toBe(true);
  expect(Object.prototype.toString.call(caught)).toBe('[object Error]');
  expect((caught as Error).message).toMatch(re);
}

/** The identity 1x1 convolution weight [C, C, 1, 1] (to get blocked-layout copies of a tensor). */
export function eye(C: number): Tensor {
  const w = new Float32Array(C * C);
  for (let i = 0; i < C; i++) w[i * C + i] = 1;
  return msgc.tensor(w, [C, C, 1, 1]);
}

