declare module 'benchmark' {
  interface Stats {
    mean: number;
    rme: number;
    sample: number[];
  }
  class Benchmark {
    constructor(name: string, fn: () => void, opts?: { maxTime?: number; minSamples?: number; initCount?: number });
    run(opts?: { async?: boolean }): Benchmark;
    stats: Stats;
    hz: number;
    error?: Error;
  }
  export default Benchmark;
}
