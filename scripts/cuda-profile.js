#!/usr/bin/env node
// cuda-profile.js: a few calls of the MSGC GPU kernels on the layer shapes where they fall furthest behind cuDNN,
// to run under Nsight Compute (scripts/gpu-check.sh --profile): ResNet-18's 64→64 3×3 at 56² and 512→512 at 7²,
// batch 32, 4 heads, gate density 0.5, gathered, then cuDNN's dense conv of the same shape for reference. Each case runs twice (the
// first call warms the allocator and cuDNN's algorithm search); profile with --launch-skip / a kernel filter.
'use strict';
const msgc = require('../dist');
const { gates } = require('../bench/msgc_layers');

const { F } = msgc;
if (!msgc.cuda.isAvailable()) {
  console.error(`cuda-profile: ${msgc.cuda.info().reason}`);
  process.exit(2);
}
const d = { device: 'cuda' };
const N = 32, G = 4;
msgc.noGrad(() => {
  for (const [C, H] of [[64, 56], [512, 7]]) {
    msgc.tidy(() => {
      const x = msgc.randn([N, C, H, H], { seed: 1, ...d });
      const w = msgc.randn([C, C, 3, 3], { seed: 2, std: 0.1, ...d });
      const g = gates(N, G, C, 0.5, 7);
      const s = msgc.tensor(g.v, [N, G, C], d);
      for (let i = 0; i < 2; i++) F.msgcConv2d(x, w, s, { heads: G, padding: 1, execution: 'gathered' }).dispose();
      msgc.cuda.synchronize();
      console.log(`${C}→${C} ${H}² batch ${N}: gathered done`);
      for (let i = 0; i < 2; i++) F.conv2d(x, w, { padding: 1 }).dispose();
      msgc.cuda.synchronize();
    });
  }
});
