/**
 * Differentiable matrix products: batched matmul, the model's weight matmuls (`linear`, in the
 * backend's kernels: dX = dY·Wᵀ against a lazily packed transposed copy of W, dW = Xᵀ·dY with dY
 * packed as the right-hand operand) over weights in TL's layouts (MatWeight), and embedding.
 */
import { check } from '../errors.js';
import type { Backend, PackedWeight } from '../kernels/backend.js';
import { getBackend } from '../kernels/index.js';
import * as T from '../tensor/index.js';
import { Shape, Tensor } from '../tensor/index.js';
import { reduceToShape } from './elementwise.js';
import { GradLayout, outerAvailable, outerInto } from './outer.js';
import type { PackCache } from './pack-cache.js';
import { tapeFor } from './tape.js';

// ---------------------------------------------------------------- embedding
/** Rows of `table` [V, M] for integer ids -> [...ids.shape, M]; backward scatter-adds rows. */
export function embedding(table: Tensor, ids: Tensor, cache?: PackCache): Tensor {
  const out = T.embedding(table, ids);
  const tape = tapeFor(table);
  if (!tape) return out;
  const iv = ids.f32(),
    M = table.shape[1];
  return tape.record(out, (g, acc) => {
    // a reused buffer (only the rows written last time are cleared) or a fresh zero table
    const gt = cache?.sparseGradBuffer(table, iv, M) ?? new Float32Array(table.size);
    for (let i = 0; i < iv.length; i++) {
      const o = iv[i] * M;
      for (let m = 0; m < M; m++) gt[o + m] += g[i * M + m];
    }
    acc(table, gt);
  });
}

// ---------------------------------------------------------------- matmul / linear
/** Batched a [..., M, K] @ b [..., K, N] (both at least 2-D), broadcasting batch axes. */
export function matmul(a: Tensor, b: Tensor, backend: Backend = getBackend()): Tensor {
  check(a.ndim >= 2 && b.ndim >= 2, 'autograd matmul needs 2-D or batched operands');
  const out = T.matmul(a, b, backend);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gt = new Tensor(g, out.shape);
    if (tape.isTracked(a)) {
      const ga = T.matmul(gt, b.transpose(-2, -1), backend);
      acc(a, reduceToShape(ga.f32(), ga.shape, a.shape));
    }
    if (tape.isTracked(b)) {
      const gb = T.matmul(a.transpose(-2, -1), gt, backend);
      acc(b, reduceToShape(gb.f32(), gb.shape, b.shape));
    }
  });
}

/**
 * A weight used as x @ W with W a logical [K, N] matrix whose gradient belongs to `leaf`
 * (TL layout: [K, N] itself, [H, M, D] for W_Q/K/V, [H, D, M] for W_O). `packed` is the
 * forward packing, `packedT` a [N, K] packing of Wᵀ for dX; both may be supplied by the model
 * (packed at load) or made lazily by a PackCache.
 */
export interface MatWeight {
  readonly leaf: Tensor;
  readonly K: number;
  readonly N: number;
  packed(): PackedWeight;
  packedT(): PackedWeight;
  /** dW [K, N] -> the leaf's layout. */
  toLeaf(dW: Float32Array): Float32Array;
  /** Where (k, n) of dW lives in the leaf's layout, and the cache owning kernel gradient buffers. */
  readonly layout?: GradLayout;
  readonly cache?: PackCache;
}

