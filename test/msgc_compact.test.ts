// msgc_compact.test.ts: compacted tensors (F.msgcConv2dBnActCompact, F.depthwiseConv2dBnActCompact), with which
// MobileNetV2's MSGC blocks skip the hidden channels no head selects in both the expansion and the depthwise conv
// (spec §2.10). Channel slot k of sample n holds the k-th channel (ascending) some row of the mask selects, the
// slots past the last one hold zeros. Each op against a float64 reference built from the mask alone, on the AVX-512
// kernels (nChw16c) and the AVX2 ones (nChw8c outputs); whole MobileNetV2 blocks against the masked execution and
// the uncompacted gathered one, with the MAC tally's skipped share; and the native boundary's checks.
import * as msgc from '../lib';
import { native } from '../lib/native';
import { randomArray } from './helpers/gradcheck';
import { withEnv } from './helpers/gather-cases';
import { msgcConvReference } from './helpers/references';
import { expectClose, expectError, eye, setNativeEnv, settledLiveCount } from './helpers/testing';
import { relativeMaxDiff } from './helpers/models';

const { F } = msgc;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});
const simd = native.gatheredKernels() !== 'portable';
const describeSimd = simd ? describe : describe.skip;
const isaVariants: Record<string, string>[] = [{}, ...(native.gatheredKernels() === 'avx512' ? [{ MSGC_GATHER_ISA: 'avx2' }] : [])];

interface Bn { rm: Float32Array; rv: Float32Array; g: Float32Array; b: Float32Array; eps: number }
function randomBn(C: number, seed: number): Bn {
  return { rm: randomArray(C, seed, -1, 1), rv: randomArray(C, seed + 1, 0.2, 3), g: randomArray(C, seed + 2, -1.5, 1.5), b: randomArray(C, seed + 3, -1, 1), eps: 1e-3 };
}
function bnTensors(bn: Bn): msgc.F.FoldedBatchNorm {
  return { runningMean: msgc.tensor(bn.rm, [bn.rm.length]), runningVar: msgc.tensor(bn.rv, [bn.rv.length]), weight: msgc.tensor(bn.g, [bn.g.length]), bias: msgc.tensor(bn.b, [bn.b.length]), eps: bn.eps };
}
function bnAct(v: number, c: number, bn: Bn, act: 'relu6' | null): number {
  const y = (v - bn.rm[c]) * (bn.g[c] / Math.sqrt(bn.rv[c] + bn.eps)) + bn.b[c];
  return act ? Math.min(6, Math.max(0, y)) : y;
}

/** a binary mask [N, K, C] with density d per row; sample 0 has an empty union when `empty`, the last a full one */
function mask(N: number, K: number, C: number, d: number, seed: number, empty = true): Float32Array {
  const r = randomArray(N * K * C, seed, 0, 1);
  const m = r.map((v) => (v < d ? 1 : 0));
  if (empty && N > 1) m.fill(0, 0, K * C);
  if (N > 2) m.fill(1, (N - 1) * K * C, N * K * C);
  return m;
}
/** each sample's union of the mask's rows, ascending */
function unions(m: Float32Array, N: number, K: number, C: number): number[][] {
  return Array.from({ length: N }, (_, n) => {
    const u: number[] = [];
    for (let c = 0; c < C; c++) {
      let any = false;
      for (let k = 0; k < K; k++) any = any || m[(n * K + k) * C + c] !== 0;
      if (any) u.push(c);
    }
    return u;
  });
}
/** full [N, C, P] values -> compacted by the unions (zeros past each union) */
function compact(full: ArrayLike<number>, U: number[][], C: number, P: number): Float64Array {
  const out = new Float64Array(full.length);
  U.forEach((u, n) => u.forEach((c, k) => { for (let p = 0; p < P; p++) out[(n * C + k) * P + p] = full[(n * C + c) * P + p]; }));
  return out;
}
/** a random x in nChw16c (an identity 1×1 conv's output), for the ops that need a blocked input */
function blocked(N: number, C: number, H: number, seed: number): msgc.Tensor {
  return msgc.tidy(() => F.conv2d(msgc.tensor(randomArray(N * C * H * H, seed), [N, C, H, H]), eye(C)));
}

