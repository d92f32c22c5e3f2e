// loss.test.ts: F.crossEntropy (mean over the batch of -sum_k target_k log softmax_k, target = (1 - eps) * onehot
// + eps / K) against a float64 log-sum-exp reference, including large logits; backward against central
// differences and the float64 (softmax - target) / N; bad labels, smoothing and logits through F and natively.
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

/** float64 loss and gradient (d mean-loss / d logits). */
function ceRef(z: ArrayLike<number>, N: number, K: number, labels: ArrayLike<number>, eps = 0): { loss: number; grad: Float64Array } {
  let total = 0;
  const grad = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let k = 0; k < K; k++) m = Math.max(m, z[n * K + k]);
    let s = 0;
    for (let k = 0; k < K; k++) s += Math.exp(z[n * K + k] - m);
    const lse = m + Math.log(s);
    for (let k = 0; k < K; k++) {
      const target = (1 - eps) * (k === labels[n] ? 1 : 0) + eps / K;
      const logp = z[n * K + k] - lse;
      total -= target * logp;
      grad[n * K + k] = (Math.exp(logp) - target) / N;
    }
  }
  return { loss: total / N, grad };
}

function labelsFor(N: number, K: number, seed: number): number[] {
  return Array.from(randomArray(N, seed, 0, K), (v) => Math.min(K - 1, Math.floor(v)));
}

