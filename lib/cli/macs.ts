// macs.ts: `msgc macs` — the per-part MAC table of a model (spec §4 accounting).
import { macsTable } from '../macs/count';
import { createModel } from '../models/registry';

export interface MacsCommandOptions {
  model: string;
  msgc?: boolean;
  heads: number;
  attention?: boolean;
  input: string;
  classes: number;
  smallInput?: boolean;
  json?: boolean;
}

function fmt(v: number): string {
  return (v / 1e6).toFixed(3).padStart(11);
}

export function macsCommand(o: MacsCommandOptions): void {
  const input = o.input.split(/[x,]/).map((v) => parseInt(v, 10));
  if (input.length !== 3 || input.some((v) => !Number.isInteger(v) || v <= 0)) {
    throw new Error(`--input must be C,H,W (e.g. 3,224,224), got '${o.input}'`);
  }
  const model = createModel(o.model, {
    numClasses: o.classes,
    smallInput: o.smallInput ?? input[1] <= 64,
    inChannels: input[0],
    msgc: o.msgc ? { heads: o.heads, attention: !!o.attention } : false,
  });
  try {
    const { total, rows } = macsTable(model, input);
    const params = model.numParameters();
    if (o.json) {
      console.log(JSON.stringify({ model: o.model, input, msgc: !!o.msgc, heads: o.heads, attention: !!o.attention, params, total, rows }, null, 2));
      return;
    }
    console.log(`${o.model}${o.msgc ? ` + MSGC (G=${o.heads}${o.attention ? ', attention' : ''})` : ' (dense)'}, input ${input.join('x')}, ${params.toLocaleString('en-US')} parameters`);
    console.log(`${'part'.padEnd(16)} ${'input'.padEnd(14)} ${'dense (M)'.padStart(11)} ${'main (M)'.padStart(11)} ${'gated (M)'.padStart(11)} ${'heads (M)'.padStart(11)}`);
    for (const r of rows) {
      console.log(`${r.name.padEnd(16)} ${r.input.join('x').padEnd(14)} ${fmt(r.macs.dense)} ${fmt(r.macs.main)} ${fmt(r.macs.gated)} ${fmt(r.macs.heads)}`);
    }
    console.log(`${'total'.padEnd(16)} ${''.padEnd(14)} ${fmt(total.dense)} ${fmt(total.main)} ${fmt(total.gated)} ${fmt(total.heads)}`);
    if (o.msgc) console.log(`F_extra ${fmt(total.extra).trim()} M; at full gates the model costs ${((total.main + total.gated + total.heads) / 1e6).toFixed(3)} M`);
  } finally {
    model.dispose();
  }
}
