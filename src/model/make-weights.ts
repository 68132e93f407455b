import { TypelensError } from '../errors.js';
import { joinPath as join, writeDirAtomic, writeFileAtomic } from '../platform/files.js';
import { StTensorOut, writeSafetensors } from './safetensors.js';

/** HF GPT-2 config keys for a preset or custom shape. */
export interface GPT2Shape {
  n_layer: number;
  n_embd: number;
  n_head: number;
  n_positions: number;
  vocab_size: number;
}

export const PRESETS: Record<string, GPT2Shape> = {
  // full GPT-2 vocabulary so text prompts tokenise; small everywhere else
  tiny: { n_layer: 2, n_embd: 64, n_head: 4, n_positions: 128, vocab_size: 50257 },
  'gpt2-small': { n_layer: 12, n_embd: 768, n_head: 12, n_positions: 1024, vocab_size: 50257 },
};

/** Small fast seeded PRNG (mulberry32) with Box-Muller normals: the same seed gives the same checkpoint everywhere. */
export function rng(seed: number): { uniform(): number; normal(): number } {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  let spare: number | null = null;
  const normal = () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = uniform();
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
  return { uniform, normal };
}

export function hfConfig(s: GPT2Shape, bos = 50256): Record<string, unknown> {
  return {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    bos_token_id: Math.min(bos, s.vocab_size - 1),
    eos_token_id: Math.min(bos, s.vocab_size - 1),
    layer_norm_epsilon: 1e-5,
    model_type: 'gpt2',
    n_ctx: s.n_positions,
    n_embd: s.n_embd,
    n_head: s.n_head,
    n_inner: null,
    n_layer: s.n_layer,
    n_positions: s.n_positions,
    vocab_size: s.vocab_size,
  };
}

/**
 * Seeded random weights in GPT-2's exact HF layout and names. Distributions follow GPT-2's
 * init (N(0, 0.02) matrices) with LN gains 1+N(0, 0.1) and non-zero biases so that every
 * weight-processing step has something to do.
 */
export function randomGPT2(
  s: GPT2Shape,
  seed: number,
  onProgress?: (done: number, total: number) => void,
): Record<string, StTensorOut> {
  if (s.n_embd % s.n_head !== 0)
    throw new TypelensError(`n_embd ${s.n_embd} is not divisible by n_head ${s.n_head}`, 'ECONFIG');
  const r = rng(seed);
  const M = s.n_embd,
    F = 4 * M;
  const out: Record<string, StTensorOut> = {};
  const total = 2 + s.n_layer * 12 + 2;
  let done = 0;
  const t = (name: string, shape: number[], f: () => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = f();
    out[name] = { dtype: 'F32', shape, data: d };
    onProgress?.(++done, total);
  };
  const N = (sd: number) => () => sd * r.normal();
  const gain = () => 1 + 0.1 * r.normal();
  t('wte.weight', [s.vocab_size, M], N(0.02));
  t('wpe.weight', [s.n_positions, M], N(0.01));
  for (let l = 0; l < s.n_layer; l++) {
    const p = `h.${l}.`;
    t(p + 'ln_1.weight', [M], gain);
    t(p + 'ln_1.bias', [M], N(0.05));
    t(p + 'attn.c_attn.weight', [M, 3 * M], N(0.02));
    t(p + 'attn.c_attn.bias', [3 * M], N(0.02));
    t(p + 'attn.c_proj.weight', [M, M], N(0.02));
    t(p + 'attn.c_proj.bias', [M], N(0.02));
    t(p + 'ln_2.weight', [M], gain);
    t(p + 'ln_2.bias', [M], N(0.05));
    t(p + 'mlp.c_fc.weight', [M, F], N(0.02));
    t(p + 'mlp.c_fc.bias', [F], N(0.02));
    t(p + 'mlp.c_proj.weight', [F, M], N(0.02));
    t(p + 'mlp.c_proj.bias', [M], N(0.02));
  }
  t('ln_f.weight', [M], gain);
  t('ln_f.bias', [M], N(0.05));
  return out;
}

/** Write config.json + model.safetensors into dir, atomically (a folder appears complete or not at all). */
export function makeWeights(
  dir: string,
  s: GPT2Shape,
  seed: number,
  onProgress?: (done: number, total: number) => void,
): void {
  const tensors = randomGPT2(s, seed, onProgress);
  writeDirAtomic(dir, (tmp) => {
    writeFileAtomic(
      join(tmp, 'config.json'),
      JSON.stringify({ ...hfConfig(s), typelens_generated: { seed } }, null, 2),
    );
    writeSafetensors(join(tmp, 'model.safetensors'), tensors, {
      format: 'pt',
      generator: 'typelens make-weights',
      seed: String(seed),
    });
  });
}
