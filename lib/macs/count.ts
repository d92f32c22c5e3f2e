// count.ts: msgc.countMacs(model, [C, H, W]) — the static MAC accounting of spec §4 for a backbone.
import { Backbone } from '../models/common';
import { MacCount, MacRow } from './types';

export function countMacs(model: Backbone, input: number[]): MacCount {
  if (!model || typeof (model as Backbone).countMacs !== 'function') {
    throw new Error('countMacs: model must be one of msgc.models (a Backbone)');
  }
  if (!Array.isArray(input) || input.length !== 3 || !input.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`countMacs: input must be [C, H, W] with positive integers, got ${JSON.stringify(input)}`);
  }
  return model.countMacs(input);
}

/** The per-part breakdown behind countMacs (stem, each block, classifier), for tables. */
export function macsTable(model: Backbone, input: number[]): { total: MacCount; rows: MacRow[] } {
  const rows: MacRow[] = [];
  const total = countMacs(model, input);
  model.countMacs(input, rows);
  return { total, rows };
}
