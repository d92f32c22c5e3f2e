// atomic.ts: crash-safe file replacement. The bytes go to a temporary file in the same directory, which is
// flushed and then renamed over the target (and the directory flushed), so an interrupted write leaves the
// previous file intact and no temporary file behind.
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

/** Writes `bytes` to `file` atomically; `fail` turns a failure description into the thrown error. */
export function writeFileAtomic(file: string, bytes: Uint8Array, fail: (what: string) => never): void {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'wx');
    let written = 0;
    while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== null) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* it may not exist */
    }
    fail(`save failed, previous file left unchanged (${err instanceof Error ? err.message : String(err)})`);
  }
  syncDirectory(path.dirname(path.resolve(file)), fail);
}

/** Flushes a directory entry (the rename) to disk; skipped where the platform cannot fsync directories. */
function syncDirectory(dir: string, fail: (what: string) => never): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const unsupported = process.platform === 'win32' || code === 'EISDIR' || code === 'EINVAL' || code === 'ENOTSUP' || code === 'EPERM';
    if (!unsupported) fail(`saved, but flushing the directory ${dir} failed (${err instanceof Error ? err.message : String(err)})`);
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/** Writes JSON atomically (pretty-printed, trailing newline). */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, Buffer.from(`${JSON.stringify(value, null, 2)}\n`, 'utf8'), (what) => {
    throw new Error(`${file}: ${what}`);
  });
}
