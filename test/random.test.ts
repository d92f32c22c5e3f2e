// random.test.ts: msgc.rand against an independent Philox-4x32-10 (Salmon et al., SC'11: multipliers 0xD2511F53 and
// 0xCD9E8D57, Weyl keys 0x9E3779B9 and 0xBB67AE85, 10 rounds) written here with BigInt arithmetic. The native
// generator runs vectorized (a block of four values per SIMD lane, AVX-512 / AVX2 / baseline versions picked at
// load time) and splits large arrays over the threads; every value must still be the reference's bit for bit, so
// that a seed gives the same stream on every CPU and thread count (checkpoints resume exactly, training gates draw
// the same noise).
import * as msgc from '../lib';
import { setNativeEnv } from './helpers/testing';

const M32 = 0xffffffffn;

// the four 32-bit outputs of block `ctr` under key `key` (both 64-bit)
function philoxBlock(key: bigint, ctr: bigint): bigint[] {
  let c0 = ctr & M32, c1 = (ctr >> 32n) & M32, c2 = 0n, c3 = 0n;
  let k0 = key & M32, k1 = (key >> 32n) & M32;
  for (let r = 0; r < 10; r++) {
    const p0 = 0xd2511f53n * c0, p1 = 0xcd9e8d57n * c2;
    const n0 = ((p1 >> 32n) ^ c1 ^ k0) & M32;
    const n2 = ((p0 >> 32n) ^ c3 ^ k1) & M32;
    c1 = p1 & M32;
    c3 = p0 & M32;
    c0 = n0;
    c2 = n2;
    k0 = (k0 + 0x9e3779b9n) & M32;
    k1 = (k1 + 0xbb67ae85n) & M32;
  }
  return [c0, c1, c2, c3];
}

// element i of rand(n, seed, low, high): the top 24 bits of output i % 4 of block i / 4 as a float in [0, 1), then
// low + (high - low)·u in float32 arithmetic
function reference(seed: number, i: number, low: number, high: number): number {
  const v = philoxBlock(BigInt(seed), BigInt(Math.floor(i / 4)))[i % 4];
  const u = Number(v >> 8n) / 16777216;
  if (low === 0 && high === 1) return u;
  const lo = Math.fround(low), span = Math.fround(Math.fround(high) - lo);
  return Math.fround(lo + Math.fround(span * u));
}

describe('rand: the Philox-4x32-10 stream', () => {
  test.each([
    [1, 0, 1], [3, 0, 1], [4, 0, 1], [7, 0, 1], [4099, 0, 1], [37, -0.3, 0.7], [1030, -2.5, 1.25],
  ])('%i values in [%f, %f) equal the reference bit for bit', (n, low, high) => {
    for (const seed of [0, 12345, 2 ** 40 + 17]) {
      const t = msgc.rand([n], { seed, low, high });
      const got = t.toFloat32Array();
      t.dispose();
      for (let i = 0; i < n; i++) expect(got[i]).toBe(reference(seed, i, low, high));
    }
  });

  test.each([['the default', undefined], ['the generic (MSGC_PHILOX_GENERIC=1)', '1']])(
    'a large array (split over the threads; %s generator) equals the reference at spread indices', (_, generic) => {
      const n = 300001; // > 65536 values: the parallel path; not a multiple of 4: a partial last block
      setNativeEnv('MSGC_PHILOX_GENERIC', generic);
      let got: Float32Array;
      try {
        const t = msgc.rand([n], { seed: 987654321, low: -1, high: 3 });
        got = t.toFloat32Array();
        t.dispose();
      } finally {
        setNativeEnv('MSGC_PHILOX_GENERIC', undefined);
      }
      // every index of the first 16-block groups and the tail (the AVX-512 generator's transposes), then spread ones
      const idx = [4095, 4096, 4097, 65535, 65536, 150001, 299999, 300000];
      for (let i = 0; i < 200; i++) idx.push(i);
      for (let k = 0; k < 200; k++) idx.push(Math.floor((k * 1499.3) % n));
      for (const i of idx) expect(got![i]).toBe(reference(987654321, i, -1, 3));
    });
});
