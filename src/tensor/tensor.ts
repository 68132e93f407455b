import { check, TypelensError } from '../errors.js';
import { DType, Storage, decode, encode } from './dtype.js';

export type Shape = readonly number[];

export const numel = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);
/** The one shape-equality test (hooks, caches, weights and ops all use it). */
export const sameShape = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
/** A tensor as plain data (worker messages, replica descriptors): contiguous f32 and its shape. */
export type Arr = { data: Float32Array; shape: number[] };

export function contiguousStrides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Normalise a possibly negative axis against ndim, with a clear error. */
export function normAxis(axis: number, ndim: number, what = 'axis'): number {
  const a = axis < 0 ? axis + ndim : axis;
  check(Number.isInteger(a) && a >= 0 && a < ndim, `${what} ${axis} out of range for a tensor of rank ${ndim}`);
  return a;
}

/**
 * An n-d view over typed-array storage. The storage may be backed by an ArrayBuffer, a
 * SharedArrayBuffer or a shared WebAssembly.Memory: a tensor only needs a typed array.
 * Views (slice, transpose, permute, expand, index) share storage; compute ops return fresh
 * contiguous f32 tensors. f16/bf16 storage is read through `decode`: computation is f32.
 */
export class Tensor {
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly dtype: DType;

  constructor(
    readonly data: Storage,
    shape: Shape,
    strides?: readonly number[],
    readonly offset = 0,
    dtype?: DType,
  ) {
    // half-precision bits say nothing about which format they are in (f16 or bf16): say it
    check(
      dtype !== undefined || data instanceof Float32Array,
      'a Tensor over Uint16Array data needs its dtype (f16 or bf16)',
    );
    this.dtype = dtype ?? 'f32';
    for (const d of shape) check(Number.isInteger(d) && d >= 0, `invalid shape [${shape.join(', ')}]`);
    this.shape = [...shape];
    this.strides = strides ? [...strides] : contiguousStrides(shape);
    if (!strides)
      check(
        data.length >= offset + numel(shape),
        () => `storage of ${data.length} elements is too small for shape [${shape.join(', ')}]`,
      );
  }

  static zeros(shape: Shape): Tensor {
    return new Tensor(new Float32Array(numel(shape)), shape);
  }
  static full(shape: Shape, v: number): Tensor {
    return new Tensor(new Float32Array(numel(shape)).fill(v), shape);
  }
  static scalar(v: number): Tensor {
    return new Tensor(Float32Array.of(v), []);
  }
  /** From nested arrays or a flat array plus a shape. */
  static from(values: ArrayLike<number> | NestedArray, shape?: Shape): Tensor {
    if (shape) {
      const flat = Float32Array.from(values as ArrayLike<number>);
      check(flat.length === numel(shape), `${flat.length} values do not fill shape [${shape.join(', ')}]`);
      return new Tensor(flat, shape);
    }
    const inferred: number[] = [];
    let v: unknown = values;
    while (Array.isArray(v)) {
      inferred.push(v.length);
      v = v[0];
    }
    const flat = (values as unknown[]).flat(Infinity) as number[];
    return Tensor.from(flat, inferred);
  }
  /** Wrap f32 data in a storage dtype (f16/bf16 halve the memory). */
  static encode(data: Float32Array, shape: Shape, dtype: DType): Tensor {
    return new Tensor(encode(data, dtype), shape, undefined, 0, dtype);
  }

  get ndim(): number {
    return this.shape.length;
  }
  get size(): number {
    return numel(this.shape);
  }

