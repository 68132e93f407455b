import { check } from '../../errors.js';
import { decode, DType } from '../../tensor/dtype.js';
import { matmulRef } from '../../tensor/linalg.js';
import type { Backend, PackedWeight } from '../backend.js';

class JsWeight implements PackedWeight {
  readonly backend = 'js';
  constructor(
    readonly w: Float32Array,
    readonly K: number,
    readonly N: number,
    readonly dtype: DType,
  ) {}
  get bytes(): number {
    return this.w.byteLength;
  }
  release(): void {
    /* garbage collected */
  }
}

/**
 * Plain TypeScript reference kernels. The matmul rounds each product to f32 before adding
 * (Math.fround) and accumulates k in order, which is exactly what the non-FMA WASM kernel
 * does, so the two agree bit for bit.
 */
export const jsBackend: Backend = {
  name: 'js',
  pack(data, K, N, dtype) {
    check(data.length === K * N, `weight of ${data.length} elements is not [${K}, ${N}]`);
    const w =
      dtype === 'f32'
        ? Float32Array.from(data as Float32Array)
        : decode(data as Uint16Array, dtype, new Float32Array(K * N));
    return new JsWeight(w, K, N, dtype);
  },
  matmul(a, M, b, out) {
    check(b instanceof JsWeight, 'weight was packed for another backend');
    const { K, N, w } = b as JsWeight;
    check(a.length >= M * K, `matmul: A has ${a.length} elements, needs ${M}x${K}`);
    return matmulRef(a, M, w, K, N, out ?? new Float32Array(M * N));
  },
};
