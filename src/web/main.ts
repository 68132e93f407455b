/**
 * The lens page: opens the default model, runs the default IOI prompt at once, then redraws on every
 * new prompt or checkpoint. One job at a time (a sweep's workers read the clean cache in place, so a
 * new run waits for the old sweep); a newer request replaces one still waiting.
 * `window.typelensLens` is the test hook (test/lens-page.test.ts): state, logits, sweep workers.
 */
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { ForwardPool } from '../parallel/pool.js';
import { init, type RuntimeInfo } from '../browser.js';
import { platform } from '../platform/index.js';
import {
  analyse,
  attentionReport,
  DEFAULT_INPUT,
  headPatching,
  notebookPairs,
  type LensInput,
  type LensRun,
} from './lens.js';
import { modelFromFiles, randomModel, servedModel, type LoadedModel } from './models.js';
import { drawReport } from './view.js';

/** What the page exposes to tests (and the curious, from the console). */
export interface LensHook {
  /** 'loading' | 'running' | 'sweeping' | 'done' | 'error' */
  status: string;
  /** increments per finished analysis */
  runs: number;
  modelName: string;
  input: LensInput | null;
  tokens: number[];
  /** the clean run's logits [1, P, d_vocab] as little-endian float32 bytes, base64 (bit-exact) */
  logitsBase64: string;
  /** the last sweep: workers it ran on (1: this thread), and its [L, H] result */
  sweep: { runs: number; workers: number; headZ: number[] } | null;
  /** errors shown on the page, in order */
  errors: string[];
  crossOriginIsolated: boolean;
  /** what the library's init() reported: backend, kernel threads, isolation */
  runtime: RuntimeInfo | null;
}

declare global {
  interface Window {
    typelensLens: LensHook;
  }
}

const hook: LensHook = {
  status: 'loading',
  runs: 0,
  modelName: '',
  input: null,
  tokens: [],
  logitsBase64: '',
  sweep: null,
  errors: [],
  crossOriginIsolated: globalThis.crossOriginIsolated === true,
  runtime: null,
};
window.typelensLens = hook;

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
};

let current: { loaded: LoadedModel; pool?: ForwardPool; run?: LensRun } | undefined;

// ---- status and errors ----

const status = (text: string) => ($('status').textContent = text);
const progress = (what: string, done: number, total: number) =>
  status(`${what}: ${total ? Math.round((100 * done) / total) : done} %`);
const paint = () => new Promise<void>((ok) => requestAnimationFrame(() => setTimeout(ok, 0)));

function showError(e: unknown): void {
  // the library's errors are one line; anything else is a bug, shown by its first line too
  const line = (e instanceof Error ? e.message : String(e)).split('\n')[0];
  hook.errors.push(line);
  const el = $('error');
  el.textContent = line;
  el.hidden = false;
}
const clearError = () => ($('error').hidden = true);

// ---- one job at a time ----

type Job = { kind: 'analyse'; input: LensInput } | { kind: 'model'; load: () => Promise<LoadedModel> };
const queue: Job[] = [];
let working = false;

function submit(job: Job): void {
  // a newer analysis replaces one still waiting; model loads are never dropped
  if (job.kind === 'analyse') {
    const i = queue.findIndex((j) => j.kind === 'analyse');
    if (i >= 0) queue.splice(i, 1);
  }
  queue.push(job);
  if (!working) void drain();
}

async function drain(): Promise<void> {
  working = true;
  while (queue.length) {
    const job = queue.shift()!;
    try {
      clearError();
      if (job.kind === 'model') await useModel(await job.load());
      else await runAnalysis(job.input);
    } catch (e) {
      hook.status = 'error';
      status('');
      showError(e);
    }
  }
  working = false;
}

// ---- the model ----

async function useModel(loaded: LoadedModel): Promise<void> {
  const old = current;
  current = { loaded };
  old?.loaded.model.dispose(); // its pool closes with it
  const { model } = loaded;
  current.pool = await workerPool(model);
  hook.modelName = loaded.name;
  const banner = $('banner');
  banner.textContent = loaded.banner ?? '';
  banner.hidden = !loaded.banner;
  const threads = current.pool ? `${current.pool.threads} Web Workers` : 'this thread';
  $('model-line').textContent =
    `model: ${loaded.name} — ${model.cfg.n_layers} layers × ${model.cfg.n_heads} heads, d_model ${model.cfg.d_model}; ` +
    `backend ${model.backend.name} (${hook.runtime?.threads ?? 1} kernel threads); patching sweeps on ${threads}`;
  fillHeadPicker(model);
  await runAnalysis(hook.input ?? DEFAULT_INPUT);
}

/**
 * Workers sharing the model's memory when the page is cross-origin isolated; otherwise none (the
 * library says once in the console why it runs on one thread).
 */
async function workerPool(model: HookedTransformer): Promise<ForwardPool | undefined> {
  if (!platform.sharedThreads().ok || !model.backend.sharedMemory) return undefined;
  const threads = Math.min(4, Math.max(2, platform.cores()));
  return ForwardPool.create(model, { threads });
}

