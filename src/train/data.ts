// Seeded toy datasets for training small models: every generator is deterministic in its seed.
import { TypelensError } from '../errors.js';
import { rng } from '../model/make-weights.js';

/** An endless seeded stream of token sequences (all of one length). */
export interface TokenGenerator {
  /** Tokens of one sequence. */
  next(): number[];
  /** Sequence length. */
  readonly seqLen: number;
  /** Tokens ids used are < vocab. */
  readonly vocab: number;
  /** Positions (in the sequence) whose token is determined by the ones before: where a task is scored. */
  readonly answerPositions: number[];
  /** Name and parameters, for logs. */
  readonly description: string;
  /**
   * The scored positions of one sequence this generator returned, when they vary by sequence
   * (train's lossPositions: 'answers'); absent: answerPositions for every sequence.
   */
  answerPositionsOf?(seq: number[]): readonly number[];
  /**
   * A whole batch of `n` sequences, all of one length <= seqLen (which may change from batch to
   * batch); train() uses it instead of n calls to next() when present.
   */
  nextBatch?(n: number): number[][];
}

const intIn = (r: { uniform(): number }, n: number) => Math.min(n - 1, Math.floor(r.uniform() * n));
const posInt = (k: string, v: number) => {
  if (!Number.isInteger(v) || v <= 0) throw new TypelensError(`${k} must be a positive integer, got ${v}`, 'EINPUT');
};

/**
 * `n` random digits from [0, alphabet), a separator (id `alphabet`), then the same digits
 * reversed (`reverse`) or in order (`copy`): length 2n + 1, vocab alphabet + 1.
 */
function seqTask(kind: 'reverse' | 'copy', o: { n?: number; alphabet?: number; seed?: number }): TokenGenerator {
  const n = o.n ?? 6,
    A = o.alphabet ?? 10;
  posInt('n', n);
  posInt('alphabet', A);
  const r = rng(o.seed ?? 0);
  return {
    seqLen: 2 * n + 1,
    vocab: A + 1,
    description: `${kind}(n=${n}, alphabet=${A})`,
    answerPositions: Array.from({ length: n }, (_, i) => n + 1 + i),
    next() {
      const d = Array.from({ length: n }, () => intIn(r, A));
      return [...d, A, ...(kind === 'reverse' ? [...d].reverse() : d)];
    },
  };
}
export const reverseTask = (o: { n?: number; alphabet?: number; seed?: number } = {}) => seqTask('reverse', o);
export const copyTask = (o: { n?: number; alphabet?: number; seed?: number } = {}) => seqTask('copy', o);

/** Repeated random tokens (the induction-head task): `len` random ids from [0, vocab), then the same again. */
export function repeatedTokens(o: { len?: number; vocab?: number; seed?: number } = {}): TokenGenerator {
  const len = o.len ?? 8,
    V = o.vocab ?? 20;
  posInt('len', len);
  posInt('vocab', V);
  const r = rng(o.seed ?? 0);
  return {
    seqLen: 2 * len,
    vocab: V,
    description: `repeatedTokens(len=${len}, vocab=${V})`,
    answerPositions: Array.from({ length: len - 1 }, (_, i) => len + 1 + i),
    next() {
      const d = Array.from({ length: len }, () => intIn(r, V));
      return [...d, ...d];
    },
  };
}

/** `count` sequences from a generator (a fixed dataset, e.g. for epochs or evaluation). */
export function take(g: TokenGenerator, count: number): number[][] {
  return Array.from({ length: count }, () => g.next());
}
