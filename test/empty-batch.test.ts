// An empty batch (N = 0) goes through the ops and the models as in PyTorch: empty outputs of the right shape,
// empty input gradients and zero parameter gradients, and no effect on later calls. Training-mode BatchNorm keeps
// its error (it normalises over the batch). Empty channel or spatial dimensions stay errors (conv/pool tests).
import * as msgc from '../lib';
import { randomArray } from './helpers/gradcheck';

const { F } = msgc;
const startLive = msgc.liveTensorCount();

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});

describe('ops on an empty batch', () => {
  test('forward: empty outputs of the op\'s output shape', () => {
    msgc.noGrad(() =>
      msgc.tidy(() => {
        const x = msgc.zeros([0, 4, 9, 9]);
        const w = msgc.randn([6, 4, 3, 3], { seed: 1 });
        const b = msgc.randn([6], { seed: 2 });
        expect(F.conv2d(x, w, b, { padding: 1 }).shape).toEqual([0, 6, 9, 9]);
        expect(F.conv2d(x, w, null, { stride: 2 }).shape).toEqual([0, 6, 4, 4]);
        const bn = { runningMean: msgc.zeros([6]), runningVar: msgc.ones([6]), weight: msgc.ones([6]), bias: msgc.zeros([6]) };
        expect(F.conv2dBnAct(x, w, null, bn, { padding: 1, activation: 'relu' }).shape).toEqual([0, 6, 9, 9]);
        expect(F.maxPool2d(x, { kernelSize: 3, stride: 2 }).shape).toEqual([0, 4, 4, 4]);
        expect(F.avgPool2d(x, { kernelSize: 3 }).shape).toEqual([0, 4, 3, 3]);
        expect(F.adaptiveAvgPool2d(x, 1).shape).toEqual([0, 4, 1, 1]);
        const s = msgc.ones([0, 2, 4]);
        for (const execution of ['masked', 'gathered'] as const) {
          expect(F.msgcConv2d(x, w, s, { heads: 2, padding: 1, execution }).shape).toEqual([0, 6, 9, 9]);
          expect(F.msgcConv2dBnAct(x, w, s, bn, { heads: 2, padding: 1, execution, activation: 'relu' }).shape).toEqual([0, 6, 9, 9]);
          const { y, pooled } = F.msgcConv2dBnActPooled(x, w, s, bn, { heads: 2, padding: 1, execution });
          expect(y.shape).toEqual([0, 6, 9, 9]);
          expect(pooled.shape).toEqual([0, 6, 1, 1]);
        }
        expect(F.linear(msgc.zeros([0, 5]), msgc.randn([3, 5], { seed: 3 }), null).shape).toEqual([0, 3]);
      }),
    );
  });

  test('gradients: empty for the input and the scales, zero for the parameters', () => {
    msgc.tidy(() => {
      const x = msgc.zeros([0, 4, 8, 8]);
      x.requiresGrad = true;
      const w = msgc.randn([6, 4, 3, 3], { seed: 4 });
      w.requiresGrad = true;
      const b = msgc.randn([6], { seed: 5 });
      b.requiresGrad = true;
      F.sum(F.maxPool2d(F.conv2d(x, w, b, { padding: 1 }), { kernelSize: 2 })).backward();
      expect(x.grad!.shape).toEqual([0, 4, 8, 8]);
      expect(Array.from(w.grad!.toFloat32Array()).every((v) => v === 0)).toBe(true);
      expect(Array.from(b.grad!.toFloat32Array()).every((v) => v === 0)).toBe(true);
      const s = msgc.ones([0, 2, 4]);
      s.requiresGrad = true;
      const w2 = msgc.randn([6, 4, 3, 3], { seed: 6 });
      w2.requiresGrad = true;
      const x2 = msgc.zeros([0, 4, 8, 8]);
      x2.requiresGrad = true;
      F.sum(F.msgcConv2d(x2, w2, s, { heads: 2, padding: 1 })).backward();
      expect(x2.grad!.shape).toEqual([0, 4, 8, 8]);
      expect(s.grad!.shape).toEqual([0, 2, 4]);
      expect(Array.from(w2.grad!.toFloat32Array()).every((v) => v === 0)).toBe(true);
      for (const t of [x, w, b, s, w2, x2]) t.grad!.dispose();
    });
  });
});

describe('models on an empty batch', () => {
  const cases: [string, () => msgc.nn.Module & { forward(x: msgc.Tensor): msgc.Tensor }, number][] = [
    ['resnet20 dense', () => msgc.models.createModel('resnet20', { smallInput: true }), 10],
    ['resnet20 MSGC', () => msgc.models.createModel('resnet20', { smallInput: true, msgc: { heads: 4 } }), 10],
    ['resnet50 MSGC', () => msgc.models.createModel('resnet50', { smallInput: true, numClasses: 7, msgc: { heads: 4 } }), 7],
    ['mobilenetv2 MSGC + attention', () => msgc.models.createModel('mobilenetv2', { smallInput: true, numClasses: 5, msgc: { heads: 4, attention: true } }), 5],
  ];
  test.each(cases)('%s in eval: [0, classes] under every execution, later batches unchanged', (_name, make, classes) => {
    msgc.manualSeed(3);
    const m = make();
    m.eval();
    const x = msgc.tensor(randomArray(2 * 3 * 32 * 32, 7, -1, 1), [2, 3, 32, 32]);
    const before = msgc.noGrad(() => msgc.tidy(() => m.forward(x).toFloat32Array()));
    for (const execution of ['auto', 'masked', 'gathered'] as const) {
      F.setMsgcExecution(execution);
      try {
        msgc.noGrad(() =>
          msgc.tidy(() => {
            const y = m.forward(msgc.zeros([0, 3, 32, 32]));
            expect(y.shape).toEqual([0, classes]);
          }),
        );
      } finally {
        F.setMsgcExecution('auto');
      }
    }
    const after = msgc.noGrad(() => msgc.tidy(() => m.forward(x).toFloat32Array()));
    expect(Array.from(after)).toEqual(Array.from(before));
    x.dispose();
    m.dispose();
  });

  test('training on an empty batch: BatchNorm\'s error, not a crash', () => {
    const m = msgc.models.createModel('resnet20', { smallInput: true, msgc: { heads: 4 } });
    m.train();
    msgc.tidy(() => {
      expect(() => m.forward(msgc.zeros([0, 3, 32, 32]))).toThrow(/batchNorm2d: training needs more than one value per channel/);
    });
    m.dispose();
  });
});
