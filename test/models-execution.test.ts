// models-execution.test.ts: whole boosted models in eval give the same outputs (and the same dynamic MACs)
// whichever way their MSGC convolutions run: masked (G head convs, or one conv per sample with the scales in
// the weights), gathered (only the selected channels), or 'auto' — with gates at mixed densities.
import * as msgc from '../lib';
import { closeness, randomArray } from './helpers/gradcheck';
import { setNativeEnv } from './helpers/testing';

const startLive = msgc.liveTensorCount();

// every gate head's last conv: weight 0, bias ±1 (a seeded mix: about half the channels open per head, some
// heads nearly closed or open); attention heads: a real scale in [0.5, 1.5]
function setGates(model: msgc.nn.Module, seed: number): void {
  let k = 0;
  for (const [name, p] of model.namedParameters()) {
    if (/mask\d?\.conv2\.weight$/.test(name) || /att\d?\.conv2\.weight$/.test(name)) p.assign(new Float32Array(p.size));
    if (/mask\d?\.conv2\.bias$/.test(name)) {
      const density = [0.5, 0.1, 0.9, 0.5][k++ % 4];
      p.assign(randomArray(p.size, seed + k, 0, 1).map((u) => (u < density ? 1 : -1)));
    }
    if (/att\d?\.conv2\.bias$/.test(name)) p.assign(randomArray(p.size, seed + 100 + k++, 0.5, 1.5));
  }
}

function run(model: msgc.models.Backbone, x: msgc.Tensor, mode: msgc.F.MsgcExecution, impl?: string): { y: Float32Array; macs: number; notSkipped: number } {
  const prev = msgc.F.setMsgcExecution(mode);
  if (impl) setNativeEnv('MSGC_MASKED_IMPL', impl);
  try {
    return msgc.noGrad(() => msgc.tidy(() => {
      const y = model.forward(x).toFloat32Array();
      const m = model.lastMacs();
      return { y, macs: m.perImage, notSkipped: m.executed - m.perImage };
    }));
  } finally {
    msgc.F.setMsgcExecution(prev);
    setNativeEnv('MSGC_MASKED_IMPL', undefined);
  }
}

const cases: [string, () => msgc.models.Backbone, number[]][] = [
  ['resnet18', () => msgc.models.resnet18({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention: false } }), [3, 3, 16, 16]],
  ['resnet18 + attention', () => msgc.models.resnet18({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention: true } }), [2, 3, 16, 16]],
  ['resnet50 (m1, m2, m3)', () => msgc.models.resnet50({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention: false } }), [2, 3, 16, 16]],
  ['mobilenetV2', () => msgc.models.mobilenetV2({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention: false } }), [3, 3, 16, 16]],
  ['densenet74', () => msgc.models.densenet74({ numClasses: 10, smallInput: true, msgc: { heads: 4, attention: false } }), [2, 3, 16, 16]],
  ['resnet20 (narrow heads)', () => msgc.models.resnet20({ numClasses: 10, msgc: { heads: 4, attention: false } }), [4, 3, 24, 24]],
];

describe.each(cases)('%s in eval: outputs equal across execution modes', (_name, make, shape) => {
  test('masked (both implementations), gathered and auto agree', () => {
    msgc.manualSeed(5);
    const model = make();
    setGates(model, 17);
    model.eval();
    const x = msgc.tensor(randomArray(shape.reduce((a, b) => a * b, 1), 3, -1, 1), shape);
    try {
      const masked = run(model, x, 'masked', 'batched');
      const scale = Math.max(...Array.from(masked.y).map(Math.abs));
      expect(scale).toBeGreaterThan(0);
      // the masked execution computes every bonus channel; the gathered one skips some (producer/consumer
      // skipping), and reports it
      const bonus = model.lastMacs().bonus;
      expect(bonus).toBeGreaterThan(0);
      expect(masked.notSkipped).toBeCloseTo(bonus, 0);
      for (const [mode, impl] of [['masked', 'persample'], ['gathered', undefined], ['auto', undefined]] as const) {
        const r = run(model, x, mode, impl);
        expect(closeness(r.y, masked.y, 1e-3 * scale, 1e-3)).toBeLessThanOrEqual(1);
        expect(r.macs).toBeCloseTo(masked.macs, 0);
        if (mode === 'gathered') expect(r.notSkipped).toBeLessThan(0.99 * bonus);
      }
      // without noGrad nothing is fused or cached (blocks pool their inputs again): the same logits
      const recorded = msgc.tidy(() => model.forward(x).toFloat32Array());
      expect(closeness(recorded, masked.y, 1e-3 * scale, 1e-3)).toBeLessThanOrEqual(1);
      // the gates really are mixed: the model runs well below its dense cost
      expect(model.lastMacs().ratio).toBeLessThan(0.9);
    } finally {
      x.dispose();
      model.dispose();
    }
  });
});

test('setMsgcExecution rejects unknown modes and returns the previous one', () => {
  expect(() => msgc.F.setMsgcExecution('sparse' as never)).toThrow(/setMsgcExecution: mode must be/);
  expect(msgc.F.setMsgcExecution('masked')).toBe('auto');
  expect(msgc.F.setMsgcExecution('auto')).toBe('masked');
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});