  isContiguous(): boolean {
    let acc = 1;
    for (let i = this.ndim - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== acc) return false;
      acc *= this.shape[i];
    }
    return true;
  }

  /** Contiguous f32 data of this view: no copy when it already is one. */
  f32(): Float32Array {
    const n = this.size;
    if (this.isContiguous()) {
      if (this.dtype === 'f32') {
        const d = this.data as Float32Array;
        return this.offset === 0 && d.length === n ? d : d.subarray(this.offset, this.offset + n);
      }
      return decode((this.data as Uint16Array).subarray(this.offset, this.offset + n), this.dtype, new Float32Array(n));
    }
    const src = this.dtype === 'f32' ? (this.data as Float32Array) : null;
    const half = src ? null : decode(this.data as Uint16Array, this.dtype, new Float32Array(this.data.length));
    return gatherStrided(src ?? half!, this.shape, this.strides, this.offset, new Float32Array(n));
  }

  /** A contiguous f32 tensor (a copy only when needed). */
  contiguous(): Tensor {
    if (this.dtype === 'f32' && this.isContiguous() && this.offset === 0 && this.data.length === this.size) return this;
    return new Tensor(this.f32(), this.shape);
  }
  clone(): Tensor {
    return new Tensor(Float32Array.from(this.f32()), this.shape);
  }
  /**
   * In-place write through this view (PyTorch's `view[...] = src`): src must have this view's
   * shape. Only f32 storage is writable; patching hooks edit activations, which always are.
   */
  assign(src: Tensor): this {
    check(this.dtype === 'f32', `cannot assign into ${this.dtype} storage`);
    check(
      sameShape(src.shape, this.shape),
      () => `cannot assign a [${src.shape.join(', ')}] tensor into a [${this.shape.join(', ')}] view`,
    );
    const from = src.f32(),
      dst = this.data as Float32Array;
    let i = 0;
    forEachOffset(this.shape, this.strides, this.offset, (o) => {
      dst[o] = from[i++];
    });
    return this;
  }
  toArray(): number[] {
    return Array.from(this.f32());
  }
  toNested(): NestedArray {
    const flat = this.f32();
    const build = (dim: number, off: number): NestedArray | number => {
      if (dim === this.ndim) return flat[off];
      const step = numel(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, off + i * step)) as NestedArray;
    };
    return build(0, 0) as NestedArray;
  }

  private flatIndex(idx: readonly number[]): number {
    check(idx.length === this.ndim, `expected ${this.ndim} indices, got ${idx.length}`);
    let o = this.offset;
    for (let d = 0; d < idx.length; d++) {
      const i = idx[d] < 0 ? idx[d] + this.shape[d] : idx[d];
      check(i >= 0 && i < this.shape[d], () => `index ${idx[d]} out of range for axis ${d} of size ${this.shape[d]}`);
      o += i * this.strides[d];
    }
    return o;
  }
  get(...idx: number[]): number {
    const o = this.flatIndex(idx);
    return this.dtype === 'f32' ? this.data[o] : decode(this.data.subarray(o, o + 1) as Uint16Array, this.dtype)[0];
  }
  set(value: number, ...idx: number[]): void {
    check(this.dtype === 'f32', 'cannot write into half-precision storage');
    this.data[this.flatIndex(idx)] = value;
  }
  item(): number {
    check(this.size === 1, `item() needs a single element, the shape is [${this.shape.join(', ')}]`);
    return this.f32()[0];
  }

  // ---- views (no copy) ----
  reshape(shape: Shape): Tensor {
    const s = [...shape];
    const neg = s.indexOf(-1);
    if (neg >= 0) s[neg] = this.size / numel(s.filter((_, i) => i !== neg));
    check(
      numel(s) === this.size && s.every((d) => Number.isInteger(d) && d >= 0),
      () => `cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`,
    );
    if (this.isContiguous()) return new Tensor(this.data, s, contiguousStrides(s), this.offset, this.dtype);
    return this.contiguous().reshape(s);
  }
  permute(...axes: number[]): Tensor {
    check(axes.length === this.ndim, `permute needs ${this.ndim} axes, got ${axes.length}`);
    const ax = axes.map((a) => normAxis(a, this.ndim));
    check(new Set(ax).size === ax.length, `permute axes repeat: [${axes.join(', ')}]`);
    return new Tensor(
      this.data,
      ax.map((a) => this.shape[a]),
      ax.map((a) => this.strides[a]),
      this.offset,
      this.dtype,
    );
  }
  transpose(a = -2, b = -1): Tensor {
    const ax = [...Array(this.ndim).keys()];
    const i = normAxis(a, this.ndim),
      j = normAxis(b, this.ndim);
    [ax[i], ax[j]] = [ax[j], ax[i]];
    return this.permute(...ax);
  }
  get T(): Tensor {
    return this.transpose();
  }
  /** Python-style slice on one axis: negative start/end count from the end, step > 0. */
  slice(axis: number, start?: number, end?: number, step = 1): Tensor {
    const a = normAxis(axis, this.ndim);
    check(Number.isInteger(step) && step > 0, `slice step must be a positive integer, got ${step}`);
    const n = this.shape[a];
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const s = start === undefined ? 0 : clamp(start);
    const e = end === undefined ? n : clamp(end);
    const len = Math.max(0, Math.ceil((e - s) / step));
    const shape = [...this.shape];
    shape[a] = len;
    const strides = [...this.strides];
    strides[a] *= step;
    return new Tensor(this.data, shape, strides, this.offset + s * this.strides[a], this.dtype);
  }
  /** Select one index on an axis (negative allowed); the axis is removed. */
  index(axis: number, i: number): Tensor {
    const a = normAxis(axis, this.ndim);
    const n = this.shape[a];
    const k = i < 0 ? i + n : i;
    check(Number.isInteger(k) && k >= 0 && k < n, `index ${i} out of range for axis ${axis} of size ${n}`);
    return new Tensor(
      this.data,
      this.shape.filter((_, d) => d !== a),
      this.strides.filter((_, d) => d !== a),
      this.offset + k * this.strides[a],
      this.dtype,
    );
  }
  unsqueeze(axis: number): Tensor {
    const a = normAxis(axis, this.ndim + 1);
    const shape = [...this.shape];
    shape.splice(a, 0, 1);
    const strides = [...this.strides];
    strides.splice(a, 0, 0);
    return new Tensor(this.data, shape, strides, this.offset, this.dtype);
  }
  squeeze(axis?: number): Tensor {
    const keep = (d: number) =>
      axis === undefined ? this.shape[d] !== 1 : d !== normAxis(axis, this.ndim) || this.shape[d] !== 1;
    const dims = [...this.shape.keys()].filter(keep);
    return new Tensor(
      this.data,
      dims.map((d) => this.shape[d]),
      dims.map((d) => this.strides[d]),
      this.offset,
      this.dtype,
    );
  }
  /** Broadcast to a larger shape with zero strides (numpy rules). */
  expand(shape: Shape): Tensor {
    check(shape.length >= this.ndim, () => `cannot expand [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
    const lead = shape.length - this.ndim;
    const strides = shape.map((d, i) => {
      if (i < lead) return 0;
      const own = this.shape[i - lead];
      check(own === d || own === 1, () => `cannot broadcast [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
      return own === d ? this.strides[i - lead] : 0;
    });
    return new Tensor(this.data, shape, strides, this.offset, this.dtype);
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}])`;
  }
}

export type NestedArray = (number | NestedArray)[];

/**
 * out (row-major, contiguous) := the strided view (shape, strides, offset) of src. The last two
 * axes are copied in 32 x 32 tiles, so that a transposed view (a weight's W.T, a head permute)
 * reads and writes within cache lines instead of striding across the whole matrix per element.
 */
export function gatherStrided(
  src: Float32Array,
  shape: Shape,
  strides: readonly number[],
  offset: number,
  out: Float32Array,
): Float32Array {
  const nd = shape.length;
  if (numel(shape) === 0) return out;
  if (nd < 2) {
    const n = nd ? shape[0] : 1,
      st = nd ? strides[0] : 0;
    for (let i = 0; i < n; i++) out[i] = src[offset + i * st];
    return out;
  }
  const R = shape[nd - 2],
    C = shape[nd - 1],
    sR = strides[nd - 2],
    sC = strides[nd - 1];
  const T = 32;
  let w = 0;
  const plane = (o: number) => {
    if (sC === 1) for (let r = 0; r < R; r++, w += C) out.set(src.subarray(o + r * sR, o + r * sR + C), w);
    else {
      for (let r0 = 0; r0 < R; r0 += T) {
        const r1 = Math.min(R, r0 + T);
        for (let c0 = 0; c0 < C; c0 += T) {
          const c1 = Math.min(C, c0 + T);
          for (let c = c0; c < c1; c++) {
            const oc = o + c * sC;
            for (let r = r0, d = w + r0 * C + c; r < r1; r++, d += C) out[d] = src[oc + r * sR];
          }
        }
      }
      w += R * C;
    }
  };
  if (nd === 2) plane(offset);
  else forEachOffset(shape.slice(0, nd - 2), strides.slice(0, nd - 2), offset, plane);
  return out;
}

/** Visit the storage offset of every element of a strided view in row-major order. */
export function forEachOffset(shape: Shape, strides: readonly number[], offset: number, fn: (o: number) => void): void {
  const nd = shape.length;
  if (numel(shape) === 0) return;
  if (nd === 0) {
    fn(offset);
    return;
  }
  const idx = new Array<number>(nd).fill(0);
  const last = nd - 1,
    lastN = shape[last],
    lastS = strides[last];
  let o = offset;
  for (;;) {
    for (let i = 0, p = o; i < lastN; i++, p += lastS) fn(p);
    let d = last - 1;
    for (; d >= 0; d--) {
      idx[d]++;
      o += strides[d];
      if (idx[d] < shape[d]) break;
      o -= idx[d] * strides[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

export function assertShape(t: Tensor, shape: Shape, what: string): void {
  if (t.ndim !== shape.length || t.shape.some((d, i) => shape[i] >= 0 && d !== shape[i])) {
    throw new TypelensError(
      `${what}: expected shape [${shape.map((d) => (d < 0 ? '*' : d)).join(', ')}], got [${t.shape.join(', ')}]`,
      'ESHAPE',
    );
  }
}
