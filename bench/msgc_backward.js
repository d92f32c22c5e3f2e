#!/usr/bin/env node
// msgc_backward.js: the MSGC convolution's three masked paths against the dense convolution, forward and backward
// timed apart, per layer shape, batch 32, G = 4, random per-sample gates at one density: "batched" (one conv per
// head on the scaled input), "grouped" (one grouped conv over the G-fold scaled input) and "per-sample" (one
// batch-1 conv per sample with W ⊙ scale), as msgcMaskedImpl (native/cpu/msgc_persample.cc) chooses between them
// (its choice decides the training forward and the backward), and the backward kernels of our own that precede them
// where they apply (pointwise: 1×1, spatial: 3×3). All alternate in one process (MSGC_MASKED_IMPL,
// MSGC_POINTWISE_BWD and MSGC_SPATIAL_BWD are read per call), medians of the repetitions after the first. The input
// arrives in the layout a conv produces.
// Shapes: ResNet-18's 3×3 layers, ResNet-20/56's, MobileNetV2's projections (1×1). Prints a table; writes
// bench/results/msgc_backward.json. Run `npx tsc -p tsconfig.json` first (uses ../dist).
// Options: --reps N (default 9), --density d (default 0.5), --batch N (default 32), --shapes "C,O,H,k;..."
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');
const { gates: gatesG } = require('./msgc_layers');

const { F } = msgc;
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const reps = Number(opt('--reps', 9));
const density = Number(opt('--density', 0.5));
const N = Number(opt('--batch', 32));
const G = 4;
const defaultShapes = [
  // ResNet-18 (second 3×3 conv of each stage)
  [64, 64, 56, 3], [128, 128, 28, 3], [256, 256, 14, 3], [512, 512, 7, 3],
  // ResNet-20/56 (32² input)
  [16, 16, 32, 3], [32, 32, 16, 3], [64, 64, 8, 3],
  // MobileNetV2 projections
  [144, 24, 56, 1], [192, 32, 28, 1], [384, 64, 14, 1], [576, 96, 14, 1], [576, 160, 7, 1], [960, 160, 7, 1], [960, 320, 7, 1],
];
const shapes = args.includes('--shapes') ? opt('--shapes', '').split(';').map((s) => s.split(',').map(Number)) : defaultShapes;

const now = () => Number(process.hrtime.bigint()) / 1e6;
const median = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];

