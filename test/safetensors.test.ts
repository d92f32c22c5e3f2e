// safetensors.test.ts: weight I/O in the Hugging Face safetensors format. Expected file bytes are built by hand
// in this file from the format description (8-byte LE header length, space-padded JSON header, LE data), never
// by calling the code under test.
import * as os from 'os';
import * as path from 'path';
import fs = require('fs');
import * as msgc from '../lib';

// ------------------------------------------------------------------------------------------- references

/** Float32 values as little-endian bytes. */
function f32le(values: number[]): Uint8Array {
  const dv = new DataView(new ArrayBuffer(values.length * 4));
  values.forEach((v, i) => dv.setFloat32(4 * i, v, true));
  return new Uint8Array(dv.buffer);
}
/** Raw 32-bit patterns as little-endian bytes. */
function u32le(bits: number[]): Uint8Array {
  const dv = new DataView(new ArrayBuffer(bits.length * 4));
  bits.forEach((v, i) => dv.setUint32(4 * i, v, true));
  return new Uint8Array(dv.buffer);
}
function u16le(bits: number[]): Uint8Array {
  const dv = new DataView(new ArrayBuffer(bits.length * 2));
  bits.forEach((v, i) => dv.setUint16(2 * i, v, true));
  return new Uint8Array(dv.buffer);
}
function f64le(values: number[]): Uint8Array {
  const dv = new DataView(new ArrayBuffer(values.length * 8));
  values.forEach((v, i) => dv.setFloat64(8 * i, v, true));
  return new Uint8Array(dv.buffer);
}
function i64le(values: bigint[]): Uint8Array {
  const dv = new DataView(new ArrayBuffer(values.length * 8));
  values.forEach((v, i) => dv.setBigInt64(8 * i, v, true));
  return new Uint8Array(dv.buffer);
}
function u64le(values: bigint[]): Uint8Array {
  const dv = new DataView(new ArrayBuffer(values.length * 8));
  values.forEach((v, i) => dv.setBigUint64(8 * i, v, true));
  return new Uint8Array(dv.buffer);
}
function intle(values: number[], size: 1 | 2 | 4, signed: boolean): Uint8Array {
  const dv = new DataView(new ArrayBuffer(values.length * size));
  values.forEach((v, i) => {
    if (size === 1) signed ? dv.setInt8(i, v) : dv.setUint8(i, v);
    else if (size === 2) signed ? dv.setInt16(2 * i, v, true) : dv.setUint16(2 * i, v, true);
    else signed ? dv.setInt32(4 * i, v, true) : dv.setUint32(4 * i, v, true);
  });
  return new Uint8Array(dv.buffer);
}

/** A file from a literal JSON header (padded with spaces to a multiple of 8) and a data buffer. */
function rawFile(headerJson: string, data: Uint8Array = new Uint8Array(0), pad = true): Buffer {
  let header = Buffer.from(headerJson, 'utf8');
  if (pad) while (header.length % 8 !== 0) header = Buffer.concat([header, Buffer.from(' ')]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([prefix, header, Buffer.from(data)]);
}

type Entry = { name: string; dtype: string; shape: number[]; bytes: Uint8Array };
/** A well-formed file with the entries laid out back to back in the given order. */
function handFile(entries: Entry[], metadata?: Record<string, string>): Buffer {
  const parts: string[] = [];
  if (metadata) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let off = 0;
  for (const e of entries) {
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":${JSON.stringify(e.shape)},"data_offsets":[${off},${off + e.bytes.length}]}`);
    off += e.bytes.length;
  }
  return rawFile(`{${parts.join(',')}}`, Buffer.concat(entries.map((e) => Buffer.from(e.bytes))));
}

function bitsOf(a: Float32Array | number[]): number[] {
  const f = a instanceof Float32Array ? a : Float32Array.from(a);
  return Array.from(new Uint32Array(f.buffer, f.byteOffset, f.length));
}

function disposeAll(dict: Record<string, msgc.Tensor>): void {
  for (const k of Object.keys(dict)) dict[k].dispose();
}

// ------------------------------------------------------------------------------------------- fixtures

let dir: string;
let liveAtStart: number;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-safetensors-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  liveAtStart = msgc.liveTensorCount();
});
afterEach(() => {
  jest.restoreAllMocks();
  expect(msgc.liveTensorCount()).toBe(liveAtStart);
});

