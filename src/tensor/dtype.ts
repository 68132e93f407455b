import { Float16Array } from '@petamoriken/float16';

/** Compute is always f32; f16 and bf16 are storage formats for weights (half the memory). */
export type DType = 'f32' | 'f16' | 'bf16';
export type Storage = Float32Array | Uint16Array;

export const bytesPerElement = (d: DType): number => (d === 'f32' ? 4 : 2);

/** f32 -> bf16 bits, round to nearest even (what torch does); NaN stays NaN. */
export function f32ToBf16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i];
    if ((b & 0x7fffffff) > 0x7f800000) {
      out[i] = (b >>> 16) | 0x40;
      continue;
    }
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** f32 -> IEEE half bits (round to nearest even, via @petamoriken/float16). */
export function f32ToF16(src: Float32Array): Uint16Array {
  const h = new Float16Array(src);
  return new Uint16Array(h.buffer, h.byteOffset, h.length);
}

/** IEEE half bits -> f32. A table of all 65536 values makes this one load per element. */
let f16Table: Float32Array | null = null;
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (!f16Table) {
    const all = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) all[i] = i;
    f16Table = new Float32Array(new Float16Array(all.buffer));
  }
  const t = f16Table;
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

export function decode(data: Storage, dtype: DType, out?: Float32Array): Float32Array {
  if (dtype === 'f32') {
    if (out) {
      out.set(data as Float32Array);
      return out;
    }
    return data as Float32Array;
  }
  return dtype === 'bf16' ? bf16ToF32(data as Uint16Array, out) : f16ToF32(data as Uint16Array, out);
}

export function encode(data: Float32Array, dtype: DType): Storage {
  if (dtype === 'f32') return data;
  return dtype === 'bf16' ? f32ToBf16(data) : f32ToF16(data);
}
