#!/usr/bin/env node
// msgc_compact.js: MobileNetV2's producer skipping (spec §2.10), per block shape at 224² input: the expansion 1×1
// conv + BN + ReLU6 and the depthwise 3×3 conv + BN + ReLU6 of one inverted residual block, run
//   dense    oneDNN's convs over every hidden channel (what the block runs when it does not skip),
//   skip     the expansion as a gathered one-head conv that computes only the hidden channels some head selects
//            (the others written as BN(0)), then oneDNN's depthwise conv over every channel,
//   compact  the same expansion writing only those channels, compacted (F.msgcConv2dBnActCompact), and our
//            depthwise kernel on the occupied slots only (F.depthwiseConv2dBnActCompact),
// at union shares u (the share of (sample, hidden channel) pairs some head selects: a seeded Bernoulli(u) mask),
// batch 1 and 32, all in noGrad, alternating, best-of medians. The projection is left out: it costs the same
// whether its input is compacted or not. Columns: ms of each path and its ratio to dense (below 1: faster).
// Writes bench/results/msgc_compact.json (msgc_compact-avx2.json with the AVX2 kernels).
// Options: --batch 1,32  --union 0.2,0.35,0.5,0.65,0.8  --reps N (timed calls per path; default 60 / 8)
//          --shapes "16,96,112,2 24,144,56,1" (inp,hid,H,stride)
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');
const { native } = require('../dist/native');

const { F } = msgc;
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const batches = opt('--batch', '1,32').split(',').map(Number);
const unions = opt('--union', '0.2,0.35,0.5,0.65,0.8').split(',').map(Number);
// MobileNetV2's expansion blocks (t = 6) at 224²: input channels, hidden channels, input map, depthwise stride
const shapes = opt('--shapes', '16,96,112,2 24,144,56,1 24,144,56,2 32,192,28,1 32,192,28,2 64,384,14,1 96,576,14,1 96,576,14,2 160,960,7,1')
  .split(' ').map((s) => s.split(',').map(Number));
const kernels = msgc.backendInfo().gatheredKernels;
if (kernels === 'portable') {
  console.log('msgc_compact.js: this CPU runs the portable gathered kernels, which do not compact; nothing to time');
  process.exit(0);
}

let seed = 7;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
const tensor = (shape, f) => msgc.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f), shape);
const bnOf = (C) => ({ runningMean: tensor([C], () => rnd() - 0.5), runningVar: tensor([C], () => 0.5 + rnd()),
  weight: tensor([C], () => 0.5 + rnd()), bias: tensor([C], () => rnd() - 0.5), eps: 1e-5 });
const median = (a) => { const s = [...a].sort((p, q) => p - q); return s[s.length >> 1]; };
const now = () => Number(process.hrtime.bigint()) / 1e6;

const rows = [];
console.log(`MobileNetV2 expansion + depthwise, dense vs skip vs compact (${msgc.backendInfo().threads} threads, ${kernels} kernels)`);
console.log('batch  block (inp→hid, in², s)   union  dense ms   skip ms (÷dense)   compact ms (÷dense)');
for (const N of batches) {
  const reps = Number(opt('--reps', N > 4 ? 8 : 60));
  for (const [inp, hid, H, stride] of shapes) {
    // the block's input in the layout the previous block leaves (blocked)
    const x = msgc.tidy(() => F.conv2d(tensor([N, inp, H, H], () => rnd() * 2 - 1), tensor([inp, inp, 1, 1], () => (rnd() - 0.5) * 0.5)));
    const wE = tensor([hid, inp, 1, 1], () => (rnd() - 0.5) * 0.5), bnE = bnOf(hid);
    const wD = tensor([hid, 1, 3, 3], () => rnd() - 0.5), bnD = bnOf(hid);
    const all = msgc.ones([N, 1, inp]);
    for (const u of unions) {
      const m = tensor([N, 1, hid], () => (rnd() < u ? 1 : 0));
      const paths = {
        dense: () => {
          const e = F.conv2dBnAct(x, wE, null, bnE, { activation: 'relu6' });
          F.conv2dBnAct(e, wD, null, bnD, { stride, padding: 1, groups: hid, activation: 'relu6' }).dispose();
          e.dispose();
        },
        skip: () => {
          // (the native call: F.msgcConv2dBnAct would drop the mask where preferOutputSkipping() expects no gain)
          const e = new msgc.Tensor(native.msgcConv2dBnActEval(x.h, wE.h, all.h, [1, 1], [0, 0], 1, m.h, bnE.runningMean.h,
            bnE.runningVar.h, bnE.weight.h, bnE.bias.h, bnE.eps, 1, null, false));
          F.conv2dBnAct(e, wD, null, bnD, { stride, padding: 1, groups: hid, activation: 'relu6' }).dispose();
          e.dispose();
        },
        compact: () => {
          const e = F.msgcConv2dBnActCompact(x, wE, all, bnE, { heads: 1, compactOutput: m, activation: 'relu6' }).y;
          F.depthwiseConv2dBnActCompact(e, m, wD, bnD, { stride, padding: 1, activation: 'relu6' }).dispose();
          e.dispose();
        },
      };
      const t = { dense: [], skip: [], compact: [] };
      msgc.noGrad(() => {
        for (const k of Object.keys(paths)) paths[k]();  // warm-up (primitive caches, weight layouts)
        for (let r = 0; r < reps; r++)
          for (const k of Object.keys(paths)) {
            const t0 = now();
            paths[k]();
            t[k].push(now() - t0);
          }
      });
      m.dispose();
      const d = median(t.dense), s = median(t.skip), c = median(t.compact);
      rows.push({ batch: N, inp, hid, H, stride, union: u, denseMs: d, skipMs: s, compactMs: c, skipRatio: s / d, compactRatio: c / d });
      console.log(`${String(N).padEnd(6)} ${`${inp}→${hid}, ${H}², s${stride}`.padEnd(25)} ${u.toFixed(2).padEnd(6)} ${d.toFixed(3).padStart(8)} ` +
        `${s.toFixed(3).padStart(9)} (${(s / d).toFixed(2)})   ${c.toFixed(3).padStart(9)} (${(c / d).toFixed(2)})`);
    }
    for (const tns of [x, wE, wD, all]) tns.dispose();
  }
}
const outDir = path.join(__dirname, 'results');
fs.mkdirSync(outDir, { recursive: true });
const file = path.join(outDir, kernels === 'avx2' ? 'msgc_compact-avx2.json' : 'msgc_compact.json');
fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), threads: msgc.backendInfo().threads, kernels, rows }, null, 2));
console.log(`wrote ${path.relative(process.cwd(), file)}`);
