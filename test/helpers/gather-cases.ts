// gather-cases.ts: the shapes, gates and native variants the gathered-execution tests share
// (msgc_gather.test.ts, msgc_bn_fused.test.ts).
import * as msgc from '../../lib';
import { native } from '../../lib/native';
import { randomArray } from './gradcheck';
import { setNativeEnv } from './testing';

/**
 * Gates [N, G, C] with a different density per (sample, head), head 0 of sample 0 closed, head 1 of sample 0
 * fully open (when G > 1); `real` multiplies open gates by attention-like values in [-1.5, 1.5).
 */
export function gates(N: number, G: number, C: number, seed: number, real: boolean): Float32Array {
  const u = randomArray(N * G * C, seed, 0, 1);
  const a = randomArray(N * G * C, seed + 1, -1.5, 1.5);
  const s = new Float32Array(N * G * C);
  for (let n = 0; n < N; n++)
    for (let i = 0; i < G; i++) {
      const density = n === 0 && i === 0 ? 0 : n === 0 && i === 1 ? 1 : 0.1 + 0.8 * (((n * G + i) * 7) % 11) / 10;
      for (let c = 0; c < C; c++) {
        const k = (n * G + i) * C + c;
        if (u[k] < density) s[k] = real ? a[k] : 1;
      }
    }
  return s;
}

export interface Case {
  N: number; C: number; H: number; W: number; O: number; k: number; G: number; stride: number; pad: number;
  blocked: boolean; real: boolean;
}

