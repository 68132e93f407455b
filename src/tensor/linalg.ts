// Linear algebra: matmul (through a kernel: the process default registered by src/kernels/, or
// the one passed in), einsum and svd.
import { Matrix, SingularValueDecomposition } from 'ml-matrix';
import { check } from '../errors.js';
import type { DType } from './dtype.js';
import { broadcastShapes } from './ops.js';
import { numel, Tensor } from './tensor.js';

/** A [K, N] matrix packed by a kernel (a backend's PackedWeight is one). */
export interface PackedMatrix {
  readonly K: number;
  readonly N: number;
  release(): void;
}
/** What matmul needs from a backend (src/kernels' Backend is one). */
export interface MatmulKernel {
  pack(data: Float32Array, K: number, N: number, dtype: DType): PackedMatrix;
  matmul(a: Float32Array, M: number, b: PackedMatrix, out?: Float32Array): Float32Array;
}

/**
 * The reference product c[M, N] = a[M, K] @ w[K, N]: each product rounded to f32 before it is
 * added, k in order (what the non-FMA WASM kernel does, so the two agree bit for bit).
 */
export function matmulRef(
  a: Float32Array,
  M: number,
  w: Float32Array,
  K: number,
  N: number,
  c: Float32Array = new Float32Array(M * N),
): Float32Array {
  c.fill(0, 0, M * N);
  for (let i = 0; i < M; i++) {
    const ci = i * N;
    for (let k = 0; k < K; k++) {
      const av = a[i * K + k];
      const bk = k * N;
      for (let j = 0; j < N; j++) c[ci + j] = c[ci + j] + Math.fround(av * w[bk + j]);
    }
  }
  return c;
}

class RefPacked implements PackedMatrix {
  constructor(
    readonly w: Float32Array,
    readonly K: number,
    readonly N: number,
  ) {}
  release(): void {
    /* garbage collected */
  }
}
const refKernel: MatmulKernel = {
  pack: (data, K, N) => new RefPacked(Float32Array.from(data), K, N),
  matmul: (a, M, b, out) => {
    const w = b as RefPacked;
    return matmulRef(a, M, w.w, w.K, w.N, out);
  },
};

// tfjs-style registration: src/kernels/ installs the process's backend here when it loads, so
// tensor/ never imports a backend (and works on its own with the reference kernel).
let defaultKernel: () => MatmulKernel = () => refKernel;
/** Install the kernel `matmul` uses when none is passed (src/kernels/index.ts does this). */
export function setDefaultMatmulKernel(k: () => MatmulKernel): void {
  defaultKernel = k;
}

/**
 * a [..., M, K] @ b [..., K, N] with broadcasting over the leading axes. A 2-D b (a weight)
 * turns the whole batch into one [rows, K] x [K, N] kernel call.
 */
export function matmul(a: Tensor, b: Tensor | PackedMatrix, backend: MatmulKernel = defaultKernel()): Tensor {
  if (!(b instanceof Tensor)) {
    const K = a.shape[a.ndim - 1];
    check(K === b.K, () => `matmul: inner dimensions differ ([${a.shape.join(', ')}] @ [${b.K}, ${b.N}])`);
    const M = a.size / Math.max(K, 1);
    return new Tensor(backend.matmul(a.f32(), K === 0 ? a.size : M, b), [...a.shape.slice(0, -1), b.N]);
  }
  let A = a,
    B = b;
  if (A.ndim === 1) A = A.unsqueeze(0);
  if (B.ndim === 1) B = B.unsqueeze(1);
  const [M, K] = A.shape.slice(-2),
    [K2, N] = B.shape.slice(-2);
  check(K === K2, () => `matmul: inner dimensions differ ([${a.shape.join(', ')}] @ [${b.shape.join(', ')}])`);
  let out: Tensor;
  if (B.ndim === 2) {
    const pw = backend.pack(B.f32(), K, N, 'f32');
    try {
      out = matmul(A, pw, backend);
    } finally {
      pw.release();
    }
  } else {
    const batch = broadcastShapes(A.shape.slice(0, -2), B.shape.slice(0, -2));
    const Ab = A.expand([...batch, M, K]),
      Bb = B.expand([...batch, K, N]);
    const nb = numel(batch);
    const res = new Float32Array(nb * M * N);
    const idx = new Array<number>(batch.length).fill(0);
    for (let i = 0; i < nb; i++) {
      let ai = Ab,
        bi = Bb;
      for (let d = batch.length - 1, r = i; d >= 0; d--) {
        idx[d] = r % batch[d];
        r = Math.floor(r / batch[d]);
      }
      for (const j of idx) {
        ai = ai.index(0, j);
        bi = bi.index(0, j);
      }
      const pw = backend.pack(bi.f32(), K, N, 'f32');
      try {
        backend.matmul(ai.f32(), M, pw, res.subarray(i * M * N, (i + 1) * M * N));
      } finally {
        pw.release();
      }
    }
    out = new Tensor(res, [...batch, M, N]);
  }
  if (a.ndim === 1) out = out.squeeze(-2);
  if (b.ndim === 1) out = out.squeeze(-1);
  return out;
}

