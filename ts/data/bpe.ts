// A compact BPE merge loop for the cache-miss path of tokenization: ranks in nested maps (no string
// keys built per lookup), leftmost lowest-rank pair merged first, which is the order of the
// Hugging Face implementations. It handles plain BPE models only (no dropout, no subword
// prefixes/suffixes, no byte fallback); FastEncoder checks it against the library before use.

export interface BpeModelJson {
  type?: string;
  vocab?: Record<string, number>;
  merges?: (string | [string, string])[];
  dropout?: number | null;
  continuing_subword_prefix?: string | null;
  end_of_word_suffix?: string | null;
  byte_fallback?: boolean;
  ignore_merges?: boolean;
}

/** Longest word (in code points) handled here; longer ones go to the library. */
export const MAX_FAST_WORD = 256;

export class MergeTable {
  private readonly ranks = new Map<string, Map<string, number>>();

  constructor(
    merges: readonly (string | readonly [string, string])[],
    private readonly vocab: ReadonlyMap<string, number>,
    private readonly ignoreMerges: boolean,
  ) {
    merges.forEach((m, rank) => {
      let a: string, b: string;
      if (typeof m === "string") {
        const sp = m.indexOf(" ", 1);
        a = m.slice(0, sp);
        b = m.slice(sp + 1);
      } else {
        [a, b] = m;
      }
      let inner = this.ranks.get(a);
      if (!inner) this.ranks.set(a, (inner = new Map()));
      if (!inner.has(b)) inner.set(b, rank);
    });
  }

  /** True when the model config is one this class reproduces exactly. */
  static supports(model: BpeModelJson): boolean {
    return (
      model.type === "BPE" &&
      Array.isArray(model.merges) &&
      !model.dropout &&
      !model.continuing_subword_prefix &&
      !model.end_of_word_suffix &&
      !model.byte_fallback
    );
  }

  /** Ids of one pre-token, or null when a symbol is not in the vocabulary (caller falls back). */
  encodeWord(word: string): number[] | null {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const sym = Array.from(word);
    while (sym.length > 1) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < sym.length - 1; i++) {
        const r = this.ranks.get(sym[i])?.get(sym[i + 1]);
        if (r !== undefined && r < best) {
          best = r;
          at = i;
        }
      }
      if (at < 0) break;
      sym.splice(at, 2, sym[at] + sym[at + 1]);
    }
    const ids: number[] = new Array(sym.length);
    for (let i = 0; i < sym.length; i++) {
      const id = this.vocab.get(sym[i]);
      if (id === undefined) return null;
      ids[i] = id;
    }
    return ids;
  }
}
