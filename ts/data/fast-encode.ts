// Fast encoding without special tokens, exact to @huggingface/tokenizers. Text is normalized and
// split by the first pre-tokenizer stage (for Qwen, the regex Split); each resulting piece goes
// through the remaining per-piece stages (ByteLevel) and the BPE model once, and its ids are
// memoized, so repeated words cost one map lookup. Rows that contain an added token, and
// tokenizers whose options this path does not model, use the library's own encode. A self-check
// over probe strings at construction disables the fast path if it ever disagrees.

import type { Tokenizer } from "@huggingface/tokenizers";
import { MAX_FAST_WORD, MergeTable, type BpeModelJson } from "./bpe.js";

interface PreTok {
  pre_tokenize(text: string | string[], options?: unknown): string[];
  tokenizers?: (PreTok | null)[];
}

const PROBES = [
  " = Valkyria Chronicles III = \n",
  " The game 's battle system , the BliTZ system , is carried over directly from Valkyria Chronicles . \n",
  "Don't we've THEY'LL I'm it's 'quoted' O'Neil",
  "12,345.67 and 2021-09-01 at 10:45pm; 3 @-@ 4 @,@ 000 1e-4",
  "naïve café — Ünïcödé Ångström façade; 東京タワー；한국어 텍스트; русский текст; עברית; العربية",
  "emoji 😀👍🏽 and symbols ∑∫√ ©®™ €£¥",
  "  leading and trailing spaces   \t tabs\t\tand\nnew\r\nlines \n\n  ",
  "def f(x):\n    return x ** 2  # comment\n\tindented()",
  "e\u0301 composed vs \u00e9 precomposed, ﬁ ligature, Ⅻ numerals, ½ fractions",
  "",
  " ",
  "a".repeat(300) + " " + "-".repeat(400),
];

export class FastEncoder {
  private readonly cache = new Map<string, number[]>();
  private readonly addedRe: RegExp | null;
  private readonly first: PreTok | null;
  private readonly rest: PreTok[];
  private readonly merges: MergeTable | null;
  private readonly libraryOnly: boolean;
  /** True when the memoized path is in use (false: every row goes through the library). */
  readonly fast: boolean;
  /** Pieces memoized before the cache is cleared (bounds memory on huge corpora). */
  static maxCacheEntries = 2_000_000;

  constructor(
    private readonly tok: Tokenizer,
    tokenizerJson: { added_tokens?: { content: string }[]; model?: BpeModelJson },
    tokenizerConfig: Record<string, unknown>,
  ) {
    const contents = (tokenizerJson.added_tokens ?? []).map((t) => t.content).filter((c) => c.length > 0);
    this.addedRe = contents.length ? new RegExp(contents.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")) : null;
    const pre = tok.pre_tokenizer as unknown as PreTok | null;
    if (pre && Array.isArray(pre.tokenizers)) {
      const stages = pre.tokenizers.filter((s): s is PreTok => s !== null);
      this.first = stages[0] ?? null;
      this.rest = stages.slice(1);
    } else {
      this.first = pre;
      this.rest = [];
    }
    const model = tokenizerJson.model ?? {};
    this.merges = MergeTable.supports(model) ? new MergeTable(model.merges!, tok.model!.tokens_to_ids, !!model.ignore_merges) : null;
    this.libraryOnly = !!tokenizerConfig.remove_space || !!tokenizerConfig.do_lowercase_and_remove_accent || !tok.model;
    this.fast = !this.libraryOnly && PROBES.every((p) => same(this.encodeFast(p), this.encodeLibrary(p)));
    this.cache.clear();
  }

  /** Ids of `text`, no special tokens added (added tokens written in the text are recognized). */
  encode(text: string): number[] {
    return this.fast ? this.encodeFast(text) : this.encodeLibrary(text);
  }

  private encodeLibrary(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  private encodeFast(text: string): number[] {
    if (text.length === 0) return [];
    if (this.addedRe?.test(text)) return this.encodeLibrary(text);
    const normalized = this.tok.normalizer ? this.tok.normalizer(text) : text;
    if (normalized.length === 0) return [];
    if (normalized !== text && this.addedRe?.test(normalized)) return this.encodeLibrary(text);
    const pieces = this.first ? this.first.pre_tokenize(normalized, { section_index: 0 }) : [normalized];
    const out: number[] = [];
    for (const piece of pieces) {
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        ids = this.encodePiece(piece);
        if (this.cache.size >= FastEncoder.maxCacheEntries) this.cache.clear();
        this.cache.set(piece, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
    return out;
  }

  private encodePiece(piece: string): number[] {
    let words = [piece];
    for (const stage of this.rest) words = stage.pre_tokenize(words, { section_index: 0 });
    const ids: number[] = [];
    for (const w of words) {
      const fast = this.merges && w.length <= MAX_FAST_WORD ? this.merges.encodeWord(w) : null;
      if (fast) {
        for (const id of fast) ids.push(id);
        continue;
      }
      for (const t of this.tok.model!([w])) {
        const id = this.tok.token_to_id(t) ?? this.tok.model!.unk_token_id;
        if (id !== undefined) ids.push(id);
      }
    }
    return ids;
  }
}

function same(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
