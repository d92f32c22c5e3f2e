// cuda.test.ts: the CUDA backend. Without a GPU (or in a CPU-only build) the first block checks that every way onto
// the GPU fails with a clear Error and leaks nothing; the GPU blocks are then skipped, their name saying why. With
// a GPU they run: copies, memory accounting, the device rules at the native boundary, and every op the GPU runs
// (cuDNN's conv2d, the eval BatchNorm, the MSGC convolution masked and gathered with its fused epilogue) against
// float64 references written here, as the CPU tests do.
import * as msgc from '../lib';
import { native } from '../lib/native';
import { deferredGateStatReads } from '../lib/nn/msgc/tally';
import { closeness, numel, randomArray } from './helpers/gradcheck';
import { gatesAtHalfDensity, relativeMaxDiff } from './helpers/models';
import { msgcConvReference } from './helpers/references';
import { expectError, setNativeEnv } from './helpers/testing';

const { F } = msgc;
const info = msgc.cuda.info();
const gpu = info.available;
const describeGpu = gpu ? describe : describe.skip;
const gpuTitle = (what: string) => (gpu ? `cuda: ${what} (${info.name})` : `cuda: ${what} (skipped: ${info.reason})`);

/** float64 conv2d: x [N, C, H, W], w [K, C/groups, kh, kw], optional bias; also Σ|terms| per output (tolerances) */
function convReference(x: Float32Array, xs: number[], w: Float32Array, ws: number[], b: Float32Array | null,
  stride: [number, number], pad: [number, number], dil: [number, number], groups: number): { y: Float64Array; mag: Float64Array; ys: number[] } {
  const [N, C, H, W] = xs;
  const [K, Cg, kh, kw] = ws;
  const OH = Math.floor((H + 2 * pad[0] - dil[0] * (kh - 1) - 1) / stride[0]) + 1;
  const OW = Math.floor((W + 2 * pad[1] - dil[1] * (kw - 1) - 1) / stride[1]) + 1;
  const y = new Float64Array(N * K * OH * OW);
  const mag = new Float64Array(y.length);
  const Kg = K / groups;
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const g = Math.floor(k / Kg);
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          let s = b ? b[k] : 0;
          let m = b ? Math.abs(b[k]) : 0;
          for (let c = 0; c < Cg; c++)
            for (let i = 0; i < kh; i++) {
              const ih = oh * stride[0] - pad[0] + i * dil[0];
              if (ih < 0 || ih >= H) continue;
              for (let j = 0; j < kw; j++) {
                const iw = ow * stride[1] - pad[1] + j * dil[1];
                if (iw < 0 || iw >= W) continue;
                const t = w[((k * Cg + c) * kh + i) * kw + j] * x[((n * C + g * Cg + c) * H + ih) * W + iw];
                s += t;
                m += Math.abs(t);
              }
            }
          const at = ((n * K + k) * OH + oh) * OW + ow;
          y[at] = s;
          mag[at] = m;
        }
    }
  return { y, mag, ys: [N, K, OH, OW] };
}

/** the worst |a − ref| / (1e-6 + tol·mag) (≤ 1 passes): float32 sums of `mag`-sized terms */
function worstError(a: Float32Array, ref: Float64Array, mag: ArrayLike<number>, tol = 2e-5): number {
  expect(a.length).toBe(ref.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - ref[i]) / (1e-6 + tol * mag[i]));
  return worst;
}

/** float64 act(BN_eval(v) + residual) over [N, C, P], in place */
function bnActReference(v: Float64Array, N: number, C: number, P: number, mean: Float32Array, variance: Float32Array,
  gamma: Float32Array, beta: Float32Array, eps: number, act: 'relu' | 'relu6' | null, residual: Float32Array | null): Float64Array {
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      const mul = gamma[c] / Math.sqrt(variance[c] + eps);
      for (let p = 0; p < P; p++) {
        const i = (n * C + c) * P + p;
        let t = (v[i] - mean[c]) * mul + beta[c] + (residual ? residual[i] : 0);
        if (act === 'relu') t = Math.max(t, 0);
        if (act === 'relu6') t = Math.min(Math.max(t, 0), 6);
        v[i] = t;
      }
    }
  return v;
}

/**
 * bench/models.js's helper for untrained models: every gate head's last conv gets weight 0 and bias ±1 (+1 for a
 * seeded half of its outputs), so that gates keep half their channels, with logits far from the threshold (the
 * same gates on every backend).
 */

/** scales [N, G, C]: per head a pattern (closed head, all open, random gates) times attention-like values */
function mixedScales(N: number, G: number, C: number, seed: number): Float32Array {
  const att = randomArray(N * G * C, seed, 0.25, 1.75);
  const coin = randomArray(N * G * C, seed + 1);
  const s = new Float32Array(N * G * C);
  for (let n = 0; n < N; n++)
    for (let g = 0; g < G; g++) {
      const kind = (n + g) % 4;  // 0: closed, 1: fully open, 2: ~half, 3: a single channel
      for (let c = 0; c < C; c++) {
        const i = (n * G + g) * C + c;
        const open = kind === 1 || (kind === 2 && coin[i] > 0) || (kind === 3 && c === (n * 7 + g) % C);
        s[i] = open ? att[i] : 0;
      }
    }
  return s;
}

// MSGC conv shapes: heads of 3 to 70 outputs (the kernel's 16-, 32- and 64-channel tiles, partial ones too), 1-289
// output pixels, 1×1 to 5×5 kernels, strides 1 and 2
const msgcCases = [
  { N: 3, C: 13, H: 9, W: 9, O: 12, k: 3, G: 3, stride: 1, pad: 1 },
  { N: 2, C: 40, H: 7, W: 7, O: 140, k: 3, G: 2, stride: 1, pad: 1 },
  { N: 1, C: 33, H: 15, W: 15, O: 80, k: 1, G: 4, stride: 2, pad: 0 },
  { N: 2, C: 24, H: 17, W: 17, O: 64, k: 3, G: 2, stride: 1, pad: 1 },
  { N: 2, C: 9, H: 12, W: 10, O: 8, k: 5, G: 4, stride: 2, pad: 2 },
  { N: 5, C: 70, H: 1, W: 1, O: 36, k: 1, G: 4, stride: 1, pad: 0 },
];

/**
 * A gate head's eval pass (native squeezeHeadEval: 1×1 conv, BN, ReLU, 1×1 conv, optionally the threshold) on
 * tensors of `device` against float64; with `withGamma` false, BN without affine parameters. Gates are compared
 * where the float64 logit is not within 1e-4 of 0 (there float orders may differ).
 */
