/** Boundary i of n items split into `parts` near-equal contiguous ranges: range i is [cut(i), cut(i + 1)). */
export function evenCut(n: number, parts: number): (i: number) => number {
  return (i) => Math.round((n * i) / parts);
}
