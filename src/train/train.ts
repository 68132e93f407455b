// TransformerLens's transformer_lens.train, for GPT-2-shaped HookedTransformers.
//
// TL's loop (train.py): for each epoch, for each batch: loss = model(tokens, return_type="loss")
// (lm_cross_entropy_loss, mean over batch and positions); loss.backward(); clip_grad_norm_ when
// max_grad_norm is set; optimizer.step(); scheduler.step() when warmup_steps > 0 (LambdaLR,
// min(1, step / warmup_steps)); save every save_every steps; print every print_every steps;
// stop at max_steps. Here: gradients from gpt2Grad (the autograd tape), the optimizer writes the
// model's own storage through model.updateWeights (which repacks the changed matrices), and a
// progress bar shows the loss.
import { gpt2Grad, namedParameters } from '../model/gpt2-grad.js';
import { ag, withGrad } from '../autograd/index.js';
import { TypelensError } from '../errors.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { rng } from '../model/make-weights.js';
import { Tensor } from '../tensor/index.js';
import { saveCheckpoint } from './checkpoint.js';
import type { TokenGenerator } from './data.js';
import { positionsLoss, scoredRows, transposeInto } from './loss.js';
import { clipGradNorm, decayFactor, makeOptimizer, OptimizerName, warmupFactor } from './optim.js';

export interface TrainConfig {
  /** Learning rate (TL's default 1e-3). */
  lr?: number;
  batchSize: number;
  /** Passes over an array dataset (TL's num_epochs); with a generator, use `steps`. */
  numEpochs?: number;
  /** Stop after this many optimizer steps (TL's max_steps); required for a generator. */
  steps?: number;
  optimizer?: OptimizerName;
  /** SGD momentum (TL's momentum, default 0). */
  momentum?: number;
  /** Adam/SGD: L2; AdamW: decoupled (default 0.01, torch's). */
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  /** Clip the global gradient norm to this (torch's clip_grad_norm_). */
  maxGradNorm?: number;
  /** Linear warmup over this many steps, TL's schedule (the first step has lr 0). */
  warmupSteps?: number;
  /**
   * Decay the rate after the warmup down to minLrFraction·lr at the last step (default 'none',
   * TL's constant rate). See optim's decayFactor.
   */
  lrDecay?: 'none' | 'cosine' | 'linear';
  /** Where lrDecay ends, as a fraction of lr (default 0.1). */
  minLrFraction?: number;
  /** Seeds the shuffling of an array dataset (TL's seed). */
  seed?: number;
  /** Save a checkpoint every this many steps into saveDir/step-N (HF GPT-2 layout). */
  saveEvery?: number;
  saveDir?: string;
  /** Call `log` with the loss every this many steps (TL prints). */
  printEvery?: number;
  log?: (line: string) => void;
  /** Called after every step; returning false stops training. */
  onStep?: (s: StepInfo) => void | boolean;
  /** Progress bar: a (done, total, loss) callback, or false for none (default: src/cli/progress's bar when stderr is a terminal). */
  progress?: false | ((done: number, total: number, loss: number) => void);
  /**
   * Parameters (TL names) left untouched. Default ['unembed.b_U']: GPT-2 (HF's GPT2LMHeadModel)
   * has no bias on its head, so a trained b_U could not be saved as a GPT-2 checkpoint; pass []
   * to train it as TL does (saving is then refused once b_U is non-zero).
   */
  freeze?: string[];
  /** Intra-op threads for the matmuls during training (WASM backend); default: as set. */
  threads?: number;
  /**
   * Score only some positions instead of every next-token prediction (TL's loss is the mean over
   * all of them). Positions are *target* positions p >= 1 (the token at p is predicted from the
   * logits at p - 1), as a generator's answerPositions: 'answers' takes them from the generator
   * (answerPositionsOf(seq) when it varies by sequence, else answerPositions); an array gives the
   * same positions for every row. The loss is the mean cross-entropy over all scored (row,
   * position) pairs, and the residual rows are gathered before ln_final, so the [rows, d_vocab]
   * unembedding runs on the scored rows only (see positionsLoss).
   */
  lossPositions?: 'answers' | number[];
  /**
   * Train with GPT-2's tied head, W_U = W_E^T (HF's lm_head shares wte): W_U is set to W_E^T at
   * the start, each step updates W_E with the summed gradient dW_E + dW_U^T (what torch computes
   * for one shared tensor), and W_U is rewritten as W_E^T, so a checkpoint saves only wte.
   */
  tieEmbeddings?: boolean;
  /**
   * With tieEmbeddings and a trained W_E: train only these rows (token ids) of the shared table,
   * the rest stays at its current values. A small model's step is otherwise dominated by the
   * [d_vocab, d_model] table (dense gradient sum, Adam over 6.4 M entries, W_U rewritten), while
   * the tokens whose embeddings carry the task are a few hundred. The optimizer, the gradient
   * norm and weight decay see the listed rows only; their gradient is still the full tied one
   * (every scored logit's pull on the row, plus the embedding lookups).
   */
  embedRows?: number[];
}

