// Sharded safetensors checkpoints (HF's model.safetensors.index.json): one index naming, for each
// tensor, the shard file that holds it. The shards open lazily through a caller-given opener, so
// this module knows nothing of files, URLs or buffers.
import { TypelensError } from '../errors.js';
import type { ByteSource } from '../platform/byte-source.js';
import { openSafetensorsSource, StEntry, StLazyFile } from './safetensors.js';

/** HF's index file name beside the shards. */
export const SHARD_INDEX = 'model.safetensors.index.json';

const fail = (path: string, msg: string): never => {
  throw new TypelensError(`${path}: ${msg}`, 'EFORMAT');
};

/** The index's weight_map (tensor -> shard file name), validated: plain file names only. */
export function parseShardIndex(text: string, indexPath: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(indexPath, `not valid JSON (${(e as Error).message})`);
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map))
    fail(indexPath, 'no "weight_map" object (HF sharded index: {"weight_map": {tensor: shard file}})');
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    // a shard is a file beside the index: no folders, no way out of the checkpoint's folder
    if (typeof file !== 'string' || file === '' || /[/\\]/.test(file) || file === '.' || file === '..')
      fail(indexPath, `tensor "${name}": shard ${JSON.stringify(file)} is not a file name beside the index`);
    out.set(name, file as string);
  }
  if (out.size === 0) fail(indexPath, 'weight_map lists no tensors');
  return out;
}

/**
 * Open every shard an index names and present them as one file. Each shard's header is read and
 * validated; a tensor the index places in a shard that lacks it, a tensor found in two shards, or
 * a missing shard file is an error naming the files. `open(file)` gives a shard's bytes.
 */
export function openShardedSafetensors(
  indexText: string,
  indexPath: string,
  open: (file: string) => ByteSource,
): StLazyFile {
  const weightMap = parseShardIndex(indexText, indexPath);
  const shards = new Map<string, StLazyFile>();
  const closeAll = () => shards.forEach((s) => s.close());
  const entries = new Map<string, StEntry>(),
    owner = new Map<string, StLazyFile>();
  try {
    for (const file of new Set(weightMap.values())) shards.set(file, openSafetensorsSource(open(file)));
    for (const [name, file] of weightMap) {
      const shard = shards.get(file)!;
      if (!shard.entries.has(name)) fail(indexPath, `lists tensor "${name}" in ${shard.path}, which does not hold it`);
    }
    for (const shard of shards.values()) {
      for (const [name, e] of shard.entries) {
        const prev = owner.get(name);
        if (prev) fail(indexPath, `tensor "${name}" is in both ${prev.path} and ${shard.path}`);
        owner.set(name, shard);
        entries.set(name, e);
      }
    }
  } catch (e) {
    closeAll();
    throw e;
  }
  const first = shards.values().next().value as StLazyFile;
  return {
    path: indexPath,
    metadata: first.metadata,
    entries,
    fresh: [...shards.values()].every((s) => s.fresh),
    bytes(name: string) {
      const shard = owner.get(name);
      if (!shard) throw new TypelensError(`${indexPath}: no tensor "${name}" in any shard`, 'EMISSING');
      return shard.bytes(name);
    },
    close: closeAll,
  };
}
