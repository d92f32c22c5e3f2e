#!/usr/bin/env node
// models.js: whole-model timing, dense vs MSGC, measured alternately in one run (best of reps):
// a training step's forward+backward (train mode) and an inference forward (eval, no grad).
// Usage: node bench/models.js [--model resnet18] [--batch 8] [--size 224] [--reps 3] [--attention] [--density d]
// --density d: a benchmark helper for untrained models — every gate head's last conv gets weight 0 and bias +1
// for a seeded random fraction d of its outputs, -1 for the rest, so that each gated conv keeps a fraction d of
// its input channels (in eval; the companion single-head gates too). Without it the gates keep their init
// (almost all open).
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : def);
const modelName = opt('model', 'resnet18');
const batch = parseInt(opt('batch', '8'), 10);
const size = parseInt(opt('size', '224'), 10);
const reps = parseInt(opt('reps', '3'), 10);
const attention = args.includes('--attention');
const density = args.includes('--density') ? parseFloat(opt('density', '1')) : null;
const smallInput = size <= 64;

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function timeModel(model, x, labels) {
  const best = { train: Infinity, infer: Infinity };
  // training needs batch > 1: the gate heads' BN normalises over the batch (spec §2.2)
  const train = batch > 1;
  for (let r = 0; r < reps + 1; r++) {
    model.train();
    const t0 = now();
    if (train) {
      msgc.tidy(() => {
        const loss = msgc.F.crossEntropy(model.forward(x), labels);
        loss.backward();
      });
    }
    const t1 = now();
    for (const p of model.parameters()) if (p.grad) { p.grad.dispose(); p.grad = null; }
    model.eval();
    const t2 = now();
    msgc.noGrad(() => msgc.tidy(() => { model.forward(x); }));
    const t3 = now();
    if (r > 0) {
      best.train = train ? Math.min(best.train, t1 - t0) : NaN;
      best.infer = Math.min(best.infer, t3 - t2);
    }
  }
  return best;
}

msgc.manualSeed(1);
const dense = msgc.models.createModel(modelName, { smallInput });
const boosted = msgc.models.createModel(modelName, { smallInput, msgc: { heads: 4, attention } });
if (density !== null) {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  for (const [name, p] of boosted.namedParameters()) {
    if (!/mask\d?\.conv2\.(weight|bias)$/.test(name)) continue;
    if (name.endsWith('weight')) p.assign(new Float32Array(p.size));
    else p.assign(Float32Array.from({ length: p.size }, () => (rnd() < density ? 1 : -1)));
  }
}
const x = msgc.randn([batch, 3, size, size], { seed: 2 });
const labels = new Int32Array(batch).map((_, i) => i % 10);
const d1 = timeModel(dense, x, labels);
const b1 = timeModel(boosted, x, labels);
const d2 = timeModel(dense, x, labels);
const b2 = timeModel(boosted, x, labels);
const d = { train: Math.min(d1.train, d2.train), infer: Math.min(d1.infer, d2.infer) };
const b = { train: Math.min(b1.train, b2.train), infer: Math.min(b1.infer, b2.infer) };
const macs = boosted.lastMacs();
const row = {
  model: modelName, batch, size, attention, threads: msgc.backendInfo().threads, gatheredKernels: msgc.backendInfo().gatheredKernels,
  denseTrainMs: d.train, msgcTrainMs: b.train, denseInferMs: d.infer, msgcInferMs: b.infer,
  denseTrainImagesPerSecond: (1000 * batch) / d.train, msgcTrainImagesPerSecond: (1000 * batch) / b.train,
  denseInferImagesPerSecond: (1000 * batch) / d.infer, msgcInferImagesPerSecond: (1000 * batch) / b.infer,
  trainSpeedup: d.train / b.train, inferSpeedup: d.infer / b.infer, evalMacRatio: macs.ratio, density,
  // the spec's count credits the "bonus" (producer/consumer channels no head needs, §4.3); the gathered execution
  // skips them in eval where it runs (ResNet, DenseNet), not yet in MobileNetV2: the MACs that really ran
  executedMacRatio: macs.executed / macs.dense,
  // speedup ÷ (dense MACs / MSGC MACs): 1 = the whole MAC saving turned into time
  inferSpeedupOverIdeal: (d.infer / b.infer) * macs.ratio,
  trainSpeedupOverIdeal: (d.train / b.train) * macs.ratio,
};
console.log(`${modelName} batch ${batch} ${size}² (${row.threads} threads, ${row.gatheredKernels} kernels), ${density === null ? 'gates at init' : `gate density ${density}`} (eval MAC ratio ${macs.ratio.toFixed(3)})`);
if (batch > 1) console.log(`  train step fwd+bwd: dense ${d.train.toFixed(1)} ms, MSGC ${b.train.toFixed(1)} ms  (speedup ${row.trainSpeedup.toFixed(2)})`);
else console.log('  train step: not timed at batch 1 (the gate heads\' BN normalises over the batch)');
console.log(`  inference forward:  dense ${d.infer.toFixed(1)} ms, MSGC ${b.infer.toFixed(1)} ms  (speedup ${row.inferSpeedup.toFixed(2)})`);
const outDir = path.join(__dirname, 'results');
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, `models-${modelName}-b${batch}-${size}${density === null ? '' : `-d${density}`}-${row.gatheredKernels}.json`), JSON.stringify({ date: new Date().toISOString(), ...row }, null, 2));
dense.dispose();
boosted.dispose();
x.dispose();
