// optim.test.ts: msgc.SGD against a float64 re-implementation of torch.optim.SGD (dampening 0: d = g + wd*p;
// buf = m*buf + d, starting from 0; d = nesterov ? d + m*buf : buf; p -= lr*d) over several steps with
// changing gradients; parameter groups (lr / weightDecay / lrScale), zeroGrad, the momentum-less path, blocked
// gradients; bad options through msgc.SGD and garbage through native.sgdStep; clipGradNorm against float64
// (torch.nn.utils.clip_grad_norm_ semantics), on plain and blocked gradients.
import * as msgc from '../lib';
import { Tensor } from '../lib';
import { native } from '../lib/native';
import { closeness, numel, randomArray } from './helpers/gradcheck';
import { expectError, settledLiveCount } from './helpers/testing';

const F = msgc.F;
let baseline = -1;
beforeAll(async () => {
  baseline = await settledLiveCount();
});

interface RefGroup {
  lr?: number;
  lrScale?: number;
  weightDecay?: number;
}

/** float64 torch.optim.SGD (dampening 0) over flat parameter arrays. */
class RefSGD {
  p: Float64Array[];
  buf: (Float64Array | null)[];
  constructor(init: ArrayLike<number>[], public lr: number, public m: number, public wd: number, public nesterov: boolean,
    public groupOf: RefGroup[] = []) {
    this.p = init.map((a) => Float64Array.from(a));
    this.buf = init.map(() => null);
  }
  step(grads: (ArrayLike<number> | null)[]): void {
    grads.forEach((g, k) => {
      if (!g) return;
      const grp = this.groupOf[k] ?? {};
      const lr = (grp.lr ?? this.lr) * (grp.lrScale ?? 1);
      const wd = grp.weightDecay ?? this.wd;
      const p = this.p[k];
      if (this.m > 0 && !this.buf[k]) this.buf[k] = new Float64Array(p.length);
      const b = this.buf[k];
      for (let i = 0; i < p.length; i++) {
        let d = g[i] + wd * p[i];
        if (b) {
          b[i] = this.m * b[i] + d;
          d = this.nesterov ? d + this.m * b[i] : b[i];
        }
        p[i] -= lr * d;
      }
    });
  }
}

/** Gives p the gradient g through autograd: backward of sum(p * g). */
function setGradByBackward(p: Tensor, g: Float32Array): void {
  msgc.tidy(() => F.sum(F.mul(p, msgc.tensor(g, p.shape))).backward());
}

const shapes = [[3, 4], [5], [2, 3, 2, 2]];

