// module.test.ts: the Module base and standard layers — names, parameters/buffers, train/eval, state dicts
// (strict and not), a safetensors round trip of a whole model (bit-exact), layer numerics against float64.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as msgc from '../lib';
import { closeness, randomArray } from './helpers/gradcheck';

const { nn, F } = msgc;
const startLive = msgc.liveTensorCount();

class Tiny extends nn.Module {
  conv = this.registerModule('conv', new nn.Conv2d(2, 4, 3, { padding: 1 }));
  bn = this.registerModule('bn', new nn.BatchNorm2d(4));
  head = this.registerModule('head', new nn.Sequential(new nn.Flatten(), new nn.Linear(4 * 5 * 5, 3)));
  forward(x: msgc.Tensor): msgc.Tensor {
    return this.head.forward(F.relu(this.bn.forward(this.conv.forward(x))));
  }
}

test('dotted names for parameters and buffers, in registration order', () => {
  const m = new Tiny();
  expect(m.namedParameters().map(([n]) => n)).toEqual(['conv.weight', 'conv.bias', 'bn.weight', 'bn.bias', 'head.1.weight', 'head.1.bias']);
  expect(m.namedBuffers().map(([n]) => n)).toEqual(['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']);
  expect(Object.keys(m.stateDict())).toHaveLength(9);
  expect(m.numParameters()).toBe(4 * 2 * 9 + 4 + 4 + 4 + 3 * 100 + 3);
  expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
  m.dispose();
});

test('parameters survive a tidy scope around construction; dispose frees them all', () => {
  const before = msgc.liveTensorCount();
  const m = msgc.tidy(() => new Tiny());
  expect(m.parameters().every((p) => !p.isDisposed)).toBe(true);
  expect(msgc.liveTensorCount()).toBe(before + 9);
  m.dispose();
  expect(msgc.liveTensorCount()).toBe(before);
});

test('BatchNorm2d follows train/eval: batch statistics and running updates only in training', () => {
  const m = new Tiny();
  const x = msgc.tensor(randomArray(4 * 2 * 5 * 5, 1), [4, 2, 5, 5]);
  msgc.tidy(() => {
    m.train();
    m.forward(x);
    expect(m.bn.numBatchesTracked.item()).toBe(1);
    const rm = m.bn.runningMean.toFloat32Array();
    expect(rm.some((v) => v !== 0)).toBe(true);
    m.eval();
    const a = m.forward(x).toFloat32Array();
    const b = m.forward(x).toFloat32Array();
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Array.from(m.bn.runningMean.toFloat32Array())).toEqual(Array.from(rm));
    expect(m.bn.numBatchesTracked.item()).toBe(1);
  });
  x.dispose();
  m.dispose();
});

test('Linear and Conv2d layers compute their float64 definitions', () => {
  msgc.manualSeed(3);
  const lin = new nn.Linear(5, 3);
  const x = randomArray(2 * 5, 2);
  msgc.tidy(() => {
    const y = lin.forward(msgc.tensor(x, [2, 5])).toFloat32Array();
    const w = lin.weight.toFloat32Array();
    const b = lin.bias!.toFloat32Array();
    const ref = new Float64Array(6);
    for (let n = 0; n < 2; n++) for (let o = 0; o < 3; o++) {
      let s = b[o];
      for (let i = 0; i < 5; i++) s += w[o * 5 + i] * x[n * 5 + i];
      ref[n * 3 + o] = s;
    }
    expect(closeness(y, ref, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
    // torch's default init bounds: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    expect(w.every((v) => Math.abs(v) <= 1 / Math.sqrt(5))).toBe(true);
  });
  lin.dispose();
});

test('loadStateDict: strict key checks, shape checks, and values copied (not aliased)', () => {
  msgc.manualSeed(1);
  const a = new Tiny();
  msgc.manualSeed(2);
  const b = new Tiny();
  b.loadStateDict(a.stateDict());
  for (const [k, t] of Object.entries(a.stateDict())) expect(Array.from(b.stateDict()[k].toFloat32Array())).toEqual(Array.from(t.toFloat32Array()));
  // not aliased: changing a leaves b alone
  a.conv.weight.assign(new Float32Array(a.conv.weight.size).fill(7));
  expect(b.conv.weight.toFloat32Array()[0]).not.toBe(7);
  const partial = { ...a.stateDict() };
  delete partial['conv.bias'];
  expect(() => b.loadStateDict(partial)).toThrow(/Missing: conv.bias/);
  expect(b.loadStateDict(partial, { strict: false })).toEqual({ missingKeys: ['conv.bias'], unexpectedKeys: [] });
  const extra = { ...a.stateDict(), 'other.weight': a.conv.bias! };
  expect(() => b.loadStateDict(extra)).toThrow(/Unexpected: other.weight/);
  const wrong = { ...a.stateDict(), 'bn.weight': a.conv.weight };
  expect(() => b.loadStateDict(wrong)).toThrow(/'bn.weight' has shape \[4, 2, 3, 3\]/);
  a.dispose();
  b.dispose();
});

test('a model saved as safetensors loads back bit-exactly into a fresh model', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-module-'));
  const file = path.join(dir, 'model.safetensors');
  msgc.manualSeed(4);
  const a = msgc.models.resnet20({ numClasses: 10, msgc: { heads: 4, attention: true } });
  // make the buffers non-trivial
  msgc.tidy(() => {
    a.forward(msgc.tensor(randomArray(2 * 3 * 8 * 8, 5), [2, 3, 8, 8]));
  });
  msgc.save(a.stateDict(), file);
  msgc.manualSeed(9);
  const b = msgc.models.resnet20({ numClasses: 10, msgc: { heads: 4, attention: true } });
  const loaded = msgc.load(file);
  b.loadStateDict(loaded);
  for (const t of Object.values(loaded)) t.dispose();
  const sa = a.stateDict();
  const sb = b.stateDict();
  for (const k of Object.keys(sa)) {
    const x = new Uint32Array(sa[k].toFloat32Array().buffer);
    const y = new Uint32Array(sb[k].toFloat32Array().buffer);
    expect(Array.from(y)).toEqual(Array.from(x));
  }
  a.dispose();
  b.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

afterAll(() => {
  expect(msgc.liveTensorCount()).toBe(startLive);
});
