import type { ByteSource } from '../platform/byte-source.js';
import { memorySource } from '../platform/byte-source.js';
import { fileSource, writeFileAtomic } from '../platform/files.js';
import { TypelensError } from '../errors.js';
import { bf16ToF32, f16ToF32 } from './dtype.js';

/** The dtypes a GPT-2 checkpoint can come in; all are read into f32 (F64 is narrowed). */
export type StDType = 'F32' | 'F16' | 'BF16' | 'F64';
const DSIZE: Record<StDType, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

export interface StEntry {
  dtype: StDType;
  shape: number[];
  begin: number;
  end: number;
}
export interface StFile {
  path: string;
  metadata: Record<string, string>;
  entries: Map<string, StEntry>;
  /** Raw bytes of one tensor (little-endian, as stored); a view the caller must not write unless `fresh`. */
  bytes(name: string): Uint8Array;
  /** True when bytes() returns a new buffer each call (decoders may then keep it instead of copying). */
  fresh?: boolean;
}

const MAX_HEADER = 100 * 1024 * 1024; // safetensors' own limit

const fail = (path: string, msg: string): never => {
  throw new TypelensError(`${path}: ${msg}`, 'EFORMAT');
};

/**
 * Parse a safetensors buffer with strict validation: header inside the file, valid JSON,
 * known dtypes, integer shapes, offsets inside the data area, no overlaps or gaps, and byte
 * length = dtype size x product(shape). Every violation names the file and the tensor.
 */
export function parseSafetensors(buf: Uint8Array, path = '<buffer>'): StFile {
  return openSafetensorsSource(memorySource(buf, path));
}

/** The header length from the first 8 bytes, checked against the file's size and safetensors' limit. */
function headerLength(hlen: bigint, fileLen: number, path: string): number {
  if (hlen > BigInt(fileLen - 8)) fail(path, `header length ${hlen} is larger than the file (${fileLen} bytes)`);
  if (hlen > BigInt(MAX_HEADER)) fail(path, `header length ${hlen} exceeds the ${MAX_HEADER}-byte limit`);
  return Number(hlen);
}

