// idx.ts: IDX files (the MNIST / Fashion-MNIST format), gzipped or not, and the two datasets stored in it.
//
// IDX layout (big-endian): a 4-byte magic 0x00 0x00 <type> <ndims>, then ndims uint32 dimensions, then the
// values row-major. Types: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. Images are
// 0x00000803 (uint8 [N, H, W]) and labels 0x00000801 (uint8 [N]). A file starting with 1f 8b is gunzipped first.
// The file length must match the header exactly; anything else is reported as corrupt, naming the file.
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { ArrayDataset } from './loader';

export type IdxValues = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxArray {
  /** the type byte of the magic number (0x08 = uint8, ...) */
  typeCode: number;
  dtype: 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';
  dims: number[];
  data: IdxValues;
}

const IDX_TYPES: Record<number, { dtype: IdxArray['dtype']; bytes: number }> = {
  0x08: { dtype: 'uint8', bytes: 1 },
  0x09: { dtype: 'int8', bytes: 1 },
  0x0b: { dtype: 'int16', bytes: 2 },
  0x0c: { dtype: 'int32', bytes: 4 },
  0x0d: { dtype: 'float32', bytes: 4 },
  0x0e: { dtype: 'float64', bytes: 8 },
};

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
export const MNIST_CLASSES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

function hex(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}

/**
 * Parses the bytes of an (uncompressed) IDX file; `name` (the file) appears in every error. uint8/int8 data are views
 * into `bytes` (no copy); wider types are converted from big-endian into new arrays.
 */
export function parseIdx(bytes: Uint8Array, name = '<buffer>'): IdxArray {
  if (bytes.length < 4) throw new Error(`${name}: not an IDX file: ${bytes.length} bytes, too short for the 4-byte magic number`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  const typeCode = bytes[2];
  const ndims = bytes[3];
  const type = IDX_TYPES[typeCode];
  if (bytes[0] !== 0 || bytes[1] !== 0 || !type) throw new Error(`${name}: not an IDX file: bad magic number ${hex(magic)} (expected 0x000008xx for uint8 data)`);
  if (ndims < 1) throw new Error(`${name}: IDX header declares 0 dimensions (magic ${hex(magic)})`);
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) throw new Error(`${name}: truncated IDX header: ${ndims} dimensions need ${headerBytes} bytes, the file has ${bytes.length}`);
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    count *= d;
  }
  const expected = headerBytes + count * type.bytes;
  if (bytes.length < expected) {
    throw new Error(`${name}: truncated IDX file: dims [${dims.join(', ')}] of ${type.dtype} need ${expected} bytes, the file has ${bytes.length}`);
  }
  if (bytes.length > expected) {
    throw new Error(`${name}: corrupt IDX file: dims [${dims.join(', ')}] of ${type.dtype} need ${expected} bytes, the file has ${bytes.length} (${bytes.length - expected} extra)`);
  }
  let data: IdxValues;
  if (type.dtype === 'uint8') {
    data = new Uint8Array(bytes.buffer, bytes.byteOffset + headerBytes, count); // a view: no copy
  } else if (type.dtype === 'int8') {
    data = new Int8Array(bytes.buffer, bytes.byteOffset + headerBytes, count);
  } else {
    const Ctor = { int16: Int16Array, int32: Int32Array, float32: Float32Array, float64: Float64Array }[type.dtype];
    const out = new Ctor(count);
    for (let i = 0; i < count; i++) {
      const o = headerBytes + i * type.bytes;
      out[i] =
        type.dtype === 'int16' ? view.getInt16(o, false)
        : type.dtype === 'int32' ? view.getInt32(o, false)
        : type.dtype === 'float32' ? view.getFloat32(o, false)
        : view.getFloat64(o, false);
    }
    data = out;
  }
  return { typeCode, dtype: type.dtype, dims, data };
}

/** Reads a file, gunzipping it when it starts with the gzip magic 1f 8b; errors name the file. */
export function readMaybeGzip(file: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch (err) {
    throw new Error(`${file}: cannot read: ${(err as Error).message}`);
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return zlib.gunzipSync(raw);
    } catch (err) {
      throw new Error(`${file}: corrupt gzip data (${(err as Error).message}); the file may be truncated — download it again`);
    }
  }
  return raw;
}

/** Reads an IDX file (gzipped or not). */
export function readIdx(file: string): IdxArray {
  return parseIdx(readMaybeGzip(file), file);
}

export interface IdxDatasetOptions {
  numClasses?: number;
  classNames?: string[];
}

/** An ArrayDataset (uint8, 1 channel) from an IDX images file (uint8 [N, H, W]) and an IDX labels file (uint8 [N]). */
export function loadIdxDataset(imagesFile: string, labelsFile: string, options: IdxDatasetOptions = {}): ArrayDataset {
  const numClasses = options.numClasses ?? options.classNames?.length ?? 10;
  const images = readIdx(imagesFile);
  if (images.typeCode !== 0x08 || images.dims.length !== 3) {
    throw new Error(`${imagesFile}: expected IDX images (magic 0x00000803: uint8 [N, H, W]), got ${images.dtype} with ${images.dims.length} dimensions [${images.dims.join(', ')}]`);
  }
  const [n, h, w] = images.dims;
  if (n < 1 || h < 1 || w < 1) throw new Error(`${imagesFile}: bad image dimensions [${images.dims.join(', ')}] (all must be positive)`);
  const labels = readIdx(labelsFile);
  if (labels.typeCode !== 0x08 || labels.dims.length !== 1) {
    throw new Error(`${labelsFile}: expected IDX labels (magic 0x00000801: uint8 [N]), got ${labels.dtype} with ${labels.dims.length} dimensions [${labels.dims.join(', ')}]`);
  }
  if (labels.dims[0] !== n) throw new Error(`${labelsFile}: ${labels.dims[0]} labels for the ${n} images of ${imagesFile}`);
  const lab = new Int32Array(n);
  const src = labels.data as Uint8Array;
  for (let i = 0; i < n; i++) {
    if (src[i] >= numClasses) throw new Error(`${labelsFile}: label ${src[i]} of item ${i} is outside 0..${numClasses - 1}`);
    lab[i] = src[i];
  }
  return new ArrayDataset(images.data as Uint8Array, lab, { channels: 1, height: h, width: w, numClasses, classNames: options.classNames });
}