export const cases: Case[] = [
  // ResNet-like 3×3, stride 1 and 2, blocked input, binary gates and attention
  { N: 2, C: 32, H: 9, W: 9, O: 64, k: 3, G: 4, stride: 1, pad: 1, blocked: true, real: false },
  { N: 9, C: 32, H: 8, W: 8, O: 32, k: 3, G: 2, stride: 1, pad: 1, blocked: true, real: true },
  { N: 3, C: 16, H: 11, W: 10, O: 32, k: 3, G: 2, stride: 2, pad: 1, blocked: true, real: false },
  { N: 1, C: 48, H: 7, W: 7, O: 64, k: 3, G: 4, stride: 1, pad: 1, blocked: false, real: true },
  { N: 2, C: 16, H: 33, W: 31, O: 32, k: 3, G: 2, stride: 1, pad: 1, blocked: true, real: true },
  // MobileNetV2-like pointwise, head widths 4..16, plain and blocked, C not a multiple of 16
  { N: 2, C: 40, H: 9, W: 9, O: 16, k: 1, G: 4, stride: 1, pad: 0, blocked: true, real: false },
  { N: 8, C: 64, H: 6, W: 6, O: 64, k: 1, G: 4, stride: 1, pad: 0, blocked: true, real: true },
  { N: 1, C: 33, H: 5, W: 7, O: 24, k: 1, G: 4, stride: 1, pad: 0, blocked: false, real: true },
  // odd shapes: 5×5, stride 2 with 1×1, padding without stride, 3 heads, C = 5
  { N: 2, C: 17, H: 8, W: 6, O: 48, k: 5, G: 3, stride: 2, pad: 2, blocked: false, real: true },
  { N: 3, C: 20, H: 7, W: 9, O: 32, k: 1, G: 2, stride: 2, pad: 0, blocked: false, real: false },
  { N: 2, C: 5, H: 6, W: 7, O: 8, k: 3, G: 4, stride: 1, pad: 2, blocked: false, real: true },
  // wide heads (O/G = 32..64: 2 or 4 output blocks per kernel call), 3×3 stride 1 and 2, 1×1 in place, im2col
  { N: 2, C: 24, H: 9, W: 9, O: 128, k: 3, G: 2, stride: 1, pad: 1, blocked: true, real: false },
  { N: 3, C: 20, H: 7, W: 7, O: 64, k: 3, G: 2, stride: 1, pad: 1, blocked: false, real: true },
  { N: 2, C: 16, H: 15, W: 13, O: 128, k: 3, G: 4, stride: 2, pad: 1, blocked: true, real: true },
  { N: 2, C: 40, H: 6, W: 9, O: 64, k: 1, G: 1, stride: 1, pad: 0, blocked: true, real: false },
  { N: 1, C: 33, H: 5, W: 7, O: 128, k: 1, G: 2, stride: 1, pad: 0, blocked: false, real: true },
  { N: 2, C: 8, H: 10, W: 10, O: 64, k: 3, G: 2, stride: 3, pad: 1, blocked: false, real: false },
  // pointwise heads of 3 and 5 output blocks in one kernel call (MobileNetV2's 40 and 80 outputs per head), and
  // heads of 24 outputs (two blocks, the second half empty; on AVX-512 written to nChw16c from inside its blocks,
  // with MSGC_GATHER_SHIFT=0 to plain NCHW), pointwise and 3×3
  { N: 3, C: 48, H: 7, W: 7, O: 160, k: 1, G: 4, stride: 1, pad: 0, blocked: true, real: false },
  { N: 2, C: 37, H: 5, W: 6, O: 80, k: 1, G: 1, stride: 1, pad: 0, blocked: false, real: true },
  { N: 2, C: 32, H: 5, W: 5, O: 160, k: 1, G: 2, stride: 1, pad: 0, blocked: true, real: false },
  { N: 3, C: 20, H: 4, W: 6, O: 120, k: 1, G: 3, stride: 1, pad: 0, blocked: false, real: true },
  { N: 9, C: 96, H: 4, W: 4, O: 96, k: 1, G: 4, stride: 1, pad: 0, blocked: true, real: true },
  { N: 2, C: 32, H: 6, W: 7, O: 48, k: 3, G: 2, stride: 1, pad: 1, blocked: true, real: false },
  // 3×3 stride 1 on nChw16c read in place (rows wider than half a register block): one output row (both padding
  // rows skipped), two rows, C not a multiple of 16, 1 and 2 output blocks per kernel call, row ends and interiors
  { N: 2, C: 48, H: 1, W: 20, O: 32, k: 3, G: 2, stride: 1, pad: 1, blocked: true, real: false },
  { N: 3, C: 40, H: 2, W: 16, O: 64, k: 3, G: 2, stride: 1, pad: 1, blocked: true, real: true },
  { N: 2, C: 24, H: 14, W: 14, O: 128, k: 3, G: 4, stride: 1, pad: 1, blocked: true, real: false },
  { N: 1, C: 64, H: 5, W: 30, O: 64, k: 3, G: 4, stride: 1, pad: 1, blocked: true, real: true },
  // ... and stride 2 (pixels 32 apart): even H with odd W (the right padding column at a row's end, two pieces)
  { N: 2, C: 40, H: 14, W: 29, O: 64, k: 3, G: 2, stride: 2, pad: 1, blocked: true, real: false },
  // heads of 8 and 24 outputs (16k + 8: on AVX2 a last block of one ymm half, nChw8c output), stride 1 and 2
  { N: 3, C: 32, H: 10, W: 12, O: 32, k: 3, G: 4, stride: 1, pad: 1, blocked: true, real: true },
  { N: 2, C: 16, H: 11, W: 9, O: 24, k: 3, G: 3, stride: 2, pad: 1, blocked: true, real: false },
  { N: 2, C: 24, H: 7, W: 13, O: 48, k: 3, G: 2, stride: 1, pad: 1, blocked: false, real: true },
];

