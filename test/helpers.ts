import fc from 'fast-check';
import { Tensor, numel } from '../src/tensor/index.js';

/** A random shape of rank [minRank, maxRank] with dims 1..maxDim (1s and odd sizes included). */
export const arbShape = (minRank = 1, maxRank = 4, maxDim = 6) =>
  fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: minRank, maxLength: maxRank });

export const arbValues = (n: number) =>
  fc.array(fc.float({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true }), { minLength: n, maxLength: n });

/**
 * A tensor of the given shape that is, at random, either contiguous or a non-contiguous view
 * (a reversed-axes permute of a contiguous tensor, or a strided slice of a larger one).
 */
export const arbTensorOf = (shape: number[]) =>
  fc.tuple(arbValues(numel(shape) * 2), fc.constantFrom('contig', 'permuted', 'strided')).map(([vals, kind]) => {
    if (kind === 'permuted' && shape.length > 1) {
      const rev = [...shape].reverse();
      const base = Tensor.from(vals.slice(0, numel(shape)), rev);
      return base.permute(...rev.map((_, i) => rev.length - 1 - i));
    }
    if (kind === 'strided') {
      const big = [...shape];
      big[0] *= 2;
      return Tensor.from(vals, big).slice(0, 0, undefined, 2);
    }
    return Tensor.from(vals.slice(0, numel(shape)), shape);
  });

export const arbTensor = (minRank = 1, maxRank = 4, maxDim = 6) =>
  arbShape(minRank, maxRank, maxDim).chain(arbTensorOf);

/** Element of a tensor by multi-index through the public get() (the naive reference path). */
export function allIndices(shape: readonly number[]): number[][] {
  const out: number[][] = [];
  const rec = (pre: number[]) => {
    if (pre.length === shape.length) {
      out.push(pre);
      return;
    }
    for (let i = 0; i < shape[pre.length]; i++) rec([...pre, i]);
  };
  rec([]);
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (Object.is(a[i], b[i])) continue;
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

/** |a-b| <= atol + rtol*|b| elementwise; infinities must match exactly. */
export function allClose(a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-5, atol = 1e-6): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    if (!(Math.abs(a[i] - b[i]) <= atol + rtol * Math.abs(b[i]))) return false;
  }
  return true;
}

/** Thrown inside a property when a named invariant does not hold (fast-check keeps it as the failure's cause). */
export class InvariantBroken extends Error {
  constructor(
    readonly invariant: string,
    detail?: string,
  ) {
    super(`invariant broken: ${invariant}${detail ? ` (${detail})` : ''}`);
  }
}

/** The part of tap's `t` the invariant checker reports through. */
interface Reporter {
  ok(cond: unknown, message: string): boolean;
  pass(message: string, extra: Record<string, unknown>): boolean;
  fail(message: string, extra: Record<string, unknown>): boolean;
}

/**
 * Named invariants for property tests, so a failure says which invariant broke (not one
 * `ok &&= ...; t.pass()` for all of them):
 *
 *   const inv = invariants(t, ['fold_ln alone is exact', 'processing keeps centred logits']);
 *   await inv.run(() => fc.assert(fc.property(arb, (c) => {
 *     inv.check('fold_ln alone is exact', allClose(f, a, 0, 2e-4), () => `max |diff| ${maxAbsDiff(f, a)}`);
 *     ...
 *   }), runs));
 *
 * `check` throws InvariantBroken when the condition is false (fast-check then shrinks to the smallest
 * counterexample that breaks it). `run` runs the property and makes one tap assertion per declared
 * invariant: a broken one fails with fast-check's report (counterexample, seed, path); each other one
 * passes if it held every time it was checked and was checked at least once (an invariant that no run
 * reached is a failure too, unless it is listed in `optional`: conditional invariants, reached only by
 * some random inputs; those, and after a failure the ones never reached, are reported as skipped).
 */
export function invariants<N extends string>(t: Reporter, names: readonly N[], opts: { optional?: readonly N[] } = {}) {
  const held = new Map<string, number>(names.map((n) => [n, 0]));
  const optional = new Set<string>(opts.optional ?? []);
  return {
    check(name: N, cond: boolean, detail?: () => string): void {
      const n = held.get(name);
      if (n === undefined) throw new Error(`invariant "${name}" was not declared in invariants(t, [...])`);
      if (!cond) throw new InvariantBroken(name, detail?.());
      held.set(name, n + 1);
    },
    async run(property: () => unknown): Promise<void> {
      let failure: Error | undefined;
      try {
        await property();
      } catch (e) {
        failure = e instanceof Error ? e : new Error(String(e));
      }
      const cause = failure?.cause ?? failure;
      const broken = cause instanceof InvariantBroken ? cause.invariant : undefined;
      const diag = { found: cause instanceof Error ? cause.message : String(cause), fastCheck: failure?.message };
      for (const [name, n] of held) {
        if (name === broken) t.fail(name, diag);
        else if (n === 0 && failure) t.pass(name, { skip: 'not reached before the failure' });
        else if (n === 0 && optional.has(name)) t.pass(name, { skip: 'not reached by these inputs' });
        else t.ok(n > 0, `${name} (held in ${n} checks${failure ? ' before the failure' : ''})`);
      }
      if (failure && broken === undefined) t.fail('the property failed outside the named invariants', diag);
    },
  };
}
