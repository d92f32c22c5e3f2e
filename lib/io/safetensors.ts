// safetensors.ts: reading and writing weights in the Hugging Face safetensors format.
//
// Layout: an 8-byte little-endian unsigned header length n, n bytes of UTF-8 JSON, then the data buffer. The
// header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// start of the data buffer, little-endian, row-major) plus an optional "__metadata__" of string -> string.
// Writers pad the header with spaces to a multiple of 8 bytes; tensors must not overlap and must cover the
// data buffer exactly.
//
// save() writes float32 ("F32") tensors sorted by name, byte-for-byte what the Python library writes for the
// same float32 state dict, and replaces the target atomically (temp file + fsync + rename + directory fsync).
// load() accepts every integer/float dtype that maps to a number and returns float32 tensors (I64
// num_batches_tracked of a PyTorch BatchNorm becomes a float32 scalar).
import * as fs from 'fs';
import * as os from 'os';
import { writeFileAtomic } from './atomic';
import { Tensor } from '../tensor/tensor';
import { tensor } from '../tensor/creation';

/** Tensors by name (torchvision-style dotted names such as 'layer1.0.conv1.weight'). */
export type StateDict = Record<string, Tensor>;

/** What a safetensors header says about one tensor. */
export interface SafetensorsTensorInfo {
  dtype: string;
  shape: number[];
  /** [begin, end) in bytes, relative to the start of the data buffer. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Record<string, SafetensorsTensorInfo>;
  /** The "__metadata__" entry, or null when the file has none. */
  metadata: Record<string, string> | null;
}

/** Byte size of one element for each dtype load() understands. */
const DTYPE_SIZE: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** The Python/Rust reference refuses headers larger than this; so do we (it also bounds the JSON we parse). */
const MAX_HEADER_SIZE = 100_000_000;
const METADATA_KEY = '__metadata__';
const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

function fail(source: string, what: string): never {
  throw new Error(`safetensors: ${source}: ${what}`);
}

