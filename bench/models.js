#!/usr/bin/env node
// models.js: whole-model timing, dense vs MSGC, measured alternately in one run (blocks of steps, compare()):
// a training step's forward+backward (train mode) and an inference forward (eval, no grad).
// Usage: node bench/models.js [--model resnet18] [--batch 8] [--size 224] [--reps 3] [--block n] [--attention]
//        [--density d] [--device cuda] [--execution auto|masked|gathered] [--tune]
// --device cuda: both models and the input on the GPU (a CUDA build); inference only (training has no GPU kernels
// yet), each forward timed to the GPU's completion (cuda.synchronize).
// --density d: a benchmark helper for untrained models — every gate head's last conv gets weight 0 and bias +1
// for a seeded random fraction d of its outputs, -1 for the rest, so that each gated conv keeps a fraction d of
// its input channels (in eval; the companion single-head gates too). Without it the gates keep their init
// (almost all open).
// --union u (with --density d, d <= u): heads correlated as trained gates are (spec §7: heads agree on the
// channels that matter), so that a gated conv's heads together select about a share u of its input channels: per
// gated conv a seeded share u of the channels is "shared", and each head opens a shared channel with probability
// d/u and no other (head density d; union u·(1 − (1 − d/u)^G), e.g. 0.60 for d 0.5, u 0.6, G 4). Without it the
// heads are independent (union 1 − (1 − d)^G: 0.94 at d 0.5). MobileNetV2's blocks compact their hidden channels
// (F.msgcConv2dBnActCompact) only for such sparse unions.
'use strict';
const fs = require('fs');
const path = require('path');
const msgc = require('../dist');

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : def);
const modelName = opt('model', 'resnet18');
const batch = parseInt(opt('batch', '8'), 10);
const size = parseInt(opt('size', '224'), 10);
const reps = parseInt(opt('reps', '3'), 10);  // pairs of blocks (see compare())
const blockLen = parseInt(opt('block', batch > 2 ? '2' : '4'), 10);  // steps per block (training: one fewer, at least 2)
const attention = args.includes('--attention');
const density = args.includes('--density') ? parseFloat(opt('density', '1')) : null;
const union = args.includes('--union') ? parseFloat(opt('union', '1')) : null;
if (union !== null && (density === null || !(union >= density && union <= 1))) throw new Error(`--union needs --density d and d <= u <= 1, got ${union}`);
const smallInput = size <= 64;
const device = opt('device', 'cpu');
// --execution: every MSGC conv of the model runs so (msgc.F.setMsgcExecution; default 'auto'), e.g. masked on the
// GPU with MSGC_CUDA_MASKED=cudnn to time cuDNN's grouped convolution over the scaled copies
const execution = opt('execution', 'auto');
msgc.F.setMsgcExecution(execution);
// --tune: the measured 'auto' (msgc.F.setMsgcTuning): in the warm-up each MSGC conv's shape times both executions
// and keeps the faster (eval only; 8 warm-up forwards of the MSGC model before the inference comparison)
const tune = args.includes('--tune');
msgc.F.setMsgcTuning(tune);
if (device !== 'cpu' && device !== 'cuda') throw new Error(`--device must be cpu or cuda, got ${device}`);
if (device === 'cuda' && !msgc.cuda.isAvailable()) {
  console.error(`models.js: --device cuda: ${msgc.cuda.info().reason}`);
  process.exit(2);
}
const sync = () => { if (device === 'cuda') msgc.cuda.synchronize(); };

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

// One training step (forward + backward, train mode) or one inference forward (eval, no grad), in ms.
function step(model, mode, x, labels) {
  if (mode === 'train') {
    model.train();
    const t0 = now();
    msgc.tidy(() => {
      const loss = msgc.F.crossEntropy(model.forward(x), labels);
      loss.backward();
    });
    const t = now() - t0;
    for (const p of model.parameters()) if (p.grad) { p.grad.dispose(); p.grad = null; }
    return t;
  }
  model.eval();
  sync();
  const t0 = now();
  msgc.noGrad(() => msgc.tidy(() => { model.forward(x); }));
  sync();
  return now() - t0;
}

