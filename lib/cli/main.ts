#!/usr/bin/env node
// main.ts: the `msgc` command: train, eval, macs, demo, bench, info.
import { Command, Option } from 'commander';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { backendInfo } from '../native';
import { setNumThreads } from '../tensor/creation';
import { setMsgcTuning } from '../ops/msgc';
import { modelNames } from '../models/registry';
import { demoCommand } from './demo';
import { macsCommand } from './macs';
import { runTinyDemo } from './tiny-demo';
import { evalCommand, trainCommand } from './train';

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`expected an integer, got '${v}'`);
  return n;
};
const num = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`expected a number, got '${v}'`);
  return n;
};

/** "from,to" progress fractions, or "none" */
const span = (v: string): [number, number] | null => {
  if (v === 'none') return null;
  const parts = v.split(',').map(Number);
  if (parts.length !== 2 || !parts.every(Number.isFinite) || !(parts[0] >= 0 && parts[1] > parts[0] && parts[1] <= 1)) {
    throw new Error(`expected "from,to" with 0 <= from < to <= 1 (or "none"), got '${v}'`);
  }
  return [parts[0], parts[1]];
};

const threads = (v: string) => {
  const n = int(v);
  if (n < 1 || n > 1024) throw new Error(`expected a thread count from 1 to 1024, got '${v}'`);
  return n;
};

const program = new Command();
program.name('msgc').description('Middle Spectrum Grouped Convolution: train, evaluate and benchmark CNNs').version('0.1.0')
  .option('--threads <n>', 'threads of the native ops, for every command (default: $OMP_NUM_THREADS, else one per core)', threads)
  .option('--tune', 'measure which MSGC execution is faster per layer shape in inference instead of following the rule (F.setMsgcTuning; the first batches run slower)');
program.hook('preAction', () => {
  const t = program.opts().threads as number | undefined;
  if (t !== undefined) setNumThreads(t);
  if (program.opts().tune) setMsgcTuning(true);
});

program
  .command('train')
  .description('train a model (dense, or MSGC with a MAC budget); writes OUT/metrics.json and OUT/model.safetensors')
  .option('--model <name>', `model (${modelNames().join(', ')})`, 'resnet20')
  .option('--msgc', 'MSGC-boosted model (target 0.5 unless --target)')
  .option('--target <ratio>', 'MAC budget target τ_end (implies --msgc)', num)
  .option('--heads <n>', 'MSGC heads G', int, 4)
  .option('--attention', 'add attention heads')
  .option('--dataset <name>', 'fashion-mnist, mnist, cifar10, cifar100, imagefolder', 'fashion-mnist')
  .option('--data <dir>', 'dataset folder (default: $MSGC_DATA, then the system location)')
  .option('--epochs <n>', 'epochs', int, 10)
  .option('--batch-size <n>', 'batch size', int, 64)
  .option('--lr <lr>', 'base learning rate', num, 0.05)
  .option('--weight-decay <wd>', 'weight decay', num, 5e-4)
  .option('--warmup-epochs <n>', 'linear warm-up epochs', int, 0)
  .option('--label-smoothing <eps>', 'label smoothing', num, 0.1)
  .option('--ramp-end <p>', 'training progress at which the MAC target reaches --target (spec: 0.5)', num, 0.5)
  .option('--gate-noise-anneal <from,to>', 'scale the gates\' training noise from 1 at progress "from" down to 0 at "to", then freeze the gates (default: none, the spec)', span, null)
  .option('--recalibrate-bn <batches>', 'after training, re-estimate BatchNorm statistics with eval-mode gates over this many batches (0: off)', int, 0)
  .option('--train-samples <n>', 'use a seeded random subset of the training split', int)
  .option('--from <weights>', 'initialise from a safetensors checkpoint (a dense one works for MSGC models)')
  .option('--teacher <dir>', 'knowledge distillation from the model of a previous msgc train output folder (run.json + model.safetensors)')
  .option('--distill-alpha <a>', 'weight of the distillation term with --teacher (loss = (1 - a) CE + a KD)', num, 0.5)
  .option('--distill-temperature <T>', 'softmax temperature of the distillation with --teacher', num, 4)
  .option('--clip-grad-norm <n>', 'clip the gradients\' global L2 norm to n before every step (default: 5 for MSGC models, off for dense ones; 0: off)', num)
  .option('--out <dir>', 'output folder', 'runs/train')
  .option('--resume', 'continue from OUT/checkpoint.json')
  .option('--seed <n>', 'random seed', int, 1)
  .option('--no-progress', 'no progress bar')
  .option('--json', 'print the summary as JSON')
  .action(trainCommand);

program
  .command('eval')
  .description('evaluate trained weights on the test split: top-1/top-5, loss, MACs per image, images/s')
  .option('--run <dir>', 'output folder of msgc train (reads run.json and model.safetensors)')
  .option('--weights <file>', 'safetensors weights')
  .option('--model <name>', 'model, when not using --run')
  .option('--msgc', 'MSGC model, when not using --run')
  .option('--heads <n>', 'MSGC heads', int, 4)
  .option('--attention', 'with attention heads')
  .option('--dataset <name>', 'dataset (default: the run\'s, else fashion-mnist)')
  .option('--data <dir>', 'dataset folder')
  .option('--batch-size <n>', 'batch size', int, 100)
  .option('--device <device>', 'cpu, or cuda: the model on the GPU (a CUDA build)', 'cpu')
  .option('--no-progress', 'no progress bar')
  .option('--json', 'print JSON')
  .action(evalCommand);

