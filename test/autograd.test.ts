// autograd.test.ts: the tape: accumulation into .grad, a tensor used twice, requiresGrad propagation, noGrad,
// backward's argument checks, a graph freed by backward, tidy/keep (nested, arrays/objects), intermediates
// freed after backward, and the seeded random generators.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { closeness, gradCheck, randomArray } from './helpers/gradcheck';
import { expectError, settledLiveCount } from './helpers/testing';

const F = msgc.F;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});

describe('gradients', () => {
  test('accumulate across two backward calls into .grad', () => {
    msgc.tidy(() => {
      const xd = randomArray(6, 1);
      const c1 = randomArray(6, 2);
      const c2 = randomArray(6, 3);
      const x = msgc.tensor(xd, [2, 3], { requiresGrad: true });
      F.sum(F.mul(x, msgc.tensor(c1, [2, 3]))).backward();
      const first = x.grad!;
      expect(closeness(first.toFloat32Array(), c1, 1e-7, 1e-6)).toBeLessThanOrEqual(1);
      F.sum(F.mul(x, msgc.tensor(c2, [2, 3]))).backward();
      expect(x.grad).toBe(first); // accumulated in place
      expect(closeness(x.grad!.toFloat32Array(), Array.from(c1, (v, i) => v + c2[i]), 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      // a third, through a different op and with an explicit upstream gradient
      const g = randomArray(6, 4);
      F.relu6(F.add(x, msgc.full([1], 10))).backward(msgc.tensor(g, [2, 3])); // x + 10 > 6: relu6 passes no gradient, .grad unchanged
      expect(closeness(x.grad!.toFloat32Array(), Array.from(c1, (v, i) => v + c2[i]), 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      F.sigmoid(x).backward(msgc.tensor(g, [2, 3]));
      const want = Array.from(xd, (v, i) => {
        const s = 1 / (1 + Math.exp(-v));
        return c1[i] + c2[i] + g[i] * s * (1 - s);
      });
      expect(closeness(x.grad!.toFloat32Array(), want, 1e-6, 1e-5)).toBeLessThanOrEqual(1);
    });
  });

  test('a tensor used twice (y = x*x + x) gets the summed gradient', () => {
    msgc.tidy(() => {
      const xd = randomArray(12, 5, -2, 2);
      const g = randomArray(12, 6);
      const x = msgc.tensor(xd, [3, 4], { requiresGrad: true });
      F.add(F.mul(x, x), x).backward(msgc.tensor(g, [3, 4]));
      expect(closeness(x.grad!.toFloat32Array(), Array.from(xd, (v, i) => g[i] * (2 * v + 1)), 1e-6, 1e-5)).toBeLessThanOrEqual(1);
      gradCheck(([x]) => F.add(F.mul(x, x), x), [x]);
      // a diamond: both branches go through the same intermediate
      gradCheck(([x]) => {
        const h = F.sigmoid(x);
        return F.sub(F.mul(h, F.scale(h, 3)), F.relu(h));
      }, [x]);
    });
  });

  test('inputs without requiresGrad get no gradient; outputs of such inputs do not require grad', () => {
    msgc.tidy(() => {
      const a = msgc.tensor(randomArray(4, 7), [4], { requiresGrad: true });
      const b = msgc.tensor(randomArray(4, 8), [4]);
      const y = F.sum(F.mul(a, b));
      expect(y.requiresGrad).toBe(true);
      expect(y.isLeaf).toBe(false);
      y.backward();
      expect(a.grad).not.toBeNull();
      expect(b.grad).toBeNull();
      const z = F.sum(F.mul(b, b));
      expect(z.requiresGrad).toBe(false);
      expect(z.isLeaf).toBe(true);
      expectError(() => z.backward(), /^backward: this tensor does not require grad/);
    });
  });

  test('noGrad records nothing and restores the mode, also after a throw', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(4, 9), [4], { requiresGrad: true });
      expect(msgc.isGradEnabled()).toBe(true);
      const y = msgc.noGrad(() => {
        expect(msgc.isGradEnabled()).toBe(false);
        return F.sum(F.mul(F.sigmoid(x), x));
      });
      expect(msgc.isGradEnabled()).toBe(true);
      expect(y.requiresGrad).toBe(false);
      expect(y.isLeaf).toBe(true);
      expectError(() => y.backward(), /^backward: this tensor does not require grad/);
      expect(x.grad).toBeNull();
      expect(() => msgc.noGrad(() => {
        throw new Error('inside');
      })).toThrow('inside');
      expect(msgc.isGradEnabled()).toBe(true);
      // nested noGrad keeps it off until the outer one ends
      msgc.noGrad(() => {
        msgc.noGrad(() => undefined);
        expect(msgc.isGradEnabled()).toBe(false);
      });
      expect(msgc.isGradEnabled()).toBe(true);
    });
  });

  test('backward argument checks', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(6, 10), [2, 3], { requiresGrad: true });
      const y = F.mul(x, 2);
      expectError(() => y.backward(), /^backward: the tensor has shape \[2, 3\]; pass a gradient of that shape or call it on a scalar loss/);
      expectError(() => y.backward(msgc.zeros([3, 2])), /^backward: gradient has shape \[3, 2\], expected \[2, 3\]/);
      expectError(() => y.backward(msgc.zeros([6])), /^backward: gradient has shape \[6\], expected \[2, 3\]/);
      expectError(() => y.backward(msgc.zeros([])), /^backward: gradient has shape \[\], expected \[2, 3\]/);
      expectError(() => y.backward([1, 2, 3, 4, 5, 6] as unknown as Tensor), /^backward: gradient must be a Tensor, got object/);
      expectError(() => y.backward(null as unknown as Tensor), /^backward: gradient must be a Tensor, got null/);
      const gone = msgc.zeros([2, 3]);
      gone.dispose();
      expectError(() => y.backward(gone), /^backward: gradient was disposed/);
      // none of the failures ran anything; the graph is intact
      expect(x.grad).toBeNull();
      y.backward(msgc.ones([2, 3]));
      expect(Array.from(x.grad!.toFloat32Array())).toEqual([2, 2, 2, 2, 2, 2]);
      // a one-element non-scalar works without an argument
      const x1 = msgc.tensor([3], [1, 1], { requiresGrad: true });
      F.mul(x1, x1).backward();
      expect(x1.grad!.item()).toBe(6);
    });
  });

  test('a graph freed by backward cannot silently be reused', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(4, 11), [4], { requiresGrad: true });
      const h = F.sigmoid(x);
      const loss = F.sum(h);
      loss.backward();
      const g1 = Array.from(x.grad!.toFloat32Array());
      expectError(() => loss.backward(), /^backward: the graph through this tensor was already freed/);
      expectError(() => F.sum(F.scale(h, 2)).backward(), /^backward: the graph through this tensor was already freed/);
      expect(Array.from(x.grad!.toFloat32Array())).toEqual(g1);
      // a fresh forward works
      F.sum(F.sigmoid(x)).backward();
      expect(closeness(x.grad!.toFloat32Array(), g1.map((v) => 2 * v), 1e-7, 1e-6)).toBeLessThanOrEqual(1);
    });
  });

  test('detach cuts the graph and clone passes gradients', () => {
    msgc.tidy(() => {
      const xd = randomArray(5, 12);
      const x = msgc.tensor(xd, [5], { requiresGrad: true });
      const d = F.sigmoid(x).detach();
      expect(d.requiresGrad).toBe(false);
      expect(d.isLeaf).toBe(true);
      const g = randomArray(5, 13);
      F.add(x.clone(), F.mul(d, x)).backward(msgc.tensor(g, [5]));
      const want = Array.from(xd, (v, i) => g[i] * (1 + 1 / (1 + Math.exp(-v))));
      expect(closeness(x.grad!.toFloat32Array(), want, 1e-6, 1e-5)).toBeLessThanOrEqual(1);
    });
  });
});

