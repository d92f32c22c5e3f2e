#!/usr/bin/env node
// cuda-smoke.js: a short run of the GPU kernels on awkward shapes (partial tiles, closed and full heads, 1×1 maps,
// strides, an output mask, the fused epilogue; then every other GPU kernel once), small enough to run under
// `compute-sanitizer --tool memcheck` (and racecheck),
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
  // the other GPU kernels once each, on awkward sizes
  msgc.tidy(() => {
    const x = msgc.randn([3, 5, 7, 9], { seed: 99, ...d });
    F.relu6(F.sigmoid(F.relu(x)));
    F.add(x, msgc.randn([1, 5, 1, 9], { seed: 98, ...d }));
    F.mul(x, msgc.randn([3, 1, 7, 1], { seed: 97, ...d }));
    F.maxPool2d(x, { kernelSize: 3, stride: 2, padding: 1 });
    F.avgPool2d(x, { kernelSize: 2 });
    F.adaptiveAvgPool2d(x, 1);
    F.concat([x, x, F.reshape(x, [3, 5, 7, 9])], 1);
    F.linear(msgc.randn([3, 37], { seed: 96, ...d }), msgc.randn([11, 37], { seed: 95, ...d }), msgc.randn([11], { seed: 94, ...d }));
    F.conv2d(x, msgc.randn([4, 5, 3, 3], { seed: 93, ...d }), null, { padding: 1 });
    const bn = { runningMean: msgc.zeros([5], d), runningVar: msgc.ones([5], d), weight: null, bias: null };
    F.batchNormActPooled(x, bn.runningMean, bn.runningVar, null, null, { training: false, activation: 'relu' });
    msgc.cuda.synchronize();
    console.log('elementwise kernels, pools, concat, linear, conv, BN: done');
  });
});