// every native variant on this machine; a variant the CPU cannot run falls back to the portable one
export const variants: Array<Record<string, string>> = [
  {},
  { MSGC_GATHER_KERNEL: 'direct' },
  { MSGC_GATHER_KERNEL: 'im2col' },
  { MSGC_GATHER_KERNEL: 'pixvec' }, // (blocked x, whole 16-channel blocks of outputs: written as nChw16c)
  { MSGC_GATHER_KERNEL: 'pixvec', MSGC_GATHER_PIXBLOCK: '0' }, // pixvec's plain NCHW output
  { MSGC_GATHER_KERNEL: 'ocvec' }, // 16-output blocks also for head widths that are not multiples of 16
  { MSGC_GATHER_KERNEL: 'ocvec', MSGC_GATHER_FOLD: 'weights' },
  { MSGC_GATHER_KERNEL: 'sgemm' },
  { MSGC_GATHER_FOLD: 'weights' },
  { MSGC_GATHER_SHARED: '1' },
  { MSGC_GATHER_SHARED: '1', MSGC_GATHER_FOLD: 'weights', MSGC_GATHER_KERNEL: 'pixvec' },
  { threads: '1' }, // one thread: whole samples per thread whatever the batch
  // the default bound below which a call runs on one thread (withEnv otherwise sets 0, so that these small cases
  // exercise the threads' paths, as larger calls do)
  { MSGC_GATHER_SERIAL_MACS: '1500000' },
  { MSGC_GATHER_NB: '4' }, // wide heads: 4 output blocks per kernel call instead of 2
  { MSGC_GATHER_NB: '1', MSGC_GATHER_KERNEL: 'direct' },
  { MSGC_GATHER_DIRECT: 'copy' }, // 3×3 stride 1 on nChw16c: the padded copy instead of reading x in place
  // the AVX2 kernels (two ymm halves per 16 outputs; where AVX-512 runs by default, forced): blocked inputs read in
  // place (nChw8c where oneDNN picks it, i.e. on AVX2 CPUs; nChw16c otherwise) and their padded copies, folded
  // weights, head widths that are not multiples of 16 (plain output), samples shared by the threads
  { MSGC_GATHER_ISA: 'avx2' },
  { MSGC_GATHER_ISA: 'avx2', MSGC_GATHER_DIRECT: 'copy', MSGC_GATHER_FOLD: 'weights' },
  { MSGC_GATHER_ISA: 'avx2', MSGC_GATHER_KERNEL: 'ocvec', MSGC_GATHER_SHARED: '1' },
  { MSGC_GATHER_ISA: 'avx2', threads: '1' },
  // AVX2: 1×1 convs' selected channels in groups of 5 (each group adding into the outputs the previous left), heads
  // of 16k + 8 outputs with their last 8 in a half-block call of their own instead of a 24-output one, and rows of 7
  // pixels in register blocks of 4 + 3 instead of one of 7
  { MSGC_GATHER_ISA: 'avx2', MSGC_GATHER_KC: '5', MSGC_GATHER_TRIPLE: '0', MSGC_GATHER_Q7: '0' },
  // AVX2 1×1 items over all of a head's output blocks (by default only with enough items to share), channel groups
  // of 7 going over every block before the next group; and one block per item
  { MSGC_GATHER_ISA: 'avx2', MSGC_GATHER_ALLBLOCKS: '1', MSGC_GATHER_KC: '7', MSGC_GATHER_SHARED: '1' },
  { MSGC_GATHER_ISA: 'avx2', MSGC_GATHER_ALLBLOCKS: '0' },
  // narrow heads (fewer than 16 outputs, not a whole vector) each on their own, as the pixvec or (forced) the ocvec
  // kernel, rather than as one head over their union (the default where the outputs fill whole vectors)
  { MSGC_GATHER_UNION: '0' },
  { MSGC_GATHER_UNION: '0', MSGC_GATHER_KERNEL: 'ocvec' },
  { MSGC_GATHER_UNION: '0', MSGC_GATHER_ISA: 'avx2' },
  // AVX-512 heads of 16k + 8 outputs (24, 40; forced ocvec heads of 8) written to plain NCHW instead of to nChw16c from
  // inside its blocks (Job::shifted), and with the union off, heads of 8 each on their own to nChw16c
  { MSGC_GATHER_SHIFT: '0' },
  { MSGC_GATHER_SHIFT: '0', MSGC_GATHER_UNION: '0', MSGC_GATHER_KERNEL: 'ocvec' },
];

export function withEnv<T>(env: Record<string, string>, fn: () => T): T {
  const keys = ['MSGC_GATHER_KERNEL', 'MSGC_GATHER_FOLD', 'MSGC_GATHER_SHARED', 'MSGC_GATHER_NB', 'MSGC_GATHER_DIRECT', 'MSGC_GATHER_ISA',
    'MSGC_GATHER_KC', 'MSGC_GATHER_TRIPLE', 'MSGC_GATHER_ALLBLOCKS', 'MSGC_GATHER_Q7', 'MSGC_GATHER_SERIAL_MACS', 'MSGC_GATHER_UNION',
    'MSGC_GATHER_SHIFT', 'MSGC_GATHER_PIXBLOCK'];
  const saved = keys.map((k) => native.getEnv(k) ?? undefined);
  const threads = msgc.backendInfo().threads;
  // (small test shapes would run on one thread by default: every call uses the threads unless the variant says)
  for (const k of keys) setNativeEnv(k, env[k] ?? (k === 'MSGC_GATHER_SERIAL_MACS' ? '0' : undefined));
  if (env.threads) msgc.setNumThreads(Number(env.threads));
  try {
    return fn();
  } finally {
    msgc.setNumThreads(threads);
    keys.forEach((k, i) => setNativeEnv(k, saved[i]));
  }
}
