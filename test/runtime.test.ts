// runtime.test.ts: the native runtime's thread count and primitive caches, and the CLI's --threads.
//
// setNumThreads() reaches ops whose oneDNN primitives were cached under another thread count.
// oneDNN's JIT convolutions split their work for the thread count they are created under; the native caches used to
// key them by shape alone, so a conv first run with 1 thread kept running on 1 thread after setNumThreads(2) (and one
// first run with 2 kept asking for 2 after setNumThreads(1)). The caches now key them by thread count too. This test
// counts the convolution primitives oneDNN creates (ONEDNN_VERBOSE=2 in a child process, no timing) and checks the
// results against a float64 reference at each count.
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.resolve(__dirname, '..');

// the raw addon: one conv shape run under 1, 2, then 1 thread again (and an eval conv with a folded BN the same way);
// prints the largest error against a naive float64 conv at each step
const child = `
const addon = require('node-gyp-build')(${JSON.stringify(root)});
let seed = 11;
const rnd = (n) => Float32Array.from({ length: n }, () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5);
const N = 2, C = 16, O = 16, H = 12, W = 12;
const xs = rnd(N * C * H * W), ws = rnd(O * C * 9);
const x = addon.fromFloat32(xs, [N, C, H, W]), w = addon.fromFloat32(ws, [O, C, 3, 3]);
const ref = new Float64Array(N * O * H * W);
for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
  let s = 0;
  for (let c = 0; c < C; c++) for (let u = 0; u < 3; u++) for (let v = 0; v < 3; v++) {
    const ii = i + u - 1, jj = j + v - 1;
    if (ii >= 0 && ii < H && jj >= 0 && jj < W) s += ws[((o * C + c) * 3 + u) * 3 + v] * xs[((n * C + c) * H + ii) * W + jj];
  }
  ref[((n * O + o) * H + i) * W + j] = s;
}
const errs = [];
for (const t of [1, 2, 1]) {
  addon.setNumThreads(t);
  const y = addon.conv2dForward(x, w, null, [1, 1], [1, 1], [1, 1], 1);
  const v = y.toFloat32Array();
  let e = 0;
  for (let k = 0; k < v.length; k++) e = Math.max(e, Math.abs(v[k] - ref[k]));
  errs.push(e);
  y.dispose();
}
console.log('ERRS ' + JSON.stringify(errs) + ' THREADS ' + addon.getNumThreads());
`;

describe('setNumThreads and cached primitives', () => {
  test('a conv cached under 1 thread gets a primitive for 2 threads after setNumThreads(2), and its own again at 1', () => {
    const r = spawnSync(process.execPath, ['-e', child], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, ONEDNN_VERBOSE: '2', DNNL_VERBOSE: '2', OMP_NUM_THREADS: '1' },
      timeout: 120000,
    });
    expect({ status: r.status, stderr: r.status === 0 ? '' : r.stderr }).toEqual({ status: 0, stderr: '' });
    const line = r.stdout.split('\n').find((l) => l.startsWith('ERRS '));
    expect(line).toBeDefined();
    const m = /^ERRS (\[.*\]) THREADS (\d+)$/.exec(line as string);
    expect(m).not.toBeNull();
    const errs = JSON.parse((m as RegExpExecArray)[1]) as number[];
    expect(errs).toHaveLength(3);
    for (const e of errs) expect(e).toBeLessThan(1e-4);
    expect(Number((m as RegExpExecArray)[2])).toBe(1);
    // the convolution primitives created: one per thread count (the third run, at 1 thread again, reuses the first)
    const creates = r.stdout.split('\n').filter((l) => /^(onednn|dnnl)_verbose,create(:cache_miss)?,cpu,convolution,/.test(l));
    expect(creates).toHaveLength(2);
  }, 180000);
});

describe('msgc --threads', () => {
  const cli = path.join(root, 'dist', 'cli', 'main.js'); // (compiled by npm ci's prepare step)
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '2' }, timeout: 60000 });

  test('sets the native thread count before the command runs, before or after the command name', () => {
    for (const args of [['--threads', '1', 'info'], ['info', '--threads', '1']]) {
      const r = run(args);
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      expect(JSON.parse(r.stdout).threads).toBe(1);
    }
    expect(JSON.parse(run(['info']).stdout).threads).toBe(2);
  });

  test('rejects a count outside 1-1024 with a message', () => {
    for (const bad of ['0', '2000', 'two']) {
      const r = run(['--threads', bad, 'info']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/--threads|thread count|integer/);
    }
  });
});