describe('tidy and keep', () => {
  test('tidy disposes intermediates but not what it returns (tensor, array, object, Map)', () => {
    const start = msgc.liveTensorCount();
    const made: Tensor[] = [];
    const track = <T extends Tensor>(t: T): T => {
      made.push(t);
      return t;
    };
    const single = msgc.tidy(() => {
      const a = track(msgc.ones([3]));
      return track(F.scale(track(F.add(a, a)), 2));
    });
    expect(single.isDisposed).toBe(false);
    expect(Array.from(single.toFloat32Array())).toEqual([4, 4, 4]);
    expect(made.filter((t) => t !== single).every((t) => t.isDisposed)).toBe(true);
    expect(msgc.liveTensorCount()).toBe(start + 1);

    const nestedResult = msgc.tidy(() => {
      const a = msgc.ones([2]);
      const b = msgc.zeros([2]);
      const tmp = F.add(a, b);
      return { list: [a, 5, 'x'], deep: { inner: [[b]] }, map: new Map([['t', F.scale(tmp, 3)]]), other: null };
    });
    expect(nestedResult.list[0]).toBeInstanceOf(Object);
    const [a] = nestedResult.list as Tensor[];
    const b = nestedResult.deep.inner[0][0];
    const m = nestedResult.map.get('t')!;
    for (const t of [a, b, m]) expect(t.isDisposed).toBe(false);
    expect(Array.from(m.toFloat32Array())).toEqual([3, 3]);
    expect(msgc.liveTensorCount()).toBe(start + 4);
    for (const t of [single, a, b, m]) t.dispose();
    expect(msgc.liveTensorCount()).toBe(start);
  });

  test('keep() makes a tensor outlive the scope; tensors made before the scope are untouched', () => {
    const start = msgc.liveTensorCount();
    const outside = msgc.ones([2]);
    let kept: Tensor | null = null;
    let kept2: Tensor | null = null;
    let dropped: Tensor | null = null;
    msgc.tidy(() => {
      kept = msgc.keep(F.add(outside, outside));
      kept2 = F.scale(outside, 3).keep();
      dropped = F.scale(outside, 5);
      return undefined;
    });
    expect(outside.isDisposed).toBe(false);
    expect(kept!.isDisposed).toBe(false);
    expect(kept2!.isDisposed).toBe(false);
    expect(dropped!.isDisposed).toBe(true);
    expect(Array.from(kept!.toFloat32Array())).toEqual([2, 2]);
    for (const t of [outside, kept!, kept2!]) t.dispose();
    expect(msgc.liveTensorCount()).toBe(start);
  });

  test('nested tidy: the inner result joins the outer scope', () => {
    const start = msgc.liveTensorCount();
    let inner: Tensor | null = null;
    let innerTmp: Tensor | null = null;
    const outer = msgc.tidy(() => {
      inner = msgc.tidy(() => {
        innerTmp = msgc.ones([4]);
        return F.scale(innerTmp, 2);
      });
      expect(innerTmp!.isDisposed).toBe(true);
      expect(inner!.isDisposed).toBe(false);
      const kept = msgc.tidy(() => msgc.keep(msgc.zeros([1])));
      expect(msgc.liveTensorCount()).toBe(start + 2);
      kept.dispose();
      return F.add(inner!, inner!);
    });
    expect(inner!.isDisposed).toBe(true); // not returned by the outer scope
    expect(Array.from(outer.toFloat32Array())).toEqual([4, 4, 4, 4]);
    expect(msgc.liveTensorCount()).toBe(start + 1);
    outer.dispose();
    expect(msgc.liveTensorCount()).toBe(start);
  });

  test('a throw inside tidy disposes everything it made and rethrows', () => {
    const start = msgc.liveTensorCount();
    expect(() => msgc.tidy(() => {
      msgc.ones([8]);
      F.scale(msgc.ones([8]), 2);
      throw new Error('boom');
    })).toThrow('boom');
    expect(msgc.liveTensorCount()).toBe(start);
    // a Promise result is refused (the scope is synchronous), and nothing leaks
    expectError(() => msgc.tidy(() => {
      msgc.ones([2]);
      return Promise.resolve(1);
    }), /^tidy: fn returned a Promise/);
    expect(msgc.liveTensorCount()).toBe(start);
  });

  test('intermediates are freed after backward: only the leaves\' .grad tensors remain', () => {
    const start = msgc.liveTensorCount();
    const x = msgc.tensor(randomArray(2 * 3 * 4 * 4, 21), [2, 3, 4, 4], { requiresGrad: true });
    const w = msgc.tensor(randomArray(4 * 3 * 3 * 3, 22), [4, 3, 3, 3], { requiresGrad: true });
    const gamma = msgc.ones([4], { requiresGrad: true });
    const beta = msgc.zeros([4], { requiresGrad: true });
    const rm = msgc.zeros([4]);
    const rv = msgc.ones([4]);
    const fc = msgc.tensor(randomArray(5 * 16, 23), [5, 16], { requiresGrad: true });
    const leaves = [x, w, gamma, beta, fc];
    const base = msgc.liveTensorCount();
    expect(base).toBe(start + 7);
    msgc.tidy(() => {
      const h = F.relu(F.batchNorm2d(F.conv2d(x, w, null, { padding: 1 }), rm, rv, gamma, beta, { training: true }));
      const p = F.flatten(F.adaptiveAvgPool2d(F.maxPool2d(h, { kernelSize: 2 }), 2));
      const logits = F.linear(p, fc);
      const loss = F.add(F.crossEntropy(logits, [1, 4], { labelSmoothing: 0.1 }), F.scale(F.mean(F.mul(h, h)), 0.01));
      loss.backward();
    });
    for (const t of leaves) expect(t.grad).not.toBeNull();
    expect(msgc.liveTensorCount()).toBe(base + leaves.length);
    // without tidy: backward itself frees what the graph saved; disposing the outputs frees the rest
    for (const t of leaves) {
      t.grad!.dispose();
      t.grad = null;
    }
    const before = msgc.liveTensorCount();
    const outs: Tensor[] = [];
    const o = <T extends Tensor>(t: T): T => {
      outs.push(t);
      return t;
    };
    const bn = o(F.batchNorm2d(o(F.conv2d(x, w, null, { padding: 1 })), rm, rv, gamma, beta, { training: true }));
    const logits = o(F.linear(o(F.flatten(o(F.adaptiveAvgPool2d(o(F.relu(bn)), 1)), 1)), o(F.slice(fc, 0, 4))));
    const loss = o(F.crossEntropy(o(F.reshape(logits, [2, -1])), [0, 3]));
    loss.backward();
    for (const t of outs) t.dispose();
    expect(msgc.liveTensorCount()).toBe(before + leaves.length);
    for (const t of leaves) {
      if (t.grad) t.grad.dispose();
      t.grad = null;
    }
    for (const t of [...leaves, rm, rv]) t.dispose();
    expect(msgc.liveTensorCount()).toBe(start);
  });
});