// the f-quantile of a, linear between the order statistics (f = 0.5: the median)
const quantile = (a, f) => {
  const s = [...a].sort((p, q) => p - q);
  const i = f * (s.length - 1), lo = Math.floor(i), hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
};
const median = (a) => quantile(a, 0.5);

// Dense and MSGC alternate in short blocks of `blockLen` consecutive steps of one model (its steady state: a model
// evaluated or trained over a dataset runs step after step, with its own weights the last ones in the caches); a
// block's time is its fastest step, the speedup the median over `reps` pairs of adjacent blocks (the order within a
// pair alternating) of dense block ÷ MSGC block, so that a slow phase of a shared machine hits both sides of a pair.
// (Until 2026-12-03: the best of all steps of each model, measured in two blocks per model, which moved ±15%
// between runs on the shared machine.)
function compare(dense, boosted, mode, x, labels, blockLen) {
  step(dense, mode, x, labels);
  step(boosted, mode, x, labels);
  const d = [], b = [], ratios = [];
  for (let r = 0; r < reps; r++) {
    const order = r % 2 ? [boosted, dense] : [dense, boosted];
    const t = new Map();
    for (const m of order) {
      let best = Infinity;
      for (let k = 0; k < blockLen; k++) best = Math.min(best, step(m, mode, x, labels));
      t.set(m, best);
    }
    d.push(t.get(dense));
    b.push(t.get(boosted));
    ratios.push(t.get(dense) / t.get(boosted));
  }
  // the spread of the pair ratios: the middle half (with fewer than 4 pairs: all of them), to show the machine's noise
  const spread = reps >= 4 ? [quantile(ratios, 0.25), quantile(ratios, 0.75)] : [Math.min(...ratios), Math.max(...ratios)];
  return { dense: median(d), msgc: median(b), speedup: median(ratios), spread, denseBest: Math.min(...d), msgcBest: Math.min(...b) };
}

