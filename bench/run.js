#!/usr/bin/env node
// run.js: the bench suite (`npm run bench`, `msgc bench`): model zoo table, conv vs oneDNN-direct, MSGC execution
// paths per layer and density (+ the speedup-vs-density chart), and whole-model dense vs MSGC timings at gate
// density 0.5. Each script measures its baseline in the same run and writes JSON under bench/results/.
// --quick: fewer repetitions and shapes (a few minutes instead of ~15).
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const quick = process.argv.includes('--quick');
const steps = [
  ['zoo.js'],
  ['ops.js', ...(quick ? ['--quick'] : [])],
  ['msgc_ops.js', ...(quick ? ['--quick'] : [])],
  ['chart.js'],
  ['models.js', '--model', 'resnet18', '--batch', '1', '--size', '224', '--density', '0.5', '--reps', quick ? '2' : '3'],
  ...(quick ? [] : [['models.js', '--model', 'resnet18', '--batch', '32', '--size', '224', '--density', '0.5', '--reps', '1']]),
  ['models.js', '--model', 'resnet20', '--batch', '32', '--size', '32', '--density', '0.5', '--reps', quick ? '2' : '3'],
];
for (const [script, ...args] of steps) {
  console.log(`\n== node bench/${script} ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [path.join(__dirname, script), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench/${script} failed (exit ${r.status})`);
    process.exit(r.status || 1);
  }
}
