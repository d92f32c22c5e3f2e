// data-idx.test.ts: IDX reading (MNIST / Fashion-MNIST format) on files built byte by byte, and the real
// Fashion-MNIST from Debian's dataset-fashion-mnist package when it is installed.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { parseIdx, readIdx, loadIdxDataset, loadFashionMNIST, loadMNIST, loadDataset, DataLoader, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD } from '../lib/data';

/** An IDX file: 0 0 type ndims, big-endian uint32 dims, then the values (big-endian for multi-byte types). */
function idx(type: number, dims: number[], values: number[]): Buffer {
  const width = { 0x08: 1, 0x09: 1, 0x0b: 2, 0x0c: 4, 0x0d: 4, 0x0e: 8 }[type] ?? 1;
  const buf = Buffer.alloc(4 + 4 * dims.length + values.length * width);
  buf[0] = 0;
  buf[1] = 0;
  buf[2] = type;
  buf[3] = dims.length;
  dims.forEach((d, i) => buf.writeUInt32BE(d, 4 + 4 * i));
  let o = 4 + 4 * dims.length;
  for (const v of values) {
    if (type === 0x08) buf.writeUInt8(v, o);
    else if (type === 0x09) buf.writeInt8(v, o);
    else if (type === 0x0b) buf.writeInt16BE(v, o);
    else if (type === 0x0c) buf.writeInt32BE(v, o);
    else if (type === 0x0d) buf.writeFloatBE(v, o);
    else buf.writeDoubleBE(v, o);
    o += width;
  }
  return buf;
}

let tmp: string;
const savedEnv = process.env.MSGC_DATA;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'msgc-idx-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  if (savedEnv === undefined) delete process.env.MSGC_DATA;
  else process.env.MSGC_DATA = savedEnv;
});
beforeEach(() => {
  delete process.env.MSGC_DATA;
});

function write(rel: string, bytes: Buffer): string {
  const p = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, bytes);
  return p;
}

// 3 images of 2×3 and their labels
const PIX = Array.from({ length: 18 }, (_, i) => (i * 37 + 5) % 256);
const LAB = [7, 0, 9];

describe('parseIdx', () => {
  test('reads the header and the values of every type, big-endian', () => {
    const u8 = parseIdx(idx(0x08, [3, 2, 3], PIX), 'u8');
    expect(u8.dtype).toBe('uint8');
    expect(u8.typeCode).toBe(0x08);
    expect(u8.dims).toEqual([3, 2, 3]);
    expect(Array.from(u8.data)).toEqual(PIX);
    expect(Array.from(parseIdx(idx(0x09, [4], [-128, -1, 0, 127])).data)).toEqual([-128, -1, 0, 127]);
    expect(Array.from(parseIdx(idx(0x0b, [2, 2], [-30000, -2, 1, 30000])).data)).toEqual([-30000, -2, 1, 30000]);
    expect(Array.from(parseIdx(idx(0x0c, [3], [-2147483648, 65536, 2147483647])).data)).toEqual([-2147483648, 65536, 2147483647]);
    expect(Array.from(parseIdx(idx(0x0d, [2], [1.5, -0.25])).data)).toEqual([1.5, -0.25]);
    expect(Array.from(parseIdx(idx(0x0e, [2], [Math.PI, -1e300])).data)).toEqual([Math.PI, -1e300]);
  });

  test('rejects bad magic, missing header, truncation and trailing bytes, naming the source', () => {
    const bad = idx(0x08, [3], [1, 2, 3]);
    bad[0] = 0x12;
    expect(() => parseIdx(bad, 'f.idx')).toThrow(/f\.idx: not an IDX file: bad magic number 0x12000801/);
    const badType = idx(0x08, [3], [1, 2, 3]);
    badType[2] = 0x07;
    expect(() => parseIdx(badType, 'g.idx')).toThrow(/g\.idx: not an IDX file/);
    expect(() => parseIdx(Buffer.from([0, 0]), 'h.idx')).toThrow(/h\.idx: .*too short/);
    expect(() => parseIdx(idx(0x08, [3, 2, 3], PIX).subarray(0, 10), 'i.idx')).toThrow(/i\.idx: truncated IDX header/);
    expect(() => parseIdx(idx(0x08, [3, 2, 3], PIX).subarray(0, 30), 'j.idx')).toThrow(/j\.idx: truncated IDX file: dims \[3, 2, 3\] of uint8 need 34 bytes, the file has 30/);
    expect(() => parseIdx(Buffer.concat([idx(0x08, [3], [1, 2, 3]), Buffer.from([0])]), 'k.idx')).toThrow(/k\.idx: corrupt IDX file: .*1 extra/);
  });
});