program
  .command('macs')
  .description('per-part MAC table of a model (the spec\'s accounting)')
  .option('--model <name>', `model (${modelNames().join(', ')})`, 'resnet18')
  .option('--msgc', 'the MSGC-boosted model')
  .option('--heads <n>', 'MSGC heads', int, 4)
  .option('--attention', 'with attention heads')
  .option('--input <C,H,W>', 'input size', '3,224,224')
  .option('--classes <n>', 'classes', int, 1000)
  .option('--small-input', 'CIFAR-style stem (default for inputs of 64 px or less)')
  .option('--json', 'print JSON')
  .action(macsCommand);

program
  .command('demo')
  .description('the main job: dense training, then MSGC vs dense fine-tuning on Fashion-MNIST; table, report.json, SVG chart')
  .option('--model <name>', 'small-input model', 'resnet20')
  .option('--dataset <name>', 'dataset', 'fashion-mnist')
  .option('--data <dir>', 'dataset folder')
  .option('--out <dir>', 'output folder (stages resume from it)', 'runs/demo')
  .option('--fresh', 'delete the output folder first')
  .option('--epochs <n>', 'dense training epochs', int, 8)
  .option('--finetune-epochs <n>', 'fine-tuning epochs (MSGC and dense alike)', int, 8)
  .option('--batch-size <n>', 'batch size', int, 64)
  .option('--lr <lr>', 'dense training learning rate', num, 0.1)
  .option('--finetune-lr <lr>', 'fine-tuning learning rate (MSGC and dense alike)', num, 0.16)
  .option('--finetune-warmup <epochs>', 'linear learning-rate warm-up epochs at the start of both fine-tunings', int, 0)
  .option('--target <ratio>', 'MSGC MAC budget target τ_end (train-mode MACs; eval MACs land within ~1% of it once the gate noise is annealed)', num, 0.49)
  .option('--heads <n>', 'MSGC heads', int, 4)
  .option('--attention', 'MSGC with attention heads')
  .option('--ramp-end <p>', 'progress of the MSGC fine-tuning at which the MAC target reaches --target', num, 0.3)
  .option('--gate-noise-anneal <from,to>', 'MSGC fine-tuning: scale the gate noise from 1 at progress "from" to 0 at "to", then freeze the gates ("none": the spec\'s constant noise)', span, [0.3, 0.8])
  .option('--distill <alpha>', 'both fine-tunings: knowledge distillation from the dense stage\'s model with weight alpha (0: off, the spec\'s recipe)', num, 0.5)
  .option('--distill-temperature <T>', 'softmax temperature of --distill', num, 4)
  .option('--clip-grad-norm <n>', 'both fine-tunings: clip the gradients\' global L2 norm to n before every step (0: off)', num, 5)
  .option('--recalibrate-bn <batches>', 'end both fine-tunings by re-estimating BatchNorm statistics with eval-mode gates over this many batches (0: off)', int, 100)
  .option('--train-samples <n>', 'training images (a seeded subset; 12000 keeps the demo within 20 minutes on 2 AVX2 cores)', int, 12000)
  .option('--test-samples <n>', 'test images (a seeded subset; default all)', int)
  .option('--seed <n>', 'random seed', int, 1)
  .option('--no-progress', 'no progress bars')
  .option('--json', 'print the report as JSON')
  .action(async (opts) => {
    if (opts.fresh) fs.rmSync(opts.out, { recursive: true, force: true });
    await demoCommand(opts);
  });

program
  .command('bench')
  .description('the bench suite: conv vs oneDNN, MSGC paths per layer and density, dense vs MSGC models (results in bench/results)')
  .option('--quick', 'fewer repetitions and shapes')
  .action((opts: { quick?: boolean }) => {
    const script = path.join(__dirname, '..', '..', 'bench', 'run.js');
    if (!fs.existsSync(script)) throw new Error(`${script} not found: the bench suite ships with the package source`);
    const t = program.opts().threads as number | undefined;
    const env = t === undefined ? process.env : { ...process.env, OMP_NUM_THREADS: String(t) };
    const args = [...(opts.quick ? ['--quick'] : []), ...(program.opts().tune ? ['--tune'] : [])];
    const r = spawnSync(process.execPath, [script, ...args], { stdio: 'inherit', env });
    if (r.status !== 0) process.exit(r.status || 1);
  });

program
  .command('tiny-demo')
  .description('a few-second smoke test: a tiny CNN on generated images, loss falling')
  .option('--steps <n>', 'training steps', int, 300)
  .option('--batch-size <n>', 'batch size', int, 32)
  .option('--seed <n>', 'random seed', int, 1)
  .addOption(new Option('--json', 'print the result as JSON'))
  .action((opts: { steps: number; batchSize: number; seed: number; json?: boolean }) => {
    const r = runTinyDemo({ steps: opts.steps, batchSize: opts.batchSize, seed: opts.seed, log: opts.json ? () => {} : undefined });
    if (opts.json) console.log(JSON.stringify({ firstLoss: r.losses[0], lastLoss: r.losses[r.losses.length - 1], accuracy: r.accuracy, imagesPerSecond: r.imagesPerSecond }));
  });

program
  .command('info')
  .description('print the native backend in use')
  .action(() => console.log(JSON.stringify(backendInfo(), null, 2)));

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(`msgc: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
