#!/usr/bin/env node
// cuda-smoke.js: a short run of the GPU kernels on awkward shapes (partial tiles, closed and full heads, 1×1 maps,
// strides, an output mask, the fused epilogue), small enough to run under `compute-sanitizer --tool memcheck`,
// which reports any out-of-bounds or misaligned access the tests' value checks could miss. scripts/gpu-check.sh
// runs it so; it prints one line per case and exits non-zero on an Error.
'use strict';
const msgc = require('../dist');
const { native } = require('../dist/native');

const { F } = msgc;
const d = { device: 'cuda' };
let seed = 1;
const cases = [
  [1, 3, 5, 5, 4, 3, 1, 1, 1], [2, 13, 9, 9, 12, 3, 3, 1, 1], [3, 40, 7, 7, 140, 3, 2, 2, 1],
  [1, 33, 15, 15, 80, 1, 4, 2, 0], [2, 70, 1, 1, 36, 1, 4, 1, 0], [2, 9, 12, 10, 8, 5, 4, 2, 2],
];
msgc.noGrad(() => {
  for (const [N, C, H, W, O, k, G, stride, pad] of cases) {
    msgc.tidy(() => {
      const x = msgc.randn([N, C, H, W], { seed: seed++, ...d });
      const w = msgc.randn([O, C, k, k], { seed: seed++, ...d });
      const sv = msgc.rand([N, G, C], { seed: seed++ }).toFloat32Array().map((v, i) => (v < 0.5 || i % 7 === 0 ? 0 : v));
      const s = msgc.tensor(sv, [N, G, C], d);
      const o = { heads: G, stride, padding: pad };
      const a = F.msgcConv2d(x, w, s, { ...o, execution: 'masked' });
      const b = F.msgcConv2d(x, w, s, { ...o, execution: 'gathered' });
      const ones = msgc.ones([O], d);
      const zeros = msgc.zeros([O], d);
      const bn = { runningMean: zeros, runningVar: ones, weight: ones, bias: zeros, eps: 1e-5 };
      const p = F.msgcConv2dBnActPooled(x, w, s, bn, { ...o, execution: 'gathered', activation: 'relu', residual: b });
      const mask = msgc.tensor(msgc.rand([N, 2, O], { seed: seed++ }).toFloat32Array().map((v) => (v < 0.5 ? 0 : 1)), [N, 2, O], d);
      const m = new msgc.Tensor(native.msgcConv2dForwardGathered(x.h, w.h, s.h, [stride, stride], [pad, pad], G, mask.h));
      const av = a.toFloat32Array(), bv = b.toFloat32Array();
      let diff = 0;
      for (let i = 0; i < av.length; i++) diff = Math.max(diff, Math.abs(av[i] - bv[i]));
      msgc.cuda.synchronize();
      console.log(`N${N} C${C} ${H}x${W} O${O} k${k} G${G} s${stride}: masked vs gathered max |diff| ${diff.toExponential(2)}, pooled ${p.pooled.shape}, masked-out ${m.shape}`);
    });
  }
});
