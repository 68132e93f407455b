// Seeded synthetic data for the embedded IOI model (docs/embedded-model.md): indirect-object
// sentences from templates in the style of TransformerLens's IOI dataset / the IOI paper (Wang
// et al. 2022, BABA and ABBA orders), the Exploratory Analysis Demo's own prompt formats among
// them, and repeated random tokens (the demo's induction section) so that induction heads form.
import { TypelensError } from '../errors.js';
import { rng } from '../model/make-weights.js';
import { encodeText, EOT } from '../model/tokenizer.js';
import type { TokenGenerator } from './data.js';
import { IOIDataset } from '../analysis/evals.js';

/** Names, places, objects and drinks: each one GPT-2 token after a space (checked by checkSingleTokens). */
export const IOI_NAMES = [
  'John',
  'Mary',
  'Tom',
  'James',
  'Dan',
  'Sid',
  'Martin',
  'Amy',
  'Michael',
  'David',
  'Sarah',
  'Paul',
  'Mark',
  'Peter',
  'Jane',
  'Anna',
  'Lisa',
  'Kevin',
  'Chris',
  'Alex',
  'Ben',
  'Sam',
  'Max',
  'Jack',
  'Ryan',
  'Adam',
  'Emma',
  'Kate',
  'Laura',
  'Rachel',
  'Jessica',
  'Jennifer',
  'Linda',
  'Susan',
  'Karen',
  'Nancy',
  'Helen',
  'Sandra',
  'Steve',
  'Brian',
  'Eric',
  'Jason',
  'Matt',
  'Tim',
  'Joe',
  'Bob',
  'Bill',
  'George',
  'Frank',
  'Henry',
  'Carl',
  'Andrew',
  'Daniel',
  'Robert',
  'William',
  'Richard',
  'Thomas',
  'Charles',
  'Joseph',
  'Edward',
  'Jeff',
  'Gary',
  'Scott',
  'Anthony',
  'Kelly',
  'Victoria',
  'Grace',
  'Alice',
  'Rose',
  'Lucy',
  'Ruth',
  'Julia',
  'Sophie',
  'Claire',
  'Karl',
  'Simon',
  'Tony',
  'Jim',
  'Roger',
  'Luke',
  'Ian',
  'Sean',
  'Jeremy',
  'Patrick',
  'Nick',
  'Adrian',
  'Greg',
  'Justin',
  'Aaron',
  'Jacob',
  'Ethan',
  'Noah',
  'Leo',
  'Oscar',
  'Hugo',
  'Louis',
  'Eva',
  'Nina',
  'Diana',
  'Maria',
  'Sara',
  'Jon',
  'Kyle',
  'Amanda',
  'Ashley',
  'Nicole',
  'Emily',
  'Hannah',
  'Olivia',
  'Megan',
  'Brandon',
  'Tyler',
  'Austin',
  'Jordan',
  'Dylan',
  'Lauren',
  'Heather',
  'Christina',
  'Rebecca',
];
export const IOI_PLACES = [
  'shops',
  'park',
  'store',
  'market',
  'school',
  'hospital',
  'office',
  'restaurant',
  'station',
  'garden',
  'house',
  'beach',
  'library',
  'church',
  'bank',
  'museum',
  'hotel',
  'cafe',
  'airport',
  'zoo',
  'farm',
  'gym',
  'river',
  'lake',
];
export const IOI_OBJECTS = [
  'bag',
  'ball',
  'apple',
  'drink',
  'book',
  'ring',
  'kiss',
  'bone',
  'basketball',
  'computer',
  'necklace',
  'flower',
  'snack',
  'pen',
  'gift',
  'letter',
  'card',
  'key',
  'hat',
  'cake',
  'toy',
  'phone',
  'cup',
  'box',
  'ticket',
  'coin',
  'watch',
];
export const IOI_DRINKS = ['milk', 'water', 'wine', 'juice', 'beer', 'soda', 'tea', 'coffee'];

/**
 * Training templates, TL's convention: [A] the indirect object (the answer), [B] the subject.
 * Written BABA ("[B] and [A] ..., [B] ... to [A]"); each is also used as ABBA (first two names
 * swapped). The first four are the notebook's formats (its 8 prompts and its test_prompt); the
 * rest follow the IOI paper's BABA templates. No template starts with a name (after BOS a name
 * would be a different token, without its space).
 */
