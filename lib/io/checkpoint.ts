// checkpoint.ts: training checkpoints that survive interruption. A checkpoint is a weights file
// (model state dict + optimiser momentum buffers, safetensors) and a JSON state file that names it (epoch,
// generator state, history, best epoch, options). The weights file gets a fresh name per epoch and the JSON
// is replaced atomically last, so at any moment the JSON points to a complete weights file; older weights
// files are removed only after the new JSON is in place.
import * as fs from 'fs';
import * as path from 'path';
import { Module } from '../nn/module';
import { Tensor } from '../tensor/tensor';
import { writeJsonAtomic } from './atomic';
import { load, save } from './safetensors';

export const CHECKPOINT_JSON = 'checkpoint.json';
const MOMENTUM_PREFIX = 'optimizer.momentum.';

export interface CheckpointState<Extra = Record<string, unknown>> {
  version: 1;
  /** epochs completed */
  epoch: number;
  /** the weights file, relative to the checkpoint directory */
  weights: string;
  /** the global random generator's state after this epoch */
  rngState: string;
  extra: Extra;
}

/** Saves `model` and `momentum` (by parameter name) as the checkpoint of epoch `epoch` in `dir`. */
export function saveCheckpoint<Extra>(dir: string, epoch: number, model: Module, momentum: Map<string, Tensor>, rngState: string, extra: Extra): void {
  fs.mkdirSync(dir, { recursive: true });
  const weights = `checkpoint-e${epoch}.safetensors`;
  const dict: Record<string, Tensor> = { ...model.stateDict() };
  for (const [name, buf] of momentum) dict[MOMENTUM_PREFIX + name] = buf;
  save(dict, path.join(dir, weights), { format: 'msgc-checkpoint', epoch: String(epoch) });
  const state: CheckpointState<Extra> = { version: 1, epoch, weights, rngState, extra };
  writeJsonAtomic(path.join(dir, CHECKPOINT_JSON), state);
  for (const f of fs.readdirSync(dir)) {
    if (/^checkpoint-e\d+\.safetensors$/.test(f) && f !== weights) fs.rmSync(path.join(dir, f), { force: true });
  }
}

export interface LoadedCheckpoint<Extra> {
  state: CheckpointState<Extra>;
  /** momentum buffers by parameter name (owned by the caller) */
  momentum: Map<string, Tensor>;
}

/** Reads the checkpoint in `dir` into `model` (strict) and returns the rest; null when there is none. */
export function loadCheckpoint<Extra>(dir: string, model: Module): LoadedCheckpoint<Extra> | null {
  const jsonPath = path.join(dir, CHECKPOINT_JSON);
  if (!fs.existsSync(jsonPath)) return null;
  let state: CheckpointState<Extra>;
  try {
    state = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  } catch (err) {
    throw new Error(`checkpoint: ${jsonPath} is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (state.version !== 1 || typeof state.weights !== 'string' || !Number.isInteger(state.epoch)) {
    throw new Error(`checkpoint: ${jsonPath} is not an msgc checkpoint (missing version/epoch/weights)`);
  }
  const dict = load(path.join(dir, state.weights));
  const momentum = new Map<string, Tensor>();
  const weights: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(dict)) {
    if (k.startsWith(MOMENTUM_PREFIX)) momentum.set(k.slice(MOMENTUM_PREFIX.length), t);
    else weights[k] = t;
  }
  try {
    model.loadStateDict(weights);
  } finally {
    for (const t of Object.values(weights)) t.dispose();
  }
  return { state, momentum };
}
