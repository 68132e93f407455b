/**
 * A standalone differentiable GPT-2 forward over a loaded HookedTransformer's weights: the
 * same layer sequence as HookedTransformer.forward, written with the differentiable ops, and
 * a `fire(name, t)` at each TL hook point. It validates the gradient machinery against
 * TransformerLens's autograd (test/fixtures/{name}/grads.safetensors) before the model's
 * layer functions are wired to it; once they are, this file can shrink to a thin wrapper.
 *
 * Forward matmuls reuse the model's packed weights; backward dX uses transposed copies
 * packed lazily into a per-model PackCache (released at model.dispose()).
 */
import type { HookedTransformer } from '../model/hooked-transformer.js';
import type { BlockWeights } from '../model/weights.js';
import { Tensor } from '../tensor/index.js';
import * as ag from './ops.js';
import { Gradients, GradHook, hookGrad, Tape, withGrad } from './tape.js';

/** The model's load-time packings (private today; the wiring will expose them properly). */

const caches = new WeakMap<HookedTransformer, ag.PackCache>();
export function packCacheFor(model: HookedTransformer): ag.PackCache {
  let c = caches.get(model);
  if (!c) {
    const cache = c = new ag.PackCache(model.backend);
    caches.set(model, c);
    model.onDispose.push(() => cache.release());
    model.derivedCopies.push(cache); // weight edits (setWeight, optimizers) drop the stale transposed packings
  }
  return c;
}

/** Every parameter in TL's names and layouts (LN weights only while the model has them). */
export function namedParameters(model: HookedTransformer): Map<string, Tensor> {
  const W = model.weights, out = new Map<string, Tensor>();
  out.set('embed.W_E', W.W_E);
  out.set('pos_embed.W_pos', W.W_pos);
  const map: [keyof BlockWeights, string][] = [
    ['ln1_w', 'ln1.w'], ['ln1_b', 'ln1.b'], ['W_Q', 'attn.W_Q'], ['W_K', 'attn.W_K'], ['W_V', 'attn.W_V'], ['W_O', 'attn.W_O'],
    ['b_Q', 'attn.b_Q'], ['b_K', 'attn.b_K'], ['b_V', 'attn.b_V'], ['b_O', 'attn.b_O'], ['ln2_w', 'ln2.w'], ['ln2_b', 'ln2.b'],
    ['W_in', 'mlp.W_in'], ['b_in', 'mlp.b_in'], ['W_out', 'mlp.W_out'], ['b_out', 'mlp.b_out'],
  ];
  W.blocks.forEach((blk, l) => { for (const [k, n] of map) if (blk[k]) out.set(`blocks.${l}.${n}`, blk[k]!); });
  if (W.ln_final_w) out.set('ln_final.w', W.ln_final_w);
  if (W.ln_final_b) out.set('ln_final.b', W.ln_final_b);
  out.set('unembed.W_U', W.W_U);
  out.set('unembed.b_U', W.b_U);
  return out;
}

/** Called at each hook point firing: return the (possibly replaced) activation. */
export type FireFn = (name: string, t: Tensor) => Tensor;

/** Logits [B, P, V] of tokens [B, P], recording on the active tape when one is running. */
export function gpt2Forward(model: HookedTransformer, tokens: Tensor, fire: FireFn = (_, t) => t): Tensor {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_layers: L, eps } = model.cfg;
  const W = model.weights, be = model.backend, cache = packCacheFor(model), pk = model.packed;
  const [B, P] = tokens.shape;
  const ln = (x: Tensor, prefix: string, w?: Tensor, b?: Tensor) => {
    const affine = model.cfg.normalization_type === 'LN' && w && b;
    return ag.layerNorm(x, eps, affine ? w : undefined, affine ? b : undefined,
      { scale: (s) => fire(`${prefix}.hook_scale`, s), normalized: (n) => fire(`${prefix}.hook_normalized`, n) });
  };
  const embed = fire('hook_embed', ag.embedding(W.W_E, tokens, cache));
  const pos = fire('hook_pos_embed', ag.contiguous(ag.expand(ag.unsqueeze(ag.slice(W.W_pos, 0, 0, P), 0), [B, P, M])));
  let resid = ag.add(embed, pos);
  for (let l = 0; l < L; l++) {
    const blk = W.blocks[l], p = pk.blocks[l], pre = `blocks.${l}.`;
    const residPre = fire(pre + 'hook_resid_pre', resid);
    const xq = ln(residPre, pre + 'ln1', blk.ln1_w, blk.ln1_b);
    const xk = ln(residPre, pre + 'ln1', blk.ln1_w, blk.ln1_b);
    const xv = ln(residPre, pre + 'ln1', blk.ln1_w, blk.ln1_b);
    const q = fire(pre + 'attn.hook_q', ag.linear(xq, ag.headsInWeight(blk.W_Q, cache, p.WQ), blk.b_Q, be, [B, P, H, D]));
    const k = fire(pre + 'attn.hook_k', ag.linear(xk, ag.headsInWeight(blk.W_K, cache, p.WK), blk.b_K, be, [B, P, H, D]));
    const v = fire(pre + 'attn.hook_v', ag.linear(xv, ag.headsInWeight(blk.W_V, cache, p.WV), blk.b_V, be, [B, P, H, D]));
    const scores = fire(pre + 'attn.hook_attn_scores', ag.attnScores(q, k, model.cfg.attn_scale));
    const pattern = fire(pre + 'attn.hook_pattern', ag.softmax(scores));
    const z = fire(pre + 'attn.hook_z', ag.attnMix(pattern, v));
    const attnOut = fire(pre + 'hook_attn_out', ag.linear(z, ag.headsOutWeight(blk.W_O, cache, p.WO), blk.b_O, be, [B, P, M]));
    const residMid = fire(pre + 'hook_resid_mid', ag.add(residPre, attnOut));
    const x2 = ln(residMid, pre + 'ln2', blk.ln2_w, blk.ln2_b);
    const hPre = fire(pre + 'mlp.hook_pre', ag.linear(x2, ag.plainWeight(blk.W_in, cache, p.Win), blk.b_in, be, [B, P, F]));
    const hPost = fire(pre + 'mlp.hook_post', ag.activation(hPre, model.cfg.act_fn));
    const mlpOut = fire(pre + 'hook_mlp_out', ag.linear(hPost, ag.plainWeight(blk.W_out, cache, p.Wout), blk.b_out, be, [B, P, M]));
    resid = fire(pre + 'hook_resid_post', ag.add(residMid, mlpOut));
  }
  const xf = ln(resid, 'ln_final', W.ln_final_w, W.ln_final_b);
  return ag.linear(xf, ag.plainWeight(W.W_U, cache, pk.WU), W.b_U, be, [B, P, V]);
}

