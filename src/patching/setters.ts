/**
 * TransformerLens's patch setters (transformer_lens.patching: layer_pos_patch_setter,
 * layer_pos_head_vector_patch_setter, ...): each writes the clean activation into the corrupted
 * one at one index, in place, and returns it.
 */
import { TypelensError } from '../errors.js';
import type { Tensor } from '../tensor/index.js';

/** Writes the clean activation into the corrupted one at `index` (in place) and returns it. */
export type PatchSetter = (act: Tensor, index: readonly number[], clean: Tensor) => Tensor;

const slot = (t: Tensor, axis: number, i: number): Tensor => t.slice(axis, i, i + 1);

function checkIndex(i: number, n: number, what: string, act: Tensor): void {
  if (!Number.isInteger(i) || i < 0 || i >= n)
    throw new TypelensError(
      `patch index ${what} = ${i} is outside [0, ${n}) for an activation of shape [${act.shape.join(', ')}]`,
      'EINDEX',
    );
}

/**
 * A setter writing clean into act at index[1..] along the given axes (index[0] is the layer):
 * act[sel] = clean[sel], in place, where sel fixes each listed axis at its index value.
 */
function setAt(...axes: [axis: number, what: string][]): PatchSetter {
  return (act, index, clean) => {
    let a = act,
      c = clean;
    axes.forEach(([axis, what], i) => {
      checkIndex(index[i + 1], act.shape[axis], what, act);
      a = slot(a, axis, index[i + 1]);
      c = slot(c, axis, index[i + 1]);
    });
    a.assign(c);
    return act;
  };
}

/** TL's patch setters by name (camelCase of layer_pos_patch_setter etc., without the suffix). */
export const setters = {
  /** (layer, pos): act[:, pos, ...] = clean[:, pos, ...] */
  layerPos: setAt([1, 'pos']),
  /** (layer, pos, head): act[:, pos, head] = clean[:, pos, head] */
  layerPosHeadVector: setAt([1, 'pos'], [2, 'head']),
  /** (layer, head): act[:, :, head] = clean[:, :, head] */
  layerHeadVector: setAt([2, 'head']),
  /** (layer, head): act[:, head, :, :] = clean[:, head, :, :] */
  layerHeadPattern: setAt([1, 'head']),
  /** (layer, head, dest): act[:, head, dest, :] = clean[:, head, dest, :] */
  layerHeadPosPattern: setAt([1, 'head'], [2, 'dest_pos']),
  /** (layer, head, dest, src): act[:, head, dest, src] = clean[:, head, dest, src] */
  layerHeadDestSrcPosPattern: setAt([1, 'head'], [2, 'dest_pos'], [3, 'src_pos']),
};

/** A built-in setter's name: what a worker task names, since a closure cannot cross threads. */
export type SetterName = keyof typeof setters;
