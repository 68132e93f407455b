/**
 * TL's logit-difference patching metrics (the patching demo's ioi_metric and the logit diff it
 * normalizes), declared to read only logits[:, -1] so that sweeps unembed only that position.
 */
import { logitsToAveLogitDiff } from '../analysis/logit-diff.js';
import type { Tensor } from '../tensor/index.js';
import { lastPositionMetric, type PatchingMetric } from './engine.js';

/** Mean over prompts of logits[:, -1, correct] - logits[:, -1, incorrect]; answerTokens [B, 2]. */
export const logitDiffMetric = (answerTokens: Tensor): PatchingMetric =>
  lastPositionMetric((logits) => logitsToAveLogitDiff(logits, answerTokens));

/**
 * TL's patching demo's ioi_metric: (logit diff - corrupted) / (clean - corrupted), 1 for the clean
 * run and 0 for the corrupted one.
 */
export const normalizedLogitDiffMetric = (
  answerTokens: Tensor,
  cleanLogitDiff: number,
  corruptedLogitDiff: number,
): PatchingMetric =>
  lastPositionMetric(
    (logits) =>
      (logitsToAveLogitDiff(logits, answerTokens) - corruptedLogitDiff) / (cleanLogitDiff - corruptedLogitDiff),
  );
