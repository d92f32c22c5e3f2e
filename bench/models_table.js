#!/usr/bin/env node
// models_table.js: collects the whole-model results (bench/results/models-*.json, written by models.js) into one
// table: images/s dense vs MSGC, speedup, eval MAC ratio and speedup ÷ (1 / MAC ratio), for inference and a
// training step, per kind of gathered kernels (AVX-512 or AVX2 machines: the file names end in the kind; `cuda`:
// the GPU, inference only; ", auto tuned": measured with models.js --tune). Writes bench/results/models.json and
// models.md.
'use strict';
const fs = require('fs');
const path = require('path');

const dir = path.join(__dirname, 'results');
const rows = fs.readdirSync(dir)
  .filter((f) => /^models-.*\.json$/.test(f) && f !== 'models.json')
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')))
  .filter((r) => r.density !== null && r.density !== undefined)
  // (results from before the field existed were measured with the AVX-512 kernels)
  .map((r) => ({ ...r, gatheredKernels: r.gatheredKernels ?? 'avx512' }))
  // GPU rows (models.js --device cuda) are labelled by the GPU, not by the host's CPU kernels
  .map((r) => (r.device === 'cuda' ? { ...r, gatheredKernels: `cuda ${r.gpu ?? ''}`.trim() } : r))
  // rows measured with the measured 'auto' (models.js --tune) say so
  .map((r) => (r.tuned ? { ...r, gatheredKernels: `${r.gatheredKernels}, auto tuned` } : r))
  .sort((a, b) => a.gatheredKernels.localeCompare(b.gatheredKernels) || a.model.localeCompare(b.model) || a.size - b.size ||
    a.batch - b.batch || a.density - b.density || (a.union ?? 1) - (b.union ?? 1));
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));
const lines = [
  '| kernels | model | input | batch | gate density | MAC ratio (executed) | infer img/s dense | infer img/s MSGC | infer speedup | ÷ ideal | train img/s dense | train img/s MSGC | train speedup |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of rows) {
  const train = r.batch > 1 && r.denseTrainMs > 0;
  const overIdeal = r.inferSpeedupOverIdeal ?? r.inferSpeedup * r.evalMacRatio;
  lines.push(`| ${r.gatheredKernels} | ${r.model}${r.attention ? ' att' : ''} | ${r.size}² | ${r.batch} | ${r.density}${r.union ? ` (union ~${r.union})` : ''} | ${fmt(r.evalMacRatio, 3)}${r.executedMacRatio ? ` (${fmt(r.executedMacRatio, 3)})` : ''} | ${fmt(r.denseInferImagesPerSecond ?? (1000 * r.batch) / r.denseInferMs, 1)} | ${fmt(r.msgcInferImagesPerSecond ?? (1000 * r.batch) / r.msgcInferMs, 1)} | ${fmt(r.inferSpeedup)} | ${fmt(overIdeal)} | ${train ? fmt((1000 * r.batch) / r.denseTrainMs, 1) : '–'} | ${train ? fmt((1000 * r.batch) / r.msgcTrainMs, 1) : '–'} | ${train ? fmt(r.trainSpeedup) : '–'} |`);
}
const md = lines.join('\n');
console.log(md);
fs.writeFileSync(path.join(dir, 'models.md'), `${md}\n`);
fs.writeFileSync(path.join(dir, 'models.json'), JSON.stringify({ date: new Date().toISOString(), rows }, null, 2));
