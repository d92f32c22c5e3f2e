// registry.ts: models by name, for the CLI and scripts.
import { Backbone, BackboneOptions } from './common';
import { densenet74 } from './densenet';
import { mobilenetV2 } from './mobilenetv2';
import { resnet18, resnet20, resnet34, resnet50, resnet56 } from './resnet';

export type ModelFactory = (options?: BackboneOptions) => Backbone;

const factories: Record<string, ModelFactory> = {
  resnet18,
  resnet34,
  resnet50,
  resnet20,
  resnet56,
  mobilenetv2: mobilenetV2,
  densenet74,
};

/** Adds a model under `name` (used for the backbones defined in other files). */
export function registerModel(name: string, factory: ModelFactory): void {
  factories[name] = factory;
}

export function modelNames(): string[] {
  return Object.keys(factories).sort();
}

export function createModel(name: string, options: BackboneOptions = {}): Backbone {
  const f = factories[name];
  if (!f) throw new Error(`unknown model '${name}'; available: ${modelNames().join(', ')}`);
  return f(options);
}
