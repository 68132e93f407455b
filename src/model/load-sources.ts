// Checkpoints from sources a browser has: Files/Blobs a user picked, URLs, ArrayBuffers. The async
// part is only getting the bytes (read into memory, with progress); parsing and processing are the
// same synchronous loader Node's folders go through, so the same bytes give the same model.
import { TypelensError } from '../errors.js';
import type { AsyncByteSource, ByteSource } from '../platform/byte-source.js';
import { blobSource, fetchBytes, readIntoMemory } from '../platform/byte-source.js';
import { SHARD_INDEX } from '../tensor/safetensors-sharded.js';
import { parseShardIndex } from '../tensor/safetensors-sharded.js';
import type { CheckpointFiles, FileContents } from './load.js';
import { memoryFiles } from './load.js';

/** Anything a file of a checkpoint may be given as, in a browser or in Node. */
export type AsyncFileContents = FileContents | AsyncByteSource | Blob | URL;

/** Bytes read so far of one file, and its size (0 when unknown). */
export type FileProgress = (file: string, done: number, total: number) => void;

const isAsyncSource = (f: unknown): f is AsyncByteSource =>
  typeof f === 'object' && f !== null && 'read' in f && 'size' in f && 'name' in f;

/** Read one file's contents into memory (Blobs sliced in chunks, URLs streamed), with progress. */
async function toMemory(name: string, f: AsyncFileContents, onProgress?: FileProgress): Promise<FileContents> {
  const tick = onProgress && ((d: number, t: number) => onProgress(name, d, t));
  if (f instanceof URL) return fetchBytes(f.href, { onProgress: tick });
  if (typeof Blob !== 'undefined' && f instanceof Blob) return readIntoMemory(blobSource(f, name), tick);
  if (typeof f === 'string' || f instanceof ArrayBuffer || ArrayBuffer.isView(f)) return f;
  const src = f as ByteSource | AsyncByteSource;
  const probe = src.read(0, 0);
  if (probe instanceof Promise && isAsyncSource(src)) return readIntoMemory(src, tick);
  return src as ByteSource;
}

/** Gather files given in any form into in-memory CheckpointFiles (async sources are read whole). */
export async function readFilesAsync(
  files: Record<string, AsyncFileContents>,
  onProgress?: FileProgress,
  where = '<memory>',
): Promise<CheckpointFiles> {
  const out: Record<string, FileContents> = {};
  for (const [name, f] of Object.entries(files)) out[name] = await toMemory(name, f, onProgress);
  return memoryFiles(out, where);
}

/**
 * A checkpoint served under a base URL (HF's resolve/<rev>/ or a static folder): config.json, then
 * model.safetensors, or model.safetensors.index.json and its shards when the single file is absent
 * (HTTP 404). Each file is streamed with progress.
 */
export async function fetchCheckpointFiles(
  baseUrl: string,
  opts: { onProgress?: FileProgress; fetch?: typeof fetch } = {},
): Promise<CheckpointFiles> {
  const base = baseUrl.replace(/\/+$/, '');
  const get = (name: string) =>
    fetchBytes(`${base}/${name}`, {
      fetch: opts.fetch,
      onProgress: opts.onProgress && ((d, t) => opts.onProgress!(name, d, t)),
    });
  const files: Record<string, FileContents> = { 'config.json': await get('config.json') };
  try {
    files['model.safetensors'] = await get('model.safetensors');
  } catch (e) {
    if (!(e instanceof TypelensError && / HTTP 404 /.test(e.message))) throw e;
    const index = await get(SHARD_INDEX);
    files[SHARD_INDEX] = index;
    const shards = new Set(parseShardIndex(new TextDecoder().decode(index), `${base}/${SHARD_INDEX}`).values());
    for (const shard of shards) files[shard] = await get(shard);
  }
  return memoryFiles(files, base);
}