function file(name: string): string {
  return path.join(dir, name);
}

// ------------------------------------------------------------------------------------------- tests

describe('save', () => {
  test('writes the reference encoding: sorted names, 8-byte padded header, back-to-back offsets', () => {
    const dict = {
      'layer1.0.conv1.weight': msgc.tensor([1, -2, 3.5, 0.25], [2, 2]),
      'bn1.running_mean': msgc.tensor([0.5, -0.125], [2]),
      'bn1.num_batches_tracked': msgc.tensor([7], []),
    };
    const p = file('ref.safetensors');
    msgc.save(dict, p);
    const header =
      '{"bn1.num_batches_tracked":{"dtype":"F32","shape":[],"data_offsets":[0,4]},' +
      '"bn1.running_mean":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},' +
      '"layer1.0.conv1.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[12,28]}}';
    const pad = (8 - (header.length % 8)) % 8;
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length + pad));
    const expected = Buffer.concat([
      prefix,
      Buffer.from(header + ' '.repeat(pad), 'utf8'),
      Buffer.from(f32le([7, 0.5, -0.125, 1, -2, 3.5, 0.25])),
    ]);
    const actual = fs.readFileSync(p);
    expect(Number(actual.readBigUInt64LE(0)) % 8).toBe(0); // the data buffer starts 8-byte aligned
    expect(actual.equals(expected)).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    disposeAll(dict);
  });

  test('writes __metadata__ first and accepts a Map', () => {
    const w = msgc.tensor([1.5], [1]);
    const p = file('meta.safetensors');
    msgc.saveSafetensors(new Map([['w', w]]), p, { format: 'pt' });
    const expected = rawFile('{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32le([1.5]));
    expect(fs.readFileSync(p).equals(expected)).toBe(true);
    expect(msgc.encodeSafetensors({ w }, { format: 'pt' }).equals(expected)).toBe(true);
    w.dispose();
  });

  test('an empty dict is the 8-byte "{}" header', () => {
    const p = file('empty.safetensors');
    msgc.save({}, p);
    expect(fs.readFileSync(p).equals(rawFile('{}'))).toBe(true);
    expect(msgc.load(p)).toEqual({});
  });

  test('rejects disposed tensors, non-tensors, the reserved name and bad metadata, touching nothing', () => {
    const p = file('rejected.safetensors');
    const t = msgc.tensor([1, 2], [2]);
    const gone = msgc.tensor([3], [1]);
    gone.dispose();
    const cases: [unknown, unknown, RegExp][] = [
      [{ a: t, b: gone }, undefined, /"b".*disposed/],
      [{ a: t, b: [1, 2] }, undefined, /"b" is not a Tensor/],
      [{ a: t, b: new Float32Array(2) }, undefined, /"b" is not a Tensor/],
      [{ a: null }, undefined, /"a" is not a Tensor/],
      [{ __metadata__: t }, undefined, /reserved/],
      [{ a: t }, { n: 1 }, /metadata\["n"\] must be a string/],
      [[t], undefined, /state dict/],
    ];
    for (const [dict, meta, re] of cases) {
      let err: Error | undefined;
      try {
        msgc.save(dict as msgc.StateDict, p, meta as Record<string, string>);
      } catch (e) {
        err = e as Error;
      }
      expect(err).toBeInstanceOf(Error);
      expect(err!.message).toMatch(re);
      expect(err!.message).toContain(p);
    }
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('rejected'))).toEqual([]);
    t.dispose();
  });

  test('a missing directory gives an error naming the path', () => {
    const p = path.join(dir, 'no', 'such', 'dir', 'w.safetensors');
    const t = msgc.tensor([1], [1]);
    expect(() => msgc.save({ t }, p)).toThrow(p);
    t.dispose();
  });
});

