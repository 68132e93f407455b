// Writing a model's weights: TL's state-dict API (state_dict, load_state_dict,
// load_and_process_state_dict, process_weights_) and setWeight / updateWeights. Every write goes
// to the parameter's own storage, repacks the packed copy of what changed (and only that), tells
// derived caches (the gradients' transposed packings) and bumps the model's weightsVersion (worker
// pools built before refuse to run). See params.ts for how direct edits are detected.
import { TypelensError } from '../errors.js';
import type { PackedWeight } from '../kernels/index.js';
import { encode, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import { DEFAULT_PROCESSING, processWeights, ProcessingOptions } from './process.js';
import { isLnKey, packSlot, paramSlots, ParamSlot, weightStorage, WeightGuard } from './params.js';
import type { Backend } from '../kernels/index.js';
import type { DType } from '../tensor/index.js';
import type { PackedModel } from './packed.js';

/** What editing needs of a HookedTransformer (an interface here, so that the model's module and this one form no cycle). */
export interface EditableModel {
  readonly cfg: ModelConfig;
  readonly backend: Backend;
  readonly dtype: DType;
  readonly packed: PackedModel;
  readonly weights: Weights;
  readonly weightGuard: WeightGuard;
  readonly derivedCopies: { invalidate(leaf?: Tensor): void }[];
  weightsVersion: number;
  processing: Required<ProcessingOptions> | null;
  assertUsable(): void;
  stateDict(): Record<string, Tensor>;
}
import type { Weights } from './weights.js';

export type StateDict = Record<string, Tensor> | Map<string, Tensor>;
const entries = (d: StateDict): [string, Tensor][] => (d instanceof Map ? [...d] : Object.entries(d));

function slotsOf(model: EditableModel): ParamSlot[] {
  return paramSlots(model.cfg, model.weights, model.packed);
}

function findSlot(model: EditableModel, name: string, what = 'setWeight'): ParamSlot {
  const s = slotsOf(model).find((x) => x.name === name);
  if (s) return s;
  if (/^(blocks\.\d+\.ln[12]|ln_final)\.[wb]$/.test(name) && model.cfg.normalization_type !== 'LN') {
    throw new TypelensError(
      `${what}("${name}"): this model has no LayerNorm weights (they were folded: normalization ${model.cfg.normalization_type}); load an unprocessed model to edit them`,
      'EWEIGHT',
    );
  }
  const some = slotsOf(model)
    .slice(0, 6)
    .map((x) => x.name)
    .join(', ');
  throw new TypelensError(
    `${what}("${name}"): no such parameter (TL names, e.g. ${some}, blocks.0.mlp.W_out, unembed.W_U; see model.stateDict())`,
    'EWEIGHT',
  );
}

/** The parameter's current tensor (raw, unguarded view of its storage). */
function current(slot: ParamSlot): Tensor | undefined {
  return (slot.owner as unknown as Record<string, Tensor | undefined>)[slot.key];
}
function setCurrent(slot: ParamSlot, t: Tensor | undefined): void {
  const o = slot.owner as unknown as Record<string, Tensor | undefined>;
  if (t) o[slot.key] = t;
  else delete o[slot.key];
}

/** After the storage of `slot` changed: repack, drop derived copies, re-fingerprint; or, for small tensors on a device backend, give it a fresh identity. */
function afterWrite(model: EditableModel, slot: ParamSlot): void {
  const t = current(slot)!;
  if (slot.pack) {
    const p = slot.pack,
      fresh = packSlot(model.backend, model.dtype, slot, t);
    if (p.key === 'WU') {
      model.packed.WU.release();
      model.packed.WU = fresh;
    } else {
      const b = p.block as unknown as Record<string, PackedWeight>;
      b[p.key].release();
      b[p.key] = fresh;
    }
  } else if (model.backend.deviceOps && slot.key !== 'W_E' && slot.key !== 'W_pos') {
    // the CUDA backend keeps small arrays on the device keyed by array identity: a new array is re-uploaded
    const copy = new Tensor(Float32Array.from(weightStorage(t) as Float32Array), t.shape);
    model.weightGuard.unwatch(t);
    setCurrent(slot, copy);
    model.weightGuard.watch(slot.name, copy);
    return;
  }
  for (const c of model.derivedCopies) c.invalidate(t);
  model.weightGuard.written(t);
}

/** Write `values` (f32, the slot's shape) into the parameter. Returns false when nothing changed. */
function writeSlot(model: EditableModel, slot: ParamSlot, values: Float32Array): boolean {
  let t = current(slot);
  if (!t) {
    // an LN weight coming back (loading an unprocessed state dict into a folded model)
    t = new Tensor(Float32Array.from(values), slot.shape);
    setCurrent(slot, t);
    model.weightGuard.watch(slot.name, t);
    return true;
  }
  const raw = weightStorage(t);
  const enc = raw instanceof Float32Array ? values : encode(values, t.dtype);
  let same = raw.length === enc.length;
  for (let i = 0; same && i < enc.length; i++) same = Object.is(raw[i], enc[i]);
  if (same && !model.weightGuard.dirty(t)) return false;
  if (!same) raw.set(enc);
  afterWrite(model, slot);
  return true;
}

function valuesFor(slot: ParamSlot, src: Tensor, what: string): Float32Array {
  if (!(src instanceof Tensor))
    throw new TypelensError(
      `${what}("${slot.name}"): expected a Tensor, got ${src === null ? 'null' : typeof src}`,
      'EINPUT',
    );
  if (src.ndim !== slot.shape.length || src.shape.some((d, i) => d !== slot.shape[i])) {
    throw new TypelensError(
      `${what}("${slot.name}"): shape [${src.shape.join(', ')}] does not match the parameter's [${slot.shape.join(', ')}]`,
      'ESHAPE',
    );
  }
  return src.f32();
}

export function setWeight(model: EditableModel, name: string, value: Tensor): boolean {
  model.assertUsable();
  const slot = findSlot(model, name);
  const changed = writeSlot(model, slot, valuesFor(slot, value, 'setWeight'));
  if (changed) model.weightsVersion++;
  return changed;
}

/**
 * Let `fn` write into the named parameters' own f32 storage (optimizers: no copies), then
 * remake their derived copies. `fn` must not keep the arrays.
 */
export function updateWeights(
  model: EditableModel,
  names: Iterable<string>,
  fn: (name: string, data: Float32Array) => void,
): void {
  model.assertUsable();
  const slots = [...names].map((n) => findSlot(model, n, 'updateWeights'));
  for (const s of slots) {
    const raw = weightStorage(current(s)!);
    if (!(raw instanceof Float32Array))
      throw new TypelensError(
        `updateWeights("${s.name}"): the weight is stored as ${current(s)!.dtype}; in-place updates need f32 storage (use setWeight)`,
        'EDTYPE',
      );
    fn(s.name, raw);
  }
  for (const s of slots) afterWrite(model, s);
  model.weightsVersion++;
}

/** TL's state_dict(): every parameter under its TL name, as copies in f32 (edit, then loadStateDict). */
export function stateDict(model: EditableModel): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const s of slotsOf(model)) {
    const t = current(s)!;
    out[s.name] = new Tensor(
      Float32Array.from(new Tensor(weightStorage(t), t.shape, undefined, 0, t.dtype).f32()),
      s.shape,
    );
  }
  return out;
}

