// util.ts: argument helpers shared by the functional ops (user-facing checks with clear messages).
import { Tensor } from '../tensor/tensor';

export type IntOrPair = number | [number, number];

export function pair(op: string, name: string, v: IntOrPair, min: number): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(p) || p.length !== 2 || !p.every((x) => Number.isInteger(x) && x >= min)) {
    throw new Error(`${op}: ${name} must be an integer >= ${min} or a pair of them, got ${JSON.stringify(v)}`);
  }
  return [p[0], p[1]];
}

export function checkTensor(op: string, name: string, t: unknown): Tensor {
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name} must be a Tensor, got ${t === null ? 'null' : typeof t}`);
  if (t.isDisposed) throw new Error(`${op}: ${name} was disposed; it can no longer be used`);
  return t;
}

export function optionalTensor(op: string, name: string, t: unknown): Tensor | null {
  if (t === null || t === undefined) return null;
  return checkTensor(op, name, t);
}

export function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
