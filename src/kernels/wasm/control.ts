/** Layout of a matmul helper's shared control block (Int32 slots). */
export const CTRL = {
  state: 0,
  ready: 1,
  a: 2,
  b: 3,
  c: 4,
  nrb: 5,
  K: 6,
  p0: 7,
  p1: 8,
  npad: 9,
  kind: 10,
  tmp: 11,
  size: 12,
} as const;
export const enum CtrlState {
  idle = 0,
  job = 1,
  done = 2,
  failed = 3,
  exit = 4,
}

/** The WASM kernel's `matmul` export (matmul.wat.mjs): panels [p0, p1) of C = A @ B. */
export type MatmulFn = (
  a: number,
  b: number,
  c: number,
  nrb: number,
  K: number,
  p0: number,
  p1: number,
  npad: number,
  kind: number,
  tmp: number,
) => void;