/**
 * einsum over named or single-letter axes, e.g. "b p d, d v -> b p v" or "bpd,dv->bpv".
 * A plain loop over every index: meant for the small contractions analysis code does, not
 * for the forward pass (which uses matmul).
 */
export function einsum(spec: string, ...ts: Tensor[]): Tensor {
  const [lhs, rhs] = spec.split('->');
  check(rhs !== undefined, `einsum spec "${spec}" needs "->"`);
  // named axes when an operand holds a space or an underscore ("batch d_model"), else letters
  const named = /\s/.test(spec.trim().replace(/\s*(,|->)\s*/g, '$1')) || spec.includes('_');
  const parse = (s: string) => (named ? s.trim().split(/\s+/).filter(Boolean) : s.trim().split(''));
  const ins = lhs.split(',').map(parse);
  const outAxes = parse(rhs);
  check(ins.length === ts.length, `einsum spec has ${ins.length} operands, got ${ts.length} tensors`);
  const size = new Map<string, number>();
  ins.forEach((axes, i) => {
    check(axes.length === ts[i].ndim, () => `einsum operand ${i} has rank ${ts[i].ndim}, spec says ${axes.length}`);
    axes.forEach((ax, d) => {
      const n = ts[i].shape[d],
        prev = size.get(ax);
      check(
        prev === undefined || prev === n || prev === 1 || n === 1,
        `einsum axis "${ax}" has sizes ${prev} and ${n}`,
      );
      size.set(ax, Math.max(prev ?? 1, n));
    });
  });
  for (const ax of outAxes) check(size.has(ax), `einsum output axis "${ax}" is not in any input`);
  const all = [...outAxes, ...[...size.keys()].filter((k) => !outAxes.includes(k))];
  const dims = all.map((k) => size.get(k)!);
  const datas = ts.map((t) => t.f32());
  const strides = ins.map((axes, i) => {
    const cs = ts[i].shape.map((_, d) => numel(ts[i].shape.slice(d + 1)));
    return all.map((k) => {
      const d = axes.indexOf(k);
      return d < 0 || ts[i].shape[d] === 1 ? 0 : cs[d];
    });
  });
  const nOut = numel(dims.slice(0, outAxes.length));
  const nRed = numel(dims.slice(outAxes.length));
  const out = new Float32Array(nOut);
  const idx = new Array<number>(all.length).fill(0);
  for (let o = 0; o < nOut; o++) {
    let acc = 0;
    for (let r = 0; r < nRed; r++) {
      let flat = o * nRed + r;
      for (let d = all.length - 1; d >= 0; d--) {
        idx[d] = flat % dims[d];
        flat = Math.floor(flat / dims[d]);
      }
      let p = 1;
      for (let t = 0; t < datas.length; t++) {
        let off = 0;
        for (let d = 0; d < all.length; d++) off += idx[d] * strides[t][d];
        p *= datas[t][off];
      }
      acc += p;
    }
    out[o] = acc;
  }
  return new Tensor(out, dims.slice(0, outAxes.length));
}

/** Thin SVD of a 2-D matrix in float64 (ml-matrix): m = U diag(S) V^T, S descending. */
export function svd(m: Tensor): { U: Tensor; S: Tensor; V: Tensor } {
  check(m.ndim === 2, 'svd needs a 2-D matrix');
  const [r, c] = m.shape;
  const data = m.f32();
  const mat = new Matrix(r, c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) mat.set(i, j, data[i * c + j]);
  const s = new SingularValueDecomposition(mat, { autoTranspose: true });
  const k = Math.min(r, c);
  const U = s.leftSingularVectors,
    V = s.rightSingularVectors,
    S = s.diagonal;
  const u = new Float32Array(r * k),
    v = new Float32Array(c * k);
  for (let i = 0; i < r; i++) for (let j = 0; j < k; j++) u[i * k + j] = U.get(i, j);
  for (let i = 0; i < c; i++) for (let j = 0; j < k; j++) v[i * k + j] = V.get(i, j);
  return { U: new Tensor(u, [r, k]), S: Tensor.from(S.slice(0, k), [k]), V: new Tensor(v, [c, k]) };
}