// The primitive caches are bounded (least recently used dropped beyond MSGC_PRIMITIVE_CACHE_CAPACITY entries per
// cache, 1024 by default): before, every distinct input size added a conv primitive for good (~54 KB each).
describe('bounded primitive caches', () => {
  const child = `
const addon = require('node-gyp-build')(${JSON.stringify(root)});
let seed = 5;
const rnd = (n) => Float32Array.from({ length: n }, () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5);
const C = 3, O = 4, N = 1;
let worst = 0, most = 0;
// 12 input sizes, twice over (the second pass re-creates evicted primitives), forward and backward
for (let pass = 0; pass < 2; pass++)
  for (let S = 4; S < 16; S++) {
    const xs = rnd(N * C * S * S), ws = rnd(O * C * 9), gs = rnd(N * O * S * S);
    const x = addon.fromFloat32(xs, [N, C, S, S]), w = addon.fromFloat32(ws, [O, C, 3, 3]), gy = addon.fromFloat32(gs, [N, O, S, S]);
    const y = addon.conv2dForward(x, w, null, [1, 1], [1, 1], [1, 1], 1);
    const [gx, gw] = addon.conv2dBackward(x, w, [1, 1], [1, 1], [1, 1], 1, gy, true, true, false);
    const yv = y.toFloat32Array(), gwv = gw.toFloat32Array(), gxv = gx.toFloat32Array();
    const X = (c, a, b) => (a < 0 || b < 0 || a >= S || b >= S ? 0 : xs[(c * S + a) * S + b]);
    const G = (o, a, b) => (a < 0 || b < 0 || a >= S || b >= S ? 0 : gs[(o * S + a) * S + b]);
    for (let o = 0; o < O; o++) for (let a = 0; a < S; a++) for (let b = 0; b < S; b++) {
      let r = 0;
      for (let c = 0; c < C; c++) for (let u = 0; u < 3; u++) for (let v = 0; v < 3; v++) r += ws[((o * C + c) * 3 + u) * 3 + v] * X(c, a + u - 1, b + v - 1);
      worst = Math.max(worst, Math.abs(yv[(o * S + a) * S + b] - r));
    }
    for (let o = 0; o < O; o++) for (let c = 0; c < C; c++) for (let u = 0; u < 3; u++) for (let v = 0; v < 3; v++) {
      let r = 0;
      for (let a = 0; a < S; a++) for (let b = 0; b < S; b++) r += G(o, a, b) * X(c, a + u - 1, b + v - 1);
      worst = Math.max(worst, Math.abs(gwv[((o * C + c) * 3 + u) * 3 + v] - r));
    }
    for (let c = 0; c < C; c++) for (let a = 0; a < S; a++) for (let b = 0; b < S; b++) {
      let r = 0;
      for (let o = 0; o < O; o++) for (let u = 0; u < 3; u++) for (let v = 0; v < 3; v++) r += ws[((o * C + c) * 3 + u) * 3 + v] * G(o, a - u + 1, b - v + 1);
      worst = Math.max(worst, Math.abs(gxv[(c * S + a) * S + b] - r));
    }
    for (const h of [x, w, gy, y, gx, gw]) h.dispose();
    most = Math.max(most, addon.memoryStats().primitiveCacheEntries);
  }
const s = addon.memoryStats();
console.log('RESULT ' + JSON.stringify({ worst, most, capacity: s.primitiveCacheCapacity }));
`;
  test('with MSGC_PRIMITIVE_CACHE_CAPACITY=3, 12 conv shapes twice over keep 3 entries and stay right (float64)', () => {
    const r = spawnSync(process.execPath, ['-e', child], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, MSGC_PRIMITIVE_CACHE_CAPACITY: '3' },
      timeout: 120000,
    });
    expect({ status: r.status, stderr: r.status === 0 ? '' : r.stderr }).toEqual({ status: 0, stderr: '' });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line).toBeDefined();
    const res = JSON.parse((line as string).slice(7)) as { worst: number; most: number; capacity: number };
    expect(res.capacity).toBe(3);
    expect(res.most).toBe(3); // (the conv cache alone: no other op ran)
    expect(res.worst).toBeLessThan(1e-4);
  });

  test('the default capacity is 1024 entries per cache', () => {
    const r = spawnSync(process.execPath, ['-e', `console.log(require('node-gyp-build')(${JSON.stringify(root)}).memoryStats().primitiveCacheCapacity)`], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, MSGC_PRIMITIVE_CACHE_CAPACITY: '' },
      timeout: 60000,
    });
    expect(r.stdout.trim()).toBe('1024');
  });
});
