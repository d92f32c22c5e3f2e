// count.ts: msgc.countMacs(model, [C, H, W]) — the static MAC accounting of spec §4 for a backbone.
import { Backbone } from '../models/common';
import { MacCount } from './types';

export function countMacs(model: Backbone, input: number[]): MacCount {
  if (!model || typeof (model as Backbone).countMacs !== 'function') {
    throw new Error('countMacs: model must be one of msgc.models (a Backbone)');
  }
  if (!Array.isArray(input) || input.length !== 3 || !input.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`countMacs: input must be [C, H, W] with positive integers, got ${JSON.stringify(input)}`);
  }
  return model.countMacs(input);
}
