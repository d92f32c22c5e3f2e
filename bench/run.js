#!/usr/bin/env node
// run.js: the bench suite (`npm run bench`, `msgc bench`): model zoo table, conv vs oneDNN-direct, MSGC execution
// paths per layer and density (+ the speedup-vs-density chart), the masked backward's two paths per layer, MobileNetV2's
// producer skipping per block and union (msgc_compact.js), and whole-model dense vs MSGC timings at gate density 0.5
// (ResNet-18/50 and MobileNetV2 at 224², ResNet-20/56 at 32², batch 1 and 32, independent heads; MobileNetV2 and
// ResNet-18 at batch 1 also with heads correlated to a union of ~0.6, as trained gates are; table in
// bench/results/models.md); with a GPU, the MSGC conv on it against cuDNN (cuda_ops.js). Each script measures its
// baseline in the same run and writes JSON under bench/results/.
// --quick: fewer repetitions and shapes (a few minutes instead of ~15). --tune: see below.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const quick = process.argv.includes('--quick');
// --tune: the model benchmarks use the measured 'auto' (models.js --tune; `msgc --tune bench`)
const tune = process.argv.includes('--tune');
// the GPU benchmark joins where this build has CUDA and a GPU is usable (bench/cuda_ops.js)
const cuda = require('../dist').cuda.isAvailable();
const model = (name, batch, size, reps) => ['models.js', '--model', name, '--batch', String(batch), '--size', String(size), '--density', '0.5', '--reps', String(reps), ...(tune ? ['--tune'] : [])];
const steps = [
  ['zoo.js'],
  ['ops.js', ...(quick ? ['--quick'] : [])],
  ['msgc_ops.js', ...(quick ? ['--quick'] : [])],
  ['msgc_backward.js', ...(quick ? ['--reps', '3'] : [])],
  // MobileNetV2's producer skipping: expansion + depthwise dense, skipping, compacted, per union
  ['msgc_compact.js', ...(quick ? ['--batch', '1', '--union', '0.2,0.6'] : [])],
  ['chart.js'],
  ...(cuda ? [['cuda_ops.js', ...(quick ? ['--reps', '2', '--batch', '1'] : [])]] : []),
  model('resnet18', 1, 224, quick ? 3 : 10),
  model('resnet20', 32, 32, quick ? 3 : 10),
  ...(quick ? [] : [
    model('resnet18', 32, 224, 2),
    model('resnet50', 1, 224, 5),
    model('resnet50', 32, 224, 2),
    model('mobilenetv2', 1, 224, 10),
    model('mobilenetv2', 32, 224, 3),
    // heads correlated as trained gates are (a union of ~0.6 rather than 0.94)
    [...model('mobilenetv2', 1, 224, 10), '--union', '0.6'],
    [...model('resnet18', 1, 224, 10), '--union', '0.6'],
    model('resnet20', 1, 32, 20),
    model('resnet56', 32, 32, 8),
  ]),
  ['models_table.js'],
];
for (const [script, ...args] of steps) {
  console.log(`\n== node bench/${script} ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [path.join(__dirname, script), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench/${script} failed (exit ${r.status})`);
    process.exit(r.status || 1);
  }
}
