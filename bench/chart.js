#!/usr/bin/env node
// chart.js: draws bench/results/speedup-vs-density.svg from bench/results/msgc_ops.json — the gathered MSGC conv's
// speedup over the dense conv against the gate density, one line per network and batch (geometric mean over its
// layers), with the ideal 1/density line. Run after bench/msgc_ops.js.
'use strict';
const fs = require('fs');
const path = require('path');
const { renderChart } = require('../dist/report/svg');

const file = path.join(__dirname, 'results', 'msgc_ops.json');
if (!fs.existsSync(file)) {
  console.error(`${file} not found: run node bench/msgc_ops.js first`);
  process.exit(1);
}
const { rows } = JSON.parse(fs.readFileSync(file, 'utf8'));
const groups = new Map();
for (const r of rows) {
  const key = `${r.net} batch ${r.N}`;
  if (!groups.has(key)) groups.set(key, new Map());
  const byDensity = groups.get(key);
  if (!byDensity.has(r.density)) byDensity.set(r.density, []);
  byDensity.get(r.density).push(r.speedup);
}
const geo = (xs) => Math.exp(xs.reduce((a, v) => a + Math.log(v), 0) / xs.length);
const series = [...groups.entries()].map(([name, byDensity]) => ({
  name,
  line: true,
  points: [...byDensity.entries()].sort((a, b) => a[0] - b[0]).map(([d, s]) => ({ x: d, y: Number(geo(s).toFixed(3)) })),
}));
const densities = [...new Set(rows.map((r) => r.density))].sort((a, b) => a - b);
series.push({ name: 'ideal (1 / density)', line: true, dashed: true, color: '#333', points: densities.map((d) => ({ x: d, y: Number((1 / d).toFixed(3)) })) });
const svg = renderChart({ title: 'Gathered MSGC conv: speedup over dense vs gate density', xLabel: 'gate density (fraction of input channels kept)', yLabel: 'speedup over dense conv (geo. mean of layers)', series, yMin: 0 });
const out = path.join(__dirname, 'results', 'speedup-vs-density.svg');
fs.writeFileSync(out, svg);
console.log(`wrote ${path.relative(path.join(__dirname, '..'), out)}`);
for (const s of series) console.log(`${s.name.padEnd(24)} ${s.points.map((p) => `${p.x}: ${p.y}`).join('  ')}`);