// ---------------------------------------------------------------------------------------------------------------
// Locating the files.

export type Split = 'train' | 'test';

export interface MnistOptions {
  /** a folder holding the four files (searched first; its `fashion-mnist` / `mnist` subfolder too) */
  dir?: string;
  split?: Split;
  /** system-wide folders searched last (default: /usr/share/datasets/fashion-mnist resp. /usr/share/datasets/mnist; [] = none) */
  systemDirs?: string[];
}

interface IdxSpec {
  name: string;
  subdirs: string[];
  system: string[];
  classNames: string[];
  howTo: string;
}

const FASHION_SPEC: IdxSpec = {
  name: 'Fashion-MNIST',
  subdirs: ['fashion-mnist', 'FashionMNIST/raw'],
  system: ['/usr/share/datasets/fashion-mnist'],
  classNames: FASHION_MNIST_CLASSES,
  howTo:
    'To get it: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs /usr/share/datasets/fashion-mnist), or download ' +
    'train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz ' +
    '(https://github.com/zalandoresearch/fashion-mnist) into a folder and pass it with --data, or set MSGC_DATA to it.',
};

const MNIST_SPEC: IdxSpec = {
  name: 'MNIST',
  subdirs: ['mnist', 'MNIST/raw'],
  system: ['/usr/share/datasets/mnist'],
  classNames: MNIST_CLASSES,
  howTo:
    'To get it: download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and ' +
    't10k-labels-idx1-ubyte.gz (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder and pass it ' +
    'with --data, or set MSGC_DATA to it.',
};

/** The folders a dataset is looked for in, in order: dir, dir/<sub>, $MSGC_DATA, $MSGC_DATA/<sub>, system folders. */
export function searchDirs(dir: string | undefined, subdirs: string[], system: string[]): string[] {
  const out: string[] = [];
  const add = (d: string): void => {
    const r = path.resolve(d);
    if (!out.includes(r)) out.push(r);
  };
  for (const base of [dir, process.env.MSGC_DATA]) {
    if (!base) continue;
    add(base);
    for (const s of subdirs) add(path.join(base, s));
  }
  system.forEach(add);
  return out;
}

function findFile(dir: string, stems: string[]): string | null {
  for (const stem of stems) {
    for (const f of [stem, stem + '.gz']) {
      const p = path.join(dir, f);
      try {
        if (fs.statSync(p).isFile()) return p;
      } catch {
        // not there
      }
    }
  }
  return null;
}

function isDir(d: string): boolean {
  try {
    return fs.statSync(d).isDirectory();
  } catch {
    return false;
  }
}

function loadIdxNamed(spec: IdxSpec, options: MnistOptions): ArrayDataset {
  const split = options.split ?? 'train';
  if (split !== 'train' && split !== 'test') throw new Error(`load${spec.name}: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const prefix = split === 'train' ? 'train' : 't10k';
  const imageStems = [`${prefix}-images-idx3-ubyte`, `${prefix}-images.idx3-ubyte`];
  const labelStems = [`${prefix}-labels-idx1-ubyte`, `${prefix}-labels.idx1-ubyte`];
  const looked: string[] = [];
  for (const d of searchDirs(options.dir, spec.subdirs, options.systemDirs ?? spec.system)) {
    if (!isDir(d)) {
      looked.push(`  ${d} (no such folder)`);
      continue;
    }
    const imagesFile = findFile(d, imageStems);
    const labelsFile = findFile(d, labelStems);
    if (imagesFile && labelsFile) return loadIdxDataset(imagesFile, labelsFile, { classNames: spec.classNames });
    const missing = [imagesFile ? null : `${imageStems[0]}[.gz]`, labelsFile ? null : `${labelStems[0]}[.gz]`].filter(Boolean);
    looked.push(`  ${d} (no ${missing.join(', no ')})`);
  }
  const notes: string[] = [];
  if (!options.dir) notes.push('no --data / dir was given');
  if (!process.env.MSGC_DATA) notes.push('MSGC_DATA is not set');
  throw new Error(
    `${spec.name} (${split} split) not found. Looked in:\n${looked.join('\n')}\n` +
      (notes.length ? `(${notes.join('; ')})\n` : '') +
      spec.howTo,
  );
}

/** Fashion-MNIST (60000 train / 10000 test images, 1×28×28 uint8, 10 classes). Searched as described in searchDirs. */
export function loadFashionMNIST(options: MnistOptions = {}): ArrayDataset {
  return loadIdxNamed(FASHION_SPEC, options);
}

/** MNIST (60000 train / 10000 test images, 1×28×28 uint8, 10 classes). */
export function loadMNIST(options: MnistOptions = {}): ArrayDataset {
  return loadIdxNamed(MNIST_SPEC, options);
}