describe('random generators', () => {
  test('seeded randn / rand are reproducible and differ with another seed', () => {
    msgc.tidy(() => {
      const a = msgc.randn([1000], { seed: 42 }).toFloat32Array();
      const b = msgc.randn([1000], { seed: 42 }).toFloat32Array();
      const c = msgc.randn([1000], { seed: 43 }).toFloat32Array();
      expect(Array.from(a)).toEqual(Array.from(b));
      expect(a.some((v, i) => v !== c[i])).toBe(true);
      const u1 = msgc.rand([1000], { seed: 7, low: -2, high: 3 }).toFloat32Array();
      const u2 = msgc.rand([1000], { seed: 7, low: -2, high: 3 }).toFloat32Array();
      const u3 = msgc.rand([1000], { seed: 8, low: -2, high: 3 }).toFloat32Array();
      expect(Array.from(u1)).toEqual(Array.from(u2));
      expect(u1.some((v, i) => v !== u3[i])).toBe(true);
      for (const v of u1) {
        expect(v).toBeGreaterThanOrEqual(-2);
        expect(v).toBeLessThan(3);
      }
      // the global generator: manualSeed makes unseeded draws reproducible
      msgc.manualSeed(123);
      const g1 = msgc.randn([100]).toFloat32Array();
      const g2 = msgc.randn([100]).toFloat32Array();
      msgc.manualSeed(123);
      expect(Array.from(msgc.randn([100]).toFloat32Array())).toEqual(Array.from(g1));
      expect(Array.from(msgc.randn([100]).toFloat32Array())).toEqual(Array.from(g2));
      expect(g1.some((v, i) => v !== g2[i])).toBe(true);
    });
  });

  test('randn has mean ~0 and std ~1, rand is uniform, over 1e5 samples', () => {
    msgc.tidy(() => {
      const n = 100000;
      const moments = (v: Float32Array) => {
        let s = 0;
        let s2 = 0;
        for (const x of v) {
          s += x;
          s2 += x * x;
        }
        const mean = s / v.length;
        return { mean, std: Math.sqrt(s2 / v.length - mean * mean) };
      };
      const z = moments(msgc.randn([n], { seed: 1 }).toFloat32Array());
      expect(Math.abs(z.mean)).toBeLessThan(0.02);
      expect(Math.abs(z.std - 1)).toBeLessThan(0.02);
      const z2 = moments(msgc.randn([n], { seed: 2, mean: 3, std: 0.5 }).toFloat32Array());
      expect(Math.abs(z2.mean - 3)).toBeLessThan(0.01);
      expect(Math.abs(z2.std - 0.5)).toBeLessThan(0.01);
      const u = moments(msgc.rand([n], { seed: 3 }).toFloat32Array());
      expect(Math.abs(u.mean - 0.5)).toBeLessThan(0.01);
      expect(Math.abs(u.std - Math.sqrt(1 / 12))).toBeLessThan(0.01);
      // tails: about 4.55% of N(0, 1) lies beyond 2 sigma
      const v = msgc.randn([n], { seed: 4 }).toFloat32Array();
      let tail = 0;
      for (const x of v) if (Math.abs(x) > 2) tail++;
      expect(Math.abs(tail / n - 0.0455)).toBeLessThan(0.005);
    });
  });

  test('bad shapes and seeds', () => {
    expectError(() => msgc.randn([2, -1]), /^randn: shape\[1\] must be a non-negative integer, got -1/);
    expectError(() => msgc.rand('3' as unknown as number[]), /^rand: shape must be an array/);
    expectError(() => msgc.randn([2], { seed: 1.5 }), /^randn: seed must be an integer/);
    expectError(() => msgc.rand([2], { low: 1, high: 0 }), /^rand: low \(1\) must not exceed high \(0\)/);
    expectError(() => msgc.randn([2], { std: NaN }), /^randn: std must be finite/);
  });
});