describe('SGD against float64 torch semantics', () => {
  const configs = [
    { momentum: 0, nesterov: false, weightDecay: 0 },
    { momentum: 0, nesterov: false, weightDecay: 0.05 },
    { momentum: 0.9, nesterov: false, weightDecay: 0 },
    { momentum: 0.9, nesterov: false, weightDecay: 5e-3 },
    { momentum: 0.5, nesterov: true, weightDecay: 0 },
    { momentum: 0.9, nesterov: true, weightDecay: 1e-2 },
  ];
  for (const cfg of configs) {
    test(`6 steps with changing gradients, ${JSON.stringify(cfg)}`, () => {
      msgc.tidy(() => {
        const init = shapes.map((s, i) => randomArray(numel(s), 100 + i));
        const params = shapes.map((s, i) => msgc.tensor(init[i], s, { requiresGrad: true }));
        const opt = new msgc.SGD(params, { lr: 0.1, ...cfg });
        const ref = new RefSGD(init, 0.1, cfg.momentum, cfg.weightDecay, cfg.nesterov);
        for (let step = 0; step < 6; step++) {
          const grads = shapes.map((s, i) => randomArray(numel(s), 1000 + 10 * step + i, -2, 2));
          params.forEach((p, i) => setGradByBackward(p, grads[i]));
          opt.step();
          ref.step(grads);
          opt.zeroGrad();
          params.forEach((p, i) => {
            expect(p.grad).toBeNull();
            expect(closeness(p.toFloat32Array(), ref.p[i], 1e-5, 1e-5)).toBeLessThanOrEqual(1);
          });
        }
        // the momentum buffers hold torch's momentum_buffer; the momentum-less path keeps none
        if (cfg.momentum > 0) {
          expect(opt.state().size).toBe(params.length);
          params.forEach((p, i) => {
            expect(closeness(opt.state().get(p)!.toFloat32Array(), ref.buf[i]!, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
          });
        } else {
          expect(opt.state().size).toBe(0);
        }
        // params keep their shape, stay leaves and stay plain
        params.forEach((p, i) => {
          expect(p.shape).toEqual(shapes[i]);
          expect(p.isLeaf).toBe(true);
          expect(p.layout).toBe('plain');
        });
        opt.dispose();
      });
    });
  }

  test('the first momentum step equals a plain step (the buffer starts at zero, not at d)', () => {
    msgc.tidy(() => {
      const init = randomArray(8, 7);
      const g = randomArray(8, 8);
      const a = msgc.tensor(init, [8], { requiresGrad: true });
      const b = msgc.tensor(init, [8], { requiresGrad: true });
      const withM = new msgc.SGD([a], { lr: 0.3, momentum: 0.9, weightDecay: 0.1 });
      const without = new msgc.SGD([b], { lr: 0.3, weightDecay: 0.1 });
      setGradByBackward(a, g);
      setGradByBackward(b, g);
      withM.step();
      without.step();
      const want = Array.from(init, (p, i) => p - 0.3 * (g[i] + 0.1 * p));
      expect(closeness(a.toFloat32Array(), want, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      expect(closeness(b.toFloat32Array(), want, 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      withM.dispose();
    });
  });

  test('gradients accumulated over two backward calls are summed before the step', () => {
    msgc.tidy(() => {
      const init = randomArray(6, 11);
      const g1 = randomArray(6, 12);
      const g2 = randomArray(6, 13);
      const p = msgc.tensor(init, [2, 3], { requiresGrad: true });
      const opt = new msgc.SGD([p], { lr: 0.5, momentum: 0.9 });
      setGradByBackward(p, g1);
      setGradByBackward(p, g2);
      opt.step();
      const ref = new RefSGD([init], 0.5, 0.9, 0, false);
      ref.step([Array.from(g1, (v, i) => v + g2[i])]);
      expect(closeness(p.toFloat32Array(), ref.p[0], 1e-6, 1e-6)).toBeLessThanOrEqual(1);
      opt.dispose();
    });
  });

  test('parameters without a gradient are skipped and get no buffer until they have one', () => {
    msgc.tidy(() => {
      const init = [randomArray(4, 21), randomArray(4, 22)];
      const params = init.map((d) => msgc.tensor(d, [4], { requiresGrad: true }));
      const opt = new msgc.SGD(params, { lr: 0.2, momentum: 0.8, nesterov: true, weightDecay: 0.01 });
      const ref = new RefSGD(init, 0.2, 0.8, 0.01, true);
      for (let step = 0; step < 4; step++) {
        const grads = [randomArray(4, 30 + step), step >= 2 ? randomArray(4, 40 + step) : null];
        params.forEach((p, i) => grads[i] && setGradByBackward(p, grads[i]!));
        opt.step();
        ref.step(grads);
        opt.zeroGrad();
        if (step < 2) {
          expect(Array.from(params[1].toFloat32Array())).toEqual(Array.from(init[1]));
          expect(opt.state().has(params[1])).toBe(false);
        }
        params.forEach((p, i) => expect(closeness(p.toFloat32Array(), ref.p[i], 1e-6, 1e-5)).toBeLessThanOrEqual(1));
      }
      opt.dispose();
    });
  });

  test('a gradient in the blocked layout (conv output) is read by value', () => {
    msgc.tidy(() => {
      const shape = [2, 6, 3, 3];
      const init = randomArray(numel(shape), 51);
      const gd = randomArray(numel(shape), 52);
      const e = new Float32Array(36);
      for (let i = 0; i < 6; i++) e[i * 6 + i] = 1;
      const p = msgc.tensor(init, shape, { requiresGrad: true });
      p.grad = msgc.noGrad(() => F.conv2d(msgc.tensor(gd, shape), msgc.tensor(e, [6, 6, 1, 1])));
      msgc.keep(p.grad);
      expect(p.grad.layout).toBe('blocked');
      const opt = new msgc.SGD([p], { lr: 0.1, momentum: 0.9, weightDecay: 0.01 });
      opt.step();
      opt.step();
      const ref = new RefSGD([init], 0.1, 0.9, 0.01, false);
      ref.step([gd]);
      ref.step([gd]);
      expect(p.layout).toBe('plain');
      expect(closeness(p.toFloat32Array(), ref.p[0], 1e-6, 1e-5)).toBeLessThanOrEqual(1);
      opt.dispose();
    });
  });

  test('setMomentum restores a buffer so that training continues as if uninterrupted', () => {
    msgc.tidy(() => {
      const init = randomArray(5, 61);
      const grads = [0, 1, 2, 3].map((k) => randomArray(5, 62 + k));
      const p = msgc.tensor(init, [5], { requiresGrad: true });
      const opt = new msgc.SGD([p], { lr: 0.1, momentum: 0.9 });
      const ref = new RefSGD([init], 0.1, 0.9, 0, false);
      for (const g of grads.slice(0, 2)) {
        setGradByBackward(p, g);
        opt.step();
        opt.zeroGrad();
        ref.step([g]);
      }
      const saved = opt.state().get(p)!.detach();
      opt.dispose();
      const opt2 = new msgc.SGD([p], { lr: 0.1, momentum: 0.9 });
      opt2.setMomentum(p, saved);
      saved.dispose();
      for (const g of grads.slice(2)) {
        setGradByBackward(p, g);
        opt2.step();
        opt2.zeroGrad();
        ref.step([g]);
      }
      expect(closeness(p.toFloat32Array(), ref.p[0], 1e-6, 1e-5)).toBeLessThanOrEqual(1);
      opt2.dispose();
    });
  });
});

describe('parameter groups', () => {
  test('own lr / weightDecay / lrScale, and a schedule changing the optimiser lr between steps', () => {
    msgc.tidy(() => {
      const groupsRef: RefGroup[] = [
        { lr: 0.05, weightDecay: 0 },
        { lrScale: 5, weightDecay: 0 },
        {},
        { lr: 0.2, lrScale: 0.5, weightDecay: 0.1 },
        { lrScale: 0 },
      ];
      const init = groupsRef.map((_, i) => randomArray(6, 200 + i));
      const params = init.map((d) => msgc.tensor(d, [2, 3], { requiresGrad: true }));
      const opt = new msgc.SGD(params.map((p, i) => ({ params: [p], name: `g${i}`, ...groupsRef[i] })), { lr: 0.1, momentum: 0.9, weightDecay: 1e-2 });
      expect(opt.groups.length).toBe(5);
      const ref = new RefSGD(init, 0.1, 0.9, 1e-2, false, groupsRef);
      const lrs = [0.1, 0.1, 0.05, 0.025, 0];
      lrs.forEach((lr, step) => {
        opt.lr = lr;
        ref.lr = lr;
        const grads = init.map((_, i) => randomArray(6, 300 + 10 * step + i, -2, 2));
        params.forEach((p, i) => setGradByBackward(p, grads[i]));
        opt.step();
        ref.step(grads);
        opt.zeroGrad();
        params.forEach((p, i) => expect(closeness(p.toFloat32Array(), ref.p[i], 1e-5, 1e-5)).toBeLessThanOrEqual(1));
      });
      // lrScale 0 freezes its group, whatever the gradient
      expect(Array.from(params[4].toFloat32Array())).toEqual(Array.from(init[4]));
      opt.dispose();
    });
  });

  test('several params per group and an empty group', () => {
    msgc.tidy(() => {
      const init = [randomArray(3, 401), randomArray(4, 402), randomArray(2, 403)];
      const ps = init.map((d) => msgc.tensor(d, [d.length], { requiresGrad: true }));
      const opt = new msgc.SGD([{ params: [ps[0], ps[1]], lrScale: 2 }, { params: [] }, { params: [ps[2]], weightDecay: 0.5 }], { lr: 0.1, weightDecay: 0.01 });
      const ref = new RefSGD(init, 0.1, 0, 0.01, false, [{ lrScale: 2 }, { lrScale: 2 }, { weightDecay: 0.5 }]);
      for (let step = 0; step < 3; step++) {
        const grads = init.map((d, i) => randomArray(d.length, 410 + 10 * step + i));
        ps.forEach((p, i) => setGradByBackward(p, grads[i]));
        opt.step();
        ref.step(grads);
        opt.zeroGrad();
      }
      ps.forEach((p, i) => expect(closeness(p.toFloat32Array(), ref.p[i], 1e-6, 1e-5)).toBeLessThanOrEqual(1));
      expect(opt.state().size).toBe(0);
    });
  });

  test('zeroGrad frees the gradients of every group', () => {
    msgc.tidy(() => {
      const a = msgc.tensor(randomArray(4, 501), [4], { requiresGrad: true });
      const b = msgc.tensor(randomArray(4, 502), [4], { requiresGrad: true });
      const c = msgc.tensor(randomArray(4, 503), [4], { requiresGrad: true });
      const opt = new msgc.SGD([{ params: [a] }, { params: [b, c] }], { lr: 0.1 });
      for (const p of [a, b]) setGradByBackward(p, randomArray(4, 504));
      const grads = [a.grad!, b.grad!];
      const before = msgc.liveTensorCount();
      opt.zeroGrad();
      expect(msgc.liveTensorCount()).toBe(before - 2);
      expect([a.grad, b.grad, c.grad]).toEqual([null, null, null]);
      for (const g of grads) expect(g.isDisposed).toBe(true);
      opt.zeroGrad(); // nothing left: harmless
      // a step without gradients changes nothing
      const va = Array.from(a.toFloat32Array());
      opt.step();
      expect(Array.from(a.toFloat32Array())).toEqual(va);
    });
  });

  test('dispose frees the momentum buffers', () => {
    msgc.tidy(() => {
      const ps = [msgc.zeros([3], { requiresGrad: true }), msgc.zeros([2, 2], { requiresGrad: true })];
      const opt = new msgc.SGD(ps, { lr: 0.1, momentum: 0.5 });
      ps.forEach((p, i) => setGradByBackward(p, randomArray(p.size, 600 + i)));
      const before = msgc.liveTensorCount();
      opt.step();
      expect(msgc.liveTensorCount()).toBe(before + 2);
      opt.dispose();
      expect(msgc.liveTensorCount()).toBe(before);
      expect(opt.state().size).toBe(0);
    });
  });
});

describe('bad input', () => {
  test('through msgc.SGD: lr, momentum, nesterov, weightDecay, params, groups', () => {
    msgc.tidy(() => {
      const p = msgc.zeros([3], { requiresGrad: true });
      const SGD = msgc.SGD as unknown as new (params: unknown, options?: unknown) => msgc.SGD;
      expectError(() => new SGD([p], { lr: -0.1 }), /^SGD: lr must be positive, got -0\.1/);
      expectError(() => new SGD([p], { lr: 0 }), /^SGD: lr must be positive, got 0/);
      expectError(() => new SGD([p], { lr: NaN }), /^SGD: lr must be positive, got NaN/);
      expectError(() => new SGD([p], { lr: Infinity }), /^SGD: lr must be positive, got Infinity/);
      expectError(() => new SGD([p], { lr: '0.1' }), /^SGD: lr must be positive/);
      expectError(() => new SGD([p], {}), /^SGD: lr must be positive, got undefined/);
      expectError(() => new SGD([p]), /^SGD: options must be an object/);
      expectError(() => new SGD([p], null), /^SGD: options must be an object/);
      expectError(() => new SGD([p], { lr: 0.1, momentum: 1 }), /^SGD: momentum must be in \[0, 1\), got 1/);
      expectError(() => new SGD([p], { lr: 0.1, momentum: 1.5 }), /^SGD: momentum must be in \[0, 1\)/);
      expectError(() => new SGD([p], { lr: 0.1, momentum: -0.1 }), /^SGD: momentum must be in \[0, 1\), got -0\.1/);
      expectError(() => new SGD([p], { lr: 0.1, momentum: NaN }), /^SGD: momentum must be in \[0, 1\)/);
      expectError(() => new SGD([p], { lr: 0.1, momentum: '0.9' }), /^SGD: momentum must be in \[0, 1\)/);
      expectError(() => new SGD([p], { lr: 0.1, nesterov: true }), /^SGD: Nesterov momentum requires momentum > 0/);
      expectError(() => new SGD([p], { lr: 0.1, momentum: 0.9, nesterov: 'yes' }), /^SGD: nesterov must be a boolean/);
      expectError(() => new SGD([p], { lr: 0.1, weightDecay: -1e-4 }), /^SGD: weightDecay must be >= 0/);
      expectError(() => new SGD([p], { lr: 0.1, weightDecay: NaN }), /^SGD: weightDecay must be >= 0/);
      expectError(() => new SGD([p, 'q'], { lr: 0.1 }), /^SGD: every parameter must be a Tensor/);
      expectError(() => new SGD([p, [1, 2]], { lr: 0.1 }), /^SGD: every parameter must be a Tensor/);
      expectError(() => new SGD(undefined, { lr: 0.1 }), /^SGD: params must be an array/);
      expectError(() => new SGD(p, { lr: 0.1 }), /^SGD: params must be an array/);
      expectError(() => new SGD([{ lr: 0.1 }], { lr: 0.1 }), /^SGD: group 0 must be an object with a params array/);
      expectError(() => new SGD([{ params: [p] }, null], { lr: 0.1 }), /^SGD: group 1 must be an object with a params array/);
      expectError(() => new SGD([{ params: [p, 3] }], { lr: 0.1 }), /^SGD: every parameter must be a Tensor/);
      expectError(() => new SGD([{ params: [p], lr: -0.1 }], { lr: 0.1 }), /^SGD: group 0 lr must be >= 0, got -0\.1/);
      expectError(() => new SGD([{ params: [] }, { params: [p], lr: NaN }], { lr: 0.1 }), /^SGD: group 1 lr must be >= 0, got NaN/);
      expectError(() => new SGD([{ params: [p], lrScale: -5 }], { lr: 0.1 }), /^SGD: group 0 lrScale must be >= 0, got -5/);
      expectError(() => new SGD([{ params: [p], weightDecay: -1 }], { lr: 0.1 }), /^SGD: group 0 weightDecay must be >= 0, got -1/);
      // an lr made negative by hand after construction is refused at the step, before any parameter moves
      const opt = new msgc.SGD([p], { lr: 0.1 });
      setGradByBackward(p, randomArray(3, 701));
      opt.lr = -0.1;
      expectError(() => opt.step(), /^SGD\.step: lr must be >= 0, got -0\.1/);
      opt.lr = NaN;
      expectError(() => opt.step(), /^SGD\.step: lr must be >= 0, got NaN/);
      expect(Array.from(p.toFloat32Array())).toEqual([0, 0, 0]);
      // a disposed parameter: the step says so
      const q = msgc.zeros([2], { requiresGrad: true });
      const optQ = new msgc.SGD([q], { lr: 0.1, momentum: 0.9 });
      setGradByBackward(q, randomArray(2, 702));
      q.dispose();
      expect(q.grad).toBeNull();
      optQ.step(); // its gradient went with it: nothing to do
      q.grad = msgc.keep(msgc.zeros([2]));
      expectError(() => optQ.step(), /disposed/);
      q.grad.dispose();
      q.grad = null;
      optQ.dispose();
    });
  });

  test('directly against native.sgdStep: garbage never crashes', () => {
    msgc.tidy(() => {
      const p = msgc.tensor(randomArray(6, 801), [2, 3]);
      const g = msgc.tensor(randomArray(6, 802), [2, 3]);
      const buf = msgc.zeros([2, 3]);
      const NT = native.NativeTensor as unknown as { new (): object; prototype: object };
      const step = (...a: unknown[]) => () => (native.sgdStep as unknown as (...a: unknown[]) => unknown)(...a);
      expectError(step(), /^sgd: param must be a Tensor, got undefined/);
      expectError(step(p.h), /^sgd: grad must be a Tensor, got undefined/);
      expectError(step(p.h, g.h, buf.h), /^sgd: lr must be a number, got undefined/);
      expectError(step(p.h, g.h, buf.h, 0.1, 0.9, 0), /^sgd: nesterov must be a boolean, got undefined/);
      expectError(step('p', g.h, buf.h, 0.1, 0.9, 0, false), /^sgd: param must be a Tensor, got a string/);
      expectError(step([1, 2, 3], g.h, buf.h, 0.1, 0.9, 0, false), /^sgd: param must be a Tensor, got an array/);
      expectError(step(p.h, g.h, 'buf', 0.1, 0.9, 0, false), /^sgd: momentumBuffer must be a Tensor, got a string/);
      expectError(step(p.h, g.h, buf.h, NaN, 0.9, 0, false), /^sgd: lr must be finite/);
      expectError(step(p.h, g.h, buf.h, '0.1', 0.9, 0, false), /^sgd: lr must be a number, got a string/);
      expectError(step(p.h, g.h, buf.h, -0.1, 0.9, 0, false), /^sgd: lr must be >= 0, got -0\.1/);
      expectError(step(p.h, g.h, buf.h, 0.1, 1, 0, false), /^sgd: momentum must be in \[0, 1\), got 1/);
      expectError(step(p.h, g.h, buf.h, 0.1, -0.5, 0, false), /^sgd: momentum must be in \[0, 1\)/);
      expectError(step(p.h, g.h, buf.h, 0.1, 0.9, -1, false), /^sgd: weightDecay must be >= 0, got -1/);
      expectError(step(p.h, g.h, buf.h, 0.1, 0, 0, true), /^sgd: Nesterov momentum requires momentum > 0/);
      expectError(step(p.h, g.h, null, 0.1, 0.9, 0, false), /^sgd: momentum > 0 needs a momentum buffer/);
      expectError(step(p.h, msgc.zeros([3, 2]).h, buf.h, 0.1, 0.9, 0, false), /^sgd: grad has shape \[3, 2\], expected \[2, 3\]/);
      expectError(step(p.h, g.h, msgc.zeros([6]).h, 0.1, 0.9, 0, false), /^sgd: momentumBuffer has shape \[6\], expected \[2, 3\]/);
      expectError(step(p.h, new NT(), buf.h, 0.1, 0.9, 0, false), /^sgd: grad was disposed/);
      expectError(step(Object.create(NT.prototype), g.h, buf.h, 0.1, 0.9, 0, false), /^sgd: param must be a Tensor/);
      // none of that moved the parameter
      const before = Array.from(p.toFloat32Array());
      const good: unknown[] = [p.h, g.h, buf.h, 0.1, 0.9, 0.01, true];
      const garbage: unknown[] = [undefined, null, 'str', NaN, -1, 1.5, [1, 2, 3], {}, true, new Float32Array(6), new NT()];
      let moved = false;
      for (let i = 0; i < good.length; i++) {
        for (const v of garbage) {
          const args = good.slice();
          args[i] = v;
          try {
            step(...args)();
            moved = true;
          } catch (e) {
            expect(Object.prototype.toString.call(e)).toBe('[object Error]');
            expect((e as Error).message).toMatch(/^sgd: /);
          }
        }
      }
      // only garbage that happens to be a valid value (e.g. a null buffer with m = 0 is not) may step
      if (!moved) expect(Array.from(p.toFloat32Array())).toEqual(before);
    });
  });
});

describe('clipGradNorm', () => {
  /** params with gradients: a plain one, a blocked one (the input gradient of a conv), one without a gradient */
  function setup(scale: number): { params: Tensor[]; grads: Float32Array[] } {
    const a = msgc.tensor(randomArray(7 * 5, 501), [7, 5], { requiresGrad: true });
    const x = msgc.tensor(randomArray(2 * 16 * 4 * 4, 502), [2, 16, 4, 4], { requiresGrad: true });
    const none = msgc.tensor(randomArray(3, 503), [3], { requiresGrad: true });
    msgc.tidy(() => {
      const w = msgc.tensor(randomArray(16 * 16 * 9, 504), [16, 16, 3, 3]);
      const y = F.conv2d(x, w, null, { padding: 1 });
      const l = F.add(F.sum(F.mul(y, msgc.tensor(randomArray(y.size, 505), y.shape))), F.sum(F.mul(a, msgc.tensor(randomArray(35, 506), [7, 5]))));
      F.scale(l, scale).backward();
    });
    expect(x.grad!.layout).toBe('blocked');
    return { params: [a, x, none], grads: [a.grad!.toFloat32Array(), x.grad!.toFloat32Array()] };
  }
  const norm64 = (gs: Float32Array[]) => Math.sqrt(gs.reduce((acc, g) => acc + g.reduce((s, v) => s + v * v, 0), 0));

  test('above maxNorm: returns the float64 norm and scales every gradient by maxNorm / (norm + 1e-6)', () => {
    const { params, grads } = setup(1);
    const want = norm64(grads);
    const max = want / 3;
    const got = msgc.clipGradNorm(params, max);
    expect(closeness([got], [want], 0, 1e-7)).toBeLessThanOrEqual(1);
    const coef = max / (want + 1e-6);
    expect(closeness(params[0].grad!.toFloat32Array(), Array.from(grads[0], (v) => v * coef), 1e-7, 1e-6)).toBeLessThanOrEqual(1);
    expect(closeness(params[1].grad!.toFloat32Array(), Array.from(grads[1], (v) => v * coef), 1e-7, 1e-6)).toBeLessThanOrEqual(1);
    expect(params[2].grad).toBeNull();
    expect(closeness([norm64([params[0].grad!.toFloat32Array(), params[1].grad!.toFloat32Array()])], [max], 0, 1e-5)).toBeLessThanOrEqual(1);
    for (const p of params) p.dispose();
  });

  test('at or below maxNorm: the gradients stay bit for bit', () => {
    const { params, grads } = setup(1);
    const n = msgc.clipGradNorm(params, 1e6);
    expect(closeness([n], [norm64(grads)], 0, 1e-7)).toBeLessThanOrEqual(1);
    expect(Array.from(params[0].grad!.toFloat32Array())).toEqual(Array.from(grads[0]));
    expect(Array.from(params[1].grad!.toFloat32Array())).toEqual(Array.from(grads[1]));
    for (const p of params) p.dispose();
  });

  test('a non-finite norm is returned and nothing is scaled; bad input throws', () => {
    const { params, grads } = setup(1);
    msgc.tidy(() => {
      const bad = msgc.tensor([Infinity, 1], [2], { requiresGrad: true });
      F.sum(F.mul(bad, msgc.tensor([1, 1], [2]))).backward();
      bad.grad!.assign([Infinity, 1]);
      expect(msgc.clipGradNorm([...params, bad], 1)).toBe(Infinity);
      expect(Array.from(params[0].grad!.toFloat32Array())).toEqual(Array.from(grads[0]));
      bad.dispose();
    });
    const clip = msgc.clipGradNorm as unknown as (...a: unknown[]) => number;
    expectError(() => clip(params, 0), /clipGradNorm: maxNorm must be a positive finite number, got 0/);
    expectError(() => clip(params, NaN), /clipGradNorm: maxNorm must be a positive finite number/);
    expectError(() => clip(null, 1), /clipGradNorm: params must be an array of tensors, got null/);
    expectError(() => clip([1], 1), /clipGradNorm: every parameter must be a Tensor/);
    expectError(() => (native.scaleInPlace as unknown as (...a: unknown[]) => void)(params[0].h, NaN), /scaleInPlace: alpha must be finite/);
    expectError(() => (native.sumSquares as unknown as (...a: unknown[]) => void)('x'), /sumSquares/);
    for (const p of params) p.dispose();
  });
});

test('no tensors leak from this file', () => {
  expect(msgc.liveTensorCount()).toBe(baseline);
});
