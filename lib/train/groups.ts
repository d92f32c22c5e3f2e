// groups.ts: the optimiser's parameter groups of spec §6 — grouped by name, as the reference does:
//   gate heads (names containing "mask", their BN included): lr × gateLrScale (5), no weight decay;
//   every other BatchNorm parameter: base lr, no weight decay;
//   everything else (convs, FC, attention heads' convs and biases): base lr, weight decay.
import { BatchNorm2d } from '../nn/layers';
import { Module } from '../nn/module';
import { Tensor } from '../tensor/tensor';
import { ParamGroup } from './optim';

export interface GroupOptions {
  weightDecay: number;
  gateLrScale?: number;
}

export function parameterGroups(model: Module, options: GroupOptions): ParamGroup[] {
  const bnParams = new Set<Tensor>();
  for (const [, m] of model.namedModules()) {
    if (m instanceof BatchNorm2d) for (const p of m.parameters()) bnParams.add(p);
  }
  const gates: Tensor[] = [];
  const bn: Tensor[] = [];
  const rest: Tensor[] = [];
  for (const [name, p] of model.namedParameters()) {
    if (name.includes('mask')) gates.push(p);
    else if (bnParams.has(p)) bn.push(p);
    else rest.push(p);
  }
  const groups: ParamGroup[] = [];
  if (gates.length) groups.push({ name: 'gates', params: gates, lrScale: options.gateLrScale ?? 5, weightDecay: 0 });
  if (bn.length) groups.push({ name: 'batchnorm', params: bn, lrScale: 1, weightDecay: 0 });
  if (rest.length) groups.push({ name: 'weights', params: rest, lrScale: 1, weightDecay: options.weightDecay });
  return groups;
}
