#!/usr/bin/env node
// msgc_ops.js: the MSGC convolution's execution paths against the dense convolution, on every MSGC layer shape of
// ResNet-18 (the second 3×3 conv of each block), ResNet-50 (the 3×3 conv of each bottleneck) and MobileNetV2
// (each projection 1×1 conv), 224² input, G = 4 heads, batch 1 and 32, gate densities 0.25 / 0.5 / 0.75 (random
// binary masks: each (sample, head, channel) gate is open with that probability).
// All in noGrad, alternating dense F.conv2d (the baseline), masked and gathered F.msgcConv2d, best of several
// repetitions; the input arrives in the layout the previous conv produced (as in a network).
// Columns: ms of each path, speedup = dense / gathered, MAC ratio = measured density (the gathered path's
// multiply-adds relative to dense), efficiency = speedup ÷ (1 / density) (1.0 = the ideal speedup).
// Writes bench/results/msgc_ops.json (msgc_ops-avx2.json with the AVX2 kernels). Run `npx tsc -p tsconfig.json` first (uses ../dist).
// (H below is the output size; the input is H·stride.)
// Options: --quick (2 reps, batch 1 only), --reps N, --batch 1,32, --net resnet18|resnet50|mobilenetv2,
//          --density 0.25,0.5,0.75, --threads N
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');

const { layers, gates: gatesG } = require('./msgc_layers');

const { F } = msgc;
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const quick = args.includes('--quick');
const reps = Number(opt('--reps', quick ? 2 : 4));
const batches = opt('--batch', quick ? '1' : '1,32').split(',').map(Number);
const densities = opt('--density', '0.25,0.5,0.75').split(',').map(Number);
const netFilter = opt('--net', null);
if (args.includes('--threads')) msgc.setNumThreads(Number(opt('--threads', 0)));
const G = 4;
const gates = (N, C, density, seed) => gatesG(N, G, C, density, seed);

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function time(fn) {
  return msgc.tidy(() => {
    const t0 = now();
    fn();
    return now() - t0;
  });
}

function benchShape(s, N) {
  return msgc.noGrad(() => {
    const rows = [];
    const x0 = msgc.randn([N, s.C, s.H * s.stride, s.H * s.stride], { seed: 1 });
    // the layout a conv produces (nChw16c for these channel counts), as MSGC's input has in a network
    const mix = msgc.randn([s.C, s.C, 1, 1], { seed: 4, std: 1 / Math.sqrt(s.C) });
    const x = F.conv2d(x0, mix, null);
    x0.dispose();
    mix.dispose();
    const w = msgc.randn([s.O, s.C, s.k, s.k], { seed: 2, std: 0.1 });
    const conv = { stride: s.stride, padding: s.pad };
    const scales = densities.map((d, j) => {
      const g = gates(N, s.C, d, 7 + j);
      return { d, measured: g.measured, t: msgc.tensor(g.v, [N, G, s.C]) };
    });
    const best = { dense: Infinity, masked: scales.map(() => Infinity), gathered: scales.map(() => Infinity) };
    for (let r = 0; r <= reps; r++) {
      // repetition 0 warms up (weight layouts, primitive caches); then alternate dense, masked, gathered
      const dense = time(() => F.conv2d(x, w, null, conv));
      if (r > 0) best.dense = Math.min(best.dense, dense);
      scales.forEach((sc, j) => {
        const m = time(() => F.msgcConv2d(x, w, sc.t, { ...conv, heads: G, execution: 'masked' }));
        const g = time(() => F.msgcConv2d(x, w, sc.t, { ...conv, heads: G, execution: 'gathered' }));
        if (r > 0) {
          best.masked[j] = Math.min(best.masked[j], m);
          best.gathered[j] = Math.min(best.gathered[j], g);
        }
      });
    }
    scales.forEach((sc, j) => {
      const speedup = best.dense / best.gathered[j];
      rows.push({
        net: s.net, layer: s.name, N, C: s.C, O: s.O, H: s.H * s.stride, outH: s.H, k: s.k, stride: s.stride, heads: G,
        density: sc.d, macRatio: sc.measured,
        denseMs: best.dense, maskedMs: best.masked[j], gatheredMs: best.gathered[j],
        speedup, efficiency: speedup * sc.measured, maskedOverDense: best.masked[j] / best.dense,
      });
      sc.t.dispose();
    });
    x.dispose();
    w.dispose();
    return rows;
  });
}

function main() {
  const shapes = layers(netFilter);
  const t0 = now();
  console.log(`msgc ${require('../package.json').version}, ${msgc.backendInfo().threads} threads, ${msgc.backendInfo().gatheredKernels} kernels, G = ${G}, best of ${reps}` +
    ` (after a warm-up), batches ${batches.join('/')}, densities ${densities.join('/')}`);
  const rows = [];
  for (const N of batches) for (const s of shapes) rows.push(...benchShape(s, N));
  const fmt = (v, w, d = 2) => v.toFixed(d).padStart(w);
  for (const d of densities) {
    console.log(`\ndensity ${d}`);
    console.log('net          layer                 N  shape (C→O, in², k, s)    dense ms  masked ms  gathered ms  speedup  MAC ratio  speedup/(1/d)');
    for (const r of rows.filter((q) => q.density === d)) {
      const shape = `${r.C}→${r.O} ${r.H}² k${r.k} s${r.stride}`;
      console.log(`${r.net.padEnd(12)} ${r.layer.padEnd(20)} ${String(r.N).padStart(2)}  ${shape.padEnd(24)} ${fmt(r.denseMs, 9, 3)} ${fmt(r.maskedMs, 10, 3)} ${fmt(r.gatheredMs, 12, 3)} ${fmt(r.speedup, 8)} ${fmt(r.macRatio, 10)} ${fmt(r.efficiency, 14)}`);
    }
  }
  console.log('\nefficiency = speedup ÷ ideal speedup (geometric mean per net and batch)');
  for (const d of densities)
    for (const net of [...new Set(rows.map((r) => r.net))])
      for (const N of batches) {
        const rs = rows.filter((r) => r.density === d && r.net === net && r.N === N);
        if (!rs.length) continue;
        const gm = Math.exp(rs.reduce((a, r) => a + Math.log(r.efficiency), 0) / rs.length);
        const min = Math.min(...rs.map((r) => r.efficiency));
        console.log(`  density ${d}  ${net.padEnd(12)} batch ${String(N).padStart(2)}: geometric mean ${gm.toFixed(2)}, min ${min.toFixed(2)}`);
      }
  const outDir = path.join(__dirname, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  // (one file per kind of gathered kernels: msgc_ops.json for AVX-512, msgc_ops-avx2.json, msgc_ops-portable.json)
  const kernels = msgc.backendInfo().gatheredKernels;
  const file = path.join(outDir, kernels === 'avx512' ? 'msgc_ops.json' : `msgc_ops-${kernels}.json`);
  fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), threads: msgc.backendInfo().threads, gatheredKernels: kernels, heads: G, reps, rows }, null, 2));
  console.log(`\nwrote ${path.relative(path.join(__dirname, '..'), file)} (${((now() - t0) / 1000).toFixed(0)} s)`);
}

main();