describe('IDX files', () => {
  test('plain and gzipped files give the same dataset', () => {
    const rawImg = write('plain/img', idx(0x08, [3, 2, 3], PIX));
    const rawLab = write('plain/lab', idx(0x08, [3], LAB));
    const gzImg = write('gz/img.gz', zlib.gzipSync(idx(0x08, [3, 2, 3], PIX)));
    const gzLab = write('gz/lab.gz', zlib.gzipSync(idx(0x08, [3], LAB)));
    for (const [img, lab] of [[rawImg, rawLab], [gzImg, gzLab]]) {
      const ds = loadIdxDataset(img, lab);
      expect(ds.length).toBe(3);
      expect([ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([1, 2, 3, 10]);
      expect(Array.from(ds.images)).toEqual(PIX);
      expect(Array.from(ds.labels)).toEqual(LAB);
      const s = ds.get(2);
      expect(Array.from(s.image)).toEqual(PIX.slice(12, 18));
      expect(s.label).toBe(9);
    }
    // gzip detection is by content, not by name
    const hidden = write('gz/img-no-suffix', zlib.gzipSync(idx(0x08, [3, 2, 3], PIX)));
    expect(Array.from(readIdx(hidden).data)).toEqual(PIX);
  });

  test('corrupt files: errors name the file', () => {
    const img = write('c/img', idx(0x08, [3, 2, 3], PIX));
    const lab = write('c/lab', idx(0x08, [3], LAB));
    const truncated = write('c/trunc', idx(0x08, [3, 2, 3], PIX).subarray(0, 25));
    expect(() => loadIdxDataset(truncated, lab)).toThrow(new RegExp(`${truncated}: truncated IDX file`));
    const gz = zlib.gzipSync(idx(0x08, [3, 2, 3], PIX));
    const truncGz = write('c/trunc.gz', gz.subarray(0, gz.length - 12));
    expect(() => loadIdxDataset(truncGz, lab)).toThrow(new RegExp(`${truncGz}: corrupt gzip data`));
    // wrong magic: labels (0x801) given as images, images given as labels
    expect(() => loadIdxDataset(lab, lab)).toThrow(new RegExp(`${lab}: expected IDX images \\(magic 0x00000803`));
    expect(() => loadIdxDataset(img, img)).toThrow(new RegExp(`${img}: expected IDX labels \\(magic 0x00000801`));
    // wrong dims: 2-D images, zero-sized images, label count different from the image count
    const flat = write('c/flat', idx(0x08, [3, 6], PIX));
    expect(() => loadIdxDataset(flat, lab)).toThrow(new RegExp(`${flat}: expected IDX images .* 2 dimensions \\[3, 6\\]`));
    const zero = write('c/zero', idx(0x08, [3, 0, 3], []));
    expect(() => loadIdxDataset(zero, lab)).toThrow(new RegExp(`${zero}: bad image dimensions`));
    const twoLabels = write('c/lab2', idx(0x08, [2], [1, 2]));
    expect(() => loadIdxDataset(img, twoLabels)).toThrow(new RegExp(`${twoLabels}: 2 labels for the 3 images of ${img}`));
    // labels out of range
    const bigLabel = write('c/lab10', idx(0x08, [3], [1, 10, 2]));
    expect(() => loadIdxDataset(img, bigLabel)).toThrow(new RegExp(`${bigLabel}: label 10 of item 1 is outside 0..9`));
    const missing = path.join(tmp, 'c/none');
    expect(() => loadIdxDataset(missing, lab)).toThrow(new RegExp(`${missing}: cannot read`));
  });

  test('loadFashionMNIST / loadMNIST find the files in dir, dir/<name>, $MSGC_DATA and $MSGC_DATA/<name>', () => {
    const train = () => [zlib.gzipSync(idx(0x08, [3, 2, 3], PIX)), zlib.gzipSync(idx(0x08, [3], LAB))];
    const test = () => [idx(0x08, [1, 2, 3], PIX.slice(0, 6)), idx(0x08, [1], [4])];
    const [ti, tl] = train();
    write('fm1/train-images-idx3-ubyte.gz', ti);
    write('fm1/train-labels-idx1-ubyte.gz', tl);
    const [ei, el] = test();
    write('fm1/t10k-images-idx3-ubyte', ei);
    write('fm1/t10k-labels-idx1-ubyte', el);
    const tr = loadFashionMNIST({ dir: path.join(tmp, 'fm1'), split: 'train', systemDirs: [] });
    expect(tr.length).toBe(3);
    expect(tr.classNames).toEqual(FASHION_MNIST_CLASSES);
    expect(Array.from(tr.labels)).toEqual(LAB);
    const te = loadFashionMNIST({ dir: path.join(tmp, 'fm1'), split: 'test', systemDirs: [] });
    expect(te.length).toBe(1);
    expect(te.labels[0]).toBe(4);

    // $MSGC_DATA/fashion-mnist
    write('env/fashion-mnist/t10k-images-idx3-ubyte.gz', zlib.gzipSync(ei));
    write('env/fashion-mnist/t10k-labels-idx1-ubyte.gz', zlib.gzipSync(el));
    process.env.MSGC_DATA = path.join(tmp, 'env');
    expect(loadFashionMNIST({ split: 'test', systemDirs: [] }).labels[0]).toBe(4);
    // dir (searched first) wins over $MSGC_DATA
    write('fm2/t10k-images-idx3-ubyte', idx(0x08, [2, 2, 3], PIX.slice(0, 12)));
    write('fm2/t10k-labels-idx1-ubyte', idx(0x08, [2], [5, 6]));
    expect(Array.from(loadFashionMNIST({ dir: path.join(tmp, 'fm2'), split: 'test', systemDirs: [] }).labels)).toEqual([5, 6]);
    // $MSGC_DATA itself, for MNIST (digit class names)
    process.env.MSGC_DATA = path.join(tmp, 'fm2');
    const mn = loadMNIST({ split: 'test', systemDirs: [] });
    expect(Array.from(mn.labels)).toEqual([5, 6]);
    expect(mn.classNames?.[5]).toBe('5');
    expect(() => loadFashionMNIST({ dir: tmp, split: 'validation' as 'test' })).toThrow(/split must be 'train' or 'test'/);
  });

  test('"not found" lists every place searched and how to get the data', () => {
    const dir = path.join(tmp, 'nothing-here');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), ''); // images without labels: not enough
    process.env.MSGC_DATA = path.join(tmp, 'no-such-env-folder');
    const sys = path.join(tmp, 'no-system-folder');
    let message = '';
    try {
      loadFashionMNIST({ dir, split: 'train', systemDirs: [sys] });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^Fashion-MNIST \(train split\) not found\. Looked in:/);
    for (const place of [dir, path.join(dir, 'fashion-mnist'), process.env.MSGC_DATA, path.join(process.env.MSGC_DATA, 'fashion-mnist'), sys]) {
      expect(message).toContain(`  ${place} (`);
    }
    expect(message).toContain(`${dir} (no train-labels-idx1-ubyte[.gz])`);
    expect(message).toContain('apt-get install dataset-fashion-mnist');
    expect(message).toContain('--data');
    expect(message).toContain('MSGC_DATA');

    delete process.env.MSGC_DATA;
    let m2 = '';
    try {
      loadMNIST({ split: 'test', systemDirs: [sys] });
    } catch (err) {
      m2 = (err as Error).message;
    }
    expect(m2).toContain('MNIST (test split) not found');
    expect(m2).toContain(`  ${sys} (no such folder)`);
    expect(m2).toContain('no --data / dir was given; MSGC_DATA is not set');
  });
});