export const IOI_TRAIN_TEMPLATES = [
  'When [B] and [A] went to the [PLACE], [B] gave the [OBJECT] to [A]',
  'When [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]',
  'After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]',
  'After [B] and [A] went to the [PLACE], [B] gave a bottle of [DRINK] to [A]',
  'Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]',
  'Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]',
  'Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]',
  'Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]',
  'Then, [B] and [A] had a long argument, and afterwards [B] said to [A]',
  'When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]',
  'While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]',
  'After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]',
  'Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]',
  'The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]',
];
/** Evaluation only (never trained on): two more of the IOI paper's formats. */
export const IOI_HELDOUT_TEMPLATES = [
  'While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]',
  'Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]',
];

/** The notebook's prompts' (IO, S, place, object) combinations: held out of training like 1 in 8 others. */
const DEMO_COMBOS = [
  ['Mary', 'John', 'shops', 'bag'],
  ['Tom', 'James', 'park', 'ball'],
  ['Dan', 'Sid', 'shops', 'apple'],
  ['Martin', 'Amy', 'park', 'drink'],
  ['Mary', 'John', 'store', 'milk'],
];

/** One IOI sentence: its text (ending with the IO), IO and S with their leading spaces, and where they came from. */
export interface IoiSentence {
  text: string;
  IO: string;
  S: string;
  template: string;
  order: 'ABBA' | 'BABA';
  place: string;
  object: string;
}

/** Throws unless every word is a single GPT-2 token after a space. */
export function checkSingleTokens(words: readonly string[], what: string): void {
  for (const w of words)
    if (encodeText(' ' + w).length !== 1)
      throw new TypelensError(`IOI data: ${what} "${w}" is not a single GPT-2 token after a space`, 'ETOKEN');
}

const fnv = (s: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
};

/**
 * Whether an (IO, S, place, object) combination is reserved for evaluation: about 1 in 8 by a
 * fixed hash (order-independent in the names), plus the notebook's own prompts'.
 */
export function isHeldOutCombo(IO: string, S: string, place: string, object: string): boolean {
  const [x, y] = IO < S ? [IO, S] : [S, IO];
  for (const [a, b, p, o] of DEMO_COMBOS)
    if ([a, b].includes(x) && [a, b].includes(y) && p === place && o === object) return true;
  return fnv(`${x}|${y}|${place}|${object}`) % 8 === 0;
}

const intIn = (r: { uniform(): number }, n: number) => Math.min(n - 1, Math.floor(r.uniform() * n));
const pick = <T>(r: { uniform(): number }, xs: readonly T[]): T => xs[intIn(r, xs.length)];

/** Fill a template: [A] = IO, [B] = S (ABBA swaps the first two names), "a" before a vowel becomes "an". */
export function fillTemplate(
  template: string,
  order: 'ABBA' | 'BABA',
  IO: string,
  S: string,
  place: string,
  object: string,
): string {
  let t = template;
  if (order === 'ABBA') t = t.replace('[B] and [A]', '[A] and [B]');
  const obj = template.includes('[DRINK]') ? '' : object;
  return t
    .split('[A]')
    .join(IO)
    .split('[B]')
    .join(S)
    .split('[PLACE]')
    .join(place)
    .split('[OBJECT]')
    .join(obj)
    .split('[DRINK]')
    .join(object)
    .replace(/\ba ([aeiou])/g, 'an $1');
}

/** The first `count` names of IOI_NAMES (all when undefined), checked. */
export function ioiNames(count?: number): readonly string[] {
  if (count === undefined) return IOI_NAMES;
  if (!Number.isInteger(count) || count < 2 || count > IOI_NAMES.length)
    throw new TypelensError(`IOI data: nameCount ${count} must be an integer in [2, ${IOI_NAMES.length}]`, 'EINPUT');
  return IOI_NAMES.slice(0, count);
}

/**
 * A seeded stream of IOI sentences from `templates`, names drawn two at a time without
 * replacement; combos: 'train' avoids the held-out combinations, 'heldout' keeps only them,
 * 'any' takes all.
 */
export function ioiSentences(o: {
  templates: readonly string[];
  seed: number;
  combos: 'train' | 'heldout' | 'any';
  /** Draw names from the first nameCount of IOI_NAMES only (default all; the first 8 are the notebook's). */
  nameCount?: number;
}): () => IoiSentence {
  const r = rng(o.seed);
  const names = ioiNames(o.nameCount);
  return () => {
    for (;;) {
      const template = pick(r, o.templates);
      const order = r.uniform() < 0.5 ? 'ABBA' : 'BABA';
      const a = intIn(r, names.length);
      let b = intIn(r, names.length - 1);
      if (b >= a) b++;
      const [IO, S] = [names[a], names[b]];
      const place = pick(r, IOI_PLACES);
      const object = template.includes('[DRINK]')
        ? pick(r, IOI_DRINKS)
        : template.includes('[OBJECT]')
          ? pick(r, IOI_OBJECTS)
          : '';
      const held = isHeldOutCombo(IO, S, place, object);
      if ((o.combos === 'train' && held) || (o.combos === 'heldout' && !held)) continue;
      const text = fillTemplate(template, order, IO, S, place, object);
      return { text, IO: ' ' + IO, S: ' ' + S, template, order, place, object };
    }
  };
}

