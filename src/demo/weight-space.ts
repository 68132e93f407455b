/**
 * The report's optional "weight space" section, after the notebook's last section (not part of
 * the Exploratory Analysis Demo): which heads compose with which (TL's all_composition_scores, as
 * heatmaps over every earlier head x later head), and what the OV circuits of the demo's top
 * direct-attribution heads copy (TL's SVDInterpreter: the top tokens of their largest singular
 * vectors). Nothing here is printed: the printed lines stay the notebook's.
 */
import { SVDInterpreter, type SingularVectorTokens } from '../analysis/svd-interpreter.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import type { Tensor } from '../tensor/index.js';
import type { DemoOutput } from './render.js';

export interface WeightSpace {
  /** [L, H, L, H] for 'Q', 'K' and 'V' composition. */
  compositionScores: Record<'Q' | 'K' | 'V', Tensor>;
  /** For each head (flat index l * H + h), its OV circuit's top singular vectors' strongest tokens. */
  ovTokens: { head: number; vectors: SingularVectorTokens[] }[];
}

export function weightSpaceSection(
  out: DemoOutput,
  model: HookedTransformer,
  heads: number[],
  opts: { numVectors?: number; k?: number } = {},
): WeightSpace {
  const { n_layers: L, n_heads: H, d_head } = model.cfg;
  const { report } = out;
  const label = (i: number) => `L${Math.floor(i / H)}H${i % H}`;
  const labels = Array.from({ length: L * H }, (_, i) => label(i));
  report
    .heading('Weight space: composition and OV circuits')
    .para(
      'Composition scores ||W_A W_B||_F / (||W_A||_F ||W_B||_F) between the OV circuit of each earlier head (rows) and the Q, K or V side of each later head (columns); ' +
        "pairs whose second head is not in a later layer are 0 (TL's all_composition_scores).",
    );
  const compositionScores = {} as WeightSpace['compositionScores'];
  for (const mode of ['Q', 'K', 'V'] as const) {
    const s = model.allCompositionScores(mode);
    compositionScores[mode] = s;
    report.imshow(s.reshape([L * H, L * H]).toNested() as number[][], {
      title: `${mode}-Composition Scores`,
      xTitle: 'Later head',
      yTitle: 'Earlier head',
      x: labels,
    });
  }
  const svd = new SVDInterpreter(model);
  const numVectors = Math.min(opts.numVectors ?? 3, d_head),
    k = opts.k ?? 5;
  const ovTokens = heads.map((head) => ({
    head,
    vectors: svd.topTokens('OV', { layerIndex: Math.floor(head / H), headIndex: head % H, numVectors, k }),
  }));
  report
    .heading("What the top heads' OV circuits copy", 3)
    .para(
      `The ${k} strongest tokens through the unembedding of the ${numVectors} largest right singular vectors of W_V W_O (SVDInterpreter), for the top direct-attribution heads.`,
    );
  report.pre(
    ovTokens.flatMap(({ head, vectors }) => [
      `${label(head)}:`,
      ...vectors.map(
        (v) =>
          `  vector ${v.vector}${v.sign < 0 ? ' (flipped)' : ''}: ${v.tokens.map((s, i) => `${JSON.stringify(s)} ${v.values[i].toFixed(2)}`).join(', ')}`,
      ),
    ]),
  );
  return { compositionScores, ovTokens };
}
