#!/usr/bin/env node
// cuda_ops.js: the MSGC convolution on the GPU against cuDNN's dense convolution, on the MSGC layer shapes of
// ResNet-18, ResNet-50 and MobileNetV2 (bench/msgc_layers.js), G = 4 heads, batch 1 and 32, gate densities
// 0.25 / 0.5 / 0.75 (random binary gates). Paths, each timed in the same run and alternated:
//   cudnn     F.conv2d: cuDNN, strict float32 (FMA math, the fastest algorithm cudnnFind reports) — the baseline
//   tf32      the same with TF32 tensor cores allowed (MSGC_CUDA_TF32=1; PyTorch's default for cuDNN convs), for
//             reference: our kernel computes in float32
//   masked    F.msgcConv2d execution 'masked': our implicit-GEMM kernel over every channel, times the scales
//             (the reference implementation's arithmetic; it is also our kernel's dense speed); with
//             MSGC_CUDA_MASKED=cudnn instead cuDNN's grouped convolution over the G scaled copies of the input
//   gathered  execution 'gathered': the same kernel over each (sample, head)'s selected channels only
// Timing: the GPU is synchronised before and after a loop of calls whose length is calibrated to ~20 ms; best of
// --reps loops. Per call this includes the JavaScript and N-API cost (~10-20 µs), as a user's forward would.
// Columns: µs per call of each path; vs cudnn = cudnn / gathered; vs masked = masked / gathered (the kernel's own
// gain from skipping channels); MAC ratio = measured density; efficiency = (cudnn / gathered) × density.
// Writes bench/results/cuda_ops.json. Run `npx tsc -p tsconfig.json` first (uses ../dist); needs a CUDA build
// and a GPU (exits with the reason otherwise).
// Options: --reps N (default 5), --batch 1,32, --density 0.25,0.5,0.75, --net resnet18|resnet50|mobilenetv2
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');
const { native } = require('../dist/native');
const { layers, gates } = require('./msgc_layers');

const { F } = msgc;
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const reps = Number(opt('--reps', 5));
const batches = opt('--batch', '1,32').split(',').map(Number);
const densities = opt('--density', '0.25,0.5,0.75').split(',').map(Number);
const netFilter = opt('--net', null);
const G = 4;

const info = msgc.cuda.info();
if (!info.available) {
  console.error(`cuda_ops: no GPU to benchmark: ${info.reason}`);
  process.exit(2);
}

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** ms per call of fn (which returns a tensor to dispose), over a loop of `iters` calls bracketed by syncs */
function loop(fn, iters) {
  msgc.cuda.synchronize();
  const t0 = now();
  for (let i = 0; i < iters; i++) fn().dispose();
  msgc.cuda.synchronize();
  return (now() - t0) / iters;
}

function benchShape(s, N) {
  return msgc.noGrad(() => {
    const d = { device: 'cuda' };
    const x = msgc.randn([N, s.C, s.H * s.stride, s.H * s.stride], { seed: 1, ...d });
    const w = msgc.randn([s.O, s.C, s.k, s.k], { seed: 2, std: 0.1, ...d });
    const conv = { stride: s.stride, padding: s.pad };
    const scales = densities.map((dens, j) => {
      const g = gates(N, G, s.C, dens, 7 + j);
      return { d: dens, measured: g.measured, t: msgc.tensor(g.v, [N, G, s.C], d) };
    });
    // cuDNN in strict float32 (the baseline), and with TF32 tensor cores allowed (PyTorch's default for convs)
    const tf32 = (fn) => () => {
      native.setEnv('MSGC_CUDA_TF32', '1');
      try {
        return fn();
      } finally {
        native.setEnv('MSGC_CUDA_TF32', null);
      }
    };
    const paths = [['cudnn', null, () => F.conv2d(x, w, null, conv)], ['cudnn-tf32', null, tf32(() => F.conv2d(x, w, null, conv))]];
    scales.forEach((sc, j) => {
      paths.push(['masked', j, () => F.msgcConv2d(x, w, sc.t, { ...conv, heads: G, execution: 'masked' })]);
      paths.push(['gathered', j, () => F.msgcConv2d(x, w, sc.t, { ...conv, heads: G, execution: 'gathered' })]);
    });
    // warm-up (cuDNN's algorithm search, the allocator's cache) and calibration to ~20 ms per loop
    const iters = paths.map(([, , fn]) => {
      loop(fn, 3);
      const t = loop(fn, 5);
      return Math.max(5, Math.min(2000, Math.round(20 / Math.max(t, 1e-3))));
    });
    const best = paths.map(() => Infinity);
    for (let r = 0; r < reps; r++) paths.forEach(([, , fn], i) => { best[i] = Math.min(best[i], loop(fn, iters[i])); });
    const rows = scales.map((sc, j) => {
      const cudnn = best[0];
      const cudnnTf32 = best[1];
      const masked = best[2 + 2 * j];
      const gathered = best[3 + 2 * j];
      return {
        net: s.net, layer: s.name, N, C: s.C, O: s.O, H: s.H * s.stride, outH: s.H, k: s.k, stride: s.stride, heads: G,
        density: sc.d, macRatio: sc.measured, cudnnUs: cudnn * 1e3, cudnnTf32Us: cudnnTf32 * 1e3, maskedUs: masked * 1e3, gatheredUs: gathered * 1e3,
        speedupVsCudnn: cudnn / gathered, speedupVsMasked: masked / gathered, efficiency: (cudnn / gathered) * sc.measured,
        gflops: (2 * N * s.O * s.C * s.k * s.k * s.H * s.H * sc.measured) / (gathered * 1e6),
      };
    });
    for (const sc of scales) sc.t.dispose();
    x.dispose();
    w.dispose();
    return rows;
  });
}