describeSimd('compacted expansion (compactOutput)', () => {
  const cases = [
    { N: 3, C: 24, O: 144, H: 14, k: 1, d: 0.3 },
    { N: 2, C: 16, O: 96, H: 9, k: 1, d: 0.6 },
    { N: 2, C: 32, O: 64, H: 7, k: 3, d: 0.4 },
    { N: 1, C: 8, O: 32, H: 5, k: 1, d: 0.9 },
  ];
  for (const env of isaVariants)
    test.each(cases)(`%o ${JSON.stringify(env)}`, ({ N, C, O, H, k, d }) => {
      withEnv(env, () => msgc.tidy(() => msgc.noGrad(() => {
        const K = 4;
        const xv = randomArray(N * C * H * H, 1), wv = randomArray(O * C * k * k, 2, -0.5, 0.5), mv = mask(N, K, O, d, 3);
        const bn = randomBn(O, 4);
        const x = msgc.tensor(xv, [N, C, H, H]);
        const y = F.msgcConv2dBnActCompact(x, msgc.tensor(wv, [O, C, k, k]), msgc.ones([N, 1, C]), bnTensors(bn),
          { heads: 1, padding: (k - 1) >> 1, compactOutput: msgc.tensor(mv, [N, K, O]), activation: 'relu6' }).y;
        expect(y.shape).toEqual([N, O, H, H]);
        const conv = msgcConvReference(xv, [N, C, H, H], wv, [O, C, k, k], new Float32Array(N * C).fill(1), 1, 1, (k - 1) >> 1);
        const P = H * H;
        const full = conv.map((v, i) => bnAct(v, Math.floor(i / P) % O, bn, 'relu6'));
        expectClose(y.toFloat32Array(), compact(full, unions(mv, N, K, O), O, P), 'compacted expansion', 1e-4);
      })));
    });
});

describeSimd('compacted depthwise (depthwiseConv2dBnActCompact)', () => {
  const cases = [
    { N: 3, C: 48, H: 14, stride: 1, d: 0.3, act: 'relu6' as const },
    { N: 2, C: 96, H: 11, stride: 2, d: 0.5, act: 'relu6' as const },
    { N: 3, C: 32, H: 7, stride: 1, d: 0.2, act: null },
    { N: 1, C: 16, H: 20, stride: 2, d: 0.7, act: 'relu6' as const },
    // other kernel sizes take the generic loop (taps not held in registers)
    { N: 2, C: 32, H: 9, stride: 1, d: 0.4, act: 'relu6' as const, k: 5, pad: 2 },
    { N: 2, C: 16, H: 8, stride: 2, d: 0.5, act: null, k: 1, pad: 0 },
  ];
  // nChw16c inputs (AVX-512 machines' layout), and nChw8c ones (the AVX2 kernels' compacted outputs)
  const layouts = [16, ...(native.gatheredKernels() === 'avx512' ? [8] : [])];
  test.each(layouts.flatMap((L) => cases.map((c) => ({ k: 3, pad: 1, ...c, L }))))('%o', ({ N, C, H, stride, d, act, k, pad, L }) => {
    msgc.tidy(() => msgc.noGrad(() => {
      const K = 3;
      // any blocked tensor is a compacted one: slot k of sample n is read as channel unions[n][k]
      const x = L === 16 ? blocked(N, C, H, 5) : withEnv({ MSGC_GATHER_ISA: 'avx2' }, () => F.msgcConv2dBnActCompact(
        msgc.tensor(randomArray(N * C * H * H, 5), [N, C, H, H]), eye(C), msgc.ones([N, 1, C]), bnTensors(randomBn(C, 15)),
        { heads: 1, compactOutput: msgc.ones([N, 1, C]) }).y);
      const xv = x.toFloat32Array();
      const mv = mask(N, K, C, d, 6);
      const U = unions(mv, N, K, C);
      const T = k * k;
      const wv = randomArray(C * T, 7), bn = randomBn(C, 8);
      const y = F.depthwiseConv2dBnActCompact(x, msgc.tensor(mv, [N, K, C]), msgc.tensor(wv, [C, 1, k, k]), bnTensors(bn),
        { stride, padding: pad, activation: act });
      const OH = Math.floor((H + 2 * pad - k) / stride) + 1;
      expect(y.shape).toEqual([N, C, OH, OH]);
      const ref = new Float64Array(N * C * OH * OH);
      U.forEach((u, n) => u.forEach((c, slot) => {
        for (let oh = 0; oh < OH; oh++)
          for (let ow = 0; ow < OH; ow++) {
            let s = 0;
            for (let i = 0; i < k; i++)
              for (let j = 0; j < k; j++) {
                const ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                if (ih >= 0 && ih < H && iw >= 0 && iw < H) s += wv[c * T + i * k + j] * xv[((n * C + slot) * H + ih) * H + iw];
              }
            ref[((n * C + slot) * OH + oh) * OH + ow] = bnAct(s, c, bn, act);
          }
      }));
      expectClose(y.toFloat32Array(), ref, 'compacted depthwise', 1e-4);
    }));
  });
});