// ---- the analysis ----

const toBase64 = (a: Float32Array): string => {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
};

async function runAnalysis(input: LensInput): Promise<void> {
  if (!current) return;
  const { model } = current.loaded;
  const pool = current.pool;
  hook.status = 'running';
  status('running the clean prompt…');
  await paint();
  const run = analyse(model, input, !!pool);
  current.run = run;
  hook.input = input;
  hook.tokens = Array.from(run.data.tokens.toArray());
  hook.logitsBase64 = toBase64(Float32Array.from(run.logits.toArray()));
  await drawReport($('summary'), run.summary);
  await drawReport($('attribution'), run.attribution);
  const top = run.topHeads[0] ?? 0;
  ($('layer') as HTMLSelectElement).value = String(Math.floor(top / model.cfg.n_heads));
  ($('head') as HTMLSelectElement).value = String(top % model.cfg.n_heads);
  await drawAttention();
  hook.runs++;

  hook.status = 'sweeping';
  const workers = pool ? pool.threads : 1;
  const bar = $('sweep-progress') as HTMLProgressElement;
  const label = $('sweep-status');
  bar.value = 0;
  label.textContent = `patching ${model.cfg.n_layers * model.cfg.n_heads} heads on ${workers === 1 ? 'this thread' : `${workers} workers`}…`;
  status('');
  await paint();
  const onProgress = (done: number, total: number) => {
    bar.value = total ? done / total : 0;
    label.textContent = `patching heads on ${workers === 1 ? 'this thread' : `${workers} workers`}: ${done}/${total}`;
  };
  const p = await headPatching(model, run, { pool, onProgress });
  bar.value = 1;
  label.textContent = `patched ${p.headZ.shape[0] * p.headZ.shape[1]} heads on ${workers === 1 ? 'this thread' : `${workers} workers`}`;
  await drawReport($('patching'), p.report);
  hook.sweep = { runs: (hook.sweep?.runs ?? 0) + 1, workers, headZ: Array.from(p.headZ.toArray()) };
  hook.status = 'done';
}

async function drawAttention(): Promise<void> {
  if (!current?.run) return;
  const layer = Number(($('layer') as HTMLSelectElement).value);
  const head = Number(($('head') as HTMLSelectElement).value);
  await drawReport($('attention'), attentionReport(current.loaded.model, current.run, layer, head));
}

function fillHeadPicker(model: HookedTransformer): void {
  const fill = (id: string, n: number) => {
    const sel = $(id) as HTMLSelectElement;
    sel.replaceChildren(...Array.from({ length: n }, (_, i) => new Option(String(i), String(i))));
  };
  fill('layer', model.cfg.n_layers);
  fill('head', model.cfg.n_heads);
}

// ---- the form, the file input, dropping ----

function readForm(): LensInput {
  const v = (id: string) => ($(id) as HTMLInputElement).value;
  return { prompt: v('prompt'), correct: v('correct'), incorrect: v('incorrect'), corrupted: v('corrupted') };
}

function writeForm(i: LensInput): void {
  for (const k of ['prompt', 'correct', 'incorrect', 'corrupted'] as const) ($(k) as HTMLInputElement).value = i[k];
}

function openFiles(files: File[]): void {
  if (!files.length) return;
  submit({
    kind: 'model',
    load: () => modelFromFiles(files, progress),
  });
}

function wire(): void {
  const pairs = notebookPairs();
  const sel = $('pairs') as HTMLSelectElement;
  sel.replaceChildren(
    new Option('(type your own above)', ''),
    ...pairs.map((p, i) => new Option(`${p.prompt} →${p.correct} | ${p.corrupted}`, String(i))),
  );
  sel.addEventListener('change', () => {
    if (sel.value === '') return;
    writeForm(pairs[Number(sel.value)]);
    submit({ kind: 'analyse', input: readForm() });
  });
  $('input').addEventListener('submit', (e) => {
    e.preventDefault();
    submit({ kind: 'analyse', input: readForm() });
  });
  const redraw = () => void drawAttention().catch(showError);
  $('layer').addEventListener('change', redraw);
  $('head').addEventListener('change', redraw);
  const picker = $('files') as HTMLInputElement;
  picker.addEventListener('change', () => {
    openFiles([...(picker.files ?? [])]);
    picker.value = '';
  });
  const drop = $('drop');
  window.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.hidden = false;
  });
  window.addEventListener('dragleave', (e) => {
    if (e.relatedTarget === null) drop.hidden = true;
  });
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.hidden = true;
    openFiles([...(e.dataTransfer?.files ?? [])]);
  });
}

async function boot(): Promise<void> {
  wire();
  writeForm(DEFAULT_INPUT);
  status('loading the kernels…');
  hook.runtime = await init();
  submit({
    kind: 'model',
    load: async () => {
      try {
        return (await servedModel(progress)) ?? randomModel();
      } catch (e) {
        // a served checkpoint that does not load: say why, and still show the page working
        showError(e);
        return randomModel();
      }
    },
  });
}

boot().catch((e) => {
  hook.status = 'error';
  showError(e);
});
