// Byte sources: what the loaders read checkpoints from, without knowing whether the bytes sit in a
// file (Node), an ArrayBuffer, a user-picked File/Blob or behind a URL. Only web-standard APIs
// here (Blob, fetch, TextDecoder), so this module runs in browsers and in Node alike; the Node
// file source lives in files.ts.
import { TypelensError } from '../errors.js';

/**
 * A random-access read-only run of bytes. `read` returns exactly `length` bytes from `offset`
 * (a TypelensError naming `name` when they are not there); the result may be a view into memory
 * the source keeps, so callers must not write to it unless `fresh` is true.
 */
export interface ByteSource {
  /** What error messages call the source: a path, a URL, a file name. */
  readonly name: string;
  /** Total bytes (may exceed 2 GiB: reads are ranged, never one giant buffer). */
  readonly size: number;
  /** True when every read returns a new buffer the caller owns (it may be kept and modified). */
  readonly fresh?: boolean;
  read(offset: number, length: number): Uint8Array;
  /** Release the underlying handle (later reads throw). Optional: memory sources need none. */
  close?(): void;
}

/** The same, for sources that can only be read asynchronously (Blob, URL). */
export interface AsyncByteSource {
  readonly name: string;
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  close?(): void;
}

/** Bytes done of total while reading a source (total 0 when unknown). */
export type ByteProgress = (done: number, total: number) => void;

const outOfRange = (name: string, offset: number, length: number, size: number): never => {
  throw new TypelensError(
    `${name}: read of ${length} bytes at ${offset} runs past the end (${size} bytes; truncated?)`,
    'EFORMAT',
  );
};

const checkRange = (name: string, offset: number, length: number, size: number): void => {
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0))
    throw new TypelensError(`${name}: bad read range offset ${offset}, length ${length}`, 'EINVAL');
  if (offset + length > size) outOfRange(name, offset, length, size);
};

/** Bytes already in memory (an ArrayBuffer, a typed array, a Node Buffer): reads are zero-copy views. */
export function memorySource(bytes: ArrayBuffer | ArrayBufferView, name = '<buffer>'): ByteSource {
  const u8 =
    bytes instanceof ArrayBuffer
      ? new Uint8Array(bytes)
      : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    name,
    size: u8.length,
    read(offset, length) {
      checkRange(name, offset, length, u8.length);
      return u8.subarray(offset, offset + length);
    },
  };
}

/** A File or Blob (a user-picked or dropped file): reads slice it, so only the ranges asked for are loaded. */
export function blobSource(blob: Blob, name?: string): AsyncByteSource {
  const label = name ?? (blob as Blob & { name?: string }).name ?? '<blob>';
  return {
    name: label,
    size: blob.size,
    async read(offset, length) {
      checkRange(label, offset, length, blob.size);
      const buf = await blob.slice(offset, offset + length).arrayBuffer();
      if (buf.byteLength !== length) outOfRange(label, offset, length, blob.size);
      return new Uint8Array(buf);
    },
  };
}

/** A synchronous source seen through the async interface. */
export function asAsyncSource(src: ByteSource): AsyncByteSource {
  return {
    name: src.name,
    size: src.size,
    read: async (offset, length) => src.read(offset, length),
    close: src.close && (() => src.close!()),
  };
}

const CHUNK = 16 << 20;

/**
 * Read a whole async source into memory in 16 MiB chunks (progress per chunk) and return it as
 * a synchronous source. The loaders parse synchronously; this is the one buffer an async source
 * costs (one copy of the file, released with the returned source).
 */
export async function readIntoMemory(src: AsyncByteSource, onProgress?: ByteProgress): Promise<ByteSource> {
  let out: Uint8Array;
  try {
    out = new Uint8Array(src.size);
  } catch {
    throw new TypelensError(`${src.name}: cannot allocate ${src.size} bytes to hold it`, 'ENOMEM');
  }
  onProgress?.(0, src.size);
  for (let off = 0; off < src.size; off += CHUNK) {
    const n = Math.min(CHUNK, src.size - off);
    out.set(await src.read(off, n), off);
    onProgress?.(off + n, src.size);
  }
  return memorySource(out, src.name);
}

/** The text of a source (a config.json), decoded as UTF-8. */
export function sourceText(src: ByteSource): string {
  return new TextDecoder('utf-8').decode(src.read(0, src.size));
}

export interface UrlOptions {
  onProgress?: ByteProgress;
  /** The fetch to use (defaults to the global one). */
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

/**
 * Download a URL into memory, streamed with progress (Content-Length gives the total; without
 * it chunks are gathered and joined once). HTTP errors and network failures name the URL.
 */
export async function fetchBytes(url: string, opts: UrlOptions = {}): Promise<Uint8Array> {
  const f = opts.fetch ?? globalThis.fetch;
  let res: Response;
  try {
    res = await f(url, { signal: opts.signal });
  } catch (e) {
    throw new TypelensError(`cannot download ${url}: ${(e as Error).message}`, 'EFETCH');
  }
  if (!res.ok) throw new TypelensError(`cannot download ${url}: HTTP ${res.status} ${res.statusText}`, 'EFETCH');
  const declared = Number(res.headers.get('content-length') ?? NaN);
  const total = Number.isSafeInteger(declared) && declared >= 0 ? declared : 0;
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  let out: Uint8Array | null = total ? new Uint8Array(total) : null;
  const parts: Uint8Array[] = [];
  let done = 0;
  opts.onProgress?.(0, total);
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    const chunk = r.value;
    if (out && done + chunk.length <= out.length) out.set(chunk, done);
    else {
      if (out) parts.push(out.subarray(0, done)); // more than declared: fall back to gathering
      out = null;
      parts.push(chunk);
    }
    done += chunk.length;
    opts.onProgress?.(done, total);
  }
  if (out) {
    if (done !== out.length)
      throw new TypelensError(`cannot download ${url}: got ${done} of ${out.length} bytes (truncated)`, 'EFETCH');
    return out;
  }
  const joined = new Uint8Array(done);
  let o = 0;
  for (const p of parts) joined.set(p, (o += p.length) - p.length);
  return joined;
}

/** A URL downloaded into memory (with progress) as a source named by the URL. */
export async function urlSource(url: string, opts: UrlOptions = {}): Promise<ByteSource> {
  return memorySource(await fetchBytes(url, opts), url);
}
