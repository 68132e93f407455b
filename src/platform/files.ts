// Node's file system, the one place the library reads and writes files (a browser build swaps this
// module for files-browser.ts, which has the same exports). Everything above platform/ takes files
// through these functions or, better, through a ByteSource (byte-source.ts).
import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { TypelensError } from '../errors.js';
import type { ByteSource } from './byte-source.js';

/** This build reads and writes files by path (false in the browser build). */
export const HAS_FILE_SYSTEM = true;

export const joinPath = (...parts: string[]): string => join(...parts);
export const resolvePath = (...parts: string[]): string => resolve(...parts);
export const parentDir = (path: string): string => dirname(path);
export const fileExists = (path: string): boolean => existsSync(path);
/** Size in bytes, or -1 when there is no such file. */
export const fileSize = (path: string): number => (existsSync(path) ? statSync(path).size : -1);
export const removePath = (path: string): void => rmSync(path, { recursive: true, force: true });
export const renamePath = (from: string, to: string): void => renameSync(from, to);
export const makeDir = (path: string): void => void mkdirSync(path, { recursive: true });

const cannotRead = (path: string, e: unknown): never => {
  throw new TypelensError(
    `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    'ENOENT',
  );
};

/** A whole (small) file as UTF-8 text; a missing or unreadable file names itself. */
export function readTextFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    return cannotRead(path, e);
  }
}

const closeOnCollect = new FinalizationRegistry<number>((fd) => {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
});

/**
 * A file opened for ranged reads: each read(offset, length) is a positioned read into a fresh
 * buffer, so files over 2 GiB (which readFileSync refuses) are read piece by piece. The file stays
 * open (a rename over it does not change what is read) until close() or garbage collection.
 */
export function fileSource(path: string): ByteSource & { close(): void } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    return cannotRead(path, e);
  }
  let size: number;
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    size = st.size;
  } catch (e) {
    closeSync(fd);
    return cannotRead(path, e);
  }
  let open = true;
  const token = {};
  closeOnCollect.register(token, fd, token);
  return {
    name: path,
    size,
    fresh: true,
    read(offset, length) {
      if (!open) throw new TypelensError(`${path}: the file was closed`, 'EIO');
      const out = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        // readSync takes at most 2 GiB at a time
        let k: number;
        try {
          k = readSync(fd, out, got, Math.min(length - got, 1 << 30), offset + got);
        } catch (e) {
          return cannotRead(path, e);
        }
        if (k === 0)
          throw new TypelensError(
            `${path}: file ended at byte ${offset + got} while reading ${length} bytes from ${offset} (truncated?)`,
            'EFORMAT',
          );
        got += k;
      }
      return out;
    },
    close() {
      if (!open) return;
      open = false;
      closeOnCollect.unregister(token);
      closeSync(fd);
    },
  };
}

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
    const chunks =
      typeof data === 'string' ? [new TextEncoder().encode(data)] : data instanceof Uint8Array ? [data] : data;
    for (const c of chunks) {
      for (let off = 0; off < c.length;) off += writeSync(fd, c, off, c.length - off);
    }
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

/**
 * Build a folder beside `dir` with `fill(tmpDir)` and rename it into place: `dir` is complete or
 * absent. An existing `dir` is replaced only once the new one is whole (moved aside, then removed).
 */
export function writeDirAtomic(dir: string, fill: (tmp: string) => void): void {
  mkdirSync(dirname(dir), { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    fill(tmp);
    if (existsSync(dir)) {
      const old = `${dir}.old-${process.pid}-${Date.now()}`;
      renameSync(dir, old);
      renameSync(tmp, dir);
      rmSync(old, { recursive: true, force: true });
    } else renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e instanceof TypelensError ? e : new TypelensError(`cannot write ${dir}: ${(e as Error).message}`, 'EIO');
  }
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Uint8Array);
  return h.digest('hex');
}

/** A file written chunk by chunk (appending or from scratch), with backpressure. */
export interface ChunkWriter {
  write(chunk: Uint8Array): Promise<void>;
  end(): Promise<void>;
}

export function openChunkWriter(path: string, append: boolean): ChunkWriter {
  const out = createWriteStream(path, { flags: append ? 'a' : 'w' });
  return {
    write: (chunk) => (out.write(chunk) ? Promise.resolve() : new Promise<void>((r) => out.once('drain', () => r()))),
    end: () => new Promise<void>((r) => out.end(r)),
  };
}