describeSimd('gathered conv over a compacted input (inputMask)', () => {
  const cases = [
    { N: 3, C: 96, O: 24, H: 14, G: 4, d: 0.3 },   // heads of 6: the pixvec kernel on copied planes
    { N: 2, C: 144, O: 32, H: 7, G: 4, d: 0.2 },   // heads of 8: one head over their union
    { N: 2, C: 192, O: 64, H: 9, G: 4, d: 0.4 },   // heads of 16: ocvec reading x in place
    { N: 3, C: 128, O: 160, H: 5, G: 4, d: 0.3 },  // heads of 40
  ];
  for (const env of isaVariants)
    test.each(cases)(`%o ${JSON.stringify(env)}`, ({ N, C, O, H, G, d }) => {
      withEnv(env, () => msgc.tidy(() => msgc.noGrad(() => {
        const x = blocked(N, C, H, 9);
        const xc = x.toFloat32Array();
        const inMask = mask(N, G, C, d, 10);
        const U = unions(inMask, N, G, C);
        // the scale selects within the mask (a real scale where the mask is 1, 0 elsewhere, some dropped)
        const sv = randomArray(N * G * C, 11, 0.5, 1.5).map((v, i) => (inMask[i] && (i % 7) !== 0 ? v : 0));
        const wv = randomArray(O * C, 12, -0.5, 0.5), bn = randomBn(O, 13);
        const res = randomArray(N * O * H * H, 14);
        const { y, pooled } = F.msgcConv2dBnActCompact(x, msgc.tensor(wv, [O, C, 1, 1]), msgc.tensor(sv, [N, G, C]), bnTensors(bn),
          { heads: G, inputMask: msgc.tensor(inMask, [N, G, C]), residual: msgc.tensor(res, [N, O, H, H]), activation: 'relu6', pooled: true });
        // the uncompacted input: channel c of sample n is slot rank(c) of the compacted one
        const P = H * H;
        const full = new Float32Array(N * C * P);
        U.forEach((u, n) => u.forEach((c, k) => { for (let p = 0; p < P; p++) full[(n * C + c) * P + p] = xc[(n * C + k) * P + p]; }));
        const conv = msgcConvReference(full, [N, C, H, H], wv, [O, C, 1, 1], sv, G, 1, 0);
        const ref = conv.map((v, i) => Math.min(6, Math.max(0, bnAct(v, Math.floor(i / P) % O, bn, null) + res[i])));
        expectClose(y.toFloat32Array(), ref, 'projection over a compacted input', 1e-4);
        const means = new Float64Array(N * O);
        ref.forEach((v, i) => { means[Math.floor(i / P)] += v / P; });
        expectClose(pooled!.toFloat32Array(), means, 'its pooled means', 1e-4);
      })));
    });
});

