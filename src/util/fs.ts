import { closeSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { TypelensError } from '../errors.js';

/**
 * Write a file through a temp file in the same folder and a rename: never half-written. Data may
 * come in chunks (large files are written without concatenating them first). The folder is
 * created unless `createDir` is false.
 */
export function writeFileAtomic(
  path: string,
  data: string | Uint8Array | readonly Uint8Array[],
  opts: { createDir?: boolean } = {},
): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd: number | null = null;
  try {
    if (opts.createDir ?? true) mkdirSync(dirname(path), { recursive: true });
    fd = openSync(tmp, 'w');
    const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
    for (const c of chunks) writeSync(fd, c);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== null)
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
    rmSync(tmp, { force: true });
    throw new TypelensError(`cannot write ${path}: ${(e as Error).message}`, 'EIO');
  }
}