describe('load', () => {
  test('converts every dtype of a hand-built file to the exact float32 values', () => {
    const f16 = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x3555];
    const f16Expected = [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, -0, Infinity, -Infinity, 0.333251953125];
    const bf16 = [0x3f80, 0xc049, 0x7f7f, 0x0001, 0x8000];
    const bf16Expected = [1, -3.140625, 3.3895313892515355e38, 2 ** -133, -0];
    const f64 = [0.1, -2.5, 1e300, 1e-50, 123456789.123];
    const f64Expected = f64.map(Math.fround);
    // 2^60 + 2^36 + 1 rounds up to 2^60 + 2^37 in float32; going through a double first would give 2^60
    const i64 = [1234n, -5n, 9007199254740993n, (1n << 60n) + (1n << 36n) + 1n, -(1n << 63n)];
    const i64Expected = [1234, -5, 2 ** 53, 2 ** 60 + 2 ** 37, -(2 ** 63)];
    const u64 = [18446744073709551615n, 3n];
    const u64Expected = [2 ** 64, 3];
    const entries: Entry[] = [
      { name: 'f32', dtype: 'F32', shape: [2, 2], bytes: f32le([1.5, -0.1, 3e38, 1e-45]) },
      { name: 'f16', dtype: 'F16', shape: [f16.length], bytes: u16le(f16) },
      { name: 'bf16', dtype: 'BF16', shape: [bf16.length], bytes: u16le(bf16) },
      { name: 'f64', dtype: 'F64', shape: [f64.length], bytes: f64le(f64) },
      { name: 'bn1.num_batches_tracked', dtype: 'I64', shape: [], bytes: i64le([42n]) },
      { name: 'i64', dtype: 'I64', shape: [i64.length], bytes: i64le(i64) },
      { name: 'u64', dtype: 'U64', shape: [2], bytes: u64le(u64) },
      { name: 'i32', dtype: 'I32', shape: [3], bytes: intle([-2147483648, 16777217, 7], 4, true) },
      { name: 'u32', dtype: 'U32', shape: [2], bytes: intle([4294967295, 9], 4, false) },
      { name: 'i16', dtype: 'I16', shape: [2], bytes: intle([-32768, 300], 2, true) },
      { name: 'u16', dtype: 'U16', shape: [1], bytes: intle([65535], 2, false) },
      { name: 'i8', dtype: 'I8', shape: [3], bytes: intle([-128, 127, -1], 1, true) },
      { name: 'u8', dtype: 'U8', shape: [2], bytes: intle([255, 0], 1, false) },
      { name: 'bool', dtype: 'BOOL', shape: [3], bytes: intle([0, 1, 1], 1, false) },
      { name: 'e4m3', dtype: 'F8_E4M3', shape: [6], bytes: intle([0x38, 0x7e, 0x01, 0xb8, 0x08, 0x7f], 1, false) },
      { name: 'e5m2', dtype: 'F8_E5M2', shape: [5], bytes: intle([0x3c, 0x7b, 0x7c, 0x01, 0xc0], 1, false) },
    ];
    const p = file('dtypes.safetensors');
    fs.writeFileSync(p, handFile(entries));
    const dict = msgc.load(p);
    expect(Object.keys(dict).sort()).toEqual(entries.map((e) => e.name).sort());
    const expectBits = (name: string, shape: number[], values: number[]) => {
      expect(dict[name].shape).toEqual(shape);
      expect(bitsOf(dict[name].toFloat32Array())).toEqual(bitsOf(values));
    };
    expectBits('f32', [2, 2], [1.5, -0.1, 3e38, 1e-45]);
    expectBits('f16', [10], f16Expected);
    expectBits('bf16', [5], bf16Expected);
    expectBits('f64', [5], f64Expected);
    expect(f64Expected[2]).toBe(Infinity);
    expectBits('bn1.num_batches_tracked', [], [42]);
    expectBits('i64', [5], i64Expected);
    expectBits('u64', [2], u64Expected);
    expectBits('i32', [3], [-2147483648, 16777216, 7]);
    expectBits('u32', [2], [4294967296, 9]);
    expectBits('i16', [2], [-32768, 300]);
    expectBits('u16', [1], [65535]);
    expectBits('i8', [3], [-128, 127, -1]);
    expectBits('u8', [2], [255, 0]);
    expectBits('bool', [3], [0, 1, 1]);
    const e4 = Array.from(dict.e4m3.toFloat32Array());
    expect(e4.slice(0, 5)).toEqual([1, 448, 2 ** -9, -1, 2 ** -6]);
    expect(Number.isNaN(e4[5])).toBe(true);
    expectBits('e5m2', [5], [1, 57344, Infinity, 2 ** -16, -2]);
    // F16 NaN stays NaN
    disposeAll(dict);
    fs.writeFileSync(p, handFile([{ name: 'nan', dtype: 'F16', shape: [1], bytes: u16le([0x7e00]) }]));
    const nan = msgc.loadSafetensors(p);
    expect(Number.isNaN(nan.nan.item())).toBe(true);
    disposeAll(nan);
  });

  test('reads files whose header is not in data order and whose names need escaping', () => {
    // data order c, a, b while the header lists a, b, c
    const header =
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},' +
      '"b\\"\\u00e9":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},' +
      '"__metadata__":{"format":"pt"},' +
      '"c":{"dtype":"F32","shape":[0],"data_offsets":[16,16]},' +
      '"d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    const p = file('order.safetensors');
    fs.writeFileSync(p, rawFile(header, f32le([4, 1, 2, 3])));
    const dict = msgc.load(p);
    expect(Array.from(dict.a.toFloat32Array())).toEqual([1]);
    expect(Array.from(dict['b"é'].toFloat32Array())).toEqual([2, 3]);
    expect(dict.c.shape).toEqual([0]);
    expect(Array.from(dict.d.toFloat32Array())).toEqual([4]);
    disposeAll(dict);
    const h = msgc.readSafetensorsHeader(p);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.tensors['b"é']).toEqual({ dtype: 'F32', shape: [2], dataOffsets: [8, 16] });
    expect(Object.keys(h.tensors).sort()).toEqual(['a', 'b"é', 'c', 'd']);
  });

  test('decodeSafetensors reads an in-memory file', () => {
    const buf = handFile([{ name: 'x', dtype: 'BF16', shape: [1, 1], bytes: u16le([0x3f80]) }]);
    const dict = msgc.decodeSafetensors(buf);
    expect(dict.x.shape).toEqual([1, 1]);
    expect(dict.x.item()).toBe(1);
    disposeAll(dict);
    expect(() => msgc.decodeSafetensors(buf.subarray(0, 20))).toThrow(/<buffer>/);
  });
});

