// The browser build's stand-in for files.ts (same exports): a page has no file system, so every
// path-based call fails with one clear line pointing at the byte-source entry points instead.
import { TypelensError } from '../errors.js';
import type { ByteSource } from './byte-source.js';
import type { ChunkWriter } from './files.js';

export type { ChunkWriter } from './files.js';

/** This build reads and writes files by path (false in the browser build). */
export const HAS_FILE_SYSTEM = false;

const noFs = (what: string): never => {
  throw new TypelensError(
    `${what} needs a file system, which a browser does not have: load from an ArrayBuffer, a File/Blob or a URL ` +
      '(HookedTransformer.fromSources / fromSourcesAsync, memorySource, blobSource, urlSource)',
    'EPLATFORM',
  );
};

const trimSlashes = (s: string) => s.replace(/\/+$/, '');
export const joinPath = (...parts: string[]): string =>
  parts
    .filter((p) => p !== '')
    .map(trimSlashes)
    .join('/');
export const resolvePath = (...parts: string[]): string => joinPath(...parts);
export const parentDir = (path: string): string => path.replace(/\/[^/]*$/, '') || '/';
export const fileExists = (_path: string): boolean => false;
export const fileSize = (_path: string): number => -1;
export const removePath = (path: string): void => noFs(`removing ${path}`);
export const renamePath = (from: string, _to: string): void => noFs(`renaming ${from}`);
export const makeDir = (path: string): void => noFs(`creating ${path}`);
export const readTextFile = (path: string): string => noFs(`reading ${path}`);
export const fileSource = (path: string): ByteSource & { close(): void } => noFs(`reading ${path}`);
export const writeFileAtomic = (
  path: string,
  _data: string | Uint8Array | readonly Uint8Array[],
  _opts: { createDir?: boolean } = {},
): void => noFs(`writing ${path}`);
export const writeDirAtomic = (dir: string, _fill: (tmp: string) => void): void => noFs(`writing ${dir}`);
export const sha256File = async (path: string): Promise<string> => noFs(`hashing ${path}`);
export const openChunkWriter = (path: string, _append: boolean): ChunkWriter => noFs(`writing ${path}`);
