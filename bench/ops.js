#!/usr/bin/env node
// ops.js: convolution throughput of msgc (F.conv2d forward + the backward it records on the tape, i.e. the
// gradients for x and weight) against oneDNN
// called directly from C++ in its preferred layout (bench/onednn_direct.cc), on every conv shape of ResNet-18
// (224², batch 8; 32², batch 32) and MobileNetV2 (224², batch 8). Both sides are measured in this run, alternately,
// best of several repetitions. Prints a table and writes bench/results/ops.json.
// Options: --quick (fewer reps, ResNet-18 only), --net resnet18-224|resnet18-32|mobilenetv2-224
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');
const { resnet18, mobilenetV2, dedupe, flops } = require('./shapes');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const netFilter = args.includes('--net') ? args[args.indexOf('--net') + 1] : null;
const reps = quick ? 3 : 5;

function harness() {
  const exe = path.join(root, 'build', 'onednn_direct');
  const src = path.join(__dirname, 'onednn_direct.cc');
  if (!fs.existsSync(exe) || fs.statSync(exe).mtimeMs < fs.statSync(src).mtimeMs) {
    fs.mkdirSync(path.dirname(exe), { recursive: true });
    execFileSync('g++', ['-O2', '-std=c++17', src, '-ldnnl', '-o', exe], { stdio: 'inherit' });
  }
  return exe;
}

function direct(exe, shapes) {
  const input = shapes.map((s) => [s.N, s.C, s.H, s.W, s.K, s.k, s.k, s.stride, s.stride, s.pad, s.pad, s.groups, reps].join(' ')).join('\n');
  const r = spawnSync(exe, [], { input: input + '\n', encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`onednn_direct failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function ours(s) {
  const { F } = msgc;
  const x = msgc.randn([s.N, s.C, s.H, s.W], { seed: 1, requiresGrad: true });
  const w = msgc.randn([s.K, s.C / s.groups, s.k, s.k], { seed: 2, std: 0.1, requiresGrad: true });
  const OH = Math.floor((s.H + 2 * s.pad - s.k) / s.stride) + 1;
  const gy = msgc.randn([s.N, s.K, OH, OH], { seed: 3 });
  const opts = { stride: s.stride, padding: s.pad, groups: s.groups };
  // in a network the gradient arrives in the layout the next layer produced: give it the conv output's layout
  const gyBlocked = msgc.tidy(() => F.add(msgc.noGrad(() => F.conv2d(x, w, null, opts)), gy)).keep();
  msgc.tidy(() => {
    const y = msgc.noGrad(() => F.conv2d(x, w, null, opts));
    return F.sub(gyBlocked, y);
  });
  const best = { fwd: Infinity, total: Infinity };
  for (let r = 0; r < reps + 1; r++) {
    msgc.tidy(() => {
      // the op as the tape runs it: F.conv2d, then its recorded backward (gradients for x and weight)
      const t0 = now();
      const y = F.conv2d(x, w, null, opts);
      const t1 = now();
      const grads = y._node.backward(gyBlocked);
      const t2 = now();
      for (const g of grads) if (g) g.dispose();
      if (r > 0) {
        best.fwd = Math.min(best.fwd, t1 - t0);
        best.total = Math.min(best.total, t2 - t0);
      }
    });
  }
  for (const t of [x, w, gy, gyBlocked]) t.dispose();
  return best;
}

function main() {
  const exe = harness();
  let shapes = dedupe([...resnet18(224, 8), ...resnet18(32, 32), ...(quick ? [] : mobilenetV2(8))]);
  if (netFilter) shapes = shapes.filter((s) => s.net === netFilter);
  const rows = [];
  console.log(`msgc ${require('../package.json').version}, ${msgc.backendInfo().threads} threads, best of ${reps}`);
  console.log('net              layer                      shape                    ours GF/s  oneDNN GF/s  ratio');
  for (const s of shapes) {
    // alternate: direct, ours, direct, ours — best of each
    const d1 = direct(exe, [s])[0];
    const o1 = ours(s);
    const d2 = direct(exe, [s])[0];
    const o2 = ours(s);
    const dTotal = Math.min(d1.fwd + d1.bwdData + d1.bwdWeights, d2.fwd + d2.bwdData + d2.bwdWeights);
    const oTotal = Math.min(o1.total, o2.total);
    const gf = (3 * flops(s)) / 1e9;
    const row = {
      net: s.net, layer: s.name, N: s.N, C: s.C, H: s.H, K: s.K, k: s.k, stride: s.stride, groups: s.groups,
      oursMs: oTotal, directMs: dTotal, oursGflops: gf / (oTotal / 1e3), directGflops: gf / (dTotal / 1e3), ratio: dTotal / oTotal,
      oursFwdMs: Math.min(o1.fwd, o2.fwd), directFwdMs: Math.min(d1.fwd, d2.fwd),
    };
    rows.push(row);
    const shape = `${s.N}x${s.C}x${s.H}² →${s.K} k${s.k}s${s.stride}${s.groups > 1 ? ` g${s.groups}` : ''}`;
    console.log(`${s.net.padEnd(16)} ${s.name.padEnd(26)} ${shape.padEnd(24)} ${row.oursGflops.toFixed(1).padStart(9)} ${row.directGflops.toFixed(1).padStart(12)} ${row.ratio.toFixed(2).padStart(6)}`);
  }
  const byNet = {};
  for (const r of rows) (byNet[r.net] = byNet[r.net] || []).push(r.ratio);
  for (const [net, rs] of Object.entries(byNet)) {
    console.log(`${net}: min ratio ${Math.min(...rs).toFixed(2)}, geometric mean ${Math.exp(rs.reduce((a, b) => a + Math.log(b), 0) / rs.length).toFixed(2)}`);
  }
  const outDir = path.join(__dirname, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'ops.json'), JSON.stringify({ date: new Date().toISOString(), threads: msgc.backendInfo().threads, reps, rows }, null, 2));
  console.log(`wrote ${path.relative(root, path.join(outDir, 'ops.json'))}`);
}

main();