describe('round trip', () => {
  test('save -> load is bit-exact, including empty and scalar shapes, and keeps metadata', () => {
    const special = bitsOf([0, -0, Infinity, -Infinity, 1e-45, -1.1754942e-38, 3.4028234663852886e38, Math.PI]);
    special.push(0x7fc00000, 0x7fa00001, 0xffc00123); // NaNs with sign and payload
    const specialData = new Float32Array(new Uint32Array(special).buffer);
    const randData = Float32Array.from({ length: 60 }, (_, i) => Math.sin(i * 12.9898) * 43758.5453);
    const dict: Record<string, msgc.Tensor> = {
      'fc.weight': msgc.tensor(randData, [3, 4, 5]),
      special: msgc.tensor(specialData, [special.length]),
      scalar: msgc.tensor([-3.25], []),
      empty: msgc.tensor([], [0]),
      'empty.3d': msgc.tensor([], [3, 0, 2]),
      'layer1.0.bn1.num_batches_tracked': msgc.tensor([100], []),
      'naïve.名前': msgc.tensor([1, 2], [1, 2]),
    };
    const p = file('roundtrip.safetensors');
    const meta = { format: 'pt', note: 'ünïcode "quoted"', '': 'empty key' };
    msgc.save(dict, p, meta);
    const back = msgc.load(p);
    expect(Object.keys(back).sort()).toEqual(Object.keys(dict).sort());
    for (const k of Object.keys(dict)) {
      expect(back[k].shape).toEqual(dict[k].shape);
      expect(bitsOf(back[k].toFloat32Array())).toEqual(bitsOf(dict[k].toFloat32Array()));
    }
    expect(bitsOf(back.special.toFloat32Array())).toEqual(special);
    const h = msgc.readSafetensorsHeader(p);
    expect(h.metadata).toEqual(meta);
    expect(h.tensors['empty.3d']).toEqual({ dtype: 'F32', shape: [3, 0, 2], dataOffsets: expect.any(Array) });
    expect(h.tensors.scalar.shape).toEqual([]);
    // no metadata -> null
    msgc.save({ scalar: dict.scalar }, p);
    expect(msgc.readSafetensorsHeader(p).metadata).toBeNull();
    disposeAll(back);
    disposeAll(dict);
  });

  test('load inside tidy keeps the returned dict alive and frees the rest', () => {
    const t = msgc.tensor([1, 2, 3], [3]);
    const p = file('tidy.safetensors');
    msgc.save({ t }, p);
    t.dispose();
    const before = msgc.liveTensorCount();
    const kept = msgc.tidy(() => {
      msgc.load(p); // discarded
      return msgc.load(p);
    });
    expect(msgc.liveTensorCount()).toBe(before + 1);
    expect(Array.from(kept.t.toFloat32Array())).toEqual([1, 2, 3]);
    disposeAll(kept);
  });
});