/** Defines an own enumerable property (safe for names such as '__proto__'). */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function hasOwn(obj: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isTensor(v: unknown): v is Tensor {
  return (
    v instanceof Tensor ||
    (typeof v === 'object' && v !== null && (v as { __isTensor?: unknown }).__isTensor === true &&
      typeof (v as { toFloat32Array?: unknown }).toFloat32Array === 'function')
  );
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return `an object (${(v as object).constructor?.name ?? 'no prototype'})`;
  return `a ${typeof v}`;
}

/** Compares strings by their UTF-8 bytes (the order Rust's String sort gives). */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function entriesOf(dict: StateDict | Map<string, Tensor>, source: string): [string, unknown][] {
  if (dict instanceof Map) {
    const out: [string, unknown][] = [];
    for (const [k, v] of dict) {
      if (typeof k !== 'string') fail(source, `state dict keys must be strings, got ${describe(k)}`);
      out.push([k, v]);
    }
    return out;
  }
  if (!isPlainObject(dict)) fail(source, `expected a state dict (an object of name -> Tensor), got ${describe(dict)}`);
  return Object.keys(dict).map((k) => [k, (dict as Record<string, unknown>)[k]]);
}

function checkMetadata(metadata: unknown, source: string, where: string): Record<string, string> {
  if (!isPlainObject(metadata)) fail(source, `${where} must be an object of string -> string, got ${describe(metadata)}`);
  const out: Record<string, string> = {};
  for (const k of Object.keys(metadata)) {
    const v = metadata[k];
    if (typeof v !== 'string') fail(source, `${where}["${k}"] must be a string, got ${describe(v)}`);
    setOwn(out, k, v);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ encoding

/**
 * Encodes tensors as a safetensors file (float32, sorted by name, header padded with spaces to 8 bytes).
 * Validates everything before producing any bytes.
 */
export function encodeSafetensors(
  dict: StateDict | Map<string, Tensor>,
  metadata?: Record<string, string>,
  source = '<buffer>',
): Buffer {
  const entries = entriesOf(dict, source);
  const meta = metadata === undefined || metadata === null ? null : checkMetadata(metadata, source, 'metadata');

  const items: { name: string; shape: number[]; data: Float32Array }[] = [];
  for (const [name, value] of entries) {
    if (name === METADATA_KEY) fail(source, `"${METADATA_KEY}" is reserved for metadata and cannot name a tensor`);
    if (!isTensor(value)) fail(source, `"${name}" is not a Tensor (got ${describe(value)})`);
    if (value.isDisposed) fail(source, `tensor "${name}" (shape [${value.shape.join(', ')}]) was disposed; cannot save it`);
    const shape = value.shape;
    const data = value.toFloat32Array();
    const count = shape.reduce((a, b) => a * b, 1);
    if (data.length !== count) {
      fail(source, `tensor "${name}" has shape [${shape.join(', ')}] (${count} elements) but returned ${data.length} values`);
    }
    items.push({ name, shape, data });
  }
  items.sort((a, b) => compareUtf8(a.name, b.name));

  // The reference writer emits compact JSON: metadata first, then tensors in storage order.
  const parts: string[] = [];
  if (meta && Object.keys(meta).length > 0) {
    const keys = Object.keys(meta).sort(compareUtf8);
    parts.push(`${JSON.stringify(METADATA_KEY)}:{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(meta[k])}`).join(',')}}`);
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const it of items) {
    const nbytes = it.data.length * 4;
    offsets.push(offset);
    parts.push(`${JSON.stringify(it.name)}:{"dtype":"F32","shape":[${it.shape.join(',')}],"data_offsets":[${offset},${offset + nbytes}]}`);
    offset += nbytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const headerLen = json.length + ((8 - (json.length % 8)) % 8);
  const out = Buffer.alloc(8 + headerLen + offset);
  out.writeBigUInt64LE(BigInt(headerLen), 0);
  json.copy(out, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  const base = 8 + headerLen;
  items.forEach((it, i) => {
    const at = base + offsets[i];
    if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(it.data.buffer, it.data.byteOffset, it.data.byteLength), at);
    } else {
      // copy the raw bits so NaN payloads survive
      const bits = new Uint32Array(it.data.buffer, it.data.byteOffset, it.data.length);
      for (let j = 0; j < bits.length; j++) out.writeUInt32LE(bits[j], at + 4 * j);
    }
  });
  return out;
}

// ------------------------------------------------------------------------------------------------ decoding

/** Reads `length` bytes at absolute position `pos` of the file/buffer. */
type ReadAt = (pos: number, length: number) => Uint8Array;

interface ParsedFile {
  header: SafetensorsHeader;
  /** Absolute position of the data buffer. */
  dataStart: number;
}

function checkNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Reads and validates the header: length prefix, UTF-8 JSON, every entry, and that the tensors tile the data
 * buffer exactly.
 */
function parseFile(source: string, totalLength: number, readAt: ReadAt): ParsedFile {
  if (totalLength < 8) fail(source, `file is ${totalLength} bytes, shorter than the 8-byte header length prefix`);
  const prefix = readAt(0, 8);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(totalLength - 8)) {
    fail(source, `header length ${n} goes beyond the end of the file (${totalLength - 8} bytes after the length prefix)`);
  }
  const headerLen = Number(n);
  if (headerLen > MAX_HEADER_SIZE) fail(source, `header length ${headerLen} exceeds the maximum of ${MAX_HEADER_SIZE} bytes`);
  if (headerLen < 2) fail(source, `header length ${headerLen} is too small to hold a JSON object`);
  const dataStart = 8 + headerLen;
  const dataLength = totalLength - dataStart;

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(readAt(8, headerLen));
  } catch {
    return fail(source, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail(source, `header is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isPlainObject(json)) fail(source, `header must be a JSON object, got ${describe(json)}`);

  let metadata: Record<string, string> | null = null;
  const tensors: Record<string, SafetensorsTensorInfo> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const name of Object.keys(json)) {
    const entry = json[name];
    if (name === METADATA_KEY) {
      metadata = checkMetadata(entry, source, `header "${METADATA_KEY}"`);
      continue;
    }
    const what = `tensor "${name}"`;
    if (!isPlainObject(entry)) fail(source, `${what}: entry must be an object, got ${describe(entry)}`);
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!hasOwn(entry, field)) fail(source, `${what}: entry has no "${field}"`);
    }
    const { dtype, shape, data_offsets: offs } = entry as { dtype: unknown; shape: unknown; data_offsets: unknown };
    if (typeof dtype !== 'string') fail(source, `${what}: dtype must be a string, got ${describe(dtype)}`);
    if (!hasOwn(DTYPE_SIZE, dtype)) {
      fail(source, `${what}: unsupported dtype "${dtype}" (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every(checkNonNegInt)) {
      fail(source, `${what}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(checkNonNegInt)) {
      fail(source, `${what}: data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) fail(source, `${what}: data_offsets [${begin}, ${end}] has begin after end`);
    if (end > dataLength) {
      fail(source, `${what}: data_offsets [${begin}, ${end}] are out of bounds (the data buffer holds ${dataLength} bytes)`);
    }
    let count = 1;
    for (const d of shape as number[]) {
      count *= d;
      if (!Number.isSafeInteger(count)) fail(source, `${what}: shape [${shape.join(', ')}] has too many elements`);
    }
    const expected = count * DTYPE_SIZE[dtype];
    if (end - begin !== expected) {
      fail(
        source,
        `${what}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${(shape as number[]).join(', ')}] ` +
          `of ${dtype} needs ${expected}`,
      );
    }
    setOwn(tensors, name, { dtype, shape: (shape as number[]).slice(), dataOffsets: [begin, end] });
    spans.push({ name, begin, end });
  }

  // Tensors must tile [0, dataLength) with neither overlap nor gap (empty tensors may sit anywhere in between).
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let last: string | null = null;
  for (const s of spans) {
    if (s.begin < covered) {
      fail(source, `tensors "${last}" and "${s.name}" overlap (bytes ${s.begin}..${covered} of the data buffer)`);
    }
    if (s.begin > covered) fail(source, `bytes ${covered}..${s.begin} of the data buffer belong to no tensor`);
    if (s.end > s.begin || last === null) last = s.name;
    covered = s.end;
  }
  if (covered !== dataLength) {
    fail(source, `the data buffer holds ${dataLength} bytes but the tensors cover only ${covered}`);
  }
  return { header: { tensors, metadata }, dataStart };
}

// f16 bits -> f32 bits (exact; keeps signs, infinities and NaN payloads)
function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (man << 13)) >>> 0;
  if (man === 0) return sign >>> 0;
  // subnormal: value = man * 2^-24; normalise
  let e = 113; // exponent (biased, f32) of 2^-14
  while ((man & 0x400) === 0) {
    man <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((man & 0x3ff) << 13)) >>> 0;
}

// OCP FP8 E4M3 ("FN": no infinities, S.1111.111 is NaN) -> f32 bits
function e4m3BitsToFloatBits(b: number): number {
  const sign = (b & 0x80) << 24;
  const exp = (b >> 3) & 0xf;
  let man = b & 7;
  if (exp === 0xf && man === 7) return (sign | 0x7fc00000) >>> 0;
  if (exp !== 0) return (sign | ((exp + 120) << 23) | (man << 20)) >>> 0;
  if (man === 0) return sign >>> 0;
  let e = 121; // 2^-6
  while ((man & 0x8) === 0) {
    man <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((man & 7) << 20)) >>> 0;
}

/** Rounds a 64-bit integer (as a BigInt) to the nearest float32, ties to even, with a single rounding. */
function bigIntToFloat32(v: bigint): number {
  const neg = v < 0n;
  let mag = neg ? -v : v;
  const bits = mag.toString(2).length;
  if (bits > 24) {
    const shift = BigInt(bits - 24);
    const kept = mag >> shift;
    const rest = mag - (kept << shift);
    const half = 1n << (shift - 1n);
    let rounded = kept;
    if (rest > half || (rest === half && (kept & 1n) === 1n)) rounded += 1n;
    mag = rounded << shift; // at most 25 significant bits, exactly representable as a double and a float32
  }
  const x = Math.fround(Number(mag));
  return neg ? -x : x;
}

function convert(dtype: string, bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  if (dtype === 'F32' && LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(bytes.subarray(0, count * 4));
    return out;
  }
  const bitsOut = new Uint32Array(out.buffer);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < count; i++) bitsOut[i] = dv.getUint32(4 * i, true);
      break;
    case 'F16':
      for (let i = 0; i < count; i++) bitsOut[i] = halfBitsToFloatBits(dv.getUint16(2 * i, true));
      break;
    case 'BF16':
      for (let i = 0; i < count; i++) bitsOut[i] = (dv.getUint16(2 * i, true) << 16) >>> 0;
      break;
    case 'F8_E5M2':
      for (let i = 0; i < count; i++) bitsOut[i] = halfBitsToFloatBits(bytes[i] << 8);
      break;
    case 'F8_E4M3':
      for (let i = 0; i < count; i++) bitsOut[i] = e4m3BitsToFloatBits(bytes[i]);
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(8 * i, true);
      break;
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = bytes[i] !== 0 ? 1 : 0;
      break;
    case 'U8':
      for (let i = 0; i < count; i++) out[i] = bytes[i];
      break;
    case 'I8':
      for (let i = 0; i < count; i++) out[i] = dv.getInt8(i);
      break;
    case 'I16':
      for (let i = 0; i < count; i++) out[i] = dv.getInt16(2 * i, true);
      break;
    case 'U16':
      for (let i = 0; i < count; i++) out[i] = dv.getUint16(2 * i, true);
      break;
    case 'I32':
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    case 'U32':
      for (let i = 0; i < count; i++) out[i] = dv.getUint32(4 * i, true);
      break;
    case 'I64':
    case 'U64':
      for (let i = 0; i < count; i++) {
        const lo = dv.getUint32(8 * i, true);
        const hi = dtype === 'I64' ? dv.getInt32(8 * i + 4, true) : dv.getUint32(8 * i + 4, true);
        // |value| < 2^53: exact as a double, so Math.fround rounds once; otherwise round from the BigInt
        out[i] =
          hi >= -0x200000 && hi < 0x200000
            ? hi * 4294967296 + lo
            : bigIntToFloat32(dtype === 'I64' ? dv.getBigInt64(8 * i, true) : dv.getBigUint64(8 * i, true));
      }
      break;
    default:
      throw new Error(`safetensors: internal error: no conversion for dtype ${dtype}`);
  }
  return out;
}

/** Parses the header and builds float32 tensors; disposes what it made if anything fails. */
function decodeFrom(source: string, totalLength: number, readAt: ReadAt): StateDict {
  const { header, dataStart } = parseFile(source, totalLength, readAt);
  const dict: StateDict = {};
  const made: Tensor[] = [];
  try {
    for (const name of Object.keys(header.tensors)) {
      const info = header.tensors[name];
      const count = info.shape.reduce((a, b) => a * b, 1);
      const [begin, end] = info.dataOffsets;
      const bytes = end > begin ? readAt(dataStart + begin, end - begin) : new Uint8Array(0);
      const t = tensor(convert(info.dtype, bytes, count), info.shape);
      made.push(t);
      setOwn(dict, name, t);
    }
  } catch (err) {
    for (const t of made) t.dispose();
    throw err;
  }
  return dict;
}

function bufferReader(buf: Uint8Array): ReadAt {
  return (pos, length) => buf.subarray(pos, pos + length);
}

/** Decodes an in-memory safetensors file into new float32 tensors (the caller owns and disposes them). */
export function decodeSafetensors(buf: Uint8Array, source = '<buffer>'): StateDict {
  if (!(buf instanceof Uint8Array)) fail(source, `expected a Buffer or Uint8Array, got ${describe(buf)}`);
  return decodeFrom(source, buf.byteLength, bufferReader(buf));
}

/** Parses and validates the header of an in-memory safetensors file. */
export function parseSafetensorsHeader(buf: Uint8Array, source = '<buffer>'): SafetensorsHeader {
  if (!(buf instanceof Uint8Array)) fail(source, `expected a Buffer or Uint8Array, got ${describe(buf)}`);
  return parseFile(source, buf.byteLength, bufferReader(buf)).header;
}

// ------------------------------------------------------------------------------------------------ files

function withFile<T>(file: string, fn: (totalLength: number, readAt: ReadAt) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    return fail(file, `cannot open (${err instanceof Error ? err.message : String(err)})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const readAt: ReadAt = (pos, length) => {
      const out = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const r = fs.readSync(fd, out, got, length - got, pos + got);
        if (r === 0) fail(file, `unexpected end of file at byte ${pos + got} (the file changed while reading?)`);
        got += r;
      }
      return out;
    };
    return fn(size, readAt);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads and validates the header of a safetensors file without reading the tensor data. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  return withFile(file, (size, readAt) => parseFile(file, size, readAt).header);
}

/** Loads a safetensors file as new float32 tensors (the caller owns and disposes them). */
export function load(file: string): StateDict {
  return withFile(file, (size, readAt) => decodeFrom(file, size, readAt));
}

/**
 * Saves tensors as float32 safetensors. The file is written to a temporary name in the same directory,
 * flushed to disk, then renamed over `file` (and the directory flushed), so an interrupted save leaves the
 * previous file intact.
 */
export function save(dict: StateDict | Map<string, Tensor>, file: string, metadata?: Record<string, string>): void {
  if (typeof file !== 'string' || file.length === 0) throw new Error(`safetensors: save: expected a file path, got ${describe(file)}`);
  const bytes = encodeSafetensors(dict, metadata, file);
  writeFileAtomic(file, bytes, (what) => fail(file, what));
}

export const saveSafetensors = save;
export const loadSafetensors = load;
