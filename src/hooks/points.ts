// The one table of the model's hook points (TransformerLens's names, in its registration order).
// Registration, the cache-size estimate and posSlice's axis all read it, so the hook list and
// the forward cannot drift apart: a point that the forward fires is `fires > 0` here.

/** Shape of the activation at a hook point ([B, P, ...] with B batch, P positions). */
export type ShapeKind =
  | 'resid' //    [B, P, d_model]
  | 'headResid' // [B, P, n_heads, d_model] (TL's split q/k/v inputs)
  | 'heads' //    [B, P, n_heads, d_head] (q, k, v, z; result is [B, P, n_heads, d_model] in TL)
  | 'pattern' //  [B, n_heads, P, P] (scores and pattern)
  | 'mlp' //      [B, P, d_mlp]
  | 'scale'; //   [B, P, 1]

export interface HookPointSpec {
  /** Full name for model-level points, the part after `blocks.{l}.` for block points. */
  name: string;
  kind: ShapeKind;
  /** How many times one forward fires it: 0 = registered but dormant (TL needs a flag to use it), 3 = ln1 (once per q, k, v input). */
  fires: number;
  /** The TL config flag a dormant point needs, when asking for it by name is an error. */
  needs?: string;
}

const spec = (name: string, kind: ShapeKind, fires = 1, needs?: string): HookPointSpec => ({
  name,
  kind,
  fires,
  needs,
});

export const EMBED_HOOKS: readonly HookPointSpec[] = [spec('hook_embed', 'resid'), spec('hook_pos_embed', 'resid')];

/** One transformer block's points, in TL's order. */
export const BLOCK_HOOKS: readonly HookPointSpec[] = [
  spec('hook_resid_pre', 'resid'),
  spec('hook_attn_in', 'headResid', 0, 'use_attn_in'),
  spec('hook_q_input', 'headResid', 0, 'use_split_qkv_input'),
  spec('hook_k_input', 'headResid', 0, 'use_split_qkv_input'),
  spec('hook_v_input', 'headResid', 0, 'use_split_qkv_input'),
  spec('ln1.hook_scale', 'scale', 3),
  spec('ln1.hook_normalized', 'resid', 3),
  spec('attn.hook_q', 'heads'),
  spec('attn.hook_k', 'heads'),
  spec('attn.hook_v', 'heads'),
  spec('attn.hook_attn_scores', 'pattern'),
  spec('attn.hook_pattern', 'pattern'),
  spec('attn.hook_z', 'heads'),
  spec('attn.hook_result', 'headResid', 0, 'use_attn_result'),
  spec('hook_attn_out', 'resid'),
  spec('hook_resid_mid', 'resid'),
  spec('hook_mlp_in', 'resid', 0, 'use_hook_mlp_in'),
  spec('ln2.hook_scale', 'scale'),
  spec('ln2.hook_normalized', 'resid'),
  spec('mlp.hook_pre', 'mlp'),
  spec('mlp.hook_post', 'mlp'),
  spec('hook_mlp_out', 'resid'),
  spec('hook_resid_post', 'resid'),
];

export const FINAL_HOOKS: readonly HookPointSpec[] = [
  spec('ln_final.hook_scale', 'scale'),
  spec('ln_final.hook_normalized', 'resid'),
];

/** Every hook point of an n-layer model, full names in registration order. */
export function hookPointTable(nLayers: number): { name: string; spec: HookPointSpec }[] {
  const out = EMBED_HOOKS.map((s) => ({ name: s.name, spec: s }));
  for (let l = 0; l < nLayers; l++) for (const s of BLOCK_HOOKS) out.push({ name: `blocks.${l}.${s.name}`, spec: s });
  for (const s of FINAL_HOOKS) out.push({ name: s.name, spec: s });
  return out;
}

export interface ModelDims {
  d_model: number;
  n_heads: number;
  d_head: number;
  d_mlp: number;
}

/** Elements of one activation at a point with this kind, for a [B, P] input. */
export function activationElements(kind: ShapeKind, B: number, P: number, d: ModelDims): number {
  switch (kind) {
    case 'pattern':
      return B * d.n_heads * P * P;
    case 'heads':
      return B * P * d.n_heads * d.d_head;
    case 'headResid':
      return B * P * d.n_heads * d.d_model;
    case 'mlp':
      return B * P * d.d_mlp;
    case 'scale':
      return B * P;
    case 'resid':
      return B * P * d.d_model;
  }
}

/** The positions axis of an activation of this kind (for posSlice), counted from the end (for a pattern, the query axis, as TL slices it). */
export function posAxis(kind: ShapeKind): number {
  return kind === 'heads' || kind === 'headResid' ? -3 : -2;
}