describeSimd('MobileNetV2 blocks on compacted tensors', () => {
  // sparse trained-like gates: each head open on a seeded share d of the hidden channels, the heads correlated so
  // that their union stays well below 1 (as trained gates do), logits ±1 so no gate flips between paths
  function sparseGates(model: msgc.nn.Module, d: number, other = 0.05): void {
    let s = 99;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    for (const [name, p] of model.namedParameters()) {
      if (!/mask\.conv2\.(weight|bias)$/.test(name)) continue;
      if (name.endsWith('weight')) { p.assign(new Float32Array(p.size)); continue; }
      const G = 4, hid = p.size / G;
      const shared = Array.from({ length: hid }, () => rnd() < d);
      p.assign(Float32Array.from({ length: p.size }, (_, i) => ((shared[i % hid] ? rnd() < 0.8 : rnd() < other) ? 1 : -1)));
    }
  }
  test('eval outputs equal the masked and the uncompacted gathered executions; the tally counts the skipped depthwise MACs', () => {
    msgc.manualSeed(3);
    const m = msgc.models.createModel('mobilenetv2', { numClasses: 10, smallInput: true, msgc: { heads: 4 } });
    sparseGates(m, 0.35);
    m.eval();
    const spy = jest.spyOn(native, 'depthwiseConv2dBnActCompactEval');
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(2 * 3 * 32 * 32, 21), [2, 3, 32, 32]);
      const run = (exec: 'auto' | 'masked', compactOn: boolean) => {
        const prevExec = F.setMsgcExecution(exec);
        setNativeEnv('MSGC_COMPACT', compactOn ? '1' : '0');
        try {
          const y = msgc.noGrad(() => m.forward(x)).toFloat32Array();
          return { y, macs: m.lastMacs() };
        } finally {
          F.setMsgcExecution(prevExec);
          setNativeEnv('MSGC_COMPACT', undefined);
        }
      };
      const masked = run('masked', true);
      expect(spy).not.toHaveBeenCalled();
      const plain = run('auto', false);
      expect(spy).not.toHaveBeenCalled();
      // (MSGC_COMPACT=1: every block whose chain can run compacts, beyond the measured rule's narrow window)
      const compacted = run('auto', true);
      const blocks = spy.mock.calls.length;
      expect(blocks).toBe(16);  // every block with an expansion (t = 6)
      expect(relativeMaxDiff(compacted.y, masked.y)).toBeLessThan(1e-4);
      expect(relativeMaxDiff(compacted.y, plain.y)).toBeLessThan(1e-4);
      // the same MACs counted; more of the bonus really skipped (the depthwise part), none in the masked run
      expect(compacted.macs.perImage).toBe(masked.macs.perImage);
      expect(compacted.macs.executed).toBeLessThan(plain.macs.executed);
      expect(masked.macs.executed).toBe(masked.macs.perImage + masked.macs.bonus);
    });
    spy.mockRestore();
    m.dispose();
  });
});

test.each([[0.2, 0.01, true], [0.5, 0.05, false]])('by the measured rule (AVX-512): shared share %p, others %p: some blocks compact: %p (unions <= 0.25 on 28²-56² inputs only)', (d, other, expected) => {
  if (native.gatheredKernels() !== 'avx512') return;
  msgc.manualSeed(3);
  const m = msgc.models.createModel('mobilenetv2', { numClasses: 10, smallInput: true, msgc: { heads: 4 } });
  let s = 7;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  for (const [name, p] of m.namedParameters()) {
    if (!/mask\.conv2\.(weight|bias)$/.test(name)) continue;
    if (name.endsWith('weight')) { p.assign(new Float32Array(p.size)); continue; }
    const hid = p.size / 4;
    const shared = Array.from({ length: hid }, () => rnd() < d);
    p.assign(Float32Array.from({ length: p.size }, (_, i) => ((shared[i % hid] ? rnd() < 0.8 : rnd() < other) ? 1 : -1)));
  }
  m.eval();
  const orig = native.depthwiseConv2dBnActCompactEval.bind(native);
  const inputs: number[][] = [];
  const spy = jest.spyOn(native, 'depthwiseConv2dBnActCompactEval').mockImplementation((...a) => {
    inputs.push([...(a[0] as unknown as { shape: number[] }).shape]);
    return orig(...a);
  });
  try {
    msgc.tidy(() => { msgc.noGrad(() => m.forward(msgc.tensor(randomArray(2 * 3 * 32 * 32, 22), [2, 3, 32, 32]))); });
    if (expected) expect(inputs.length).toBeGreaterThanOrEqual(1);
    else expect(inputs).toEqual([]);
    // (only the blocks whose input is 32², those of stages 1-2: the depthwise conv's input is the block's map)
    for (const shape of inputs) expect(shape[2]).toBe(32);
  } finally {
    spy.mockRestore();
    m.dispose();
  }
});