/** Parse and validate the JSON header of a file of `fileLen` bytes (the bytes after the 8-byte length). */
function parseHeader(
  hbytes: Uint8Array,
  fileLen: number,
  path: string,
): { metadata: Record<string, string>; entries: Map<string, StEntry>; dataStart: number } {
  const n = hbytes.length;
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(hbytes));
  } catch (e) {
    fail(path, `header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail(path, 'header is not a JSON object');
  const dup = duplicateTopLevelKey(new TextDecoder().decode(hbytes));
  if (dup !== null) fail(path, `tensor "${dup}" is listed twice in the header`);
  const dataStart = 8 + n;
  const dataLen = fileLen - dataStart;
  const entries = new Map<string, StEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `tensor "${name}"`;
    if (typeof e !== 'object' || e === null) fail(path, `${where}: entry is not an object`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DSIZE))
      fail(path, `${where}: unsupported dtype ${JSON.stringify(e.dtype)} (F32, F16, BF16, F64 are read)`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail(path, `${where}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((d) => Number.isSafeInteger(d) && d >= 0) ||
      off[0] > off[1]
    ) {
      fail(path, `${where}: data_offsets ${JSON.stringify(off)} are not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = off as number[];
    if (end > dataLen)
      fail(path, `${where}: data_offsets [${begin}, ${end}] run past the data area (${dataLen} bytes)`);
    const dtype = e.dtype as StDType;
    const shape = e.shape as number[];
    const want = shape.reduce((a, b) => a * b, 1) * DSIZE[dtype];
    if (end - begin !== want)
      fail(path, `${where}: ${end - begin} bytes but ${dtype}[${shape.join(', ')}] needs ${want}`);
    entries.set(name, { dtype, shape, begin, end });
  }
  const sorted = [...entries.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i][1].begin < sorted[i - 1][1].end)
      fail(path, `tensors "${sorted[i - 1][0]}" and "${sorted[i][0]}" overlap`);
  }
  return { metadata, entries, dataStart };
}

/** A safetensors file opened for reading tensor by tensor: only the header is read up front. */
export interface StLazyFile extends StFile {
  /** Close the underlying source (later reads throw). Files are also closed on garbage collection. */
  close(): void;
}

/**
 * Read a safetensors header from any byte source (validated as parseSafetensors does); each
 * `bytes(name)` then reads that one tensor's range. Only the header and the tensors asked for are
 * ever in memory, so files over 2 GiB load piece by piece.
 */
export function openSafetensorsSource(src: ByteSource): StLazyFile {
  const path = src.name,
    fileLen = src.size;
  if (fileLen < 8) fail(path, `file is ${fileLen} bytes, shorter than the 8-byte header length`);
  const lenBytes = src.read(0, 8);
  const n = headerLength(new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true), fileLen, path);
  const { metadata, entries, dataStart } = parseHeader(src.read(8, n), fileLen, path);
  return {
    path,
    metadata,
    entries,
    fresh: src.fresh,
    bytes(name: string) {
      const e = entries.get(name);
      if (!e) throw new TypelensError(`${path}: no tensor "${name}"`, 'EMISSING');
      return src.read(dataStart + e.begin, e.end - e.begin);
    },
    close() {
      src.close?.();
    },
  };
}

/**
 * Open a safetensors file and read only its header; each `bytes(name)` then reads that one tensor
 * from the open file into a fresh buffer. The file stays open (so a rename over it does not change
 * what is read) until close() or garbage collection.
 */
export function openSafetensors(path: string): StLazyFile {
  const src = fileSource(path);
  try {
    return openSafetensorsSource(src);
  } catch (e) {
    src.close();
    throw e;
  }
}

/** JSON.parse keeps the last of repeated keys silently; scan the object's own keys for repeats. */
function duplicateTopLevelKey(json: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const raw = json.slice(i, j + 1);
      i = j;
      if (depth === 1) {
        let k = i + 1;
        while (/\s/.test(json[k] ?? '')) k++;
        if (json[k] === ':') {
          const key = JSON.parse(raw) as string;
          if (seen.has(key)) return key;
          seen.add(key);
        }
      }
    }
  }
  return null;
}

/**
 * A safetensors file on disk, read by ranges (see openSafetensors): never the whole file in one
 * buffer, so files over 2 GiB read too.
 */
export function readSafetensors(path: string): StFile {
  return openSafetensors(path);
}

/** Decode one tensor to f32 (F64 narrowed, F16/BF16 widened). */
export function tensorF32(f: StFile, name: string): Float32Array {
  const e = f.entries.get(name);
  if (!e) throw new TypelensError(`${f.path}: no tensor "${name}"`, 'EMISSING');
  const raw = f.bytes(name);
  const n = raw.length / DSIZE[e.dtype];
  // a fresh, aligned buffer is ours to view; a view into someone's memory is copied (and aligned)
  const copy = f.fresh && raw.byteOffset % 8 === 0 ? raw : new Uint8Array(raw);
  switch (e.dtype) {
    case 'F32':
      return new Float32Array(copy.buffer, copy.byteOffset, n);
    case 'F64':
      return Float32Array.from(new Float64Array(copy.buffer, copy.byteOffset, n));
    case 'BF16':
      return bf16ToF32(new Uint16Array(copy.buffer, copy.byteOffset, n));
    case 'F16':
      return f16ToF32(new Uint16Array(copy.buffer, copy.byteOffset, n));
  }
}

/** Also F64 exactly (fixtures are float64). */
export function tensorF64(f: StFile, name: string): Float64Array {
  const e = f.entries.get(name);
  if (!e) throw new TypelensError(`${f.path}: no tensor "${name}"`, 'EMISSING');
  if (e.dtype !== 'F64') return Float64Array.from(tensorF32(f, name));
  const got = f.bytes(name);
  const raw = f.fresh && got.byteOffset % 8 === 0 ? got : new Uint8Array(got);
  return new Float64Array(raw.buffer, raw.byteOffset, raw.length / 8);
}

export interface StTensorOut {
  dtype: StDType;
  shape: readonly number[];
  data: Float32Array | Float64Array | Uint16Array;
}

/** Serialise tensors to the safetensors byte layout (header padded so the data is 8-aligned). */
export function serializeSafetensors(
  tensors: Record<string, StTensorOut>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name];
    const bytes = t.data.byteLength;
    const want = t.shape.reduce((a, b) => a * b, 1) * DSIZE[t.dtype];
    if (bytes !== want)
      throw new TypelensError(
        `tensor "${name}": ${bytes} bytes do not match ${t.dtype}[${t.shape.join(', ')}]`,
        'ESHAPE',
      );
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  const enc = new TextEncoder();
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + enc.encode(json).length) % 8)) % 8);
  const hbuf = enc.encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hbuf.length), true);
  return [
    len,
    hbuf,
    ...names.map((n) => {
      const d = tensors[n].data;
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    }),
  ];
}

/** Write a safetensors file atomically (temp file + rename): never a half-written file. */
export function writeSafetensors(
  path: string,
  tensors: Record<string, StTensorOut>,
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata), { createDir: false });
}

/** Parse tensors serialised in memory (tests, generated models). */
export function safetensorsFromTensors(tensors: Record<string, StTensorOut>, path = '<memory>'): StFile {
  const chunks = serializeSafetensors(tensors);
  const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) all.set(c, (o += c.length) - c.length);
  return parseSafetensors(all, path);
}