/**
 * TL's load_state_dict: write each entry (shape-checked), repacking only what changed. With
 * `strict` (the default, as in PyTorch) the keys must be exactly the model's parameters.
 */
export function loadStateDict(
  model: EditableModel,
  dict: StateDict,
  opts: { strict?: boolean } = {},
): { changed: string[] } {
  model.assertUsable();
  const slots = slotsOf(model),
    byName = new Map(slots.map((s) => [s.name, s]));
  const es = entries(dict);
  const unexpected = es.map(([k]) => k).filter((k) => !byName.has(k));
  if (unexpected.length) {
    throw new TypelensError(
      `loadStateDict: unexpected key(s) ${unexpected
        .slice(0, 5)
        .map((k) => `"${k}"`)
        .join(', ')}${unexpected.length > 5 ? ` (+${unexpected.length - 5})` : ''}` +
        (unexpected.some((k) => /ln(1|2|_final)\./.test(k)) && model.cfg.normalization_type !== 'LN'
          ? ' (this model has its LayerNorms folded: use loadAndProcessStateDict)'
          : ''),
      'EWEIGHT',
    );
  }
  if (opts.strict ?? true) {
    const have = new Set(es.map(([k]) => k)),
      missing = slots.map((s) => s.name).filter((n) => !have.has(n));
    if (missing.length)
      throw new TypelensError(
        `loadStateDict: missing key(s) ${missing
          .slice(0, 5)
          .map((k) => `"${k}"`)
          .join(
            ', ',
          )}${missing.length > 5 ? ` (+${missing.length - 5})` : ''} (pass { strict: false } to load a subset)`,
        'EWEIGHT',
      );
  }
  const vals = es.map(([k, v]) => [byName.get(k)!, valuesFor(byName.get(k)!, v, 'loadStateDict')] as const); // check all before writing any
  const changed = vals.filter(([s, v]) => writeSlot(model, s, v)).map(([s]) => s.name);
  if (changed.length) model.weightsVersion++;
  return { changed };
}