function checkGateHead(device: 'cpu' | 'cuda', withGamma: boolean): void {
  const N = 3, Cc = 40, B = 7, G = 4, C = 33, K = G * C;
  const ctx = randomArray(N * Cc, 101), w1 = randomArray(B * Cc, 102), mean = randomArray(B, 103), vr = randomArray(B, 104, 0.3, 2);
  const gamma = randomArray(B, 105, 0.5, 2), beta = randomArray(B, 106), w2 = randomArray(K * B, 107), b2 = randomArray(K, 108);
  const eps = 1e-5;
  const logits = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    const h = new Float64Array(B);
    for (let b = 0; b < B; b++) {
      let acc = 0;
      for (let j = 0; j < Cc; j++) acc += ctx[n * Cc + j] * w1[b * Cc + j];
      const sc = (withGamma ? gamma[b] : 1) / Math.sqrt(vr[b] + eps);
      h[b] = Math.max(0, acc * sc + ((withGamma ? beta[b] : 0) - mean[b] * sc));
    }
    for (let k = 0; k < K; k++) {
      let acc = b2[k];
      for (let b = 0; b < B; b++) acc += h[b] * w2[k * B + b];
      logits[n * K + k] = acc;
    }
  }
  msgc.tidy(() => {
    const t = (v: Float32Array, shape: number[]) => msgc.tensor(v, shape, { device }).h;
    const args = [t(ctx, [N, Cc, 1, 1]), t(w1, [B, Cc, 1, 1]), t(mean, [B]), t(vr, [B]), withGamma ? t(gamma, [B]) : null,
      withGamma ? t(beta, [B]) : null, eps, t(w2, [K, B, 1, 1]), t(b2, [K])] as const;
    const z = new msgc.Tensor(native.squeezeHeadEval(...args, false, G)).toFloat32Array();
    expect(closeness(z, logits, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    const m = new msgc.Tensor(native.squeezeHeadEval(...args, true, G, false)).toFloat32Array();
    let compared = 0;
    for (let i = 0; i < N * K; i++) {
      if (Math.abs(logits[i]) < 1e-4) continue;
      expect(m[i]).toBe(logits[i] >= 0 ? 1 : 0);
      compared++;
    }
    expect(compared).toBeGreaterThan(N * K * 0.9);
  });
}

describe(gpu ? 'cuda: available' : 'cuda: unavailable here', () => {
  test('backendInfo and cuda.info agree and say why not', () => {
    const b = msgc.backendInfo();
    expect(b.cuda.available).toBe(gpu);
    expect(b.devices).toEqual(gpu ? ['cpu', 'cuda'] : ['cpu']);
    if (!gpu) expect(info.reason.length).toBeGreaterThan(10);
    else expect(info.compiled).toBe(true);
  });

  (gpu ? test.skip : test)('every way onto the GPU throws a clear Error and leaks nothing', () => {
    const live = msgc.liveTensorCount();
    const x = msgc.tensor([1, 2, 3], [3]);
    expectError(() => x.to('cuda'), /cuda/);
    expectError(() => x.cuda(), /cuda/);
    expectError(() => msgc.zeros([2, 2], { device: 'cuda' }), /cuda/);
    expectError(() => msgc.randn([2, 2], { device: 'cuda', seed: 1 }), /cuda/);
    expectError(() => msgc.cuda.synchronize(), /cuda/);
    expectError(() => x.to('gpu' as 'cuda'), /'cpu' or 'cuda'/);
    expect(x.to('cpu')).toBe(x);
    x.dispose();
    expect(msgc.liveTensorCount()).toBe(live);
  });
});

describeGpu(gpuTitle('tensors, copies and the device rules'), () => {
  test('round trips are exact; item, assign, clone and reshape work on the GPU', () => {
    const live = msgc.liveTensorCount();
    const v = randomArray(1000, 5, -3, 3);
    const x = msgc.tensor(v, [10, 100]);
    const g = x.to('cuda');
    expect(g.device).toBe('cuda');
    expect(g.to('cuda')).toBe(g);
    expect(Array.from(g.toFloat32Array())).toEqual(Array.from(v));
    const back = g.cpu();
    expect(back.device).toBe('cpu');
    expect(Array.from(back.toFloat32Array())).toEqual(Array.from(v));
    const one = msgc.tensor([4.5], [1], { device: 'cuda' });
    expect(one.item()).toBe(4.5);
    const w = randomArray(1000, 6);
    g.assign(w);
    expect(Array.from(g.toFloat32Array())).toEqual(Array.from(w));
    const c = g.clone();
    g.assign(v);
    expect(Array.from(c.toFloat32Array())).toEqual(Array.from(w));
    // concat along channels: [10, 100] | [10, 100] | [10, 100] -> [10, 300]
    const cat = F.concat([g, c, g], 1);
    expect(cat.shape).toEqual([10, 300]);
    const cv = cat.toFloat32Array();
    for (let i = 0; i < 10; i++)
      for (let j = 0; j < 300; j++) expect(cv[i * 300 + j]).toBe(j >= 100 && j < 200 ? w[i * 100 + j - 100] : v[i * 100 + (j % 100)]);
    cat.dispose();
    const r = F.reshape(g, [100, 10]);
    expect(r.device).toBe('cuda');
    expect(Array.from(r.toFloat32Array())).toEqual(Array.from(v));
    // the same seed gives the same values on both devices
    msgc.tidy(() => {
      expect(Array.from(msgc.randn([64], { seed: 9, device: 'cuda' }).toFloat32Array())).toEqual(Array.from(msgc.randn([64], { seed: 9 }).toFloat32Array()));
      expect(Array.from(msgc.full([5], 2.5, { device: 'cuda' }).toFloat32Array())).toEqual([2.5, 2.5, 2.5, 2.5, 2.5]);
    });
    for (const t of [x, g, back, one, c, r]) t.dispose();
    expect(msgc.liveTensorCount()).toBe(live);
  });

  test('disposing returns device memory to the cache; emptyCache returns it to the driver', () => {
    msgc.cuda.synchronize();
    const before = msgc.memoryStats().cudaLiveBytes;
    const t = msgc.zeros([1024, 1024], { device: 'cuda' });
    expect(msgc.memoryStats().cudaLiveBytes - before).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    t.dispose();
    expect(msgc.memoryStats().cudaLiveBytes).toBe(before);
    expect(msgc.memoryStats().cudaCachedBytes).toBeGreaterThan(0);
    msgc.emptyCache();
    expect(msgc.memoryStats().cudaCachedBytes).toBe(0);
  });

  test('a CPU-only op given a GPU tensor throws instead of reading device memory; devices do not mix', () => {
    msgc.tidy(() => {
      const g = msgc.randn([2, 3, 4, 4], { seed: 1, device: 'cuda' });
      // (sum and cross-entropy have no GPU kernel yet; the forward ops the models use do)
      expectError(() => F.sum(g), /is on cuda, but this op runs on the CPU only/);
      expectError(() => F.crossEntropy(F.reshape(g, [2, 48]), [0, 1]), /is on cuda, but this op runs on the CPU only/);
      expect(F.relu(g).device).toBe('cuda');
      const w = msgc.randn([4, 3, 3, 3], { seed: 2 });
      expectError(() => F.conv2d(g, w), /x is on cuda but weight is on cpu/);
      const s = msgc.ones([2, 2, 3]);
      expectError(() => F.msgcConv2d(g, w.cuda(), s, { heads: 2 }), /x is on cuda but scale is on cpu/);
      // and a later GPU op still works
      expect(F.conv2d(g, w.cuda()).shape).toEqual([2, 4, 2, 2]);
    });
  });
});

describeGpu(gpuTitle('conv2d (cuDNN, float32) against float64'), () => {
  const cases = [
    { N: 2, C: 3, H: 9, W: 8, K: 5, kh: 3, kw: 3, stride: [1, 1], pad: [1, 1], dil: [1, 1], groups: 1, bias: true },
    { N: 3, C: 16, H: 14, W: 14, K: 32, kh: 3, kw: 3, stride: [2, 2], pad: [1, 1], dil: [1, 1], groups: 1, bias: false },
    { N: 1, C: 64, H: 7, W: 7, K: 48, kh: 1, kw: 1, stride: [1, 1], pad: [0, 0], dil: [1, 1], groups: 1, bias: true },
    { N: 2, C: 8, H: 11, W: 13, K: 8, kh: 3, kw: 3, stride: [1, 2], pad: [2, 1], dil: [2, 1], groups: 8, bias: false },
    { N: 2, C: 12, H: 10, W: 10, K: 6, kh: 5, kw: 3, stride: [2, 1], pad: [2, 1], dil: [1, 1], groups: 3, bias: true },
  ];
  test.each(cases)('%o', (c) => {
    msgc.tidy(() => {
      const xs = [c.N, c.C, c.H, c.W];
      const ws = [c.K, c.C / c.groups, c.kh, c.kw];
      const x = randomArray(numel(xs), 11);
      const w = randomArray(numel(ws), 12);
      const b = c.bias ? randomArray(c.K, 13) : null;
      const ref = convReference(x, xs, w, ws, b, c.stride as [number, number], c.pad as [number, number], c.dil as [number, number], c.groups);
      const y = F.conv2d(msgc.tensor(x, xs, { device: 'cuda' }), msgc.tensor(w, ws, { device: 'cuda' }),
        b ? msgc.tensor(b, [c.K], { device: 'cuda' }) : null,
        { stride: c.stride as [number, number], padding: c.pad as [number, number], dilation: c.dil as [number, number], groups: c.groups });
      expect(y.device).toBe('cuda');
      expect(y.shape).toEqual(ref.ys);
      // (TF32 would miss this by ~100x: the strict float32 math is part of the contract)
      expect(worstError(y.toFloat32Array(), ref.y, ref.mag)).toBeLessThanOrEqual(1);
    });
  });

  test('conv2dBnAct (cuDNN conv, then BatchNorm and ReLU6 in one pass)', () => {
    msgc.tidy(() => {
      const xs = [2, 6, 9, 9], ws = [10, 6, 3, 3];
      const x = randomArray(numel(xs), 21, -2, 2), w = randomArray(numel(ws), 22);
      const mean = randomArray(10, 23), variance = randomArray(10, 24, 0.2, 2), gamma = randomArray(10, 25, 0.5, 3), beta = randomArray(10, 26);
      const ref = convReference(x, xs, w, ws, null, [1, 1], [1, 1], [1, 1], 1);
      bnActReference(ref.y, 2, 10, 81, mean, variance, gamma, beta, 1e-5, 'relu6', null);
      const d = (a: Float32Array, s: number[]) => msgc.tensor(a, s, { device: 'cuda' });
      const y = F.conv2dBnAct(d(x, xs), d(w, ws), null, { runningMean: d(mean, [10]), runningVar: d(variance, [10]), weight: d(gamma, [10]), bias: d(beta, [10]), eps: 1e-5 },
        { padding: 1, activation: 'relu6' });
      expect(closeness(y.toFloat32Array(), ref.y, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  });

  test('an empty batch gives an empty output', () => {
    msgc.tidy(() => {
      const y = F.conv2d(msgc.zeros([0, 3, 8, 8], { device: 'cuda' }), msgc.zeros([4, 3, 3, 3], { device: 'cuda' }), null, { padding: 1 });
      expect(y.shape).toEqual([0, 4, 8, 8]);
      expect(y.device).toBe('cuda');
    });
  });
});

/** A case of msgcCases with `execution` on `device` (the CPU: the emulated GPU kernels), against float64: the worst error (≤ 1 passes). */
function msgcOnDevice(c: typeof msgcCases[number], execution: 'masked' | 'gathered' | 'auto', seed: number, device: 'cpu' | 'cuda',
  stats?: { gathered: boolean }): number {
  const xs = [c.N, c.C, c.H, c.W], ws = [c.O, c.C, c.k, c.k], ss = [c.N, c.G, c.C];
  const x = randomArray(numel(xs), seed), w = randomArray(numel(ws), seed + 1), s = mixedScales(c.N, c.G, c.C, seed + 2);
  const ref = msgcConvReference(x, xs, w, ws, s, c.G, c.stride, c.pad);
  const mag = msgcConvReference(x.map(Math.abs), xs, w.map(Math.abs), ws, s.map(Math.abs), c.G, c.stride, c.pad);
  const d = (a: Float32Array, sh: number[]) => msgc.tensor(a, sh, { device });
  const y = F.msgcConv2d(d(x, xs), d(w, ws), d(s, ss), { heads: c.G, stride: c.stride, padding: c.pad, execution, stats });
  expect(y.device).toBe(device);
  expect(y.shape).toEqual([c.N, c.O, ...[c.H, c.W].map((v) => Math.floor((v + 2 * c.pad - c.k) / c.stride) + 1)]);
  return worstError(y.toFloat32Array(), ref, mag);
}

const msgcOnGpu = (c: typeof msgcCases[number], execution: 'masked' | 'gathered' | 'auto', seed: number, stats?: { gathered: boolean }) =>
  msgcOnDevice(c, execution, seed, 'cuda', stats);

/**
 * The kernel choices of the GPU's MSGC conv, on `device` (cuda, or cpu: emulated): both kernels on every case,
 * every tile of the tensor-core kernel, its TF32 switch.
 */
function kernelChoiceTests(device: 'cpu' | 'cuda'): void {
  const both = (c: typeof msgcCases[number], seed: number) => {
    for (const execution of ['masked', 'gathered'] as const) expect(msgcOnDevice(c, execution, seed, device)).toBeLessThanOrEqual(1);
  };
  // the tensor-core kernels (direct, the default on GPUs of compute capability 8.0+ and on the emulated GPU, and
  // WMMA, where direct's stages do not fit in shared memory: a 3-row map 1500 wide) and the FMA tile kernel (GPUs
  // before 8.0); MSGC_CUDA_KERNEL forces one
  test.each(['tile', 'mma', 'direct'])('MSGC_CUDA_KERNEL=%s: every case, masked and gathered', (kernel) => {
    setNativeEnv('MSGC_CUDA_KERNEL', kernel);
    try {
      for (const c of msgcCases) msgc.tidy(() => both(c, 37));
      msgc.tidy(() => both({ N: 1, C: 5, H: 3, W: 1500, O: 8, k: 3, G: 2, stride: 1, pad: 1 }, 39));
    } finally {
      setNativeEnv('MSGC_CUDA_KERNEL', undefined);
    }
  });

  // every tile of the tensor-core kernels: 16, 32 and 64 output channels (heads of 16, 40 and 64) × 32 to 256
  // pixels (output maps of 30, 120 and 256 pixels: msgcMmaPixels picks 32, 64-128 and 64-256, msgcDirectPixels
  // 64, 128 and 128-256), split-K 1 and 3
  test.each(['mma', 'direct'])('MSGC_CUDA_KERNEL=%s: every tile shape, split-K 1 and 3', (kernel) => {
    setNativeEnv('MSGC_CUDA_KERNEL', kernel);
    try {
      for (const splits of ['1', '3']) {
        setNativeEnv('MSGC_CUDA_SPLITK', splits);
        for (const og of [16, 40, 64])
          for (const [H, W] of [[5, 6], [10, 12], [16, 16]])
            msgc.tidy(() => both({ N: 2, C: 19, H, W, O: 2 * og, k: 3, G: 2, stride: 1, pad: 1 }, 53 + og + H));
      }
    } finally {
      setNativeEnv('MSGC_CUDA_SPLITK', undefined);
      setNativeEnv('MSGC_CUDA_KERNEL', undefined);
    }
  });

  // TF32 allowed (MSGC_CUDA_TF32=1): one product of TF32-rounded operands instead of the three that keep float32
  // accuracy: the error grows to TF32's (~2^-11 of the terms), beyond float32's tolerance
  test.each(['mma', 'direct'])('MSGC_CUDA_TF32=1: the tensor-core kernel (%s) runs TF32 products, within TF32 accuracy', (kernel) => {
    const c = { N: 2, C: 48, H: 8, W: 8, O: 32, k: 3, G: 2, stride: 1, pad: 1 };
    const xs = [c.N, c.C, c.H, c.W], ws = [c.O, c.C, 3, 3];
    const x = randomArray(numel(xs), 81), w = randomArray(numel(ws), 82), s = mixedScales(c.N, c.G, c.C, 83);
    const ref = msgcConvReference(x, xs, w, ws, s, c.G, 1, 1);
    const mag = msgcConvReference(x.map(Math.abs), xs, w.map(Math.abs), ws, s.map(Math.abs), c.G, 1, 1);
    const d = (a: Float32Array, sh: number[]) => msgc.tensor(a, sh, { device });
    const run = () => msgc.tidy(() => F.msgcConv2d(d(x, xs), d(w, ws), d(s, [c.N, c.G, c.C]),
      { heads: c.G, padding: 1, execution: 'gathered' }).toFloat32Array());
    setNativeEnv('MSGC_CUDA_KERNEL', kernel);
    try {
      const strict = run();
      setNativeEnv('MSGC_CUDA_TF32', '1');
      const tf32 = run();
      expect(worstError(strict, ref, mag)).toBeLessThanOrEqual(1);
      expect(worstError(tf32, ref, mag, 2e-3)).toBeLessThanOrEqual(1);
      expect(worstError(tf32, ref, mag)).toBeGreaterThan(1);
    } finally {
      setNativeEnv('MSGC_CUDA_TF32', undefined);
      setNativeEnv('MSGC_CUDA_KERNEL', undefined);
    }
  });
}

/**
 * The fused epilogue on the GPU (BatchNorm, residual, ReLU; msgcConv2dBnAct and the pooled variant) with
 * `execution`, against float64: each output within closeness ≤ 1.
 */
function checkEpilogueOnGpu(execution: 'masked' | 'gathered', seed: number): void {
  const N = 3, C = 20, H = 10, W = 10, O = 48, G = 4;
  const xs = [N, C, H, W], ws = [O, C, 3, 3], ss = [N, G, C];
  const x = randomArray(numel(xs), seed), w = randomArray(numel(ws), seed + 1), s = mixedScales(N, G, C, seed + 2);
  const res = randomArray(N * O * H * W, seed + 3);
  const mean = randomArray(O, seed + 4), variance = randomArray(O, seed + 5, 0.2, 2), gamma = randomArray(O, seed + 6, 0.5, 2), beta = randomArray(O, seed + 7);
  const ref = bnActReference(msgcConvReference(x, xs, w, ws, s, G, 1, 1), N, O, H * W, mean, variance, gamma, beta, 1e-5, 'relu', res);
  const pooledRef = new Float64Array(N * O);
  for (let i = 0; i < N * O; i++) for (let p = 0; p < H * W; p++) pooledRef[i] += ref[i * H * W + p] / (H * W);
  const d = (a: Float32Array, sh: number[]) => msgc.tensor(a, sh, { device: 'cuda' });
  const bn = { runningMean: d(mean, [O]), runningVar: d(variance, [O]), weight: d(gamma, [O]), bias: d(beta, [O]), eps: 1e-5 };
  const opts = { heads: G, padding: 1, execution, activation: 'relu' as const, residual: d(res, [N, O, H, W]) };
  const y = F.msgcConv2dBnAct(d(x, xs), d(w, ws), d(s, ss), bn, opts);
  expect(closeness(y.toFloat32Array(), ref, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
  const p = F.msgcConv2dBnActPooled(d(x, xs), d(w, ws), d(s, ss), bn, opts);
  expect(p.pooled.shape).toEqual([N, O, 1, 1]);
  expect(closeness(p.y.toFloat32Array(), ref, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
  expect(closeness(p.pooled.toFloat32Array(), pooledRef, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
}

describeGpu(gpuTitle('msgcConv2d (our kernel, masked and gathered) against float64'), () => {
  test.each(msgcCases)('%o', (c) => {
    msgc.tidy(() => {
      for (const execution of ['masked', 'gathered', 'auto'] as const) {
        const stats = { gathered: false };
        expect(msgcOnGpu(c, execution, 31, stats)).toBeLessThanOrEqual(1);
        // ('auto' on the GPU: gathered, but small 1×1 convs at batch 1-2 run masked: one launch fewer)
        expect(stats.gathered).toBe(execution === 'gathered' || (execution === 'auto' && !(c.k === 1 && c.N <= 2)));
      }
    });
  });

  kernelChoiceTests('cuda');

  test('the fused epilogue: BatchNorm, residual and ReLU, and the pooled means, in both executions', () => {
    msgc.tidy(() => {
      for (const execution of ['masked', 'gathered'] as const) checkEpilogueOnGpu(execution, 41);
      const N = 3, C = 20, H = 10, W = 10;
      const xs = [N, C, H, W];
      const x = randomArray(numel(xs), 41);
      const d = (a: Float32Array, sh: number[]) => msgc.tensor(a, sh, { device: 'cuda' });
      // the BatchNorm alone on the GPU
      const z = F.batchNormAct(d(x, xs), d(randomArray(C, 50), [C]), d(randomArray(C, 51, 0.5, 1.5), [C]), null, null, { training: false, activation: 'relu6' });
      const zRef = bnActReference(Float64Array.from(x), N, C, H * W, randomArray(C, 50), randomArray(C, 51, 0.5, 1.5), new Float32Array(C).fill(1), new Float32Array(C), 1e-5, 'relu6', null);
      expect(closeness(z.toFloat32Array(), zRef, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
    });
  });

  test('the gathered kernel zeroes the outputs no row of outputMask selects', () => {
    msgc.tidy(() => {
      const N = 2, C = 8, H = 6, W = 6, O = 16, G = 2, K = 2;
      const xs = [N, C, H, W], ws = [O, C, 3, 3];
      const x = randomArray(numel(xs), 61), w = randomArray(numel(ws), 62), s = mixedScales(N, G, C, 63);
      const m = randomArray(N * K * O, 64).map((v) => (v > 0.3 ? 1 : 0));
      const ref = msgcConvReference(x, xs, w, ws, s, G, 1, 1);
      for (let n = 0; n < N; n++)
        for (let o = 0; o < O; o++)
          if (!m[(n * K) * O + o] && !m[(n * K + 1) * O + o]) ref.fill(0, ((n * O + o) * H) * W, ((n * O + o + 1) * H) * W);
      const d = (a: Float32Array, sh: number[]) => msgc.tensor(a, sh, { device: 'cuda' });
      const y = new msgc.Tensor(native.msgcConv2dForwardGathered(d(x, xs).h, d(w, ws).h, d(s, [N, G, C]).h, [1, 1], [1, 1], G, d(m, [N, K, O]).h));
      expect(closeness(y.toFloat32Array(), ref, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  });

  test('an empty batch; a training step on the GPU is refused with a clear Error', () => {
    msgc.tidy(() => {
      const y = F.msgcConv2d(msgc.zeros([0, 4, 5, 5], { device: 'cuda' }), msgc.zeros([8, 4, 3, 3], { device: 'cuda' }), msgc.zeros([0, 2, 4], { device: 'cuda' }), { heads: 2, padding: 1 });
      expect(y.shape).toEqual([0, 8, 5, 5]);
      const w = msgc.randn([8, 4, 3, 3], { seed: 3, device: 'cuda', requiresGrad: true });
      const out = F.msgcConv2d(msgc.randn([1, 4, 5, 5], { seed: 4, device: 'cuda' }), w, msgc.ones([1, 2, 4], { device: 'cuda' }), { heads: 2, padding: 1, execution: 'masked' });
      expectError(() => F.sum(out).backward(), /is on cuda, but this op runs on the CPU only/);
    });
  });
});

// The GPU kernels' own code run on the host (MSGC_CUDA_EMULATE=1: the GPU-capable ops take CPU tensors and run the
// MSGC kernel's per-thread steps block by block in barrier order, and the elementwise kernels' per-element bodies;
// cuDNN's convs run as the CPU backend's). Checks the GPU path's tiling, indexing, split-K and semantics on every
// machine, GPU or not, through the public API, down to whole models.
describe('cuda: the GPU kernels emulated on the host', () => {
  beforeAll(() => setNativeEnv('MSGC_CUDA_EMULATE', '1'));
  afterAll(() => setNativeEnv('MSGC_CUDA_EMULATE', undefined));
  const msgcOn = (c: typeof msgcCases[number], gathered: boolean, seed: number) => msgcOnDevice(c, gathered ? 'gathered' : 'masked', seed, 'cpu');

  test.each(msgcCases)('msgcConv2d masked and gathered %o', (c) => {
    msgc.tidy(() => {
      for (const gathered of [false, true]) expect(msgcOn(c, gathered, 31)).toBeLessThanOrEqual(1);
    });
  });

  kernelChoiceTests('cpu');

  test('MSGC_CUDA_KERNEL with an unknown kernel is an Error that names the choices', () => {
    setNativeEnv('MSGC_CUDA_KERNEL', 'wide');
    try {
      expect(() => msgc.tidy(() => msgcOn(msgcCases[0], true, 5))).toThrow(/MSGC_CUDA_KERNEL must be tile, mma or direct .*got 'wide'/);
    } finally {
      setNativeEnv('MSGC_CUDA_KERNEL', undefined);
    }
  });

  // every tile height: 16, 32 and 64 output channels per block (heads of 4, 32 and 70 channels; partial tiles both
  // ways), with and without split-K, in both kernels
  test.each(['tile', 'mma', 'direct'])('MSGC_CUDA_KERNEL=%s: each tile height, split-K 1 and 5', (kernel) => {
    setNativeEnv('MSGC_CUDA_KERNEL', kernel);
    try {
      for (const splits of ['1', '5']) {
        setNativeEnv('MSGC_CUDA_SPLITK', splits);
        for (const c of [msgcCases[0], msgcCases[1], msgcCases[3], { N: 2, C: 20, H: 19, W: 18, O: 64, k: 3, G: 2, stride: 1, pad: 1 }])
          msgc.tidy(() => {
            for (const gathered of [false, true]) expect(msgcOn(c, gathered, 91)).toBeLessThanOrEqual(1);
          });
      }
    } finally {
      setNativeEnv('MSGC_CUDA_SPLITK', undefined);
      setNativeEnv('MSGC_CUDA_KERNEL', undefined);
    }
  });

  // split-K (small grids: each (sample, head)'s reduction cut into ranges whose partial sums a second pass adds):
  // forced off, and to 3 and 7 ranges (not dividing the stages; some ranges empty for closed or 1-channel heads)
  test.each(['1', '3', '7'])('split-K forced to %s ranges', (splits) => {
    setNativeEnv('MSGC_CUDA_SPLITK', splits);
    try {
      for (const c of msgcCases.slice(0, 4))
        msgc.tidy(() => {
          for (const gathered of [false, true]) expect(msgcOn(c, gathered, 71)).toBeLessThanOrEqual(1);
        });
    } finally {
      setNativeEnv('MSGC_CUDA_SPLITK', undefined);
    }
  });

  test('the epilogue (BatchNorm, residual, ReLU6), the pooled means and the output mask, with and without split-K', () => {
    msgc.tidy(() => {
      const N = 2, C = 20, H = 9, W = 9, O = 48, G = 4, K = 2;
      const xs = [N, C, H, W], ws = [O, C, 3, 3];
      const x = randomArray(numel(xs), 41), w = randomArray(numel(ws), 42), s = mixedScales(N, G, C, 43);
      const res = randomArray(N * O * H * W, 44, -3, 3);
      const mean = randomArray(O, 45), variance = randomArray(O, 46, 0.2, 2), gamma = randomArray(O, 47, 0.5, 2), beta = randomArray(O, 48);
      const ref = bnActReference(msgcConvReference(x, xs, w, ws, s, G, 1, 1), N, O, H * W, mean, variance, gamma, beta, 1e-5, 'relu6', res);
      const pooledRef = new Float64Array(N * O);
      for (let i = 0; i < N * O; i++) for (let p = 0; p < H * W; p++) pooledRef[i] += ref[i * H * W + p] / (H * W);
      const bn = { runningMean: msgc.tensor(mean, [O]), runningVar: msgc.tensor(variance, [O]), weight: msgc.tensor(gamma, [O]), bias: msgc.tensor(beta, [O]), eps: 1e-5 };
      const m = randomArray(N * K * O, 64).map((v) => (v > 0.3 ? 1 : 0));
      const plain = msgcConvReference(x, xs, w, ws, s, G, 1, 1);
      for (let n = 0; n < N; n++)
        for (let o = 0; o < O; o++)
          if (!m[(n * K) * O + o] && !m[(n * K + 1) * O + o]) plain.fill(0, (n * O + o) * H * W, (n * O + o + 1) * H * W);
      for (const splits of ['1', '4']) {
        setNativeEnv('MSGC_CUDA_SPLITK', splits);
        try {
          for (const execution of ['masked', 'gathered'] as const) {
            const opts = { heads: G, padding: 1, execution, activation: 'relu6' as const, residual: msgc.tensor(res, [N, O, H, W]) };
            const p = F.msgcConv2dBnActPooled(msgc.tensor(x, xs), msgc.tensor(w, ws), msgc.tensor(s, [N, G, C]), bn, opts);
            expect(closeness(p.y.toFloat32Array(), ref, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
            expect(closeness(p.pooled.toFloat32Array(), pooledRef, 2e-4, 2e-4)).toBeLessThanOrEqual(1);
          }
          // the output mask: outputs no row selects are exactly 0
          const ym = new msgc.Tensor(native.msgcConv2dForwardGathered(msgc.tensor(x, xs).h, msgc.tensor(w, ws).h,
            msgc.tensor(s, [N, G, C]).h, [1, 1], [1, 1], G, msgc.tensor(m, [N, K, O]).h));
          expect(closeness(ym.toFloat32Array(), plain, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
        } finally {
          setNativeEnv('MSGC_CUDA_SPLITK', undefined);
        }
      }
    });
  });

  test.each([true, false])('a gate head (BN affine %s): logits and gates against float64', (withGamma) => checkGateHead('cpu', withGamma));

  test('activations (NaN included), broadcast add/sub/mul, pools with padding, linear, eval BatchNorm', () => {
    msgc.tidy(() => {
      const v = randomArray(2 * 3 * 5 * 4, 81, -8, 8);
      v[7] = NaN;
      const x = msgc.tensor(v, [2, 3, 5, 4]);
      const r = F.relu(x).toFloat32Array(), r6 = F.relu6(x).toFloat32Array(), sg = F.sigmoid(x).toFloat32Array();
      for (let i = 0; i < v.length; i++) {
        const e = Number.isNaN(v[i]) ? 0 : Math.max(v[i], 0);
        expect(r[i]).toBe(Math.fround(e));
        expect(r6[i]).toBe(Math.fround(Math.min(e, 6)));
        if (Number.isNaN(v[i])) expect(sg[i]).toBeNaN();
        else expect(Math.abs(sg[i] - 1 / (1 + Math.exp(-v[i])))).toBeLessThan(1e-6);
      }
      // broadcasting: b of shape [1, 3, 1, 4], [2, 1, 5, 1] and a single element
      for (const bs of [[1, 3, 1, 4], [2, 1, 5, 1], [1, 1, 1, 1]]) {
        const bv = randomArray(numel(bs), 82);
        const b = msgc.tensor(bv, bs);
        const got = { add: F.add(x, b).toFloat32Array(), sub: F.sub(x, b).toFloat32Array(), mul: F.mul(x, b).toFloat32Array() };
        for (let i = 0; i < v.length; i++) {
          if (Number.isNaN(v[i])) continue;
          const [n, c, h, w] = [Math.floor(i / 60), Math.floor(i / 20) % 3, Math.floor(i / 4) % 5, i % 4];
          const j = (((bs[0] > 1 ? n : 0) * bs[1] + (bs[1] > 1 ? c : 0)) * bs[2] + (bs[2] > 1 ? h : 0)) * bs[3] + (bs[3] > 1 ? w : 0);
          expect(got.add[i]).toBe(Math.fround(v[i] + bv[j]));
          expect(got.sub[i]).toBe(Math.fround(v[i] - bv[j]));
          expect(got.mul[i]).toBe(Math.fround(v[i] * bv[j]));
        }
      }
      // pools: max ignores padding, average counts it (count_include_pad); the global average
      const pv = randomArray(2 * 3 * 7 * 6, 83, -2, 2);
      const px = msgc.tensor(pv, [2, 3, 7, 6]);
      const mx = F.maxPool2d(px, { kernelSize: 3, stride: 2, padding: 1 });
      const av = F.avgPool2d(px, { kernelSize: 3, stride: 2, padding: 1 });
      expect(mx.shape).toEqual([2, 3, 4, 3]);
      const mxv = mx.toFloat32Array(), avv = av.toFloat32Array();
      for (let pl = 0; pl < 6; pl++)
        for (let oh = 0; oh < 4; oh++)
          for (let ow = 0; ow < 3; ow++) {
            let m = -Infinity, sum = 0;
            for (let i = 0; i < 3; i++)
              for (let j = 0; j < 3; j++) {
                const h = oh * 2 - 1 + i, w = ow * 2 - 1 + j;
                if (h < 0 || h >= 7 || w < 0 || w >= 6) continue;
                m = Math.max(m, pv[(pl * 7 + h) * 6 + w]);
                sum += pv[(pl * 7 + h) * 6 + w];
              }
            expect(mxv[(pl * 4 + oh) * 3 + ow]).toBe(Math.fround(m));
            expect(Math.abs(avv[(pl * 4 + oh) * 3 + ow] - sum / 9)).toBeLessThan(1e-6);
          }
      const gap = F.adaptiveAvgPool2d(px, 1).toFloat32Array();
      for (let pl = 0; pl < 6; pl++) expect(Math.abs(gap[pl] - pv.slice(pl * 42, pl * 42 + 42).reduce((a, q) => a + q, 0) / 42)).toBeLessThan(1e-6);
      // linear: x [3, 37] · w [5, 37]ᵀ + b
      const lx = randomArray(3 * 37, 84), lw = randomArray(5 * 37, 85), lb = randomArray(5, 86);
      const ly = F.linear(msgc.tensor(lx, [3, 37]), msgc.tensor(lw, [5, 37]), msgc.tensor(lb, [5])).toFloat32Array();
      for (let n = 0; n < 3; n++)
        for (let k = 0; k < 5; k++) {
          let acc = lb[k];
          for (let j = 0; j < 37; j++) acc += lx[n * 37 + j] * lw[k * 37 + j];
          expect(Math.abs(ly[n * 5 + k] - acc)).toBeLessThan(1e-5);
        }
      // eval BatchNorm with γ, β: as the float64 formula
      const mean = randomArray(3, 87), variance = randomArray(3, 88, 0.5, 2), gamma = randomArray(3, 89), beta = randomArray(3, 90);
      const bnOut = F.batchNorm2d(px, msgc.tensor(mean, [3]), msgc.tensor(variance, [3]), msgc.tensor(gamma, [3]), msgc.tensor(beta, [3]), { training: false }).toFloat32Array();
      const bnRef = bnActReference(Float64Array.from(pv), 2, 3, 42, mean, variance, gamma, beta, 1e-5, null, null);
      expect(closeness(bnOut, bnRef, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
    });
  });

  // whole models' eval forward through the GPU path, against the CPU backend (MSGC models: where the gates agree)
  test.each([
    ['resnet20', { smallInput: true }],
    ['resnet20', { smallInput: true, msgc: { heads: 4, attention: true } }],
    ['mobilenetv2', { smallInput: true, msgc: { heads: 4, attention: true } }],
  ] as [string, Record<string, unknown>][])('%s %o at 32²', (name, opts) => {
    msgc.manualSeed(7);
    const model = msgc.models.createModel(name, opts);
    model.eval();
    gatesAtHalfDensity(model);
    const x = msgc.randn([2, 3, 32, 32], { seed: 8 });
    const run = () => msgc.noGrad(() => msgc.tidy(() => ({ y: model.forward(x).toFloat32Array(), macs: model.lastMacs().ratio })));
    const gpuPath = run();
    setNativeEnv('MSGC_CUDA_EMULATE', undefined);
    const cpu = run();
    setNativeEnv('MSGC_CUDA_EMULATE', '1');
    expect(gpuPath.y.every(Number.isFinite)).toBe(true);
    expect(Math.abs(gpuPath.macs - cpu.macs)).toBeLessThan(0.01);
    if (opts.msgc) expect(cpu.macs).toBeLessThan(0.9);  // (the gates really close: the MSGC kernels run)
    expect(relativeMaxDiff(gpuPath.y, cpu.y)).toBeLessThan(1e-3);
    x.dispose();
    model.dispose();
  });
});

// Whole models on the GPU (eval), against the same models on the CPU backend (whose ops the CPU tests check
// against float64): a harness in the way of ggml's, every op on every backend against the CPU.
// The masked execution through cuDNN (MSGC_CUDA_MASKED=cudnn): one grouped convolution over the G scaled copies
// of x, then the epilogue. Against float64, with the fused BatchNorm, residual, ReLU and pooled means, and a whole
// model's masked eval forward against the CPU's.
describeGpu(gpuTitle('msgcConv2d masked through cuDNN groups against float64'), () => {
  beforeAll(() => setNativeEnv('MSGC_CUDA_MASKED', 'cudnn'));
  afterAll(() => setNativeEnv('MSGC_CUDA_MASKED', undefined));
  test.each(msgcCases)('%o', (c) => {
    msgc.tidy(() => expect(msgcOnGpu(c, 'masked', 131)).toBeLessThanOrEqual(1));
  });

  test('the fused epilogue (BatchNorm, residual, ReLU) and the pooled means', () => {
    msgc.tidy(() => checkEpilogueOnGpu('masked', 141));
  });

  test('ResNet-18 (64², batch 6) in eval with every MSGC conv masked: the GPU forward equals the CPU forward', () => {
    const prev = F.setMsgcExecution('masked');
    try {
      msgc.manualSeed(5);
      const model = msgc.models.createModel('resnet18', { msgc: { heads: 4 }, numClasses: 10 });
      gatesAtHalfDensity(model);
      model.eval();
      const x = msgc.randn([6, 3, 64, 64], { seed: 9 });
      const cpu = msgc.noGrad(() => msgc.tidy(() => model.forward(x).toFloat32Array()));
      model.to('cuda');
      // (the gates' logits are ±1: both backends close the same ones)
      const gpuOut = msgc.noGrad(() => msgc.tidy(() => model.forward(x.cuda()).toFloat32Array()));
      expect(gpuOut.every(Number.isFinite)).toBe(true);
      expect(relativeMaxDiff(gpuOut, cpu)).toBeLessThan(1e-3);
      model.dispose();
      x.dispose();
    } finally {
      F.setMsgcExecution(prev);
    }
  });
});

describeGpu(gpuTitle('gate heads against float64'), () => {
  test.each([true, false])('BN affine %s: logits and gates', (withGamma) => checkGateHead('cuda', withGamma));
});

describeGpu(gpuTitle('models in eval: the GPU forward against the CPU forward'), () => {
  const cases: [string, Record<string, unknown>, number][] = [
    ['resnet20', { smallInput: true }, 32],
    ['resnet20', { smallInput: true, msgc: { heads: 4, attention: true } }, 32],
    ['resnet18', {}, 64],
    ['resnet18', { msgc: { heads: 4 } }, 64],
    ['resnet50', { msgc: { heads: 4 } }, 64],
    ['mobilenetv2', {}, 64],
    ['mobilenetv2', { msgc: { heads: 4, attention: true } }, 64],
    ['densenet74', { msgc: { heads: 4 } }, 32],
  ];
  test.each(cases)('%s %o at %d²', (name, opts, size) => {
    msgc.manualSeed(3);
    const model = msgc.models.createModel(name, opts);
    model.eval();
    gatesAtHalfDensity(model);
    const x = msgc.randn([3, 3, size, size], { seed: 4 });
    const cpu = msgc.noGrad(() => msgc.tidy(() => model.forward(x).toFloat32Array()));
    const cpuMacs = model.lastMacs().ratio;
    const params = model.parameters();
    expect(model.to('cuda')).toBe(model);
    expect(model.parameters()).toEqual(params);  // the same Tensor objects, now on the GPU
    expect(params.every((p) => p.device === 'cuda')).toBe(true);
    const xg = x.cuda();
    const y = msgc.noGrad(() => model.forward(xg));
    expect(y.device).toBe('cuda');
    const gpuOut = y.toFloat32Array();
    expect(gpuOut.every(Number.isFinite)).toBe(true);
    // (the gates' logits are ±1: both backends close the same ones)
    expect(relativeMaxDiff(gpuOut, cpu)).toBeLessThan(1e-3);
    expect(model.lastMacs().ratio).toBeCloseTo(cpuMacs, 6);
    // and back: the values survive the round trip exactly
    const w0 = params[0].toFloat32Array();
    model.to('cpu');
    expect(Array.from(params[0].toFloat32Array())).toEqual(Array.from(w0));
    for (const t of [x, xg, y]) t.dispose();
    model.dispose();
  });

  test('evaluate() follows the model to the GPU: the same metrics as on the CPU', async () => {
    msgc.manualSeed(9);
    const model = msgc.models.createModel('resnet20', { smallInput: true, numClasses: 10, msgc: { heads: 4 } });
    gatesAtHalfDensity(model);
    const batches = [0, 1, 2].map((i) => ({ x: Float32Array.from(randomArray(8 * 3 * 32 * 32, 90 + i)), y: Int32Array.from({ length: 8 }, (_, k) => (k * 3 + i) % 10) }));
    const source = {
      length: batches.length,
      async *[Symbol.asyncIterator]() {
        for (const b of batches) yield { x: msgc.tensor(b.x, [8, 3, 32, 32]), y: b.y };
      },
    };
    const cpu = await msgc.evaluate(model, source);
    model.to('cuda');
    const gpuRun = await msgc.evaluate(model, source);
    expect(gpuRun.samples).toBe(24);
    expect(gpuRun.top1).toBe(cpu.top1);
    expect(gpuRun.top5).toBe(cpu.top5);
    expect(Math.abs(gpuRun.loss - cpu.loss)).toBeLessThan(1e-4);
    expect(gpuRun.macRatio).toBeCloseTo(cpu.macRatio, 6);
    model.dispose();
  });

  // batch ≤ 4 on the GPU: the blocks leave their gate statistics on the device until lastMacs() (deferGateStats)
  test.each([
    ['resnet18', { msgc: { heads: 4 } }, 64],
    ['resnet50', { msgc: { heads: 4 } }, 64],
    ['mobilenetv2', { msgc: { heads: 4 } }, 64],
    ['densenet74', { msgc: { heads: 4 } }, 32],
  ] as [string, Record<string, unknown>, number][])('%s %o at batch 1: no gate statistic read during the forward; the MACs as on the CPU', (name, opts, size) => {
    msgc.manualSeed(13);
    const model = msgc.models.createModel(name, opts);
    model.eval();
    gatesAtHalfDensity(model);
    const xv = randomArray(3 * size * size, 14);
    const cpuY = msgc.noGrad(() => msgc.tidy(() => model.forward(msgc.tensor(xv, [1, 3, size, size])).toFloat32Array()));
    const cpu = model.lastMacs();
    model.to('cuda');
    const reads = deferredGateStatReads();
    const y = msgc.noGrad(() => msgc.tidy(() => model.forward(msgc.tensor(xv, [1, 3, size, size], { device: 'cuda' })).toFloat32Array()));
    expect(deferredGateStatReads()).toBe(reads);
    const live = msgc.liveTensorCount();
    const macs = model.lastMacs();
    expect(deferredGateStatReads()).toBe(reads + 1);  // (one copy from the GPU for all blocks)
    expect(msgc.liveTensorCount()).toBeLessThan(live);  // (the summaries, freed once read)
    expect(Math.abs(macs.ratio - cpu.ratio)).toBeLessThan(1e-6);
    expect(Math.abs(macs.bonus - cpu.bonus)).toBeLessThanOrEqual(1e-6 * cpu.bonus + 1e-6);
    expect(relativeMaxDiff(y, cpuY)).toBeLessThan(1e-3);
    model.dispose();
  });

  test('gateSummary on the GPU: as on the CPU', () => {
    const v = randomArray(3 * 4 * 300, 15, 0, 1).map((x) => (x < 0.4 ? 0 : 1));
    const cpu = new msgc.Tensor(native.gateSummary(msgc.tensor(v, [3, 4, 300]).h)).toFloat32Array();
    const g = new msgc.Tensor(native.gateSummary(msgc.tensor(v, [3, 4, 300], { device: 'cuda' }).h));
    expect(g.device).toBe('cuda');
    expect(Array.from(g.toFloat32Array())).toEqual(Array.from(cpu));
    const ones = new msgc.Tensor(native.gateSummary(msgc.ones([2, 3, 5], { device: 'cuda' }).h)).toFloat32Array();
    expect(Array.from(ones)).toEqual([30, 0, 1, 10, 10, 10]);
  });

  test('training on the GPU is refused with a clear Error, not a crash', () => {
    msgc.manualSeed(5);
    const model = msgc.models.createModel('resnet20', { smallInput: true, msgc: { heads: 4 } }).to('cuda');
    model.train();
    const x = msgc.randn([2, 3, 32, 32], { seed: 6, device: 'cuda' });
    expectError(() => model.forward(x), /no cuda kernel yet|runs on the CPU only/);
    x.dispose();
    model.dispose();
  });
});
