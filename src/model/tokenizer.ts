import { decode, encode } from 'gpt-tokenizer/encoding/r50k_base';
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';

/** GPT-2's byte-level BPE (r50k_base, vocab 50257). <|endoftext|> = 50256 is BOS, EOS and pad. */
export const EOT = 50256;
export const EOT_STR = '<|endoftext|>';

export function encodeText(text: string): number[] {
  return encode(text, { allowedSpecial: 'all' });
}

/** Decode one id on its own, as TL's to_str_tokens does; a partial UTF-8 byte sequence decodes to U+FFFD. */
export function decodeToken(id: number): string {
  if (!Number.isInteger(id) || id < 0 || id > EOT)
    throw new TypelensError(`token id ${id} is outside GPT-2's vocabulary [0, 50257)`, 'ETOKEN');
  const s = decode([id]);
  return s === '' ? '\uFFFD' : s;
}

export function decodeTokens(ids: ArrayLike<number>): string {
  return decode(Array.from(ids));
}

/**
 * TL's to_tokens: with prependBos the literal "<|endoftext|>" is prepended to the text before
 * tokenising (so "When" at the start is not " When"); lists are right-padded with the pad id
 * (no attention mask); sequences are cut to nCtx when truncate is on.
 */
export function toTokens(
  input: string | string[],
  opts: { prependBos?: boolean; paddingSide?: 'right' | 'left'; nCtx?: number; truncate?: boolean; bos?: number } = {},
): Tensor {
  const { prependBos = true, paddingSide = 'right', nCtx, truncate = true, bos = EOT } = opts;
  const texts = typeof input === 'string' ? [input] : input;
  if (texts.length === 0) throw new TypelensError('toTokens: empty list of prompts', 'EINPUT');
  const seqs = texts.map((t) => {
    if (typeof t !== 'string')
      throw new TypelensError(`toTokens: prompt ${JSON.stringify(t)} is not a string`, 'EINPUT');
    const ids = encodeText(t);
    const s = prependBos ? [bos, ...ids] : ids;
    return truncate && nCtx ? s.slice(0, nCtx) : s;
  });
  const P = Math.max(...seqs.map((s) => s.length));
  if (P === 0) throw new TypelensError('toTokens: the prompt is empty (no tokens)', 'EINPUT');
  const out = new Float32Array(seqs.length * P).fill(bos);
  seqs.forEach((s, b) => out.set(s, b * P + (paddingSide === 'left' ? P - s.length : 0)));
  return new Tensor(out, [seqs.length, P]);
}