/** The model's weights as a fresh f32 Weights object (for processing). */
function copyWeights(model: EditableModel, withLn: boolean): Weights {
  const W = model.weights,
    f = (t?: Tensor) =>
      t
        ? new Tensor(Float32Array.from(new Tensor(weightStorage(t), t.shape, undefined, 0, t.dtype).f32()), t.shape)
        : undefined;
  const { d_model: M } = model.cfg;
  const ones = () => Tensor.full([M], 1),
    zeros = () => Tensor.zeros([M]);
  return {
    W_E: f(W.W_E)!,
    W_pos: f(W.W_pos)!,
    W_U: f(W.W_U)!,
    b_U: f(W.b_U)!,
    ln_final_w: withLn ? (f(W.ln_final_w) ?? ones()) : undefined,
    ln_final_b: withLn ? (f(W.ln_final_b) ?? zeros()) : undefined,
    blocks: W.blocks.map((b) => ({
      ln1_w: withLn ? (f(b.ln1_w) ?? ones()) : undefined,
      ln1_b: withLn ? (f(b.ln1_b) ?? zeros()) : undefined,
      ln2_w: withLn ? (f(b.ln2_w) ?? ones()) : undefined,
      ln2_b: withLn ? (f(b.ln2_b) ?? zeros()) : undefined,
      W_Q: f(b.W_Q)!,
      W_K: f(b.W_K)!,
      W_V: f(b.W_V)!,
      W_O: f(b.W_O)!,
      b_Q: f(b.b_Q)!,
      b_K: f(b.b_K)!,
      b_V: f(b.b_V)!,
      b_O: f(b.b_O)!,
      W_in: f(b.W_in)!,
      b_in: f(b.b_in)!,
      W_out: f(b.W_out)!,
      b_out: f(b.b_out)!,
    })),
  };
}

/** Make the model's weights (and normalization type) equal `W`, writing and repacking only what differs. */
function install(model: EditableModel, W: Weights, cfg: ModelConfig): string[] {
  const changed: string[] = [];
  // LN weights that the new weights no longer have (folded) leave the model
  if (cfg.normalization_type !== 'LN') {
    for (const s of paramSlots(model.cfg, model.weights, model.packed, true)) {
      if (!isLnKey(s.key)) continue;
      const t = current(s);
      if (t) {
        model.weightGuard.unwatch(t);
        setCurrent(s, undefined);
        changed.push(s.name);
      }
    }
  }
  const prevNorm = model.cfg.normalization_type;
  model.cfg.normalization_type = cfg.normalization_type;
  const fresh = paramSlots(cfg, W, null);
  for (const s of slotsOf(model)) {
    const src = fresh.find((x) => x.name === s.name)!;
    if (writeSlot(model, s, current(src)!.f32())) changed.push(s.name);
  }
  if (changed.length || prevNorm !== cfg.normalization_type) model.weightsVersion++;
  return changed;
}

/**
 * TL's load_and_process_state_dict: overlay `dict` (TL names; LN weights allowed, e.g. an
 * unprocessed state dict) on the model's weights, apply TL's processing (from_pretrained's
 * defaults unless switched off) and load the result.
 */
export function loadAndProcessStateDict(
  model: EditableModel,
  dict: StateDict,
  opts: ProcessingOptions = {},
): { changed: string[] } {
  model.assertUsable();
  const es = entries(dict);
  const withLn = model.cfg.normalization_type === 'LN' || es.some(([k]) => /ln(1|2|_final)\.[wb]$/.test(k));
  const cfg = { ...model.cfg, normalization_type: withLn ? ('LN' as const) : model.cfg.normalization_type };
  const W = copyWeights(model, withLn);
  const slots = paramSlots(cfg, W, null),
    byName = new Map(slots.map((s) => [s.name, s]));
  for (const [k, v] of es) {
    const s = byName.get(k);
    if (!s) throw new TypelensError(`loadAndProcessStateDict: unexpected key "${k}"`, 'EWEIGHT');
    setCurrent(s, new Tensor(Float32Array.from(valuesFor(s, v, 'loadAndProcessStateDict')), s.shape));
  }
  const o = { ...DEFAULT_PROCESSING, ...opts };
  if (cfg.normalization_type !== 'LN') o.foldLn = false; // already folded
  processWeights(W, cfg, o);
  const changed = install(model, W, cfg);
  model.processing = model.processing ? mergeProcessing(model.processing, o) : null;
  return { changed };
}

/** TL's process_weights_: apply the processing steps to the model's own weights (from_pretrained's defaults). */
export function processWeights_(model: EditableModel, opts: ProcessingOptions = {}): { changed: string[] } {
  return loadAndProcessStateDict(model, {}, opts);
}

function mergeProcessing(a: Required<ProcessingOptions>, b: ProcessingOptions): Required<ProcessingOptions> {
  const r = { ...a };
  for (const k of Object.keys(r) as (keyof ProcessingOptions)[]) r[k] = a[k] || !!b[k];
  return r;
}