msgc.manualSeed(1);
const dense = msgc.models.createModel(modelName, { smallInput });
const boosted = msgc.models.createModel(modelName, { smallInput, msgc: { heads: 4, attention } });
if (density !== null) {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  for (const [, m] of boosted.namedModules()) {
    if (!(m instanceof msgc.nn.GateHead)) continue;
    const w = m.conv2.weight, b = m.conv2.bias;
    w.assign(new Float32Array(w.size));
    // (the logits [G, C], head-major)
    const shared = union === null ? null : Array.from({ length: m.channels }, () => rnd() < union);
    b.assign(Float32Array.from({ length: b.size }, (_, i) => (shared
      ? shared[i % m.channels] && rnd() < density / union
      : rnd() < density) ? 1 : -1));
  }
}
if (device === 'cuda') {
  dense.to('cuda');
  boosted.to('cuda');
}
const x = msgc.randn([batch, 3, size, size], { seed: 2, device });
const labels = new Int32Array(batch).map((_, i) => i % 10);
// training needs batch > 1: the gate heads' BN normalises over the batch (spec §2.2)
if (tune) for (let i = 0; i < 8; i++) step(boosted, 'infer', x, labels);
const inferCmp = compare(dense, boosted, 'infer', x, labels, blockLen);
// training blocks of at least 2 steps: the first step after the other model ran pays for the switch (its
// activations and gradients reallocated, the other model's weights in the caches), which a training run never
// does; MobileNetV2 at batch 32, density 0.5, 2 threads: blocks of one step gave dense 636 ms / MSGC 731 ms
// (0.87), of three 552 / 604 ms (0.93), ResNet-20 at batch 32 0.78 / 0.77
const trainBlockLen = Math.max(2, blockLen - 1);
const trainCmp = batch > 1 && device === 'cpu' ? compare(dense, boosted, 'train', x, labels, trainBlockLen) : null;
const d = { train: trainCmp ? trainCmp.dense : NaN, infer: inferCmp.dense };
const b = { train: trainCmp ? trainCmp.msgc : NaN, infer: inferCmp.msgc };
// the MACs of an eval forward (a training step's gates carry noise)
boosted.eval();
msgc.noGrad(() => msgc.tidy(() => { boosted.forward(x); }));
const macs = boosted.lastMacs();
const row = {
  model: modelName, batch, size, attention, device, tuned: tune, gpu: device === 'cuda' ? msgc.cuda.info().name : null,
  threads: msgc.backendInfo().threads, gatheredKernels: msgc.backendInfo().gatheredKernels,
  denseTrainMs: d.train, msgcTrainMs: b.train, denseInferMs: d.infer, msgcInferMs: b.infer,
  denseTrainImagesPerSecond: (1000 * batch) / d.train, msgcTrainImagesPerSecond: (1000 * batch) / b.train,
  denseInferImagesPerSecond: (1000 * batch) / d.infer, msgcInferImagesPerSecond: (1000 * batch) / b.infer,
  trainSpeedup: trainCmp ? trainCmp.speedup : NaN, inferSpeedup: inferCmp.speedup, evalMacRatio: macs.ratio, density, union,
  // the fastest block of each model, and the protocol (see compare())
  denseInferBestMs: inferCmp.denseBest, msgcInferBestMs: inferCmp.msgcBest, pairs: reps, blockLen, trainBlockLen: trainCmp ? trainBlockLen : null,
  // the pair ratios' middle half (all of them with fewer than 4 pairs)
  inferSpeedupSpread: inferCmp.spread, trainSpeedupSpread: trainCmp ? trainCmp.spread : null,
  // the spec's count credits the "bonus" (producer/consumer channels no head needs, §4.3); the gathered execution
  // skips them in eval where it runs (ResNet, DenseNet; MobileNetV2's expansion, and its depthwise convs where the
  // blocks compact their hidden channels): the MACs that really ran
  executedMacRatio: macs.executed / macs.dense,
  // speedup ÷ (dense MACs / MSGC MACs): 1 = the whole MAC saving turned into time
  inferSpeedupOverIdeal: inferCmp.speedup * macs.ratio,
  trainSpeedupOverIdeal: trainCmp ? trainCmp.speedup * macs.ratio : NaN,
};
const spreadText = ([lo, hi]) => `${reps >= 4 ? 'middle half' : 'all pairs'} ${lo.toFixed(2)}-${hi.toFixed(2)}`;
const where = device === 'cuda' ? `on ${row.gpu}` : `${row.threads} threads, ${row.gatheredKernels} kernels`;
console.log(`${modelName} batch ${batch} ${size}² (${where}${execution === 'auto' ? '' : `, MSGC convs ${execution}`}${tune ? ', auto tuned' : ''}), ${density === null ? 'gates at init' : `gate density ${density}${union === null ? '' : `, heads correlated (union ~${union})`}`} (eval MAC ratio ${macs.ratio.toFixed(3)}, executed ${row.executedMacRatio.toFixed(3)})`);
if (!trainCmp && device === 'cuda') console.log('  train step: not timed on cuda (no GPU training kernels yet)');
else if (batch > 1) console.log(`  train step fwd+bwd: dense ${d.train.toFixed(1)} ms, MSGC ${b.train.toFixed(1)} ms  (speedup ${row.trainSpeedup.toFixed(2)}, median of ${reps} block pairs; ${spreadText(trainCmp.spread)})`);
else console.log('  train step: not timed at batch 1 (the gate heads\' BN normalises over the batch)');
console.log(`  inference forward:  dense ${d.infer.toFixed(1)} ms, MSGC ${b.infer.toFixed(1)} ms  (speedup ${row.inferSpeedup.toFixed(2)}, median of ${reps} block pairs; ${spreadText(inferCmp.spread)})`);
const outDir = path.join(__dirname, 'results');
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, `models-${modelName}-b${batch}-${size}${density === null ? '' : `-d${density}`}${union === null ? '' : `-u${union}`}-${device === 'cuda' ? 'cuda' : row.gatheredKernels}.json`), JSON.stringify({ date: new Date().toISOString(), ...row }, null, 2));
dense.dispose();
boosted.dispose();
x.dispose();
