// idx.ts: a small synthetic dataset in Fashion-MNIST's IDX format for the CLI tests (learnable in an epoch or two).
import * as fs from 'fs';
import * as path from 'path';

/** IDX file: magic 0 0 type ndims, big-endian uint32 dims, uint8 values */
export function idxU8(dims: number[], values: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = 0x08;
  head[3] = dims.length;
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, Buffer.from(values)]);
}

/** n 28×28 images whose class (0..9) is the row band holding a bright bar, with noise */
export function writeSplit(dir: string, prefix: string, n: number, seed: number): void {
  let s = seed;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const images = new Uint8Array(n * 784);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const y = i % 10;
    labels[i] = y;
    for (let p = 0; p < 784; p++) images[i * 784 + p] = Math.floor(rnd() * 60);
    for (let r = 2 + 2 * y; r < 4 + 2 * y; r++) for (let c = 4; c < 24; c++) images[i * 784 + r * 28 + c] = 200 + Math.floor(rnd() * 55);
  }
  fs.writeFileSync(path.join(dir, `${prefix}-images-idx3-ubyte`), idxU8([n, 28, 28], images));
  fs.writeFileSync(path.join(dir, `${prefix}-labels-idx1-ubyte`), idxU8([n], labels));
}