function main() {
  const shapes = layers(netFilter);
  const t0 = now();
  console.log(`msgc ${require('../package.json').version} on ${info.name} (sm ${info.computeCapability}, ${info.multiprocessors} SMs, ` +
    `CUDA runtime ${info.runtimeVersion}, driver ${info.driverVersion}, cuDNN ${info.cudnnVersion}); G = ${G}, best of ${reps} loops`);
  const rows = [];
  for (const N of batches) for (const s of shapes) rows.push(...benchShape(s, N));
  const fmt = (v, w, dgt = 2) => v.toFixed(dgt).padStart(w);
  for (const dens of densities) {
    console.log(`\ndensity ${dens}`);
    console.log('net          layer                 N  shape (C→O, in², k, s)    cudnn µs   tf32 µs  masked µs  gathered µs  vs cudnn  vs masked  MAC ratio  efficiency  GFLOP/s');
    for (const r of rows.filter((q) => q.density === dens)) {
      const shape = `${r.C}→${r.O} ${r.H}² k${r.k} s${r.stride}`;
      console.log(`${r.net.padEnd(12)} ${r.layer.padEnd(20)} ${String(r.N).padStart(2)}  ${shape.padEnd(24)} ${fmt(r.cudnnUs, 9, 1)} ${fmt(r.cudnnTf32Us, 9, 1)} ${fmt(r.maskedUs, 10, 1)} ${fmt(r.gatheredUs, 12, 1)} ${fmt(r.speedupVsCudnn, 9)} ${fmt(r.speedupVsMasked, 10)} ${fmt(r.macRatio, 10)} ${fmt(r.efficiency, 11)} ${fmt(r.gflops, 8, 0)}`);
    }
  }
  console.log('\ngeometric means per net and batch (vs cudnn, vs masked, efficiency)');
  const gm = (xs) => Math.exp(xs.reduce((a, v) => a + Math.log(v), 0) / xs.length);
  for (const dens of densities)
    for (const net of [...new Set(rows.map((r) => r.net))])
      for (const N of batches) {
        const rs = rows.filter((r) => r.density === dens && r.net === net && r.N === N);
        if (!rs.length) continue;
        console.log(`  density ${dens}  ${net.padEnd(12)} batch ${String(N).padStart(2)}: ${gm(rs.map((r) => r.speedupVsCudnn)).toFixed(2)}, ` +
          `${gm(rs.map((r) => r.speedupVsMasked)).toFixed(2)}, ${gm(rs.map((r) => r.efficiency)).toFixed(2)}`);
      }
  const outDir = path.join(__dirname, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'cuda_ops.json');
  fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), device: info, heads: G, reps, rows }, null, 2));
  console.log(`\nwrote ${path.relative(path.join(__dirname, '..'), file)} (${((now() - t0) / 1000).toFixed(0)} s)`);
}

main();