export interface IoiMixtureOptions {
  seed?: number;
  /** Every this-many-th batch is repeated random tokens (default 4: one batch in four). */
  inductionEvery?: number;
  /** Half-length of a repeated-token row (default 32: the demo's seqLen at n_ctx 64). */
  inductionLen?: number;
  /**
   * Draw each repeated-token batch's half-length uniformly from [lo, hi] instead (hi <= inductionLen).
   * With one fixed period a head can score as an induction head by attending a fixed distance back
   * (period - 1), which is no induction at all; varying the period leaves only the real mechanism.
   */
  inductionLenRange?: [number, number];
  /**
   * Also score the second mention of the subject (S2), whose answer is one of the two names
   * already in the sentence, 50/50: a clean copy-a-name-from-context target that teaches the
   * name-copying heads the IO answer needs, before the IO/S distinction can be learned (default false).
   */
  scoreSubject?: boolean;
  /**
   * In half of the IOI rows, insert 0..fillerMax random non-name tokens after BOS and again before S2
   * (default 0: none). A model that copies the names at the template's fixed positions (IO and S1 at
   * positions 2 and 4) is stuck at chance, symmetric in IO and S1, and never looks at S2; moving the
   * names around leaves only attention by content, which sees S twice and so has a reason to learn
   * which name is repeated.
   */
  fillerMax?: number;
  /** The share of IOI rows that get filler (default 0.5). */
  fillerFraction?: number;
  /**
   * Names from the first nameCount of IOI_NAMES only (default all 119). With a few names every
   * (IO, S) pair recurs often, so the model can learn to discount the repeated name for each one
   * instead of leaning on per-name attention priorities (see docs/embedded-model.md).
   */
  nameCount?: number;
  /** Random tokens are drawn from [lo, hi) (default [100, 20000), as the demo's randint). */
  inductionRange?: [number, number];
  /** Scored target positions per repeated-token row, drawn from the second half (default 8). */
  inductionScored?: number;
  /** Rows of a repeated-token batch, as a fraction of the batch size (default 0.5: its rows are ~3x longer). */
  inductionBatchFraction?: number;
}

/**
 * The training stream of the embedded model: IOI batches (BOS + a training-template sentence,
 * scored at the IO token only, rows right-padded with <|endoftext|> to the batch's longest) and,
 * every `inductionEvery`-th batch, repeated random tokens without BOS (2 x inductionLen, as the
 * demo's induction section draws them), scored at random positions of the second half.
 */