describe('native creation functions', () => {
  test('garbage never crashes: fromFloat32, full, randomNormal, randomUniform, manualSeed', () => {
    const start = msgc.liveTensorCount();
    const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
    const call = (name: string, ...args: unknown[]) => () => n[name](...args);
    expectError(call('fromFloat32'), /^tensor: data must be a Float32Array/);
    expectError(call('fromFloat32', [1, 2], [2]), /^tensor: data must be a Float32Array/);
    expectError(call('fromFloat32', new Float64Array(2), [2]), /^tensor: data must be a Float32Array/);
    expectError(call('fromFloat32', new Float32Array(4), [2, 3]), /^tensor: data has 4 elements but shape \[2, 3\] needs 6/);
    expectError(call('fromFloat32', new Float32Array(4), [4, NaN]), /^tensor: shape\[1\] must be a non-negative integer/);
    expectError(call('fromFloat32', new Float32Array(4)), /^tensor: shape must be an array of dimensions, got undefined/);
    expectError(call('full', [2], 'one'), /^full: value must be a number, got a string/);
    expectError(call('full', [2, -2], 1), /^full: shape\[1\] must be a non-negative integer/);
    expectError(call('full', [1e5, 1e5], 0), /^full: shape \[100000, 100000\] has 1e\+10 elements/);
    expectError(call('randomNormal', [2], 1.5, 0, 1), /^randn: seed must be an integer/);
    expectError(call('randomNormal', [2], 2 ** 60, 0, 1), /^randn: seed must be an integer/);
    expectError(call('randomNormal', [2], 1, 0), /^randn: std must be a number, got undefined/);
    expectError(call('randomUniform', [2], 1, 2, 1), /^rand: low \(2\) must not exceed high \(1\)/);
    expectError(call('randomUniform', 'shape', 1, 0, 1), /^rand: shape must be an array of dimensions, got a string/);
    expectError(call('manualSeed', 'x'), /^manualSeed: seed must be a number, got a string/);
    expectError(call('manualSeed', NaN), /^manualSeed: seed must be finite/);
    const garbage: unknown[] = [undefined, null, 'str', NaN, -1, 1.5, [1, 2, 3], [], [-1], {}, true, new Float32Array(3)];
    const sweeps: [string, unknown[], RegExp][] = [
      ['fromFloat32', [new Float32Array(6), [2, 3]], /^tensor: /],
      ['full', [[2, 3], 1], /^full: /],
      ['randomNormal', [[2, 3], 5, 0, 1], /^randn: /],
      ['randomUniform', [[2, 3], 5, 0, 1], /^rand: /],
    ];
    for (const [name, good, re] of sweeps) {
      for (let i = 0; i < good.length; i++) {
        for (const v of garbage) {
          const args = good.slice();
          args[i] = v;
          try {
            (n[name](...args) as { dispose(): void }).dispose();
          } catch (e) {
            expect(Object.prototype.toString.call(e)).toBe('[object Error]');
            expect((e as Error).message).toMatch(re);
          }
        }
      }
    }
    expect(msgc.liveTensorCount()).toBe(start);
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
