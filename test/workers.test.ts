// workers.test.ts: the addon used from several worker_threads at once. Each JavaScript thread calls the native ops
// directly, and the native caches (oneDNN primitives by shape, per-head weight slices) are process-wide: four
// workers running convolutions of many shapes, forward and backward, crashed the process (SIGSEGV, or "could not
// execute a primitive") in 6 of 6 runs, and two workers training a ResNet-20 hung in a oneDNN barrier in 1 of 8.
// The native boundary now runs one op at a time (opMutex). The workload runs in a child process, so a crash fails
// this test instead of killing the test runner, and every result is checked against a float64 reference.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');

const script = `
const { Worker, isMainThread, workerData, parentPort } = require('worker_threads');
if (isMainThread) {
  const W = 4;
  let ok = 0, worst = 0;
  for (let w = 0; w < W; w++) {
    const wk = new Worker(__filename, { workerData: w });
    wk.on('message', (m) => { ok++; worst = Math.max(worst, m); });
    wk.on('error', (e) => { console.log('worker error: ' + e.message); });
  }
  process.on('exit', () => console.log('RESULT ' + JSON.stringify({ ok, worst })));
} else {
  const addon = require(${JSON.stringify(require.resolve('node-gyp-build'))})(${JSON.stringify(root)});
  let seed = 1 + workerData;
  const rnd = (n) => Float32Array.from({ length: n }, () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5);
  let worst = 0;
  for (let i = 0; i < 300; i++) {
    // a shape per step (new cache entries all the time), 1-13 channels, 3-19 pixels
    const C = 1 + ((i * 5 + workerData * 11) % 13), O = C + 1, S = 3 + ((i * 3 + workerData) % 17), N = 2;
    const xs = rnd(N * C * S * S), ws = rnd(O * C * 9), gs = rnd(N * O * S * S);
    const x = addon.fromFloat32(xs, [N, C, S, S]), w = addon.fromFloat32(ws, [O, C, 3, 3]), gy = addon.fromFloat32(gs, [N, O, S, S]);
    const y = addon.conv2dForward(x, w, null, [1, 1], [1, 1], [1, 1], 1);
    const [gx, gw] = addon.conv2dBackward(x, w, [1, 1], [1, 1], [1, 1], 1, gy, true, true, false);
    // checks: one output element, one input-gradient element, one weight-gradient element (float64)
    const n = i % N, o = i % O, c = i % C, p = (i * 7) % S, q = (i * 5) % S, u = i % 3, v = (i >> 2) % 3;
    const X = (nn, cc, a, b) => (a < 0 || b < 0 || a >= S || b >= S ? 0 : xs[((nn * C + cc) * S + a) * S + b]);
    const Wt = (oo, cc, a, b) => ws[((oo * C + cc) * 3 + a) * 3 + b];
    const Gy = (nn, oo, a, b) => (a < 0 || b < 0 || a >= S || b >= S ? 0 : gs[((nn * O + oo) * S + a) * S + b]);
    let ry = 0, rgx = 0, rgw = 0;
    for (let cc = 0; cc < C; cc++) for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) ry += Wt(o, cc, a, b) * X(n, cc, p + a - 1, q + b - 1);
    for (let oo = 0; oo < O; oo++) for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) rgx += Wt(oo, c, a, b) * Gy(n, oo, p - a + 1, q - b + 1);
    for (let nn = 0; nn < N; nn++) for (let a = 0; a < S; a++) for (let b = 0; b < S; b++) rgw += Gy(nn, o, a, b) * X(nn, c, a + u - 1, b + v - 1);
    const yv = y.toFloat32Array()[((n * O + o) * S + p) * S + q];
    const gxv = gx.toFloat32Array()[((n * C + c) * S + p) * S + q];
    const gwv = gw.toFloat32Array()[((o * C + c) * 3 + u) * 3 + v];
    worst = Math.max(worst, Math.abs(yv - ry), Math.abs(gxv - rgx), Math.abs(gwv - rgw));
    for (const h of [x, w, gy, y, gx, gw]) h.dispose();
  }
  parentPort.postMessage(worst);
}
`;

describe('worker_threads', () => {
  test('four workers running convolutions of many shapes at once: no crash, results right', () => {
    // (a file: a Worker runs its own script)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-workers-'));
    const file = path.join(dir, 'workers.js');
    fs.writeFileSync(file, script);
    let r;
    try {
      r = spawnSync(process.execPath, [file], { cwd: root, encoding: 'utf8', timeout: 170000 });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect({ status: r.status, signal: r.signal, stderr: r.status === 0 ? '' : r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(r.stdout).not.toContain('worker error');
    expect(line).toBeDefined();
    const { ok, worst } = JSON.parse((line as string).slice(7)) as { ok: number; worst: number };
    expect(ok).toBe(4);
    expect(worst).toBeLessThan(1e-4);
  }, 180000);
});
