// smoke.test.ts: the package loads, reports its backend, and round-trips a tensor.
import * as msgc from '../lib';

test('backend info names the CPU backend', () => {
  const info = msgc.backendInfo();
  expect(info.backend).toBe('cpu');
  expect(info.threads).toBeGreaterThanOrEqual(1);
});

test('tensor round trip keeps values and shape', () => {
  const data = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
  const t = msgc.tensor(data, [2, 3, 4]);
  expect(t.shape).toEqual([2, 3, 4]);
  expect(Array.from(t.toFloat32Array())).toEqual(Array.from(data));
  t.dispose();
  expect(t.isDisposed).toBe(true);
});
