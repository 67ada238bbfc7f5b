// A compact BPE merge loop for the cache-miss path of tokenization: symbols are token ids, merge
// ranks are looked up by a numeric pair key (no strings built per lookup), and the leftmost
// lowest-rank pair is merged first, which is the order of the Hugging Face implementations. It
// handles plain BPE models only (no dropout, no subword prefixes/suffixes, no byte fallback);
// FastEncoder checks it against the library before use.

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
  /** Pair key (left id * stride + right id) -> merge index (= rank). */
  private readonly rankOf = new Map<number, number>();
  /** Merge index -> id of the merged token, -1 when the vocabulary lacks it. */
  private readonly mergedId: Int32Array;
  private readonly stride: number;

  constructor(
    merges: readonly (string | readonly [string, string])[],
    private readonly vocab: ReadonlyMap<string, number>,
    private readonly ignoreMerges: boolean,
  ) {
    let maxId = 0;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.stride = maxId + 1;
    this.mergedId = new Int32Array(merges.length).fill(-1);
    merges.forEach((m, rank) => {
      let a: string, b: string;
      if (typeof m === "string") {
        const sp = m.indexOf(" ", 1);
        a = m.slice(0, sp);
        b = m.slice(sp + 1);
      } else {
        [a, b] = m;
      }
      const ia = vocab.get(a);
      const ib = vocab.get(b);
      if (ia === undefined || ib === undefined) return; // such symbols never occur: words containing them fall back
      const key = ia * this.stride + ib;
      if (this.rankOf.has(key)) return;
      this.rankOf.set(key, rank);
      this.mergedId[rank] = vocab.get(a + b) ?? -1;
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
    const sym: number[] = [];
    for (const ch of word) {
      const id = this.vocab.get(ch);
      if (id === undefined) return null;
      sym.push(id);
    }
    const stride = this.stride;
    while (sym.length > 1) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < sym.length - 1; i++) {
        const r = this.rankOf.get(sym[i] * stride + sym[i + 1]);
        if (r !== undefined && r < best) {
          best = r;
          at = i;
        }
      }
      if (at < 0) break;
      const merged = this.mergedId[best];
      if (merged < 0) return null;
      sym.splice(at, 2, merged);
    }
    return sym;
  }
}
