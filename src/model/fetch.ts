import { TypelensError } from '../errors.js';
import {
  fileSize,
  joinPath as join,
  makeDir,
  openChunkWriter,
  removePath,
  renamePath,
  sha256File,
  writeFileAtomic,
} from '../platform/files.js';

export interface PinnedFile {
  name: string;
  sha256: string;
  size?: number;
}
export interface PinnedCheckpoint {
  repo: string;
  revision: string;
  files: PinnedFile[];
}

/** HuggingFace openai-community/gpt2 at a fixed revision, with the sizes and hashes to expect. */
export const CHECKPOINTS: Record<string, PinnedCheckpoint> = {
  'gpt2-small': {
    repo: 'openai-community/gpt2',
    revision: '607a30d783dfa663caf39e06633721c8d4cfcd7e',
    files: [
      { name: 'config.json', sha256: '0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4' },
      {
        name: 'model.safetensors',
        size: 548_105_171,
        sha256: '248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707',
      },
    ],
  },
};

export interface FetchOptions {
  dir: string;
  baseUrl?: string;
  /** Bytes so far and expected (0 when unknown), per file. */
  onProgress?: (file: string, done: number, total: number) => void;
  /** Abort when no byte arrives for this long (a stalled connection); the partial file is kept for resuming. */
  idleTimeoutMs?: number;
}

const PARTIAL = '.partial';

/**
 * Download one file to `dest`: bytes go to `dest.partial`, resumed with a Range request when a
 * partial file exists (restarted if the server ignores the range), and `dest` appears only after
 * the size and sha256 check out.
 */
async function fetchFile(url: string, dest: string, want: PinnedFile, opts: FetchOptions): Promise<void> {
  const part = dest + PARTIAL;
  let have = Math.max(0, fileSize(part));
  if (want.size !== undefined && have > want.size) {
    removePath(part);
    have = 0;
  }
  const ctrl = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const idle = opts.idleTimeoutMs ?? 60_000;
  const poke = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ctrl.abort(new Error('stalled')), idle);
  };
  poke();
  try {
    if (want.size === undefined || have < want.size) {
      let res: Response;
      try {
        res = await fetch(url, {
          headers: have ? { Range: `bytes=${have}-` } : {},
          signal: ctrl.signal,
          redirect: 'follow',
        });
      } catch (e) {
        throw new TypelensError(
          `cannot download ${url}: ${ctrl.signal.aborted ? `no data for ${idle} ms` : ((e as Error).cause ?? (e as Error).message)}`,
          'EFETCH',
        );
      }
      if (res.status === 416 && have) {
        await res.body?.cancel();
        removePath(part);
        return fetchFile(url, dest, want, opts);
      }
      if (!res.ok) throw new TypelensError(`cannot download ${url}: HTTP ${res.status} ${res.statusText}`, 'EFETCH');
      const resumed = res.status === 206;
      if (!resumed) have = 0; // the server sent the whole file: start over
      const length = Number(res.headers.get('content-length') ?? NaN);
      const total = want.size ?? (Number.isFinite(length) ? have + length : 0);
      const out = openChunkWriter(part, resumed);
      let done = have;
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          poke();
          await out.write(chunk);
          done += chunk.length;
          opts.onProgress?.(want.name, done, total);
        }
      } catch (e) {
        throw new TypelensError(
          `download of ${want.name} interrupted after ${done} bytes (${ctrl.signal.aborted ? `no data for ${idle} ms` : (e as Error).message}); ` +
            'run the same command again to resume',
          'EFETCH',
        );
      } finally {
        await out.end();
      }
    }
  } finally {
    clearTimeout(timer);
  }
  const size = fileSize(part);
  if (want.size !== undefined && size !== want.size) {
    if (size > want.size) removePath(part);
    throw new TypelensError(
      `${want.name}: got ${size} bytes, expected ${want.size}${size < want.size ? ' (truncated; run again to resume)' : ''}`,
      'EFETCH',
    );
  }
  const digest = await sha256File(part);
  if (digest !== want.sha256) {
    removePath(part);
    throw new TypelensError(
      `${want.name}: sha256 ${digest} does not match the pinned ${want.sha256}; the download was discarded`,
      'EFETCH',
    );
  }
  renamePath(part, dest);
}

/**
 * Download a pinned checkpoint (config.json + model.safetensors) into `dir`. Files already there
 * with the right hash are kept; nothing is ever left half-written under its final name.
 */
export async function fetchWeights(ckpt: PinnedCheckpoint, opts: FetchOptions): Promise<string[]> {
  const base = (opts.baseUrl ?? 'https://huggingface.co').replace(/\/+$/, '');
  try {
    makeDir(opts.dir);
  } catch (e) {
    throw new TypelensError(`cannot create ${opts.dir}: ${(e as Error).message}`, 'EIO');
  }
  const written: string[] = [];
  for (const f of ckpt.files) {
    const dest = join(opts.dir, f.name);
    if (
      fileSize(dest) >= 0 &&
      (f.size === undefined || fileSize(dest) === f.size) &&
      (await sha256File(dest)) === f.sha256
    )
      continue;
    await fetchFile(`${base}/${ckpt.repo}/resolve/${ckpt.revision}/${f.name}`, dest, f, opts);
    written.push(dest);
  }
  writeFileAtomic(
    join(opts.dir, 'typelens-source.json'),
    JSON.stringify({ repo: ckpt.repo, revision: ckpt.revision, files: ckpt.files }, null, 2) + '\n',
  );
  return written;
}