const SYSTEM = '/usr/share/datasets/fashion-mnist';
const haveSystem = fs.existsSync(path.join(SYSTEM, 'train-images-idx3-ubyte.gz'));
if (!haveSystem) {
  // eslint-disable-next-line no-console
  console.log(`data-idx.test.ts: ${SYSTEM} is absent (apt-get install dataset-fashion-mnist); skipping the real Fashion-MNIST checks`);
}

(haveSystem ? describe : describe.skip)('the real Fashion-MNIST (/usr/share/datasets/fashion-mnist)', () => {
  test('train: 60000 28×28 images, 6000 per class, first label 9 (Ankle boot), mean/std as published', () => {
    const ds = loadFashionMNIST({ split: 'train' }); // found through the system folder
    expect(ds.length).toBe(60000);
    expect([ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([1, 28, 28, 10]);
    expect(ds.labels[0]).toBe(9);
    expect(ds.classNames?.[ds.labels[0]]).toBe('Ankle boot');
    const counts = new Array(10).fill(0);
    for (const l of ds.labels) counts[l]++;
    expect(counts).toEqual(new Array(10).fill(6000));
    let sum = 0;
    let sq = 0;
    for (const v of ds.images) {
      sum += v;
      sq += v * v;
    }
    const n = ds.images.length;
    const mean = sum / n / 255;
    const std = Math.sqrt(sq / n / 65025 - mean * mean);
    expect(Math.abs(mean - FASHION_MNIST_MEAN[0])).toBeLessThan(5e-5);
    expect(Math.abs(std - FASHION_MNIST_STD[0])).toBeLessThan(5e-5);
  });

  test('test: 10000 images, 1000 per class', () => {
    const ds = loadFashionMNIST({ split: 'test' });
    expect(ds.length).toBe(10000);
    expect([ds.height, ds.width]).toEqual([28, 28]);
    const counts = new Array(10).fill(0);
    for (const l of ds.labels) counts[l]++;
    expect(counts).toEqual(new Array(10).fill(1000));
  });
});

(haveSystem ? test : test.skip)('loadDataset("fashion-mnist") + DataLoader: normalized batches of the real data', async () => {
  const { dataset, transform, evalTransform, mean, std } = await loadDataset('fashion-mnist', { split: 'test' });
  expect(transform).toBe(evalTransform);
  expect([mean, std]).toEqual([[0.286], [0.353]]);
  const loader = new DataLoader(dataset, { batchSize: 1000, transform });
  expect(loader.length).toBe(10);
  let sum = 0;
  let sq = 0;
  let n = 0;
  for await (const { x } of loader) {
    const v = x.toFloat32Array();
    for (const a of v) {
      sum += a;
      sq += a * a;
    }
    n += v.length;
    x.dispose();
  }
  // the test split has nearly the training statistics: normalized mean ≈ 0, std ≈ 1
  expect(Math.abs(sum / n)).toBeLessThan(0.02);
  expect(Math.abs(Math.sqrt(sq / n - (sum / n) ** 2) - 1)).toBeLessThan(0.02);
});