const rows = [];
// pointwise (1×1 shapes only): the forward as msgcMaskedImpl picks it, the backward by our own 1×1 kernels
// (native/cpu/msgc_pointwise_bwd.cc, forced with MSGC_POINTWISE_BWD=1; the other paths run with it off), timed only
// where it can run (1×1 with C and O multiples of 16: elsewhere the forced run would be the default backward);
// spatial (3×3 shapes only, likewise): the backward by our own 3×3 kernels (native/cpu/msgc_spatial_bwd.cc, forced
// with MSGC_SPATIAL_BWD=1; the other paths run with it off).
const paths = ['dense', 'batched', 'grouped', 'persample', 'pointwise', 'spatial'];
console.log(`MSGC masked forward + backward, batch ${N}, G = ${G}, density ${density}, ${msgc.backendInfo().threads} threads (ms, median of ${reps - 1})`);
console.log('shape'.padEnd(20) + 'dense fwd+bwd'.padStart(14) + paths.slice(1).map((k) => `${k} (÷ dense)`.padStart(21)).join('') + '  fastest');
for (const [C, O, H, k] of shapes) {
  const pad = (k - 1) / 2;
  const row = msgc.tidy(() => {
    const x0 = msgc.randn([N, C, H, H], { seed: 1 });
    const mix = msgc.randn([C, C, 1, 1], { seed: 4, std: 1 / Math.sqrt(C) });
    const x = msgc.noGrad(() => F.conv2d(x0, mix, null));
    x.requiresGrad = true;
    const w = msgc.randn([O, C, k, k], { seed: 2, std: 0.1 });
    w.requiresGrad = true;
    const s = msgc.tensor(gatesG(N, G, C, density, 7).v, [N, G, C]);
    s.requiresGrad = true;
    const gy = msgc.randn([N, O, H, H], { seed: 3 });
    const t = {}, tf = {};
    const pointwiseRuns = k === 1 && C % 16 === 0 && O % 16 === 0;
    const spatialRuns = k === 3 && C % 16 === 0 && O % 16 === 0;
    for (const p of paths) if ((p !== 'pointwise' || pointwiseRuns) && (p !== 'spatial' || spatialRuns)) { t[p] = []; tf[p] = []; }
    const saved = process.env.MSGC_MASKED_IMPL, savedPw = process.env.MSGC_POINTWISE_BWD, savedSp = process.env.MSGC_SPATIAL_BWD;
    try {
      for (let r = 0; r < reps; r++) {
        for (const path of Object.keys(t)) {
          if (path === 'dense' || path === 'pointwise' || path === 'spatial') delete process.env.MSGC_MASKED_IMPL;
          else process.env.MSGC_MASKED_IMPL = path;
          process.env.MSGC_POINTWISE_BWD = path === 'pointwise' ? '1' : '0';
          process.env.MSGC_SPATIAL_BWD = path === 'spatial' ? '1' : '0';
          msgc.tidy(() => {
            const f0 = now();
            const y = path === 'dense' ? F.conv2d(x, w, null, { padding: pad })
              : F.msgcConv2d(x, w, s, { heads: G, execution: 'masked', padding: pad });
            const t0 = now();
            y.backward(gy);
            if (r > 0) {
              tf[path].push(t0 - f0);
              t[path].push(now() - t0);
            }
          });
          for (const p of [x, w, s]) if (p.grad) { p.grad.dispose(); p.grad = null; }
        }
      }
    } finally {
      if (saved === undefined) delete process.env.MSGC_MASKED_IMPL;
      else process.env.MSGC_MASKED_IMPL = saved;
      if (savedPw === undefined) delete process.env.MSGC_POINTWISE_BWD;
      else process.env.MSGC_POINTWISE_BWD = savedPw;
      if (savedSp === undefined) delete process.env.MSGC_SPATIAL_BWD;
      else process.env.MSGC_SPATIAL_BWD = savedSp;
    }
    const fwd = {}, bwd = {};
    for (const k of Object.keys(t)) { fwd[k] = median(tf[k]); bwd[k] = median(t[k]); }
    const masked = Object.keys(t).slice(1);
    const fastest = masked.reduce((a, b) => (fwd[b] + bwd[b] < fwd[a] + bwd[a] ? b : a));
    return { C, O, H, k, forwardMs: fwd, backwardMs: bwd, fastest };
  });
  rows.push(row);
  const name = `${row.C}->${row.O} ${row.k}x${row.k} ${row.H}²`.padEnd(20);
  const cell = (k) => row.forwardMs[k] === undefined ? '–'.padStart(21) : `${row.forwardMs[k].toFixed(2)}+${row.backwardMs[k].toFixed(2)}`.padStart(14) +
    (k === 'dense' ? '' : ` ${((row.forwardMs.dense + row.backwardMs.dense) / (row.forwardMs[k] + row.backwardMs[k])).toFixed(2)}x`.padStart(3));
  console.log(`${name}${paths.map(cell).join(' ')}  ${row.fastest}`);
}
const out = path.join(__dirname, 'results', 'msgc_backward.json');
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), batch: N, heads: G, density, threads: msgc.backendInfo().threads,
  gatheredKernels: msgc.backendInfo().gatheredKernels, reps, note: 'forwardMs / backwardMs per path: dense, batched, grouped, persample, pointwise (1×1 with C and O multiples of 16 only: the backward by msgc_pointwise_bwd.cc), spatial (3×3 with C and O multiples of 16 only: the backward by msgc_spatial_bwd.cc); fastest: the masked path with the least forward + backward time', rows }, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), out)}`);