/** A plain [K, N] weight. */
export function plainWeight(w: Tensor, cache: PackCache, packed?: PackedWeight): MatWeight {
  check(w.ndim === 2, `plainWeight needs [K, N], got [${w.shape.join(', ')}]`);
  const [K, N] = w.shape;
  return {
    leaf: w,
    K,
    N,
    packed: () => packed ?? cache.get(w, 'fwd', K, N, () => w.f32()),
    packedT: () => cache.get(w, 'T', N, K, () => w.T.f32()),
    toLeaf: (dW) => dW,
    layout: { S: N, ss: 0, rs: N },
    cache,
  };
}
/** TL's W_Q/W_K/W_V [H, M, D] used as [M, H·D] (one matmul for every head). */
export function headsInWeight(w: Tensor, cache: PackCache, packed?: PackedWeight): MatWeight {
  check(w.ndim === 3, `headsInWeight needs [H, M, D], got [${w.shape.join(', ')}]`);
  const [H, M, D] = w.shape;
  return {
    leaf: w,
    K: M,
    N: H * D,
    packed: () => packed ?? cache.get(w, 'fwd', M, H * D, () => w.permute(1, 0, 2).f32()),
    packedT: () => cache.get(w, 'T', H * D, M, () => w.permute(0, 2, 1).f32()),
    toLeaf: (dW) => new Tensor(dW, [M, H, D]).permute(1, 0, 2).f32(),
    layout: { S: D, ss: M * D, rs: D },
    cache,
  };
}
/** TL's W_O [H, D, M] used as [H·D, M]. */
export function headsOutWeight(w: Tensor, cache: PackCache, packed?: PackedWeight): MatWeight {
  check(w.ndim === 3, `headsOutWeight needs [H, D, M], got [${w.shape.join(', ')}]`);
  const [H, D, M] = w.shape;
  return {
    leaf: w,
    K: H * D,
    N: M,
    packed: () => packed ?? cache.get(w, 'fwd', H * D, M, () => w.f32()),
    packedT: () => cache.get(w, 'T', M, H * D, () => w.permute(2, 0, 1).f32()),
    toLeaf: (dW) => dW,
    layout: { S: M, ss: 0, rs: M },
    cache,
  };
}

/**
 * y [..., N] (reshaped to `outShape` if given) = x [..., K] @ W + b, in the backend's kernels.
 * Backward: dX = dY·Wᵀ (packed transposed copy), dW = Xᵀ·dY (dY packed), db = Σ rows dY.
 */
export function linear(x: Tensor, w: MatWeight, b: Tensor | undefined, backend: Backend, outShape?: Shape): Tensor {
  const { K, N } = w;
  // the trailing axes of x that multiply to K are contracted (z [B, P, H, D] against W_O [H·D, M])
  let tail = 1,
    lead = x.ndim;
  do tail *= x.shape[--lead];
  while (lead > 0 && tail < K);
  check(tail === K || K === 0, () => `linear: input [${x.shape.join(', ')}] against a [${K}, ${N}] weight`);
  const xv = x.f32();
  const rows = K === 0 ? 0 : xv.length / K;
  const y = backend.matmul(xv, rows, w.packed());
  if (b) {
    check(b.size === N, () => `linear: bias of ${b.size} for ${N} outputs`);
    const bv = b.f32();
    for (let o = 0; o < y.length; o += N) for (let j = 0; j < N; j++) y[o + j] += bv[j];
  }
  const out = new Tensor(y, outShape ?? [...x.shape.slice(0, lead), N]);
  const tape = tapeFor(x, w.leaf, b);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(x)) acc(x, backend.matmul(g, rows, w.packedT()));
    const buf =
      tape.isTracked(w.leaf) && w.layout && w.cache && outerAvailable(backend, w.layout, N)
        ? w.cache.gradBuffer(w.leaf)
        : null;
    if (buf) {
      outerInto(backend, xv, g, rows, K, N, w.layout!, buf, false);
      acc(w.leaf, buf);
    } else if (tape.isTracked(w.leaf)) {
      const xT = new Float32Array(K * rows);
      for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) xT[k * rows + r] = xv[r * K + k];
      const gp = backend.pack(g, rows, N, 'f32');
      let dW: Float32Array;
      try {
        dW = backend.matmul(xT, K, gp);
      } finally {
        gp.release();
      }
      acc(w.leaf, w.toLeaf(dW));
    }
    if (b && tape.isTracked(b)) {
      const db = new Float32Array(N);
      for (let o = 0; o < g.length; o += N) for (let j = 0; j < N; j++) db[j] += g[o + j];
      acc(b, db);
    }
  });
}