describe('atomic save', () => {
  const tempsIn = () => fs.readdirSync(dir).filter((f) => f.startsWith('atomic') && f.includes('.tmp-'));

  function expectOldFileIntact(p: string): void {
    const d = msgc.load(p);
    expect(Array.from(d.w.toFloat32Array())).toEqual([1, 2, 3]);
    expect(Object.keys(d)).toEqual(['w']);
    disposeAll(d);
    expect(tempsIn()).toEqual([]);
  }

  test.each([
    ['renameSync', 'simulated crash before rename'],
    ['fsyncSync', 'simulated fsync failure after writing the temp file'],
    ['writeSync', 'simulated disk full'],
  ] as const)('a failing %s leaves the previous file intact and no temp file', (fn, msg) => {
    const p = file('atomic.safetensors');
    const oldW = msgc.tensor([1, 2, 3], [3]);
    msgc.save({ w: oldW }, p);
    oldW.dispose();
    const oldBytes = fs.readFileSync(p);

    const newDict = { w: msgc.tensor([9, 9, 9, 9], [4]), extra: msgc.tensor([5], [1]) };
    let sawTemp = false;
    const real = fs[fn] as (...args: unknown[]) => unknown;
    const spy = jest.spyOn(fs, fn).mockImplementationOnce(((...args: unknown[]) => {
      if (fn === 'writeSync') real(...args); // write a part of it, then fail
      sawTemp = tempsIn().length === 1;
      throw new Error(msg);
    }) as never);
    let err: Error | undefined;
    try {
      msgc.save(newDict, p);
    } catch (e) {
      err = e as Error;
    }
    expect(spy).toHaveBeenCalled();
    expect(sawTemp).toBe(true);
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toContain(p);
    expect(err!.message).toContain(msg);
    expect(fs.readFileSync(p).equals(oldBytes)).toBe(true);
    expectOldFileIntact(p);

    // the next save goes through
    spy.mockRestore();
    msgc.save(newDict, p);
    const d = msgc.load(p);
    expect(Array.from(d.w.toFloat32Array())).toEqual([9, 9, 9, 9]);
    disposeAll(d);
    disposeAll(newDict);
    expect(tempsIn()).toEqual([]);
  });

  test('the temp file sits next to the target and is named path.tmp-<pid>-<random>', () => {
    const p = file('atomic-name.safetensors');
    const seen: string[] = [];
    const real = fs.renameSync;
    jest.spyOn(fs, 'renameSync').mockImplementation((from, to) => {
      seen.push(String(from), String(to));
      real(from, to);
    });
    const t = msgc.tensor([1], [1]);
    msgc.save({ t }, p);
    t.dispose();
    expect(seen[1]).toBe(p);
    expect(seen[0].startsWith(`${p}.tmp-${process.pid}-`)).toBe(true);
    expect(path.dirname(seen[0])).toBe(path.dirname(p));
    expect(fs.existsSync(seen[0])).toBe(false);
  });
});

