/** Faults to inject, for testing that a CI gate on `verify` fails. */
import { HookedTransformer } from '../../model/hooked-transformer.js';
import type { ProcessingOptions } from '../../model/process.js';
import { map, Tensor } from '../../tensor/index.js';
import type { VerifyOptions } from './types.js';

// ---------------------------------------------------------------- faults (for testing a CI gate)

/**
 * Faults the command can inject (`--inject-fault`), so a pipeline can check that its gate
 * really fails: each breaks exactly one invariant and names a known place.
 */
export const FAULTS = {
  /** Adds 0.1·max|z| to one head's z (last layer, last head, last position) in the cached run only: hooks.cacheVsHooks fails there. */
  'head-output': (model: HookedTransformer): Pick<VerifyOptions, 'cacheHooks'> => {
    const { n_layers: L, n_heads: H } = model.cfg;
    return {
      cacheHooks: [
        [
          `blocks.${L - 1}.attn.hook_z`,
          (z: Tensor) => {
            const out = z.clone(),
              d = out.f32();
            const [B, P, , D] = out.shape;
            let mx = 0;
            for (const v of d) mx = Math.max(mx, Math.abs(v));
            for (let b = 0; b < B; b++)
              for (let i = 0; i < D; i++) d[((b * P + P - 1) * H + H - 1) * D + i] += 0.1 * (mx || 1);
            return out;
          },
        ],
      ],
    };
  },
  /** foldValueBiases zeroes b_V without adding b_V·W_O to b_O: processing.foldValueBiases (and .all) fail at layer 0's attn_out. */
  'value-bias-fold': (
    _model: HookedTransformer,
    load?: (p: ProcessingOptions) => HookedTransformer,
  ): Pick<VerifyOptions, 'load'> => {
    if (!load) return {};
    return {
      load: (p) => {
        const m = load(p);
        if (!p.foldValueBiases) return m;
        const raw = load({ ...p, foldValueBiases: false, refactorFactoredAttnMatrices: false }); // refactor folds b_V too
        try {
          raw.weights.blocks.forEach((b, l) =>
            m.setWeight(`blocks.${l}.attn.b_O`, new Tensor(Float32Array.from(b.b_O.f32()), b.b_O.shape)),
          );
        } finally {
          raw.dispose();
        }
        return m;
      },
    };
  },
  /**
   * Doubles d metric / d blocks.{L-1}.attn.hook_z in the gradient checks' backward passes (a
   * backward hook): gradients.finiteDifferences fails first there (upstream points inherit it) and
   * gradients.attributionPatchingLinear fails at that layer's hook_z.
   */
  'gradient-scale': (model: HookedTransformer): Pick<VerifyOptions, 'gradHooks'> => ({
    gradHooks: [[`blocks.${model.cfg.n_layers - 1}.attn.hook_z`, (g: Tensor) => map(g, (x) => 2 * x)]],
  }),
} as const;
export type FaultName = keyof typeof FAULTS;
