import { TypelensError } from '../errors.js';

const NAME_ALIAS: Record<string, string> = {
  attn: 'pattern',
  attn_logits: 'attn_scores',
  key: 'k',
  query: 'q',
  value: 'v',
  mlp_pre: 'pre',
  mlp_mid: 'mid',
  mlp_post: 'post',
};
const TYPE_ALIAS: Record<string, string> = { a: 'attn', m: 'mlp', b: '', block: '', blocks: '', attention: 'attn' };
const ATTN_NAMES = new Set(['k', 'v', 'q', 'z', 'rot_k', 'rot_q', 'result', 'pattern', 'attn_scores']);
const MLP_NAMES = new Set(['pre', 'post', 'mid', 'pre_linear']);

/**
 * TransformerLens's utils.get_act_name, quirks included: "attn" is the pattern,
 * "k6" overrides the layer argument, ("scale", 4) without ln1/ln2 gives a name that is no hook.
 */
export function getActName(name: string, layer?: number | null, layerType?: string | null): string {
  if ((name.includes('.') || name.startsWith('hook_')) && layer == null && layerType == null) return name;
  const m = /^([a-z]+)(\d+)([a-z]?.*)$/.exec(name);
  if (m) {
    name = m[1];
    layer = Number(m[2]);
    layerType = m[3];
  }
  name = NAME_ALIAS[name] ?? name;
  let type = layerType ?? '';
  if (ATTN_NAMES.has(name)) type = 'attn';
  else if (MLP_NAMES.has(name)) type = 'mlp';
  else if (type in TYPE_ALIAS) type = TYPE_ALIAS[type];
  let full = '';
  if (layer != null) {
    if (!Number.isInteger(layer)) throw new TypelensError(`layer ${layer} is not an integer`, 'EHOOK');
    full += `blocks.${layer}.`;
  }
  if (type) full += `${type}.`;
  full += `hook_${name}`;
  if ((name === 'scale' || name === 'normalized') && layer == null) full = `ln_final.${full}`;
  return full;
}
