// The one place typelens reads its environment. Each variable is read once, on first use, so a
// run's configuration cannot change halfway through. The platform (./index.ts) says where the
// variables come from: process.env in Node, globalThis.TYPELENS_ENV in a browser.
import { platform } from './index.js';

export interface RuntimeConfig {
  /** TYPELENS_BACKEND: the backend `auto` resolves to ('wasm', 'js', 'cuda'); unset = auto. */
  backend: string | undefined;
  /** TYPELENS_THREADS: intra-op and pool threads; unset or invalid = every core. */
  threads: number;
  /** TYPELENS_FMA=1: use the relaxed-SIMD (FMA) WASM kernel. */
  fma: boolean;
  /** TYPELENS_WEIGHTS: the folder fromPretrained reads instead of weights/<model>/. */
  weightsDir: string | undefined;
  /** TYPELENS_CUDA_ADDON: path of the CUDA addon instead of native/build/Release/. */
  cudaAddon: string | undefined;
}

let config: RuntimeConfig | undefined;

export function runtimeConfig(): RuntimeConfig {
  if (config) return config;
  const env = platform.env;
  const threads = Number(env('TYPELENS_THREADS'));
  config = {
    backend: env('TYPELENS_BACKEND'),
    threads: Number.isInteger(threads) && threads >= 1 ? threads : platform.cores(),
    fma: env('TYPELENS_FMA') === '1',
    weightsDir: env('TYPELENS_WEIGHTS'),
    cudaAddon: env('TYPELENS_CUDA_ADDON'),
  };
  return config;
}