export interface Gpt2GradResult {
  /** The metric's value. */
  value: number;
  /** d metric / d parameter, TL names (see namedParameters). Empty when params is false. */
  params: Map<string, Tensor>;
  /** d metric / d hook point output, summed over firings (ln1 fires three times per layer). */
  hooks: Map<string, Tensor>;
  /** Per-firing gradients for hook points that fire more than once: name -> [first, second, ...]. */
  firings: Map<string, Tensor[]>;
}

/**
 * One forward with the tape and one backward: the gradient of `metric(logits)` with respect to
 * every parameter (TL names) and every hook point. `bwdHooks` see (and may replace) the
 * gradient at a hook point, as TL's backward hooks do.
 */
export function gpt2Grad(model: HookedTransformer, tokens: Tensor, metric: (logits: Tensor) => Tensor,
  opts: { params?: boolean; hooks?: boolean; bwdHooks?: [string | ((n: string) => boolean), GradHook][];
    /** Return weight gradients as views of reused kernel buffers (valid until the next backward), not copies. */
    views?: boolean } = {}): Gpt2GradResult {
  const wantParams = opts.params ?? true, wantHooks = opts.hooks ?? true;
  model.checkWeights(); // a weight edited outside the model would disagree with its packed copy
  const named = namedParameters(model);
  const firings = new Map<string, Tensor[]>();
  const hooksFor = (name: string) => (opts.bwdHooks ?? []).filter(([f]) => (typeof f === 'string' ? f === name : f(name))).map(([, fn]) => fn);
  const fire: FireFn = (name, t) => {
    const user = hooksFor(name);
    if (!wantHooks && !user.length) return t;
    // one firing: index of this firing's slot, filled when its gradient arrives
    let slot = -1;
    if (wantHooks) { const list = firings.get(name) ?? []; slot = list.length; list.push(Tensor.zeros(t.shape)); firings.set(name, list); }
    return hookGrad(t, (g) => {
      let cur = g;
      for (const fn of user) { const r = fn(cur); if (r instanceof Tensor) cur = r; }
      if (slot >= 0) firings.get(name)![slot] = cur.clone();
      return cur === g ? undefined : cur;
    });
  };
  const tok = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
  const { out: m, tape } = withGrad((tp: Tape) => {
    if (wantParams) tp.watch(...named.values());
    else tp.watch(model.weights.W_E, model.weights.W_pos); // the graph's roots: hooks only need it recorded
    return metric(gpt2Forward(model, tok, fire));
  });
  const value = m.item();
  const grads: Gradients = tape.backward(m);
  const params = new Map<string, Tensor>();
  if (wantParams) for (const [n, t] of named) params.set(n, opts.views ? grads.view(t) : grads.get(t));
  const hooks = new Map<string, Tensor>();
  for (const [n, list] of firings) {
    if (list.length === 1) { hooks.set(n, list[0]); continue; }
    const s = Float32Array.from(list[0].f32());
    for (const t of list.slice(1)) { const d = t.f32(); for (let i = 0; i < s.length; i++) s[i] += d[i]; }
    hooks.set(n, new Tensor(s, list[0].shape));
  }
  for (const n of [...firings.keys()]) if (firings.get(n)!.length === 1) firings.delete(n);
  return { value, params, hooks, firings };
}

/** TL's logit difference metric: mean over batch of logits[b, -1, A] - logits[b, -1, B]. */
export function logitDiffMetric(answer: [number, number]): (logits: Tensor) => Tensor {
  return (logits) => {
    const last = ag.index(logits, 1, -1); // [B, V]
    const Bn = last.shape[0];
    const idx = new Tensor(Float32Array.from({ length: 2 * Bn }, (_, i) => answer[i % 2]), [Bn, 2]);
    const picked = ag.gather(last, idx); // [B, 2]
    return ag.mean(ag.sub(ag.index(picked, 1, 0), ag.index(picked, 1, 1)));
  };
}