describe('forward against float64', () => {
  const cases = [
    { N: 4, K: 5, eps: 0 },
    { N: 4, K: 5, eps: 0.1 },
    { N: 1, K: 3, eps: 0 },
    { N: 7, K: 10, eps: 0.25 },
    { N: 3, K: 1, eps: 0 },
    { N: 5, K: 4, eps: 1 },
    { N: 16, K: 100, eps: 0.05 },
  ];
  for (const c of cases) {
    test(`N=${c.N} K=${c.K} labelSmoothing=${c.eps}`, () => {
      msgc.tidy(() => {
        const z = randomArray(c.N * c.K, c.N * 31 + c.K, -4, 4);
        const labels = labelsFor(c.N, c.K, c.N + c.K);
        const logits = msgc.tensor(z, [c.N, c.K]);
        const loss = F.crossEntropy(logits, labels, { labelSmoothing: c.eps });
        expect(loss.shape).toEqual([]);
        expect(loss.size).toBe(1);
        const ref = ceRef(z, c.N, c.K, labels, c.eps);
        expect(closeness([loss.item()], [ref.loss], 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        // the same labels as an Int32Array
        const loss2 = F.crossEntropy(logits, Int32Array.from(labels), { labelSmoothing: c.eps });
        expect(loss2.item()).toBe(loss.item());
      });
    });
  }

  test('default options mean no smoothing', () => {
    msgc.tidy(() => {
      const z = randomArray(12, 5, -2, 2);
      const logits = msgc.tensor(z, [3, 4]);
      const labels = [3, 0, 2];
      expect(closeness([F.crossEntropy(logits, labels).item()], [ceRef(z, 3, 4, labels).loss], 1e-6, 1e-5)).toBeLessThanOrEqual(1);
    });
  });

  test('large logits (+-1000) stay finite and match the stable float64 value', () => {
    msgc.tidy(() => {
      const z = [
        1000, 0, -1000, 999,
        -1000, -1000, -1000, -999.5,
        1000, 1000, 1000, 1000,
        0, 1000, -1000, 500,
      ];
      for (const labels of [[0, 3, 2, 1], [2, 0, 1, 2]]) {
        for (const eps of [0, 0.1]) {
          const loss = F.crossEntropy(msgc.tensor(z, [4, 4]), labels, { labelSmoothing: eps }).item();
          const ref = ceRef(z, 4, 4, labels, eps).loss;
          expect(Number.isFinite(loss)).toBe(true);
          expect(closeness([loss], [ref], 1e-4, 1e-5)).toBeLessThanOrEqual(1);
        }
      }
      // a confidently right prediction costs ~0, a confidently wrong one ~ the logit gap
      const right = F.crossEntropy(msgc.tensor([1000, -1000], [1, 2]), [0]).item();
      const wrong = F.crossEntropy(msgc.tensor([1000, -1000], [1, 2]), [1]).item();
      expect(Math.abs(right)).toBeLessThan(1e-6);
      expect(closeness([wrong], [2000], 0, 1e-6)).toBeLessThanOrEqual(1);
      // gradients stay finite too
      const x = msgc.tensor(z, [4, 4], { requiresGrad: true });
      F.crossEntropy(x, [0, 3, 2, 1], { labelSmoothing: 0.1 }).backward();
      const want = ceRef(z, 4, 4, [0, 3, 2, 1], 0.1).grad;
      expect(closeness(x.grad!.toFloat32Array(), want, 1e-6, 1e-5)).toBeLessThanOrEqual(1);
    });
  });
});

describe('backward', () => {
  for (const eps of [0, 0.1, 0.3]) {
    test(`central differences, labelSmoothing=${eps}`, () => {
      msgc.tidy(() => {
        const N = 5;
        const K = 6;
        const logits = msgc.tensor(randomArray(N * K, 60 + eps * 10, -3, 3), [N, K], { requiresGrad: true });
        const labels = Int32Array.from(labelsFor(N, K, 61));
        const r = gradCheck(([z]) => F.crossEntropy(z, labels, { labelSmoothing: eps }), [logits], { samples: N * K });
        expect(r.checked).toBe(N * K);
      });
    });
  }

  test('central differences around large logits', () => {
    msgc.tidy(() => {
      const z = Float32Array.from(randomArray(12, 71, -2, 2), (v, i) => v + (i % 2 ? 1000 : -1000) * (i % 3 === 0 ? 0 : 1));
      const logits = msgc.tensor(z, [3, 4], { requiresGrad: true });
      gradCheck(([z]) => F.crossEntropy(z, [1, 2, 0], { labelSmoothing: 0.2 }), [logits], { samples: 12 });
    });
  });

  test('the analytic gradient is (softmax - target) / N times the upstream gradient', () => {
    msgc.tidy(() => {
      const N = 6;
      const K = 4;
      const z = randomArray(N * K, 81, -3, 3);
      const labels = labelsFor(N, K, 82);
      for (const eps of [0, 0.2]) {
        for (const upstream of [1, 2.5]) {
          const x = msgc.tensor(z, [N, K], { requiresGrad: true });
          const loss = F.crossEntropy(x, labels, { labelSmoothing: eps });
          (upstream === 1 ? loss : F.scale(loss, upstream)).backward();
          const want = Array.from(ceRef(z, N, K, labels, eps).grad, (v) => v * upstream);
          expect(closeness(x.grad!.toFloat32Array(), want, 1e-6, 1e-5)).toBeLessThanOrEqual(1);
        }
      }
    });
  });

  test('through a linear layer and a blocked conv feature map', () => {
    msgc.tidy(() => {
      // logits = flatten(conv(x)) so the loss reads a tensor that came from a blocked layout
      const x = msgc.tensor(randomArray(2 * 3 * 2 * 2, 91), [2, 3, 2, 2], { requiresGrad: true });
      const w = msgc.tensor(randomArray(4 * 3, 92), [4, 3, 1, 1], { requiresGrad: true });
      gradCheck(([x, w]) => {
        const y = F.conv2d(x, w);
        expect(y.layout).toBe('blocked');
        return F.crossEntropy(F.flatten(y), [5, 12], { labelSmoothing: 0.1 });
      }, [x, w]);
    });
  });
});

describe('bad input', () => {
  test('through F: labels, smoothing, logits', () => {
    msgc.tidy(() => {
      const logits = msgc.tensor(randomArray(6, 101), [2, 3]);
      const ce = F.crossEntropy as unknown as (...a: unknown[]) => Tensor;
      expectError(() => ce(logits, [0, 3]), /crossEntropy: labels\[1\] = 3 is outside \[0, 3\)/);
      expectError(() => ce(logits, [-1, 0]), /crossEntropy: labels\[0\] = -1 is outside \[0, 3\)/);
      expectError(() => ce(logits, Int32Array.from([0, 7])), /crossEntropy: labels\[1\] = 7 is outside \[0, 3\)/);
      expectError(() => ce(logits, [0, 1, 2]), /crossEntropy: labels has 3 entries, expected 2/);
      expectError(() => ce(logits, [0]), /crossEntropy: labels has 1 entries, expected 2/);
      expectError(() => ce(logits, []), /crossEntropy: labels has 0 entries, expected 2/);
      expectError(() => ce(logits, [0, 1.5]), /crossEntropy: labels must be integers/);
      expectError(() => ce(logits, [0, NaN]), /crossEntropy: labels must be integers/);
      expectError(() => ce(logits, [0, '1']), /crossEntropy: labels must be integers/);
      // integers that do not fit an int32 must not wrap around into a valid class
      expectError(() => ce(logits, [0, 2 ** 32 + 1]), /crossEntropy: labels\[1\] = 4294967297 is outside \[0, 3\)/);
      expectError(() => ce(logits, [-(2 ** 32), 0]), /crossEntropy: labels\[0\] = -4294967296 is outside \[0, 3\)/);
      expectError(() => ce(logits, Float32Array.from([0, 1])), /crossEntropy: labels must be an Int32Array or an array of integers/);
      expectError(() => ce(logits, '01'), /crossEntropy: labels must be an Int32Array or an array of integers/);
      expectError(() => ce(logits, undefined), /crossEntropy: labels must be an Int32Array or an array of integers/);
      expectError(() => ce(logits, [0, 1], { labelSmoothing: -0.1 }), /crossEntropy: labelSmoothing must be in \[0, 1\]/);
      expectError(() => ce(logits, [0, 1], { labelSmoothing: 1.5 }), /crossEntropy: labelSmoothing must be in \[0, 1\]/);
      expectError(() => ce(logits, [0, 1], { labelSmoothing: NaN }), /crossEntropy: labelSmoothing must be finite/);
      expectError(() => ce(logits, [0, 1], { labelSmoothing: '0.1' }), /crossEntropy: labelSmoothing must be a number/);
      expectError(() => ce(msgc.zeros([6]), [0]), /crossEntropy: logits has 1 dims.*expected 2/);
      expectError(() => ce(msgc.zeros([2, 3, 1]), [0, 1]), /crossEntropy: logits has 3 dims.*expected 2/);
      expectError(() => ce(msgc.zeros([2, 0]), [0, 0]), /crossEntropy: logits need at least one class/);
      expectError(() => ce([[1, 2, 3]], [0]), /crossEntropy: logits must be a Tensor, got object/);
      expectError(() => ce(null, [0]), /crossEntropy: logits must be a Tensor, got null/);
      const gone = msgc.zeros([2, 3]);
      gone.dispose();
      expectError(() => ce(gone, [0, 1]), /crossEntropy: logits was disposed/);
    });
  });

  test('labels changed between forward and backward are caught, not read out of range', () => {
    msgc.tidy(() => {
      const x = msgc.tensor(randomArray(6, 111), [2, 3], { requiresGrad: true });
      const labels = Int32Array.from([0, 2]);
      const loss = F.crossEntropy(x, labels);
      labels[1] = 1000;
      expectError(() => loss.backward(), /crossEntropy backward: labels\[1\] = 1000 is outside \[0, 3\)/);
    });
  });

  test('directly against native.crossEntropyForward / Backward: garbage never crashes', () => {
    msgc.tidy(() => {
      const z = msgc.tensor(randomArray(6, 121), [2, 3]);
      const lab = Int32Array.from([1, 2]);
      const NT = native.NativeTensor as unknown as { new (): object; prototype: object };
      const fwd = (...a: unknown[]) => () => (native.crossEntropyForward as unknown as (...a: unknown[]) => unknown)(...a);
      const bwd = (...a: unknown[]) => () => (native.crossEntropyBackward as unknown as (...a: unknown[]) => unknown)(...a);
      expectError(fwd(), /crossEntropy: logits must be a Tensor, got undefined/);
      expectError(fwd(z.h), /crossEntropy: labels must be an Int32Array/);
      expectError(fwd(z.h, [1, 2], 0), /crossEntropy: labels must be an Int32Array/);
      expectError(fwd(z.h, Float32Array.from([1, 2]), 0), /crossEntropy: labels must be an Int32Array/);
      expectError(fwd(z.h, Uint32Array.from([1, 2]), 0), /crossEntropy: labels must be an Int32Array/);
      expectError(fwd(z.h, lab), /crossEntropy: labelSmoothing must be a number, got undefined/);
      expectError(fwd(z.h, lab, NaN), /crossEntropy: labelSmoothing must be finite/);
      expectError(fwd(z.h, lab, 2), /crossEntropy: labelSmoothing must be in \[0, 1\]/);
      expectError(fwd(z.h, Int32Array.from([1, 3]), 0), /crossEntropy: labels\[1\] = 3 is outside \[0, 3\)/);
      expectError(fwd(z.h, Int32Array.from([1]), 0), /crossEntropy: labels has 1 entries, expected 2/);
      expectError(fwd('logits', lab, 0), /crossEntropy: logits must be a Tensor, got a string/);
      expectError(fwd(new NT(), lab, 0), /crossEntropy: logits was disposed/);
      expectError(fwd(Object.create(NT.prototype), lab, 0), /crossEntropy: logits must be a Tensor/);
      const [loss, probs] = native.crossEntropyForward(z.h, lab, 0.1);
      expect(loss.shape).toEqual([]);
      expectError(bwd(probs), /crossEntropy backward: labels must be an Int32Array/);
      expectError(bwd(probs, lab, 0.1), /crossEntropy backward: gradLoss must be a number, got undefined/);
      expectError(bwd(probs, lab, 0.1, NaN), /crossEntropy backward: gradLoss must be finite/);
      expectError(bwd(probs, lab, -1, 1), /crossEntropy backward: labelSmoothing must be in \[0, 1\]/);
      expectError(bwd(loss, lab, 0.1, 1), /crossEntropy backward: probs has 0 dims/);
      expectError(bwd(probs, Int32Array.from([5, 0]), 0.1, 1), /crossEntropy backward: labels\[0\] = 5 is outside \[0, 3\)/);
      const garbage: unknown[] = [undefined, null, 'str', NaN, -1, 1.5, [1, 2], {}, true, new Float32Array(2), new Int32Array(0), new NT()];
      for (const [good, call] of [[[z.h, lab, 0.1], fwd], [[probs, lab, 0.1, 1], bwd]] as [unknown[], typeof fwd][]) {
        for (let i = 0; i < good.length; i++) {
          for (const v of garbage) {
            const args = good.slice();
            args[i] = v;
            try {
              const out = call(...args)() as { dispose(): void } | { dispose(): void }[];
              for (const h of Array.isArray(out) ? out : [out]) h.dispose();
            } catch (e) {
              expect(Object.prototype.toString.call(e)).toBe('[object Error]');
              expect((e as Error).message).toMatch(/^crossEntropy( backward)?: /);
            }
          }
        }
      }
      loss.dispose();
      probs.dispose();
    });
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