export function ioiMixture(o: IoiMixtureOptions = {}): TokenGenerator {
  checkSingleTokens(IOI_NAMES, 'name');
  checkSingleTokens(IOI_PLACES, 'place');
  checkSingleTokens(IOI_OBJECTS, 'object');
  checkSingleTokens(IOI_DRINKS, 'drink');
  const seed = o.seed ?? 0,
    every = o.inductionEvery ?? 4,
    len = o.inductionLen ?? 32,
    [lo, hi] = o.inductionRange ?? [100, 20000],
    scored = Math.min(o.inductionScored ?? 8, len - 1),
    frac = o.inductionBatchFraction ?? 0.5,
    [lenLo, lenHi] = o.inductionLenRange ?? [len, len];
  if (!(Number.isInteger(lenLo) && Number.isInteger(lenHi) && lenLo >= 2 && lenLo <= lenHi && lenHi <= len))
    throw new TypelensError(
      `ioiMixture: inductionLenRange [${lenLo}, ${lenHi}] must lie within [2, inductionLen=${len}]`,
      'EINPUT',
    );
  const sentences = ioiSentences({ templates: IOI_TRAIN_TEMPLATES, seed, combos: 'train', nameCount: o.nameCount });
  const r = rng(seed + 1);
  const positions = new WeakMap<number[], number[]>();
  let batch = 0;
  const nameTokens = new Set(IOI_NAMES.map((n) => encodeText(' ' + n)[0]));
  const filler = (k: number): number[] => {
    const out: number[] = [];
    while (out.length < k) {
      const x = lo + intIn(r, hi - lo);
      if (!nameTokens.has(x)) out.push(x);
    }
    return out;
  };
  const fillerMax = o.fillerMax ?? 0,
    fillerFraction = o.fillerFraction ?? 0.5;
  if (!(fillerFraction >= 0 && fillerFraction <= 1))
    throw new TypelensError(`ioiMixture: fillerFraction ${fillerFraction} must lie in [0, 1]`, 'EINPUT');
  const ioiRow = (): number[] => {
    const s = sentences();
    let row = [EOT, ...encodeText(s.text)];
    if (fillerMax > 0 && r.uniform() < fillerFraction) {
      const sTok = encodeText(s.S)[0],
        s2 = row.lastIndexOf(sTok);
      const k1 = intIn(r, fillerMax + 1),
        k2 = intIn(r, fillerMax + 1);
      row = [EOT, ...filler(k1), ...row.slice(1, s2), ...filler(k2), ...row.slice(s2)].slice(0, 2 * len);
    }
    const ps = [row.length - 1];
    if (o.scoreSubject) {
      const sTok = encodeText(s.S)[0];
      const s2 = row.lastIndexOf(sTok);
      if (s2 > row.indexOf(sTok)) ps.unshift(s2);
    }
    positions.set(row, ps);
    return row;
  };
  const inductionRow = (half = len): number[] => {
    const d = Array.from({ length: half }, () => lo + intIn(r, hi - lo));
    const row = [...d, ...d];
    const ps = new Set<number>();
    const k = Math.min(scored, half - 1);
    while (ps.size < k) ps.add(half + 1 + intIn(r, half - 1));
    positions.set(
      row,
      [...ps].sort((x, y) => x - y),
    );
    return row;
  };
  return {
    seqLen: 2 * len,
    vocab: EOT + 1,
    description: `ioiMixture(seed=${seed}, inductionEvery=${every}, inductionLen=${lenLo === lenHi ? len : `${lenLo}..${lenHi}`})`,
    answerPositions: [],
    answerPositionsOf: (seq) => {
      const p = positions.get(seq);
      if (!p) throw new TypelensError('ioiMixture: answerPositionsOf a sequence this generator did not make', 'EINPUT');
      return p;
    },
    next: () => (batch++ % every === every - 1 ? inductionRow() : ioiRow()),
    nextBatch(n) {
      const induction = batch++ % every === every - 1;
      if (induction) {
        const half = lenLo === lenHi ? lenHi : lenLo + intIn(r, lenHi - lenLo + 1);
        return Array.from({ length: Math.max(1, Math.round(n * frac)) }, () => inductionRow(half));
      }
      const rows = Array.from({ length: n }, ioiRow);
      const P = Math.max(...rows.map((x) => x.length));
      for (const x of rows) {
        const p = positions.get(x)!;
        while (x.length < P) x.push(EOT);
        positions.set(x, p);
      }
      return rows;
    },
  };
}

/**
 * Every token of the IOI training data: the training templates' words (in both orders, with
 * "a"/"an"), every name, place, object and drink, and <|endoftext|>. The held-out templates'
 * own words are not in it, so that training only these embedding rows (train's embedRows)
 * keeps those templates unseen.
 */
export function ioiTrainVocabulary(): number[] {
  const ids = new Set<number>([EOT]);
  for (const w of [...IOI_NAMES, ...IOI_PLACES, ...IOI_OBJECTS, ...IOI_DRINKS]) ids.add(encodeText(' ' + w)[0]);
  for (const tpl of IOI_TRAIN_TEMPLATES)
    for (const order of ['ABBA', 'BABA'] as const)
      for (const object of [...IOI_OBJECTS, ...IOI_DRINKS])
        for (const t of encodeText(fillTemplate(tpl, order, IOI_NAMES[0], IOI_NAMES[1], IOI_PLACES[0], object)))
          ids.add(t);
  return [...ids].sort((a, b) => a - b);
}

/**
 * `n` fresh seeded IOI prompts as the project's evaluator reads them (an IOIDataset for
 * ioiEval): from the training or the held-out templates, with the training or the held-out
 * (IO, S, place, object) combinations, or any.
 */
export function ioiEvalDataset(o: {
  templates: 'train' | 'heldout';
  combos: 'train' | 'heldout' | 'any';
  n: number;
  seed: number;
  /** As the training data's (ioiMixture's nameCount); default all names. */
  nameCount?: number;
}): IOIDataset {
  const next = ioiSentences({
    templates: o.templates === 'train' ? IOI_TRAIN_TEMPLATES : IOI_HELDOUT_TEMPLATES,
    seed: o.seed,
    combos: o.combos,
    nameCount: o.nameCount,
  });
  const ds = new IOIDataset({ numSamples: 0 });
  for (let i = 0; i < o.n; i++) {
    const s = next();
    ds.samples.push({ text: s.text, IO: s.IO, S: s.S });
  }
  return ds;
}
