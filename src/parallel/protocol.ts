import type { setters } from '../patching/index.js';

export type Arr = { data: Float32Array; shape: number[] };
export type SetterName = keyof typeof setters;

/** One task for a pool worker: a forward pass, declaratively patched and cached. */
export interface ForwardTask {
  kind: 'forward' | 'die' | 'throw';
  tokens?: Arr;
  /** Residual stream entering block startAtLayer (instead of tokens). */
  resid?: Arr;
  startAtLayer?: number;
  lastPositionLogits?: boolean;
  cache?: string[] | 'all' | null;
  /** One copy of the input per index, each patched at its own index, run as one batch. */
  patch?: { hook: string; setter: SetterName; indices: number[][]; clean: Arr };
}

export interface ForwardResult { logits: Arr; cache?: Record<string, Arr> }
