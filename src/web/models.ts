/**
 * Where the lens page's model comes from: the folder `typelens serve --model DIR` serves under
 * model/, a checkpoint the user drops or picks (config.json + model.safetensors, read in the tab,
 * no server round trip), or, when neither exists, a seeded random tiny GPT-2 made in the tab.
 */
import { TypelensError } from '../errors.js';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { hfConfig, PRESETS, randomGPT2 } from '../model/make-weights.js';

/** The demo's processing (src/cli/demo.ts DEMO_FLAGS, TL's from_pretrained defaults plus the refactor). */
export const LENS_FLAGS = {
  foldLn: true,
  centerWritingWeights: true,
  centerUnembed: true,
  refactorFactoredAttnMatrices: true,
};

/**
 * The page's settings (serve.ts PAGE_CONFIG): `typelens serve` answers it with the folder it serves
 * the model from; the build's copy says null (a static host edits it to name a checkpoint folder).
 */
export const PAGE_CONFIG = 'lens-config.json';

/** The random model's shape and seed, so a Node run can rebuild the same weights. */
export const RANDOM_PRESET = 'tiny';
export const RANDOM_SEED = 0;

export interface LoadedModel {
  model: HookedTransformer;
  /** what to call it on the page */
  name: string;
  /** a warning to show above everything (random weights), or null */
  banner: string | null;
}

export type Progress = (what: string, done: number, total: number) => void;

/** The config's own name when it has one (HF's _name_or_path), else `fallback`. */
const nameOf = (model: HookedTransformer, fallback: string): string =>
  /^[\w.\-/]+$/.test(model.cfg.model_name) ? model.cfg.model_name : fallback;

/** The model the page's settings name (a folder URL relative to the page), or null when they name none. */
export async function servedModel(onProgress?: Progress): Promise<LoadedModel | null> {
  const res = await fetch(PAGE_CONFIG);
  if (!res.ok) return null;
  const { model: folder, banner } = (await res.json()) as { model?: string | null; banner?: string };
  if (!folder) return null;
  const url = new URL(folder, document.baseURI).href;
  const model = await HookedTransformer.fromUrl(url, {
    ...LENS_FLAGS,
    onDownload: (file, done, total) => onProgress?.(`downloading ${file}`, done, total),
  });
  return { model, name: `${nameOf(model, 'the served model')} (served from ${folder})`, banner: banner ?? null };
}

export const RANDOM_BANNER =
  'No checkpoint was served, so this page runs a seeded RANDOM tiny GPT-2-shaped model (2 layers, 4 heads, d_model 64): ' +
  'every number below is meaningless as interpretability. Run `npx typelens serve --model DIR` with a checkpoint ' +
  '(config.json + model.safetensors), or drop one on this page.';

/** The seeded random tiny model (make-weights --preset tiny --seed 0, processed like the demo). */
export function randomModel(): LoadedModel {
  const shape = PRESETS[RANDOM_PRESET];
  const model = HookedTransformer.fromHFTensors(hfConfig(shape), randomGPT2(shape, RANDOM_SEED), LENS_FLAGS);
  return { model, name: `random ${RANDOM_PRESET} GPT-2 (seed ${RANDOM_SEED})`, banner: RANDOM_BANNER };
}

/**
 * A checkpoint from files the user dropped or picked: one .json (the HF config) and one
 * .safetensors, whatever their names. Read in the tab with progress.
 */
export async function modelFromFiles(files: File[], onProgress?: Progress): Promise<LoadedModel> {
  const json = files.filter((f) => f.name.toLowerCase().endsWith('.json'));
  const st = files.filter((f) => f.name.toLowerCase().endsWith('.safetensors'));
  const got = files.map((f) => f.name).join(', ') || 'nothing';
  if (json.length !== 1 || st.length !== 1)
    throw new TypelensError(`a checkpoint is two files, config.json and model.safetensors (got: ${got})`, 'EINPUT');
  const model = await HookedTransformer.fromSourcesAsync(
    { 'config.json': json[0], 'model.safetensors': st[0] },
    { ...LENS_FLAGS, onDownload: (file, done, total) => onProgress?.(`reading ${file}`, done, total) },
  );
  return { model, name: `${nameOf(model, 'a checkpoint')} (from ${json[0].name} + ${st[0].name})`, banner: null };
}
