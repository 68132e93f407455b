import { TypelensError } from '../errors.js';
import { joinPath as join, writeDirAtomic, writeFileAtomic } from '../platform/files.js';
import { f32ToBf16 } from '../tensor/dtype.js';
import { safetensorsHeader, StTensorOut } from './safetensors.js';

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
  // HF openai-community/gpt2-medium, gpt2-large, gpt2-xl config.json shapes
  'gpt2-medium': { n_layer: 24, n_embd: 1024, n_head: 16, n_positions: 1024, vocab_size: 50257 },
  'gpt2-large': { n_layer: 36, n_embd: 1280, n_head: 20, n_positions: 1024, vocab_size: 50257 },
  'gpt2-xl': { n_layer: 48, n_embd: 1600, n_head: 25, n_positions: 1024, vocab_size: 50257 },
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

/** One tensor of a random checkpoint: its name, shape and how its values are drawn. */
interface TensorSpec {
  name: string;
  shape: number[];
  draw: 'normal' | 'gain';
  sd: number;
}

/** GPT-2's tensors in HF order (the order values are drawn from the seeded stream). */
function tensorSpecs(s: GPT2Shape): TensorSpec[] {
  const M = s.n_embd,
    F = 4 * M;
  const N = (name: string, shape: number[], sd: number): TensorSpec => ({ name, shape, draw: 'normal', sd });
  const G = (name: string, shape: number[]): TensorSpec => ({ name, shape, draw: 'gain', sd: 0.1 });
  const out = [N('wte.weight', [s.vocab_size, M], 0.02), N('wpe.weight', [s.n_positions, M], 0.01)];
  for (let l = 0; l < s.n_layer; l++) {
    const p = `h.${l}.`;
    out.push(
      G(p + 'ln_1.weight', [M]),
      N(p + 'ln_1.bias', [M], 0.05),
      N(p + 'attn.c_attn.weight', [M, 3 * M], 0.02),
      N(p + 'attn.c_attn.bias', [3 * M], 0.02),
      N(p + 'attn.c_proj.weight', [M, M], 0.02),
      N(p + 'attn.c_proj.bias', [M], 0.02),
      G(p + 'ln_2.weight', [M]),
      N(p + 'ln_2.bias', [M], 0.05),
      N(p + 'mlp.c_fc.weight', [M, F], 0.02),
      N(p + 'mlp.c_fc.bias', [F], 0.02),
      N(p + 'mlp.c_proj.weight', [F, M], 0.02),
      N(p + 'mlp.c_proj.bias', [M], 0.02),
    );
  }
  out.push(G('ln_f.weight', [M]), N('ln_f.bias', [M], 0.05));
  return out;
}

const numelOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Draw one tensor's values from the stream (N(0, sd) or 1 + N(0, sd) for LN gains). */
function drawTensor(r: ReturnType<typeof rng>, t: TensorSpec): Float32Array {
  const d = new Float32Array(numelOf(t.shape));
  if (t.draw === 'gain') for (let i = 0; i < d.length; i++) d[i] = 1 + t.sd * r.normal();
  else for (let i = 0; i < d.length; i++) d[i] = t.sd * r.normal();
  return d;
}

function checkShape(s: GPT2Shape): void {
  if (s.n_embd % s.n_head !== 0)
    throw new TypelensError(`n_embd ${s.n_embd} is not divisible by n_head ${s.n_head}`, 'ECONFIG');
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
  checkShape(s);
  const r = rng(seed);
  const specs = tensorSpecs(s);
  const out: Record<string, StTensorOut> = {};
  specs.forEach((t, i) => {
    out[t.name] = { dtype: 'F32', shape: t.shape, data: drawTensor(r, t) };
    onProgress?.(i + 1, specs.length);
  });
  return out;
}

/** Storage dtype of a generated checkpoint (values are drawn in f32, then rounded). */
export type MakeWeightsDType = 'F32' | 'BF16';

/**
 * Write config.json + model.safetensors into dir, atomically (a folder appears complete or not
 * at all). Tensors are drawn and written one at a time (the same values as randomGPT2 for the
 * seed), so a GPT-2 XL-sized checkpoint never sits in memory whole.
 */
export function makeWeights(
  dir: string,
  s: GPT2Shape,
  seed: number,
  onProgress?: (done: number, total: number) => void,
  dtype: MakeWeightsDType = 'F32',
): void {
  checkShape(s);
  const specs = tensorSpecs(s);
  const header = safetensorsHeader(
    specs.map((t) => ({ name: t.name, dtype, shape: t.shape })),
    { format: 'pt', generator: 'typelens make-weights', seed: String(seed) },
  );
  function* chunks(): Generator<Uint8Array> {
    const r = rng(seed);
    yield header;
    for (const [i, t] of specs.entries()) {
      const d = drawTensor(r, t);
      const stored = dtype === 'F32' ? d : f32ToBf16(d);
      yield new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
      onProgress?.(i + 1, specs.length);
    }
  }
  writeDirAtomic(dir, (tmp) => {
    writeFileAtomic(
      join(tmp, 'config.json'),
      JSON.stringify({ ...hfConfig(s), typelens_generated: { seed } }, null, 2),
    );
    writeFileAtomic(join(tmp, 'model.safetensors'), chunks(), { createDir: false });
  });
}
