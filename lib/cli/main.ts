#!/usr/bin/env node
// main.ts: the `msgc` command.
import { Command } from 'commander';
import { backendInfo } from '../native';
import { macsCommand } from './macs';
import { modelNames } from '../models/registry';
import { runTinyDemo } from './tiny-demo';

const program = new Command();
program.name('msgc').description('Middle Spectrum Grouped Convolution: train, evaluate and benchmark CNNs').version('0.1.0');

program
  .command('demo')
  .description('train a tiny CNN on generated images and print the loss falling')
  .option('--steps <n>', 'training steps', (v) => parseInt(v, 10), 300)
  .option('--batch-size <n>', 'batch size', (v) => parseInt(v, 10), 32)
  .option('--seed <n>', 'random seed', (v) => parseInt(v, 10), 1)
  .option('--json', 'print the result as JSON')
  .action((opts: { steps: number; batchSize: number; seed: number; json?: boolean }) => {
    const info = backendInfo();
    if (!opts.json) console.log(`msgc demo: backend ${info.backend} (${info.library}, ${info.threads} threads)`);
    const r = runTinyDemo({ steps: opts.steps, batchSize: opts.batchSize, seed: opts.seed, log: opts.json ? () => {} : undefined });
    if (opts.json) console.log(JSON.stringify({ firstLoss: r.losses[0], lastLoss: r.losses[r.losses.length - 1], accuracy: r.accuracy, imagesPerSecond: r.imagesPerSecond }));
  });

program
  .command('macs')
  .description('per-part MAC table of a model (the spec\'s accounting)')
  .option('--model <name>', `model (${modelNames().join(', ')})`, 'resnet18')
  .option('--msgc', 'the MSGC-boosted model')
  .option('--heads <n>', 'MSGC heads', (v) => parseInt(v, 10), 4)
  .option('--attention', 'with attention heads')
  .option('--input <C,H,W>', 'input size', '3,224,224')
  .option('--classes <n>', 'classes', (v) => parseInt(v, 10), 1000)
  .option('--small-input', 'CIFAR-style stem (default for inputs of 64 px or less)')
  .option('--json', 'print JSON')
  .action(macsCommand);

program
  .command('info')
  .description('print the native backend in use')
  .action(() => console.log(JSON.stringify(backendInfo(), null, 2)));

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(`msgc: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
