#!/usr/bin/env node
// zoo.js: the model zoo at a glance — for every backbone, dense and MSGC (with and without attention):
// F_ori (dense MACs), F_heads, parameters and the heads' parameter overhead, by the spec's §4 accounting.
// Writes bench/results/zoo.json.
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');

const inputs = { resnet20: [3, 32, 32], resnet56: [3, 32, 32] };
const rows = [];
for (const name of msgc.models.modelNames()) {
  const input = inputs[name] || [3, 224, 224];
  const classes = input[1] <= 64 ? 10 : 1000;
  const dense = msgc.models.createModel(name, { numClasses: classes });
  const denseParams = dense.numParameters();
  const denseMacs = msgc.countMacs(dense, input).dense;
  dense.dispose();
  for (const attention of [false, true]) {
    const m = msgc.models.createModel(name, { numClasses: classes, msgc: { heads: 4, attention } });
    const c = msgc.countMacs(m, input);
    rows.push({ model: name, input, attention, denseMacs, F_ori: c.dense, F_main: c.main, gatedSum: c.gated, F_heads: c.heads, F_extra: c.extra, denseParams, msgcParams: m.numParameters(), headParams: m.numParameters() - denseParams });
    m.dispose();
  }
}
const M = (v) => (v / 1e6).toFixed(3);
console.log('model       input       dense MACs (M)  F_heads (M)  att F_heads (M)  params (M)  +heads (M)  +heads att (M)');
for (let i = 0; i < rows.length; i += 2) {
  const a = rows[i];
  const b = rows[i + 1];
  console.log(`${a.model.padEnd(11)} ${a.input.join('x').padEnd(11)} ${M(a.denseMacs).padStart(14)} ${M(a.F_heads).padStart(12)} ${M(b.F_heads).padStart(16)} ${M(a.denseParams).padStart(11)} ${M(a.headParams).padStart(11)} ${M(b.headParams).padStart(15)}`);
}
fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
fs.writeFileSync(path.join(__dirname, 'results', 'zoo.json'), JSON.stringify(rows, null, 2));