describe('native boundary', () => {
  test('bad compaction arguments throw Errors that say what was expected', () => {
    msgc.tidy(() => msgc.noGrad(() => {
      const bn = bnTensors(randomBn(32, 1));
      const x = blocked(2, 16, 5, 1);
      const w = msgc.tensor(randomArray(32 * 16, 2), [32, 16, 1, 1]);
      const m32 = msgc.tensor(mask(2, 4, 32, 0.5, 3, false), [2, 4, 32]);
      if (simd) {
        expectError(() => F.msgcConv2dBnActCompact(x, w, msgc.ones([2, 4, 16]), bn, { heads: 4, compactOutput: m32 }), /compacted output needs one head/);
        expectError(() => F.msgcConv2dBnActCompact(x, w, msgc.ones([2, 1, 16]), bn, { heads: 1, compactOutput: m32, pooled: true }), /no residual or pooled/);
        // the scale selects a channel the input mask leaves out
        const inMask = msgc.tensor(new Float32Array(2 * 16).fill(1).fill(0, 0, 3), [2, 1, 16]);
        expectError(() => F.msgcConv2dBnActCompact(x, w, msgc.ones([2, 1, 16]), bn, { heads: 1, inputMask: inMask }), /which no row of inputMask selects/);
      }
      expectError(() => F.msgcConv2dBnActCompact(x, w, msgc.ones([2, 1, 16]), bn, { heads: 1, inputMask: msgc.ones([2, 1, 15]) }), /inputMask has shape \[2, 1, 15\], expected \[2, K >= 1, 16\]/);
      expectError(() => F.msgcConv2dBnActCompact(x, w, msgc.ones([2, 1, 16]), bn, { heads: 1, compactOutput: msgc.ones([2, 1, 31]) }), /outputMask has shape/);
      const dwBn = bnTensors(randomBn(16, 4));
      const dw = msgc.tensor(randomArray(16 * 9, 5), [16, 1, 3, 3]);
      const m16 = msgc.ones([2, 1, 16]);
      expectError(() => F.depthwiseConv2dBnActCompact(x, msgc.ones([2, 1, 15]), dw, dwBn, { padding: 1 }), /mask has shape \[2, 1, 15\], expected \[2, K >= 1, 16\]/);
      expectError(() => F.depthwiseConv2dBnActCompact(x, m16, msgc.ones([16, 2, 3, 3]), dwBn, { padding: 1 }), /weight has shape \[16, 2, 3, 3\], expected \[16, 1, kh, kw\]/);
      expectError(() => F.depthwiseConv2dBnActCompact(x, m16, dw, dwBn, { padding: 3 }), /padding \(3, 3\) must be smaller than the kernel/);
      expectError(() => F.depthwiseConv2dBnActCompact(msgc.tensor(randomArray(2 * 16 * 25, 6), [2, 16, 5, 5]), m16, dw, dwBn, { padding: 1 }),
        /blocked layout of 8 or 16 channels/);
      expectError(() => F.depthwiseConv2dBnActCompact(x, m16, dw, bnTensors(randomBn(15, 4)), { padding: 1 }), /runningMean/);
    }));
  });

  test('compacted ops are for inference: a recorded gradient throws', () => {
    msgc.tidy(() => {
      const x = blocked(1, 16, 5, 1);
      const w = msgc.tensor(randomArray(16 * 16, 2), [16, 16, 1, 1], { requiresGrad: true });
      expectError(() => F.msgcConv2dBnActCompact(x, w, msgc.ones([1, 1, 16]), bnTensors(randomBn(16, 1)), { heads: 1 }), /for inference/);
    });
  });
});

test('no tensors leak from this file (compacted chains, their errors included)', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
