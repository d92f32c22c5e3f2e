// smoke.test.ts: the package loads, reports its backend, and round-trips a tensor.
import * as msgc from '../lib';
import { setNativeEnv } from './helpers/testing';

test('backend info names the CPU backend', () => {
  const info = msgc.backendInfo();
  expect(info.backend).toBe('cpu');
  expect(info.threads).toBeGreaterThanOrEqual(1);
});

test('backend info names the gathered kernels this CPU runs (read independently from /proc/cpuinfo)', () => {
  const fs = require('fs') as typeof import('fs');
  if (process.platform !== 'linux' || process.arch !== 'x64' || !fs.existsSync('/proc/cpuinfo')) return;
  const flags = new Set((/^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/));
  const avx2 = flags.has('avx2') && flags.has('fma');
  expect(msgc.backendInfo().gatheredKernels).toBe(flags.has('avx512f') ? 'avx512' : avx2 ? 'avx2' : 'portable');
  try {
    setNativeEnv('MSGC_GATHER_ISA', 'avx2');
    expect(msgc.backendInfo().gatheredKernels).toBe(avx2 ? 'avx2' : 'portable');
    setNativeEnv('MSGC_GATHER_ISA', 'portable');
    expect(msgc.backendInfo().gatheredKernels).toBe('portable');
  } finally {
    setNativeEnv('MSGC_GATHER_ISA', undefined);
  }
});

test('tensor round trip keeps values and shape', () => {
  const data = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
  const t = msgc.tensor(data, [2, 3, 4]);
  expect(t.shape).toEqual([2, 3, 4]);
  expect(Array.from(t.toFloat32Array())).toEqual(Array.from(data));
  t.dispose();
  expect(t.isDisposed).toBe(true);
});
