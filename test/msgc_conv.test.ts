// msgc_conv.test.ts: F.msgcConv2d against a float64 reference, its three gradients against finite differences,
// and the identities of spec §2.5 (unit scale = dense conv, a closed head gives zeros). Each case runs under
// the three masked implementations: G batched head convolutions, one grouped convolution over the G-fold scaled
// input, and one conv per sample with the scales folded into the weights (MSGC_MASKED_IMPL forces one; normally
// the shape decides).
import * as msgc from '../lib';
import { closeness, gradCheck, numel, randomArray } from './helpers/gradcheck';
import { setNativeEnv } from './helpers/testing';
import { msgcConvAdjoint, msgcConvReference as msgcReference } from './helpers/references';

const { F } = msgc;


const startLive = msgc.liveTensorCount();

// The backward kernels' checks (the 1×1 and 3×3 blocks below): a masked MSGC conv with a k×k weight, its x, weight
// and scale gradients against the float64 adjoint. Binary gates (about half open) or real scales with zeros and
// ones; the last sample's first head closed and (with G > 1) the first sample's last head fully open; a dense op in
// front, so that x arrives in the layout a conv produces (nChw16c where oneDNN picks it). Seeds seed..seed+3.
interface KernelCase { N: number; C: number; H: number; W: number; O: number; G: number; real: boolean }
function expectAdjoint(c: KernelCase, k: number, stride: number, pad: number, seed: number): void {
  msgc.tidy(() => {
    const xs = [c.N, c.C, c.H, c.W];
    const ws = [c.O, c.C, k, k];
    const xv = randomArray(numel(xs), seed);
    const wv = randomArray(numel(ws), seed + 1);
    const sv = randomArray(c.N * c.G * c.C, seed + 2, -1, 1.5).map((v, i) => (c.real ? (i % 5 === 2 ? 0 : i % 7 === 3 ? 1 : v) : v > 0.25 ? 1 : 0));
    for (let ch = 0; ch < c.C; ch++) sv[(c.N - 1) * c.G * c.C + ch] = 0;
    if (c.G > 1) for (let ch = 0; ch < c.C; ch++) sv[(c.G - 1) * c.C + ch] = 1;
    const x0 = msgc.tensor(xv, xs, { requiresGrad: true });
    const x = F.mul(x0, 1);
    const w = msgc.tensor(wv, ws, { requiresGrad: true });
    const s = msgc.tensor(sv, [c.N, c.G, c.C], { requiresGrad: true });
    const y = F.msgcConv2d(x, w, s, { heads: c.G, stride, padding: pad, execution: 'masked' });
    const gy = randomArray(y.size, seed + 3);
    y.backward(msgc.tensor(gy, y.shape));
    const ref = msgcConvAdjoint(xv, xs, wv, ws, sv, c.G, stride, pad, gy);
    expect(closeness(x0.grad!.toFloat32Array(), ref.gx, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    expect(closeness(w.grad!.toFloat32Array(), ref.gw, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    expect(closeness(s.grad!.toFloat32Array(), ref.gs, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
  });
}

// Each subset of the three gradients (binary gates; stride 1) against the float64 adjoint.
function expectEachSubset(c: Omit<KernelCase, 'real'>, k: number, pad: number, seed: number): void {
  msgc.tidy(() => {
    const { N, C, H, W, O, G } = c;
    const xs = [N, C, H, W], ws = [O, C, k, k];
    const xv = randomArray(numel(xs), seed), wv = randomArray(numel(ws), seed + 1);
    const sv = randomArray(N * G * C, seed + 2).map((v) => (v > 0 ? 1 : 0));
    const gy = randomArray(N * O * H * W, seed + 3);
    const ref = msgcConvAdjoint(xv, xs, wv, ws, sv, G, 1, pad, gy);
    for (const [gx, gw, gs] of [[true, false, false], [false, true, false], [false, false, true], [true, false, true], [false, true, true]]) {
      const x = msgc.tensor(xv, xs, { requiresGrad: gx });
      const w = msgc.tensor(wv, ws, { requiresGrad: gw });
      const s = msgc.tensor(sv, [N, G, C], { requiresGrad: gs });
      F.msgcConv2d(x, w, s, { heads: G, padding: pad, execution: 'masked' }).backward(msgc.tensor(gy, [N, O, H, W]));
      if (gx) expect(closeness(x.grad!.toFloat32Array(), ref.gx, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      if (gw) expect(closeness(w.grad!.toFloat32Array(), ref.gw, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      if (gs) expect(closeness(s.grad!.toFloat32Array(), ref.gs, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    }
  });
}

describe.each(['batched', 'grouped', 'persample'])('masked implementation %s', (impl) => {
// (the 3×3 backward's own kernels, which precede the three where they apply, are tested below)
beforeAll(() => { setNativeEnv('MSGC_MASKED_IMPL', impl); setNativeEnv('MSGC_SPATIAL_BWD', '0'); });
afterAll(() => { setNativeEnv('MSGC_MASKED_IMPL', undefined); setNativeEnv('MSGC_SPATIAL_BWD', undefined); });

describe('msgcConv2d forward', () => {
  const cases = [
    { N: 2, C: 5, H: 6, W: 7, O: 8, k: 3, G: 4, stride: 1, pad: 1 },
    { N: 3, C: 4, H: 7, W: 7, O: 6, k: 3, G: 2, stride: 2, pad: 1 },
    { N: 1, C: 6, H: 5, W: 5, O: 4, k: 1, G: 4, stride: 1, pad: 0 },
    { N: 2, C: 3, H: 8, W: 6, O: 8, k: 5, G: 1, stride: 2, pad: 2 },
  ];
  test.each(cases)('matches the float64 reference %o', (c) => {
    msgc.tidy(() => {
      const xs = [c.N, c.C, c.H, c.W];
      const ws = [c.O, c.C, c.k, c.k];
      const x = randomArray(numel(xs), 1);
      const w = randomArray(numel(ws), 2);
      // gates 0/1 times an attention-like real scale
      const s = randomArray(c.N * c.G * c.C, 3, -1.5, 1.5).map((v, i) => (i % 3 === 0 ? 0 : v));
      const ref = msgcReference(x, xs, w, ws, s, c.G, c.stride, c.pad);
      // 'auto' (gathered here, no gradient recorded) and this describe's masked implementation
      for (const execution of ['auto', 'masked'] as const) {
        const y = F.msgcConv2d(msgc.tensor(x, xs), msgc.tensor(w, ws), msgc.tensor(s, [c.N, c.G, c.C]), { heads: c.G, stride: c.stride, padding: c.pad, execution });
        expect(closeness(y.toFloat32Array(), ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      }
    });
  });

  test('unit scale equals the dense convolution with the same weights', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * 8 * 6 * 6, 4), [2, 8, 6, 6]);
      const w = msgc.tensor(randomArray(8 * 8 * 9, 5), [8, 8, 3, 3]);
      const y = F.msgcConv2d(x, w, msgc.ones([2, 4, 8]), { heads: 4, padding: 1 });
      const dense = msgcReference(x.toFloat32Array(), [2, 8, 6, 6], w.toFloat32Array(), [8, 8, 3, 3], new Float32Array(2 * 8).fill(1), 1, 1, 1);
      expect(closeness(y.toFloat32Array(), dense, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      const viaConv = F.conv2d(x, w, null, { padding: 1 });
      expect(closeness(y.toFloat32Array(), viaConv.toFloat32Array(), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  });

  test('a head whose gates are all closed outputs zeros in its channels only', () => {
    msgc.tidy(() => {
      const s = new Float32Array(2 * 4 * 6).fill(1);
      for (let n = 0; n < 2; n++) for (let c = 0; c < 6; c++) s[(n * 4 + 2) * 6 + c] = 0; // head 2 closed
      const y = F.msgcConv2d(msgc.tensor(randomArray(2 * 6 * 5 * 5, 6), [2, 6, 5, 5]), msgc.tensor(randomArray(8 * 6 * 9, 7), [8, 6, 3, 3]),
        msgc.tensor(s, [2, 4, 6]), { heads: 4, padding: 1 }).toFloat32Array();
      for (let n = 0; n < 2; n++)
        for (let o = 0; o < 8; o++) {
          const block = Array.from(y.subarray((n * 8 + o) * 25, (n * 8 + o + 1) * 25));
          if (o === 4 || o === 5) expect(block.every((v) => v === 0)).toBe(true);
          else expect(block.some((v) => v !== 0)).toBe(true);
        }
    });
  });

  test('a blocked input whose channels do not fill the last block (24 of 32 lanes), narrow heads', () => {
    msgc.tidy(() => {
      const x0 = msgc.tensor(randomArray(3 * 8 * 7 * 7, 12), [3, 8, 7, 7]);
      const x = F.conv2d(x0, msgc.tensor(randomArray(24 * 8, 13), [24, 8, 1, 1]), null);
      const w = msgc.tensor(randomArray(24 * 24 * 9, 14), [24, 24, 3, 3]);
      const s = randomArray(3 * 2 * 24, 15).map((v, i) => (i % 4 === 1 ? 0 : v));
      const y = F.msgcConv2d(x, w, msgc.tensor(s, [3, 2, 24]), { heads: 2, padding: 1 });
      const ref = msgcReference(x.toFloat32Array(), [3, 24, 7, 7], w.toFloat32Array(), [24, 24, 3, 3], s, 2, 1, 1);
      expect(closeness(y.toFloat32Array(), ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  });

  test('accepts a blocked-layout input (the output of a conv)', () => {
    msgc.tidy(() => {
      const x0 = msgc.tensor(randomArray(2 * 16 * 6 * 6, 8), [2, 16, 6, 6]);
      const w0 = msgc.tensor(randomArray(16 * 16, 9), [16, 16, 1, 1]);
      const x = F.conv2d(x0, w0, null);
      const w = msgc.tensor(randomArray(8 * 16 * 9, 10), [8, 16, 3, 3]);
      const s = randomArray(2 * 4 * 16, 11);
      const y = F.msgcConv2d(x, w, msgc.tensor(s, [2, 4, 16]), { heads: 4, padding: 1 });
      const ref = msgcReference(x.toFloat32Array(), [2, 16, 6, 6], w.toFloat32Array(), [8, 16, 3, 3], s, 4, 1, 1);
      expect(closeness(y.toFloat32Array(), ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  });
});

describe('msgcConv2d backward', () => {
  test.each([
    { N: 2, C: 3, H: 5, W: 5, O: 4, k: 3, G: 2, stride: 1, pad: 1 },
    { N: 2, C: 4, H: 6, W: 5, O: 8, k: 3, G: 4, stride: 2, pad: 1 },
    { N: 3, C: 5, H: 4, W: 4, O: 4, k: 1, G: 4, stride: 1, pad: 0 },
    { N: 4, C: 16, H: 6, W: 6, O: 16, k: 3, G: 4, stride: 1, pad: 1 },
    { N: 3, C: 32, H: 5, W: 5, O: 16, k: 3, G: 2, stride: 2, pad: 1 },
    { N: 1, C: 6, H: 5, W: 6, O: 8, k: 3, G: 4, stride: 1, pad: 1 },
    { N: 3, C: 24, H: 5, W: 5, O: 24, k: 3, G: 2, stride: 1, pad: 1 },
  ])('x, weight and scale gradients match finite differences %o', (c) => {
    const xs = [c.N, c.C, c.H, c.W];
    const x = msgc.tensor(randomArray(numel(xs), 21), xs, { requiresGrad: true });
    const w = msgc.tensor(randomArray(c.O * c.C * c.k * c.k, 22), [c.O, c.C, c.k, c.k], { requiresGrad: true });
    const s = msgc.tensor(randomArray(c.N * c.G * c.C, 23, -1, 1.5), [c.N, c.G, c.C], { requiresGrad: true });
    const r = gradCheck(([a, b, d]) => F.msgcConv2d(a, b, d, { heads: c.G, stride: c.stride, padding: c.pad }), [x, w, s], { samples: 30 });
    expect(r.checked).toBeGreaterThan(60);
    for (const t of [x, w, s]) t.dispose();
  });

  // every gradient element against the float64 adjoint, at a tolerance finite differences cannot reach; shapes
  // whose heads have 4, 8, 16 and 32 outputs, channel counts that do not fill a 16-lane block, binary and real
  // scales with closed heads
  test.each([
    { N: 5, C: 24, H: 6, W: 6, O: 32, k: 3, G: 4, stride: 1, pad: 1 },
    { N: 4, C: 16, H: 7, W: 7, O: 16, k: 3, G: 4, stride: 2, pad: 1 },
    { N: 3, C: 32, H: 5, W: 5, O: 64, k: 1, G: 2, stride: 1, pad: 0 },
    { N: 2, C: 20, H: 6, W: 5, O: 16, k: 3, G: 1, stride: 1, pad: 1 },
    { N: 4, C: 48, H: 4, W: 4, O: 64, k: 3, G: 4, stride: 1, pad: 1 },
  ])('x, weight and scale gradients equal the float64 adjoint %o', (c) => {
    msgc.tidy(() => {
      const xs = [c.N, c.C, c.H, c.W];
      const ws = [c.O, c.C, c.k, c.k];
      const xv = randomArray(numel(xs), 31);
      const wv = randomArray(numel(ws), 32);
      const sv = randomArray(c.N * c.G * c.C, 33, -1, 1.5).map((v, i) => (i % 5 === 2 ? 0 : i % 7 === 3 ? 1 : v));
      for (let ch = 0; ch < c.C; ch++) sv[(c.N - 1) * c.G * c.C + ch] = 0; // the last sample's first head closed
      const x = msgc.tensor(xv, xs, { requiresGrad: true });
      const w = msgc.tensor(wv, ws, { requiresGrad: true });
      const s = msgc.tensor(sv, [c.N, c.G, c.C], { requiresGrad: true });
      const y = F.msgcConv2d(x, w, s, { heads: c.G, stride: c.stride, padding: c.pad, execution: 'masked' });
      const gy = randomArray(y.size, 34);
      y.backward(msgc.tensor(gy, y.shape));
      const ref = msgcConvAdjoint(xv, xs, wv, ws, sv, c.G, c.stride, c.pad, gy);
      expect(closeness(x.grad!.toFloat32Array(), ref.gx, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(w.grad!.toFloat32Array(), ref.gw, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(s.grad!.toFloat32Array(), ref.gs, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  });
});
});

// The 3×3 backward's own AVX-512 kernels (native/cpu/msgc_spatial_bwd.cc: gx and gs per sample through the heads'
// data gradients, gW over the channels a block's heads selected), forced with MSGC_SPATIAL_BWD=1 wherever they can
// run (AVX-512, 3×3 stride 1 padding 1, batch >= 2, C and O multiples of 16; elsewhere the masked paths run and the
// same references apply). Heads of 4, 8, 12 (straddling blocks of 16), 16 and 32 outputs; rows of 1-19 pixels (tiles
// of 1-8, uneven chunks); one and several blocks of channels; more samples than threads and as many; stride 1, and 2 with one head. Heads of 4 and 8
// outputs on up to 32 channels take the packed weight gradient (their channels in the lanes, from one or two blocks of
// x); the same cases run with it off (MSGC_SPATIAL_PACKED=0: the union of the block's heads), and with the AVX2 kernels
// (MSGC_GATHER_ISA=avx2: 8 lanes on nChw8c, the union for narrow heads; they run on this AVX-512 CPU too).
describe.each(['packed', 'union', 'avx2'])('msgcConv2d 3×3 backward kernels (%s)', (mode) => {
  beforeAll(() => {
    setNativeEnv('MSGC_SPATIAL_BWD', '1');
    setNativeEnv('MSGC_SPATIAL_PACKED', mode === 'union' ? '0' : undefined);
    setNativeEnv('MSGC_GATHER_ISA', mode === 'avx2' ? 'avx2' : undefined);
  });
  afterAll(() => { setNativeEnv('MSGC_SPATIAL_BWD', undefined); setNativeEnv('MSGC_SPATIAL_PACKED', undefined); setNativeEnv('MSGC_GATHER_ISA', undefined); });
  test.each([
    { N: 3, C: 32, H: 4, W: 5, O: 16, G: 4, real: true },
    { N: 3, C: 16, H: 6, W: 6, O: 16, G: 4, real: false },
    { N: 4, C: 32, H: 5, W: 9, O: 32, G: 4, real: true },
    { N: 2, C: 48, H: 4, W: 4, O: 64, G: 4, real: false },
    { N: 5, C: 16, H: 3, W: 19, O: 48, G: 4, real: true },
    { N: 2, C: 32, H: 7, W: 1, O: 64, G: 2, real: true },
    { N: 3, C: 64, H: 1, W: 8, O: 16, G: 1, real: false },
    { N: 2, C: 16, H: 8, W: 14, O: 32, G: 8, real: true },
    // stride 2, one head (oneDNN's data gradient folded per sample, the union weight gradient from a bordered x):
    // even and odd sizes; with more heads the masked paths run
    { N: 3, C: 16, H: 8, W: 8, O: 32, G: 1, real: false, stride: 2 },
    { N: 2, C: 32, H: 7, W: 9, O: 16, G: 1, real: true, stride: 2 },
    { N: 4, C: 16, H: 5, W: 3, O: 16, G: 1, real: true, stride: 2 },
    { N: 2, C: 32, H: 6, W: 6, O: 32, G: 4, real: true, stride: 2 },
    { N: 2, C: 48, H: 6, W: 17, O: 48, G: 1, real: false, stride: 2 },
    // channels in multiples of 8 (the AVX2 kernels' nChw8c; with AVX-512 the masked paths run): heads of 8 and 4
    { N: 3, C: 24, H: 5, W: 7, O: 40, G: 5, real: true },
    { N: 2, C: 8, H: 6, W: 4, O: 8, G: 2, real: false },
    { N: 3, C: 40, H: 7, W: 5, O: 24, G: 1, real: true, stride: 2 },
  ])('x, weight and scale gradients equal the float64 adjoint %o', (c) => {
    expectAdjoint(c, 3, c.stride ?? 1, 1, 61);
  });

  test('each subset of the gradients', () => {
    expectEachSubset({ N: 3, C: 32, H: 5, W: 6, O: 32, G: 4 }, 3, 1, 71);
  });
});

describe('msgcConv2d bad input', () => {
  test('shape and argument errors throw with the op name', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 4, 5, 5]);
      const w = msgc.zeros([8, 4, 3, 3]);
      const s = msgc.zeros([2, 4, 4]);
      expect(() => F.msgcConv2d(x, w, s, { heads: 3 })).toThrow(/msgcConv2d: outChannels \(8\) must be divisible by heads \(3\)/);
      expect(() => F.msgcConv2d(x, msgc.zeros([8, 2, 3, 3]), s, { heads: 4 })).toThrow(/msgcConv2d: weight has shape/);
      expect(() => F.msgcConv2d(x, w, msgc.zeros([2, 2, 4]), { heads: 4 })).toThrow(/msgcConv2d: scale has shape \[2, 2, 4\], expected \[2, 4, 4\]/);
      expect(() => F.msgcConv2d(x, w, s, { heads: 0 })).toThrow(/msgcConv2d: options.heads/);
      expect(() => F.msgcConv2d(msgc.zeros([2, 4, 2, 2]), w, s, { heads: 4 })).toThrow(/msgcConv2d: the kernel/);
      expect(() => F.msgcConv2d(x, w, s, { heads: 4, stride: 0 })).toThrow(/msgcConv2d: stride/);
      expect(() => F.msgcConv2d(x, null as unknown as msgc.Tensor, s, { heads: 4 })).toThrow(/msgcConv2d: weight must be a Tensor/);
      const d = msgc.zeros([2, 4, 4]);
      d.dispose();
      expect(() => F.msgcConv2d(x, w, d, { heads: 4 })).toThrow(/disposed/);
    });
  });

  test('the native boundary rejects garbage without crashing', () => {
    const { native } = require('../lib/native');
    const x = msgc.zeros([2, 4, 5, 5]);
    const bad: unknown[][] = [[], [1, 2, 3], [x.h, x.h, x.h, [1, 1], [0, 0], 4], ['a', 'b', 'c', 'd', 'e', 'f'], [x.h, undefined, null, [1], [0], NaN]];
    for (const args of bad) expect(() => native.msgcConv2dForward(...args)).toThrow(/msgcConv2d/);
    expect(() => native.msgcConv2dBackward(x.h)).toThrow(/msgcConv2d backward/);
    expect(() => native.gateForward(x.h, -1, true, 0)).toThrow(/gate: temperature/);
    const one = msgc.zeros([1]);
    expect(() => native.gateBackward(x.h, one.h, 1)).toThrow(/gate backward: gradOutput/);
    x.dispose();
    one.dispose();
  });
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});

// The 1×1 backward's own AVX-512 kernels (native/cpu/msgc_pointwise_bwd.cc: gx and gs per sample through the
// heads' data gradients, gW over the selected channels only), forced with MSGC_POINTWISE_BWD=1 wherever they can run
// (AVX-512, 1×1 stride 1, batch >= 2, C and O multiples of 16; elsewhere the masked paths run and the same
// references apply). Heads of 4 to 832 outputs, so that blocks of 16 outputs hold one head, part of two or four
// heads; channel counts of 1-5 blocks of 16 (tiles of 1-4 blocks); pixel counts that split into uneven chunks.
describe('msgcConv2d 1×1 backward kernels', () => {
  beforeAll(() => { setNativeEnv('MSGC_POINTWISE_BWD', '1'); });
  afterAll(() => { setNativeEnv('MSGC_POINTWISE_BWD', undefined); });
  test.each([
    { N: 3, C: 32, H: 7, W: 7, O: 64, G: 4, real: false },
    { N: 4, C: 48, H: 5, W: 3, O: 96, G: 4, real: true },
    { N: 2, C: 64, H: 4, W: 4, O: 160, G: 4, real: false },
    { N: 5, C: 80, H: 3, W: 3, O: 320, G: 4, real: true },
    { N: 2, C: 16, H: 1, W: 13, O: 16, G: 1, real: true },
    { N: 3, C: 32, H: 6, W: 6, O: 32, G: 8, real: false },
    { N: 2, C: 144, H: 2, W: 2, O: 48, G: 2, real: true },
    // three heads of 16 (the data gradient's all-heads tiles take 2-4 heads of up to 32 outputs)
    { N: 2, C: 32, H: 3, W: 3, O: 48, G: 3, real: true },
    // heads of 64 and 128 outputs (4 blocks in one weight-gradient call; 8 as 5 + 3)
    { N: 2, C: 48, H: 2, W: 3, O: 128, G: 2, real: false },
    { N: 3, C: 32, H: 3, W: 5, O: 256, G: 2, real: true },
    // an accumulator slice past 512 KB (on 2 threads): the weight gradient's items split the outputs in two groups,
    // mid-head
    { N: 2, C: 64, H: 1, W: 2, O: 4160, G: 5, real: true },
  ])('x, weight and scale gradients equal the float64 adjoint %o', (c) => {
    expectAdjoint(c, 1, 1, 0, 41);
  });

  test('each subset of the gradients', () => {
    expectEachSubset({ N: 3, C: 48, H: 5, W: 4, O: 96, G: 4 }, 1, 0, 51);
  });
});

// F.msgcConv2d's inputActivation: msgcConv2d(act(a)) as one node whose backward takes the input gradient through the
// activation (ga = gx · act'(a)) as its paths write gx: the 1×1 kernels of our own in the last head's epilogue (forced
// with MSGC_POINTWISE_BWD=1; with one head, the first head's) and the 3×3 ones (MSGC_SPATIAL_BWD=1; AVX-512 and AVX2)
// likewise, the per-sample path right after each sample's data gradient, and a pass over gx on every other path (the
// batched and grouped masked paths, a batch of one). Against float64: the forward of act(a), the adjoint of the MSGC conv at act(a), and act' from a; a spans
// [-4, 9] so that both of ReLU6's clamps are hit.
describe('msgcConv2d with an input activation', () => {
  function expectThroughAct(c: KernelCase & { k: number; act: 'relu' | 'relu6' }, seed: number): void {
    msgc.tidy(() => {
      const pad = (c.k - 1) >> 1;
      const xs = [c.N, c.C, c.H, c.W], ws = [c.O, c.C, c.k, c.k];
      const av = randomArray(numel(xs), seed, -4, 9);
      const hi = c.act === 'relu6' ? 6 : Infinity;
      const xv = av.map((v) => Math.min(Math.max(v, 0), hi));
      const wv = randomArray(numel(ws), seed + 1);
      const sv = randomArray(c.N * c.G * c.C, seed + 2, -1, 1.5).map((v, i) => (c.real ? (i % 5 === 2 ? 0 : i % 7 === 3 ? 1 : v) : v > 0.25 ? 1 : 0));
      for (let ch = 0; ch < c.C; ch++) sv[(c.N - 1) * c.G * c.C + ch] = 0;
      const a0 = msgc.tensor(av, xs, { requiresGrad: true });
      const a = F.mul(a0, 1);  // (the layout a conv produces, as in the blocks above)
      const w = msgc.tensor(wv, ws, { requiresGrad: true });
      const s = msgc.tensor(sv, [c.N, c.G, c.C], { requiresGrad: true });
      const y = F.msgcConv2d(a, w, s, { heads: c.G, padding: pad, execution: 'masked', inputActivation: c.act });
      expect(closeness(y.toFloat32Array(), msgcReference(xv, xs, wv, ws, sv, c.G, 1, pad), 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      const gy = randomArray(y.size, seed + 3);
      y.backward(msgc.tensor(gy, y.shape));
      const ref = msgcConvAdjoint(xv, xs, wv, ws, sv, c.G, 1, pad, gy);
      const ga = ref.gx.map((g, i) => (av[i] > 0 && av[i] < hi ? g : 0));
      expect(closeness(a0.grad!.toFloat32Array(), ga, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(w.grad!.toFloat32Array(), ref.gw, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(closeness(s.grad!.toFloat32Array(), ref.gs, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  }
  const onePointwise = [
    { N: 3, C: 32, H: 7, W: 7, O: 64, G: 4, real: false, k: 1, act: 'relu6' as const },
    { N: 2, C: 48, H: 5, W: 3, O: 96, G: 4, real: true, k: 1, act: 'relu' as const },
    { N: 2, C: 16, H: 1, W: 13, O: 16, G: 1, real: true, k: 1, act: 'relu6' as const },
    { N: 3, C: 80, H: 3, W: 3, O: 32, G: 2, real: false, k: 1, act: 'relu6' as const },
  ];
  describe('the 1×1 kernels', () => {
    beforeAll(() => { setNativeEnv('MSGC_POINTWISE_BWD', '1'); });
    afterAll(() => { setNativeEnv('MSGC_POINTWISE_BWD', undefined); });
    test.each(onePointwise)('%o', (c) => { expectThroughAct(c, 61); });
  });
  describe.each(['persample', 'batched', 'grouped'])('the masked path %s', (impl) => {
    beforeAll(() => { setNativeEnv('MSGC_MASKED_IMPL', impl); setNativeEnv('MSGC_POINTWISE_BWD', '0'); setNativeEnv('MSGC_SPATIAL_BWD', '0'); });
    afterAll(() => { setNativeEnv('MSGC_MASKED_IMPL', undefined); setNativeEnv('MSGC_POINTWISE_BWD', undefined); setNativeEnv('MSGC_SPATIAL_BWD', undefined); });
    test.each([
      ...onePointwise,
      // heads of 6 (MobileNetV2's 24-output projections), a 3×3 conv, channels that do not fill a block, one sample
      { N: 3, C: 48, H: 6, W: 6, O: 24, G: 4, real: false, k: 1, act: 'relu6' as const },
      { N: 2, C: 16, H: 5, W: 6, O: 16, G: 4, real: true, k: 3, act: 'relu6' as const },
      { N: 2, C: 20, H: 4, W: 4, O: 8, G: 2, real: false, k: 3, act: 'relu' as const },
      { N: 1, C: 32, H: 5, W: 5, O: 32, G: 4, real: false, k: 1, act: 'relu6' as const },
    ])('%o', (c) => { expectThroughAct(c, 71); });
  });
  describe.each(['avx512', 'avx2'])('the 3×3 kernels (%s)', (isa) => {
    beforeAll(() => { setNativeEnv('MSGC_SPATIAL_BWD', '1'); setNativeEnv('MSGC_GATHER_ISA', isa === 'avx2' ? 'avx2' : undefined); });
    afterAll(() => { setNativeEnv('MSGC_SPATIAL_BWD', undefined); setNativeEnv('MSGC_GATHER_ISA', undefined); });
    test.each([
      { N: 3, C: 32, H: 4, W: 5, O: 16, G: 4, real: true, k: 3, act: 'relu6' as const },
      { N: 2, C: 16, H: 6, W: 6, O: 32, G: 2, real: false, k: 3, act: 'relu' as const },
      { N: 2, C: 16, H: 5, W: 7, O: 16, G: 1, real: true, k: 3, act: 'relu' as const },
    ])('%o', (c) => { expectThroughAct(c, 81); });
  });

  test('without autograd it is the composition, and no activation node is recorded', () => {
    msgc.tidy(() => {
      const a = msgc.randn([2, 16, 5, 5], { seed: 3, std: 4 });
      const w = msgc.randn([16, 16, 1, 1], { seed: 4 });
      const s = msgc.tensor(randomArray(2 * 4 * 16, 5).map((v) => (v > 0 ? 1 : 0)), [2, 4, 16]);
      const want = F.msgcConv2d(F.relu6(a), w, s, { heads: 4 }).toFloat32Array();
      expect(closeness(msgc.noGrad(() => F.msgcConv2d(a, w, s, { heads: 4, inputActivation: 'relu6' })).toFloat32Array(), want, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      a.requiresGrad = true;
      const y = F.msgcConv2d(a, w, s, { heads: 4, inputActivation: 'relu6' });
      expect(closeness(y.toFloat32Array(), want, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      expect(y._node!.name).toBe('msgcConv2d');
      expect(y._node!.inputs[0]).toBe(a);
    });
  });

  test('bad values and ops that do not take it throw', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([2, 16, 5, 5]), w = msgc.zeros([16, 16, 1, 1]), s = msgc.zeros([2, 4, 16]);
      expect(() => F.msgcConv2d(x, w, s, { heads: 4, inputActivation: 'gelu' as 'relu' })).toThrow(/msgcConv2d: options.inputActivation must be 'relu', 'relu6' or null, got gelu/);
      const bn = { runningMean: msgc.zeros([16]), runningVar: msgc.ones([16]), weight: null, bias: null, eps: 1e-5 };
      expect(() => F.msgcConv2dBnAct(x, w, s, bn, { heads: 4, inputActivation: 'relu6' })).toThrow(/msgcConv2dBnAct: options.inputActivation is taken by F.msgcConv2d only/);
      const { native } = require('../lib/native');
      const g = msgc.zeros([2, 16, 5, 5]);
      expect(() => native.msgcConv2dBackward(x.h, w.h, s.h, [1, 1], [0, 0], 4, g.h, true, true, true, 2)).toThrow(/msgcConv2d backward: inputAct must be in \[-1, 1\], got 2/);
    });
  });
});
