// cli-demo.test.ts: `msgc demo` end to end on a small synthetic dataset in Fashion-MNIST's IDX format: the three
// stages run, the report, chart, per-stage metrics and weights are written, the MSGC stage saves the attention
// heads when asked, and a second call resumes every stage from its checkpoints instead of training again.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as msgc from '../lib';
import { demoCommand, DemoOptions } from '../lib/cli/demo';
import { writeSplit } from './helpers/idx';

const startLive = msgc.liveTensorCount();
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-demo-'));
  fs.mkdirSync(path.join(tmp, 'data'));
  writeSplit(path.join(tmp, 'data'), 'train', 192, 1);
  writeSplit(path.join(tmp, 'data'), 't10k', 100, 2);
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  expect(msgc.liveTensorCount()).toBe(startLive);
});

function options(out: string, attention: boolean, distill = 0): DemoOptions {
  return {
    model: 'resnet20', dataset: 'fashion-mnist', data: path.join(tmp, 'data'), out,
    epochs: 1, finetuneEpochs: 2, batchSize: 16, lr: 0.05, finetuneLr: 0.02, target: 0.49, heads: 4, attention,
    recalibrateBn: 2, rampEnd: 0.3, gateNoiseAnneal: [0.3, 0.8], distill, distillTemperature: 4, seed: 1, progress: false, json: true,
  };
}

async function runDemo(o: DemoOptions): Promise<{ report: any; printed: string }> {
  const lines: string[] = [];
  const log = jest.spyOn(console, 'log').mockImplementation((...a: unknown[]) => { lines.push(a.join(' ')); });
  try {
    await demoCommand(o);
  } finally {
    log.mockRestore();
  }
  return { report: JSON.parse(fs.readFileSync(path.join(o.out, 'report.json'), 'utf8')), printed: lines.join('\n') };
}

test.each([[false, 0], [true, 0], [false, 0.5]])('demo writes the report, chart and each stage\'s outputs, then resumes (attention %s, distill %s)', async (attention, distill) => {
  const out = path.join(tmp, `run-${attention}-${distill}`);
  const { report, printed } = await runDemo(options(out, attention, distill));
  expect(JSON.parse(printed).rows).toEqual(report.rows); // --json prints the report
  // distilled fine-tunings get their own folders (a resumed run never mixes them with plain ones)
  const kd = distill ? '-kd' : '';
  const msgcStage = (attention ? 'msgc-att-finetune' : 'msgc-finetune') + kd;
  const denseFt = 'dense-finetune' + kd;
  expect(report.rows.map((r: any) => r.stage)).toEqual(['dense', denseFt, msgcStage]);
  if (distill) expect(report.rows.map((r: any) => r.model)).toEqual(['resnet20 dense', 'resnet20 dense, fine-tuned (KD)', 'resnet20 + MSGC KD (target 0.49)']);
  expect(report.data).toEqual({ dataset: 'fashion-mnist', train: 192, test: 100, shape: [1, 28, 28] });
  const ref = msgc.models.resnet20({ numClasses: 10, inChannels: 1 });
  const dense = msgc.countMacs(ref, [1, 28, 28]).dense;
  ref.dispose();
  for (const r of report.rows) {
    expect(r.epochs).toBe(r.stage === 'dense' ? 1 : 2);
    expect(r.top1).toBeGreaterThanOrEqual(0);
    expect(r.top1).toBeLessThanOrEqual(1);
    expect(r.denseMacs).toBe(dense);
    expect(r.macRatio).toBeCloseTo(r.macsPerImage / r.denseMacs, 12);
    if (r.stage !== msgcStage) expect(r.macRatio).toBe(1);
  }
  const m = report.rows[2];
  expect(m.macsPerImage).not.toBe(dense); // dynamic MACs, heads included
  expect(report.claim.macRatioAtMostHalf).toBe(m.macRatio <= 0.5 + 1e-9);
  expect(report.claim.top1AtLeastDenseFinetuned).toBe(m.top1 >= report.rows[1].top1);
  expect(fs.readFileSync(path.join(out, 'accuracy-vs-macs.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
  for (const stage of ['dense', denseFt, msgcStage]) {
    const metrics = JSON.parse(fs.readFileSync(path.join(out, stage, 'metrics.json'), 'utf8'));
    expect(metrics.epochs.length).toBe(stage === 'dense' ? 1 : 2);
    // the MSGC stage trained against the MAC target, which its ramp reached; the others had no budget
    expect(metrics.epochs[metrics.epochs.length - 1].macTarget).toBe(stage === msgcStage ? 0.49 : null);
    const weights = msgc.load(path.join(out, stage, 'model.safetensors'));
    const keys = Object.keys(weights);
    for (const t of Object.values(weights)) t.dispose();
    expect(keys.some((k) => /\.mask\d?\./.test(k))).toBe(stage === msgcStage);
    expect(keys.some((k) => /\.att\d?\./.test(k))).toBe(stage === msgcStage && attention);
  }
  // a second call finds every stage's last checkpoint: nothing trains again, the results are the same
  const again = await runDemo(options(out, attention, distill));
  expect(again.report.rows.map((r: any) => [r.stage, r.top1, r.macsPerImage])).toEqual(report.rows.map((r: any) => [r.stage, r.top1, r.macsPerImage]));
  for (const stage of ['dense', denseFt, msgcStage]) {
    expect(JSON.parse(fs.readFileSync(path.join(out, stage, 'metrics.json'), 'utf8')).epochs.length).toBe(stage === 'dense' ? 1 : 2);
  }
}, 120000);
