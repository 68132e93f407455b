// Optimizers with PyTorch's semantics (torch.optim.SGD / Adam / AdamW, single-tensor path),
// over named f32 parameter arrays updated in place. The training loop hands them the model's own
// storage through model.updateWeights, which repacks afterwards.
import { TypelensError } from '../errors.js';

export type OptimizerName = 'Adam' | 'AdamW' | 'SGD';

export interface OptimizerOptions {
  lr: number;
  /** Adam: L2 added to the gradient (torch's weight_decay); AdamW: decoupled decay p *= 1 - lr·wd; SGD: L2. Default 0 (AdamW: 0.01, torch's default). */
  weightDecay?: number;
  /** SGD momentum (torch: dampening 0, not Nesterov). Default 0. */
  momentum?: number;
  betas?: [number, number];
  eps?: number;
}

export interface Optimizer {
  readonly name: OptimizerName;
  /** Update `p` in place from its gradient `g` at learning rate `lr` (this step's, after any schedule). */
  update(key: string, p: Float32Array, g: Float32Array, lr: number): void;
  /** Call once per optimizer step, before the updates of that step. */
  beginStep(): void;
  readonly stepCount: number;
}

export function makeOptimizer(name: OptimizerName, o: OptimizerOptions): Optimizer {
  const wdDefault = name === 'AdamW' ? 0.01 : 0;
  const wd = o.weightDecay ?? wdDefault;
  const [b1, b2] = o.betas ?? [0.9, 0.999];
  const eps = o.eps ?? 1e-8,
    mom = o.momentum ?? 0;
  if (!(o.lr >= 0)) throw new TypelensError(`lr must be >= 0, got ${o.lr}`, 'EINPUT');
  if (!(wd >= 0)) throw new TypelensError(`weightDecay must be >= 0, got ${wd}`, 'EINPUT');
  if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
    throw new TypelensError(`betas must be in [0, 1), got [${b1}, ${b2}]`, 'EINPUT');
  if (!(mom >= 0)) throw new TypelensError(`momentum must be >= 0, got ${mom}`, 'EINPUT');
  const state = new Map<string, Float32Array[]>();
  let t = 0;
  const buf = (key: string, n: number, count: number) => {
    let s = state.get(key);
    if (!s) state.set(key, (s = Array.from({ length: count }, () => new Float32Array(n))));
    return s;
  };
  if (name === 'SGD') {
    return {
      name,
      get stepCount() {
        return t;
      },
      beginStep() {
        t++;
      },
      update(key, p, g, lr) {
        // torch.optim.SGD: d = g + wd·p; buf = d (first step) or μ·buf + d; p -= lr·buf
        const first = !state.has(key);
        const m = mom ? buf(key, p.length, 1)[0] : null;
        for (let i = 0; i < p.length; i++) {
          let d = g[i] + wd * p[i];
          if (m) {
            d = first ? d : mom * m[i] + d;
            m[i] = d;
          }
          p[i] -= lr * d;
        }
      },
    };
  }
  if (name !== 'Adam' && name !== 'AdamW')
    throw new TypelensError(`unknown optimizer ${JSON.stringify(name)} (Adam, AdamW or SGD)`, 'EINPUT');
  const decoupled = name === 'AdamW';
  return {
    name,
    get stepCount() {
      return t;
    },
    beginStep() {
      t++;
    },
    update(key, p, g, lr) {
      // torch.optim.Adam(W): m̂ = m/(1-β1^t); denom = sqrt(v)/sqrt(1-β2^t) + eps; p -= lr/(1-β1^t) · m/denom
      const [m, v] = buf(key, p.length, 2);
      const bc1 = 1 - b1 ** t,
        bc2s = Math.sqrt(1 - b2 ** t),
        step = lr / bc1;
      const decay = decoupled ? 1 - lr * wd : 1;
      for (let i = 0; i < p.length; i++) {
        let gi = g[i];
        if (!decoupled && wd) gi += wd * p[i];
        else if (decoupled) p[i] *= decay;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] -= (step * m[i]) / (Math.sqrt(v[i]) / bc2s + eps);
      }
    },
  };
}

/**
 * torch.nn.utils.clip_grad_norm_: the global 2-norm over all gradients; when it exceeds
 * `maxNorm`, every gradient is scaled by maxNorm / (norm + 1e-6). Returns the norm before clipping.
 */
export function clipGradNorm(grads: Iterable<Float32Array>, maxNorm: number): number {
  const gs = [...grads];
  let s = 0;
  for (const g of gs) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  const norm = Math.sqrt(s),
    coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of gs) for (let i = 0; i < g.length; i++) g[i] *= coef;
  return norm;
}

/**
 * A decay after the warmup, over the steps left (not in TL's train, whose schedule is warmup only):
 * 'cosine' goes from 1 to minFraction along half a cosine, 'linear' along a line, ending at the
 * last step. A short run trained at a constant rate stops with the noise of that rate in its
 * weights; annealing it lets the last steps settle (a sharper, more confident model for the same
 * number of steps).
 */
export function decayFactor(
  step: number,
  total: number,
  warmupSteps: number,
  kind: 'none' | 'cosine' | 'linear' = 'none',
  minFraction = 0.1,
): number {
  if (kind === 'none' || total <= warmupSteps + 1 || step <= warmupSteps) return 1;
  const x = Math.min(1, (step - warmupSteps) / (total - 1 - warmupSteps));
  const f = kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * x)) : 1 - x;
  return minFraction + (1 - minFraction) * f;
}

/** TL's warmup (transformer_lens.train: LambdaLR with min(1, step / warmup_steps)), step counted from 0. */
export function warmupFactor(step: number, warmupSteps: number): number {
  return warmupSteps > 0 ? Math.min(1, step / warmupSteps) : 1;
}
