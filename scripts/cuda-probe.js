#!/usr/bin/env node
// cuda-probe.js: where the direct tensor-core MSGC kernel's time goes on ResNet-18's 3×3 layers at batch 32,
// density 0.5, gathered: the whole kernel, then MSGC_CUDA_PROBE=1 (the stages' copies and barriers without the
// products) and =2 (the products on the first stage's copies, no later copies), against cuDNN's dense conv of the
// same shape. The probes' outputs are wrong by design; only their times mean something. Medians of 20 timed calls
// after 3 warm-ups, each call synchronised. scripts/gpu-check.sh runs it.
'use strict';
const msgc = require('../dist');
const { native } = require('../dist/native');
const { gates } = require('../bench/msgc_layers');

const { F } = msgc;
if (!msgc.cuda.isAvailable()) {
  console.error(`cuda-probe: ${msgc.cuda.info().reason}`);
  process.exit(2);
}
const d = { device: 'cuda' };
const N = 32, G = 4;
const now = () => Number(process.hrtime.bigint()) / 1e3;
function median(fn) {
  const t = [];
  for (let i = 0; i < 23; i++) {
    const t0 = now();
    msgc.tidy(fn);
    msgc.cuda.synchronize();
    if (i >= 3) t.push(now() - t0);
  }
  return t.sort((a, b) => a - b)[10];
}
console.log('shape (batch 32, d 0.5)     cuDNN µs  direct µs  copies only  products only');
msgc.noGrad(() => {
  for (const [C, H] of [[64, 56], [128, 28], [256, 14], [512, 7]]) {
    msgc.tidy(() => {
      const x = msgc.randn([N, C, H, H], { seed: 1, ...d });
      const w = msgc.randn([C, C, 3, 3], { seed: 2, std: 0.1, ...d });
      const s = msgc.tensor(gates(N, G, C, 0.5, 7).v, [N, G, C], d);
      const run = () => F.msgcConv2d(x, w, s, { heads: G, padding: 1, execution: 'gathered' });
      const dense = median(() => F.conv2d(x, w, null, { padding: 1 }));
      const times = ['0', '1', '2'].map((probe) => {
        native.setEnv('MSGC_CUDA_PROBE', probe);
        return median(run);
      });
      native.setEnv('MSGC_CUDA_PROBE', null);
      console.log(`${C}→${C} ${H}²`.padEnd(28) + [dense, ...times].map((v) => v.toFixed(1).padStart(11)).join(''));
    });
  }
});
