// The messages between ForwardPool and its workers; parallel/ may import patching/, never the reverse.
import type { SetterName } from '../patching/setters.js';
import { Tensor } from '../tensor/index.js';
import { isSharedBuffer } from '../util/shared.js';

export type { SetterName };
/** A tensor as a message payload: contiguous f32 data and its shape. */
export type { Arr } from '../tensor/index.js';
import type { Arr } from '../tensor/index.js';

/** One task for a pool worker: a forward pass, declaratively patched and cached. */
export interface ForwardTask {
  kind: 'forward' | 'die' | 'throw';
  tokens?: Arr;
  /** Residual stream entering block startAtLayer (instead of tokens). */
  resid?: Arr;
  startAtLayer?: number;
  lastPositionLogits?: boolean;
  /** [B, P] attention mask of the input (before a patch repeats it). */
  attentionMask?: Arr;
  cache?: string[] | 'all' | null;
  /** One copy of the input per index, each patched at its own index, run as one batch. */
  patch?: { hook: string; setter: SetterName; indices: number[][]; clean: Arr };
}

export interface ForwardResult {
  logits: Arr;
  cache?: Record<string, Arr>;
}

/**
 * A tensor as a message payload: shared memory passes as is; an array that is its whole buffer
 * passes as is (postMessage clones it, or the sender transfers it); anything else is copied to
 * exact size first (a view would otherwise drag its whole buffer along).
 */
export function toArr(t: Tensor): Arr {
  const d = t.f32();
  const whole = isSharedBuffer(d.buffer) || (d.byteOffset === 0 && d.byteLength === d.buffer.byteLength);
  return { data: whole ? d : Float32Array.from(d), shape: [...t.shape] };
}
export const fromArr = (a: Arr): Tensor => new Tensor(a.data, a.shape);
