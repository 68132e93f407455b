/** The N-API addon's surface (native/src/addon.cc); buffers are integer handles to device memory. */
export interface CudaAddon {
  deviceCount(): number;
  deviceName(): string;
  alloc(n: number): number;
  free(id: number): void;
  upload(id: number, data: Float32Array): void;
  download(id: number, out: Float32Array): void;
  matmul(a: number, b: number, c: number, M: number, K: number, N: number): void;
  layerNorm(
    x: number,
    out: number,
    scale: number,
    w: number | null,
    b: number | null,
    rows: number,
    d: number,
    eps: number,
  ): void;
  attention(
    q: number,
    k: number,
    v: number,
    pattern: number,
    z: number,
    B: number,
    P: number,
    H: number,
    D: number,
    invScale: number,
  ): void;
  gelu(x: number, out: number, n: number): void;
  addBias(x: number, bias: number, rows: number, n: number): void;
  add(a: number, b: number, out: number, n: number): void;
  synchronize(): void;
}