export interface StepInfo {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm?: number;
}

/** Milliseconds per step, by phase. */
export interface StepTiming {
  forward: number;
  backward: number;
  update: number;
  repack: number;
  total: number;
}

export interface TrainResult {
  /** Loss of every step (before its update). */
  losses: number[];
  steps: number;
  /** Mean time per step by phase. */
  timing: StepTiming;
  stepsPerSecond: number;
  /** Checkpoint folders written. */
  saved: string[];
}

export type Dataset = number[][] | Tensor | TokenGenerator;

const isGen = (d: Dataset): d is TokenGenerator => !(d instanceof Tensor) && !Array.isArray(d);

/** Train `model` in place on `dataset` (token sequences of equal length). See TrainConfig. */
export function train(model: HookedTransformer, dataset: Dataset, config: TrainConfig): TrainResult {
  const c = config;
  const B = c.batchSize;
  if (!Number.isInteger(B) || B < 1)
    throw new TypelensError(`batchSize must be a positive integer, got ${B}`, 'EINPUT');
  if (model.cfg.normalization_type !== 'LN' || (model.processing && Object.values(model.processing).some(Boolean))) {
    throw new TypelensError(
      "train: the model's weights are processed (folded LN / centred / value biases folded): train an unprocessed model " +
        '(HookedTransformer.fromConfig, or a loader with NO_PROCESSING), as TL trains before processing',
      'EPROCESSED',
    );
  }
  if (model.dtype !== 'f32')
    throw new TypelensError(`train: the model stores its weights as ${model.dtype}; training needs f32`, 'EDTYPE');
  // ---- batches
  let rows: number[][] | null = null;
  if (dataset instanceof Tensor) {
    if (dataset.ndim !== 2)
      throw new TypelensError(`train: a token tensor must be [N, P], got [${dataset.shape.join(', ')}]`, 'ESHAPE');
    const d = dataset.f32(),
      P = dataset.shape[1];
    rows = Array.from({ length: dataset.shape[0] }, (_, i) => Array.from(d.subarray(i * P, (i + 1) * P)));
  } else if (!isGen(dataset)) rows = dataset;
  const gen = isGen(dataset) ? dataset : null;
  if (rows && !rows.length) throw new TypelensError('train: empty dataset', 'EINPUT');
  const P = gen ? gen.seqLen : rows![0].length;
  if (P < 2 || P > model.cfg.n_ctx)
    throw new TypelensError(`train: sequences of ${P} tokens (need 2..n_ctx=${model.cfg.n_ctx})`, 'EINPUT');
  const V = model.cfg.d_vocab;
  const perEpoch = rows ? Math.ceil(rows.length / B) : Infinity;
  let total: number;
  if (c.steps !== undefined) {
    if (!Number.isInteger(c.steps) || c.steps < 1)
      throw new TypelensError(`steps must be a positive integer, got ${c.steps}`, 'EINPUT');
    total = rows ? Math.min(c.steps, perEpoch * (c.numEpochs ?? Infinity)) : c.steps;
  } else if (rows) total = perEpoch * (c.numEpochs ?? 1);
  else throw new TypelensError('train: a generator dataset needs `steps`', 'EINPUT');
  const r = rng(c.seed ?? 0);
  let order: number[] = [];
  const shuffle = () => {
    order = rows!.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(r.uniform() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
  };
  const batchAt = (step: number): { tokens: Tensor; seqs: number[][] } => {
    let seqs: number[][];
    if (gen?.nextBatch) seqs = gen.nextBatch(B);
    else if (gen) seqs = Array.from({ length: B }, () => gen.next());
    else {
      const k = step % perEpoch;
      if (k === 0) shuffle();
      seqs = order.slice(k * B, (k + 1) * B).map((i) => rows![i]);
    }
    // a generator's nextBatch may give shorter rows (one length per batch)
    const Pb = gen?.nextBatch && seqs.length ? seqs[0].length : P;
    if (Pb < 2 || Pb > P)
      throw new TypelensError(`train: a batch of sequences of ${Pb} tokens (need 2..seqLen=${P})`, 'ESHAPE');
    const flat = new Float32Array(seqs.length * Pb);
    seqs.forEach((s, i) => {
      if (s.length !== Pb)
        throw new TypelensError(`train: sequences must all have ${Pb} tokens, got one of ${s.length}`, 'ESHAPE');
      for (let j = 0; j < Pb; j++) {
        const v = s[j];
        if (!Number.isInteger(v) || v < 0 || v >= V)
          throw new TypelensError(`train: token ${v} outside the vocabulary [0, ${V})`, 'EINPUT');
        flat[i * Pb + j] = v;
      }
    });
    return { tokens: new Tensor(flat, [seqs.length, Pb]), seqs };
  };
  if (c.lossPositions === 'answers' && !gen)
    throw new TypelensError("train: lossPositions 'answers' needs a generator dataset (its answerPositions)", 'EINPUT');
  const positionsOf = (seq: number[]): readonly number[] =>
    c.lossPositions === 'answers' ? (gen!.answerPositionsOf?.(seq) ?? gen!.answerPositions) : c.lossPositions!;
  // ---- optimizer, threads
  const opt = makeOptimizer(c.optimizer ?? 'Adam', {
    lr: c.lr ?? 1e-3,
    weightDecay: c.weightDecay,
    momentum: c.momentum,
    betas: c.betas,
    eps: c.eps,
  });
  if (c.lrDecay !== undefined && !['none', 'cosine', 'linear'].includes(c.lrDecay))
    throw new TypelensError(
      `train: lrDecay ${JSON.stringify(c.lrDecay)}: expected 'none', 'cosine' or 'linear'`,
      'EINPUT',
    );
  if (c.minLrFraction !== undefined && !(c.minLrFraction >= 0 && c.minLrFraction <= 1))
    throw new TypelensError(`train: minLrFraction ${c.minLrFraction} must lie in [0, 1]`, 'EINPUT');
  const be = model.backend as { threads?: number; setThreads?: (n: number) => void };
  const prevThreads = be.threads;
  if (c.threads !== undefined) {
    if (!be.setThreads)
      throw new TypelensError(`train: the ${model.backend.name} backend has no intra-op threads`, 'EINPUT');
    be.setThreads(c.threads);
  }
  const bar = c.progress === false ? undefined : (c.progress ?? defaultBar());
  const losses: number[] = [],
    saved: string[] = [];
  const t: StepTiming = { forward: 0, backward: 0, update: 0, repack: 0, total: 0 };
  const all = [...namedParameters(model).keys()],
    freeze = c.freeze ?? ['unembed.b_U'];
  const tie = !!c.tieEmbeddings;
  const frozenE = freeze.includes('embed.W_E'),
    frozenU = freeze.includes('unembed.W_U');
  if (tie && frozenE !== frozenU)
    throw new TypelensError('train: tieEmbeddings makes W_E and W_U one tensor: freeze both or neither', 'EINPUT');
  const { d_model: M } = model.cfg;
  // W_E [V, M] gradient plus dW_U^T, when tied and trained (the backward's own buffers are reused: never written)
  if (c.embedRows) {
    if (!tie || frozenE)
      throw new TypelensError('train: embedRows needs tieEmbeddings with a trained (not frozen) W_E', 'EINPUT');
    for (const id of c.embedRows)
      if (!Number.isInteger(id) || id < 0 || id >= V)
        throw new TypelensError(`train: embedRows names token ${id}, outside the vocabulary [0, ${V})`, 'EINPUT');
    if (!c.embedRows.length)
      throw new TypelensError('train: embedRows is empty (freeze the embedding instead)', 'EINPUT');
  }
  const rowIds = c.embedRows ? Int32Array.from(new Set(c.embedRows)).sort() : null;
  // the listed rows' parameters and gradients, compact [R, M]
  const rowP = rowIds ? new Float32Array(rowIds.length * M) : null,
    rowG = rowIds ? new Float32Array(rowIds.length * M) : null;
  const tiedGrad = tie && !frozenE && !rowIds ? new Float32Array(V * M) : null;
  if (tie) tieHead(model);
  for (const f of freeze)
    if (!all.includes(f))
      throw new TypelensError(
        `train: freeze names "${f}", which is no parameter of this model (TL names, e.g. ${all.slice(0, 3).join(', ')})`,
        'EINPUT',
      );
  if (c.saveEvery && c.saveDir && !freeze.includes('unembed.b_U'))
    throw new TypelensError(
      'train: checkpoints are GPT-2 checkpoints, whose head has no bias: keep unembed.b_U frozen (the default) when saving',
      'EINPUT',
    );
  const baseLr = c.lr ?? 1e-3,
    names = all.filter((n) => !freeze.includes(n) && !(tie && n === 'unembed.W_U') && !(rowIds && n === 'embed.W_E'));
  const t0 = performance.now();
  try {
    for (let step = 0; step < total; step++) {
      const { tokens, seqs } = batchAt(step);
      const s0 = performance.now();
      let s1 = 0;
      let res: { value: number; params: Map<string, Tensor> };
      if (c.lossPositions !== undefined) {
        const { rows, targets } = scoredRows(seqs, positionsOf);
        // only the trained parameters are watched: a frozen embedding / unembedding then costs no
        // [d_vocab, d_model] gradient, buffer or transpose (the gradients.ts backward watches all)
        const named = namedParameters(model);
        const watched = tiedGrad ? [...names, 'unembed.W_U'] : rowIds ? [...names, 'embed.W_E', 'unembed.W_U'] : names;
        model.checkWeights();
        const { out: m, tape } = withGrad((tp) => {
          tp.watch(...watched.map((n) => named.get(n)!));
          const resid = model.forward(tokens, { stopAtLayer: model.cfg.n_layers });
          s1 = performance.now();
          return positionsLoss(model, resid, rows, targets, { tied: tie });
        });
        const g = tape.backward(m);
        res = { value: m.item(), params: new Map(watched.map((n) => [n, g.view(named.get(n)!)])) };
      } else
        res = gpt2Grad(
          model,
          tokens,
          (logits) => {
            s1 = performance.now();
            return ag.lmCrossEntropyLoss(logits, tokens);
          },
          { hooks: false, views: true },
        );
      const s2 = performance.now();
      const grads = res.params;
      if (tiedGrad) {
        // one shared tensor: d loss / d W_E = dW_E + dW_U^T
        transposeInto(grads.get('unembed.W_U')!.f32(), M, V, tiedGrad);
        const gE = grads.get('embed.W_E')!.f32();
        for (let i = 0; i < tiedGrad.length; i++) tiedGrad[i] += gE[i];
      }
      if (rowIds) {
        // row r of the shared table: dW_E[id] + dW_U[:, id]
        const gE = grads.get('embed.W_E')!.f32(),
          gU = grads.get('unembed.W_U')!.f32();
        for (let r = 0; r < rowIds.length; r++) {
          const id = rowIds[r];
          for (let j = 0; j < M; j++) rowG![r * M + j] = gE[id * M + j] + gU[j * V + id];
        }
      }
      const gradOf = (name: string): Float32Array =>
        tiedGrad && name === 'embed.W_E' ? tiedGrad : grads.get(name)!.f32();
      const clipped = [...grads.keys()]
        .filter((n) => !(tie && n === 'unembed.W_U') && !(rowIds && n === 'embed.W_E'))
        .map(gradOf);
      if (rowG) clipped.push(rowG);
      const gradNorm = c.maxGradNorm !== undefined ? clipGradNorm(clipped, c.maxGradNorm) : undefined;
      const lr =
        baseLr *
        warmupFactor(step, c.warmupSteps ?? 0) *
        decayFactor(step, total, c.warmupSteps ?? 0, c.lrDecay, c.minLrFraction);
      opt.beginStep();
      let inFn = 0;
      model.updateWeights(names, (name, data) => {
        const u = performance.now();
        opt.update(name, data, gradOf(name), lr);
        inFn += performance.now() - u;
      });
      if (tiedGrad) tieHead(model);
      if (rowIds) {
        const u = performance.now();
        const E = model.weights.W_E.contiguous().f32();
        for (let r = 0; r < rowIds.length; r++) rowP!.set(E.subarray(rowIds[r] * M, (rowIds[r] + 1) * M), r * M);
        opt.update('embed.W_E', rowP!, rowG!, lr);
        inFn += performance.now() - u;
        // write the rows into W_E and the same values into W_U's columns (W_U = W_E^T stays exact)
        model.updateWeights(['embed.W_E', 'unembed.W_U'], (name, data) => {
          for (let r = 0; r < rowIds.length; r++) {
            const id = rowIds[r];
            if (name === 'embed.W_E') data.set(rowP!.subarray(r * M, (r + 1) * M), id * M);
            else for (let j = 0; j < M; j++) data[j * V + id] = rowP![r * M + j];
          }
        });
      }
      const s3 = performance.now();
      t.forward += s1 - s0;
      t.backward += s2 - s1;
      t.update += inFn;
      t.repack += s3 - s2 - inFn;
      losses.push(res.value);
      const epoch = rows ? Math.floor(step / perEpoch) : 0;
      bar?.(step + 1, total, res.value);
      if (c.printEvery && (step + 1) % c.printEvery === 0)
        (c.log ?? console.log)(
          `step ${step + 1}/${total} epoch ${epoch} loss ${res.value.toFixed(4)} lr ${lr.toExponential(2)}`,
        );
      if (c.saveEvery && c.saveDir && (step + 1) % c.saveEvery === 0) {
        const dir = `${c.saveDir}/step-${step + 1}`;
        saveCheckpoint(model, dir, { step: String(step + 1), loss: String(res.value) });
        saved.push(dir);
      }
      if (c.onStep?.({ step, epoch, loss: res.value, lr, gradNorm }) === false) {
        total = step + 1;
        break;
      }
    }
  } finally {
    if (c.threads !== undefined && prevThreads !== undefined) be.setThreads!(prevThreads);
  }
  const n = losses.length,
    wall = performance.now() - t0;
  const timing: StepTiming = {
    forward: t.forward / n,
    backward: t.backward / n,
    update: t.update / n,
    repack: t.repack / n,
    total: wall / n,
  };
  return { losses, steps: n, timing, stepsPerSecond: n / (wall / 1000), saved };
}

/** W_U := W_E^T, written through the model (which repacks it). */
function tieHead(model: HookedTransformer): void {
  const { d_model: M, d_vocab: V } = model.cfg;
  const E = model.weights.W_E.contiguous().f32();
  model.updateWeights(['unembed.W_U'], (_, data) => transposeInto(E, V, M, data));
}

/** A terminal progress bar with the loss (silent when stderr is not a terminal). */
function defaultBar(): ((done: number, total: number, loss: number) => void) | undefined {
  if (typeof process === 'undefined' || !process.stderr?.isTTY) return undefined;
  let last = 0;
  return (done, total, loss) => {
    const now = Date.now();
    if (done < total && now - last < 100) return;
    last = now;
    const w = 30,
      f = Math.round((done / total) * w);
    process.stderr.write(
      `\rtrain [${'█'.repeat(f)}${'░'.repeat(w - f)}] ${done}/${total} loss ${loss.toFixed(4)}${done >= total ? '\n' : ''}`,
    );
  };
}