describe('malformed files', () => {
  const ok = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const two = f32le([1, 2]);
  const lenPrefix = (n: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(n);
    return b;
  };
  const cases: [string, Buffer, RegExp][] = [
    ['empty file', Buffer.alloc(0), /shorter than the 8-byte/],
    ['5-byte file', Buffer.from([1, 0, 0, 0, 0]), /shorter than the 8-byte/],
    ['header length beyond the file', Buffer.concat([lenPrefix(1000n), Buffer.from('{}      ')]), /header length 1000 goes beyond/],
    ['header length 2^64-1', Buffer.concat([lenPrefix(2n ** 64n - 1n), Buffer.from('{}      ')]), /goes beyond/],
    ['truncated data', rawFile(ok, two).subarray(0, rawFile(ok, two).length - 1), /out of bounds/],
    ['invalid JSON', rawFile('{"a":{"dtype":"F32",', two), /not valid JSON/],
    // the name's '?' (byte 10: after the 8-byte prefix and '{"') becomes 0xFF, which is never valid UTF-8
    ['invalid UTF-8', rawFile('{"?":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', two).fill(0xff, 10, 11), /not valid UTF-8/],
    ['JSON array', rawFile('[1,2]'), /must be a JSON object/],
    ['entry not an object', rawFile('{"a":3}'), /"a".*must be an object/],
    ['no dtype', rawFile('{"a":{"shape":[2],"data_offsets":[0,8]}}', two), /"a".*no "dtype"/],
    ['no shape', rawFile('{"a":{"dtype":"F32","data_offsets":[0,8]}}', two), /"a".*no "shape"/],
    ['no data_offsets', rawFile('{"a":{"dtype":"F32","shape":[2]}}', two), /"a".*no "data_offsets"/],
    ['unsupported dtype', rawFile('{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}', two), /unsupported dtype "C64"/],
    ['dtype not a string', rawFile('{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', two), /dtype must be a string/],
    ['negative dim', rawFile('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', two), /shape must be/],
    ['fractional dim', rawFile('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', two), /shape must be/],
    ['one offset', rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}}', two), /data_offsets must be/],
    ['begin after end', rawFile('{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', two), /begin after end/],
    ['offsets out of bounds', rawFile('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', two), /out of bounds/],
    ['size mismatch', rawFile('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', two), /needs 12/],
    ['size mismatch (dtype)', rawFile('{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}', two), /needs 4/],
    [
      'overlapping tensors',
      rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', two),
      /"a" and "b" overlap/,
    ],
    [
      'duplicate region',
      rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', two),
      /overlap/,
    ],
    ['gap', rawFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', two), /bytes 0\.\.4 .*belong to no tensor/],
    ['trailing bytes', rawFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', two), /cover only 4/],
    ['metadata not strings', rawFile('{"__metadata__":{"epoch":3},' + ok.slice(1), two), /"epoch".*must be a string/],
  ];

  test.each(cases)('%s: load and readSafetensorsHeader throw an Error naming the file', (name, bytes, re) => {
    const p = file(`bad-${name.replace(/[^a-z0-9]+/gi, '_')}.safetensors`);
    fs.writeFileSync(p, bytes);
    for (const fn of [() => msgc.load(p), () => msgc.readSafetensorsHeader(p)]) {
      let err: unknown;
      try {
        fn();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toContain(p);
      expect((err as Error).message).toMatch(re);
    }
    expect(() => msgc.decodeSafetensors(bytes)).toThrow(re);
    fs.unlinkSync(p);
  });

  test('a tensor error after valid ones creates no tensors', () => {
    const p = file('bad-late.safetensors');
    fs.writeFileSync(
      p,
      rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[5],"data_offsets":[8,28]}}', two),
    );
    const before = msgc.liveTensorCount();
    expect(() => msgc.load(p)).toThrow(p);
    expect(msgc.liveTensorCount()).toBe(before);
  });

  test('a missing file names the path', () => {
    const p = file('does-not-exist.safetensors');
    expect(() => msgc.load(p)).toThrow(p);
    expect(() => msgc.readSafetensorsHeader(p)).toThrow(p);
  });

  test('the hand-built reference file itself is accepted', () => {
    const p = file('good.safetensors');
    fs.writeFileSync(p, rawFile(ok, two));
    const d = msgc.load(p);
    expect(Array.from(d.a.toFloat32Array())).toEqual([1, 2]);
    disposeAll(d);
  });
});
