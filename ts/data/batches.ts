// From token ids to training batches, as the seed formulation describes.
// Padding mode: each non-blank row is one example, truncated to maxLength; a batch pads its rows on the
// right with the pad id to maxLength (or to its longest row), attention_mask is 1 on real tokens,
// and labels = input_ids with -100 wherever the mask is 0. Padding is decided by the mask, never
// by token id: Qwen's pad token <|endoftext|> is also its EOS and can appear inside real text.
// Packing mode: rows are joined with EOS between them (blank rows left out) or concatenated
// (separator "none", run_clm.py's group_texts), as one stream or in groups of groupRows rows, and
// cut into full maxLength blocks; each stream's or group's incomplete last block is dropped; the
// mask is all ones and labels = input_ids.
// Labels are not shifted here: position t's label is input_ids[t] and the loss predicts labels[t+1]
// from position t (the Hugging Face convention).

import { QloraError } from "../errors.js";

export const IGNORE_INDEX = -100;

export interface Batch {
  /** [batchSize * seqLen] token ids, row-major. */
  inputIds: Int32Array;
  /** [batchSize * seqLen] 1 for real tokens, 0 for padding. */
  attentionMask: Int32Array;
  /** [batchSize * seqLen] = inputIds where the mask is 1, IGNORE_INDEX (-100) elsewhere. */
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
  /** Real (unpadded) tokens in the batch. */
  numTokens: number;
  /** Next-token predictions the shifted loss averages over: sum over rows of (real tokens - 1). */
  numTargets: number;
}

/** Token rows as produced by tokenization: row i is ids[offsets[i] .. offsets[i+1]). */
export interface TokenRows {
  ids: Int32Array;
  offsets: Uint32Array;
}

export interface ExampleOptions {
  maxLength: number;
  packing: boolean;
  /** Separator between rows in packing mode. */
  eosId: number;
  /** Packing: "eos" puts eosId between rows (empty rows left out); "none" concatenates every row's
   * tokens as run_clm.py's group_texts does. Default "eos". */
  separator?: "eos" | "none";
  /** Packing: rows are packed in groups of this many (each group's partial last block dropped), as
   * group_texts under datasets.map(batched=True, batch_size=N); null/absent: one stream. */
  groupRows?: number | null;
  /** Tokens of a blank row (the tokenizer's special tokens alone when they are added, e.g. a
   * Llama BOS; 0 for Qwen): such rows are left out of padded examples and of EOS-separated packing.
   * (Blank rows reach the tokenizer as "", except for separator "none", where run_clm keeps them.) */
  emptyRowLength?: number;
  /** Keep only the first `limit` examples (data.max_train_samples); null keeps all. */
  limit?: number | null;
}

/** Training examples: token sequences of at most maxLength (exactly maxLength when packed). */
export class ExampleSet {
  private constructor(
    private readonly ids: Int32Array,
    private readonly starts: Uint32Array,
    private readonly lengths: Uint32Array,
    readonly maxLength: number,
    readonly packed: boolean,
  ) {}

  static build(rows: TokenRows, opts: ExampleOptions): ExampleSet {
    if (!Number.isInteger(opts.maxLength) || opts.maxLength < 1) throw new QloraError("E_DATA", `maxLength must be a positive integer, got ${opts.maxLength}`);
    const numRows = rows.offsets.length - 1;
    const limit = opts.limit ?? Infinity;
    const emptyLen = opts.emptyRowLength ?? 0;
    const rowLen = (r: number) => rows.offsets[r + 1] - rows.offsets[r];
    if (!opts.packing) {
      const kept: number[] = [];
      for (let r = 0; r < numRows && kept.length < limit; r++) if (rowLen(r) > emptyLen) kept.push(r);
      const starts = Uint32Array.from(kept, (r) => rows.offsets[r]);
      const lengths = Uint32Array.from(kept, (r) => Math.min(rowLen(r), opts.maxLength));
      return new ExampleSet(rows.ids, starts, lengths, opts.maxLength, false);
    }
    const L = opts.maxLength;
    const withEos = (opts.separator ?? "eos") === "eos";
    const group = opts.groupRows ?? Math.max(1, numRows);
    if (!Number.isInteger(group) || group < 1) throw new QloraError("E_DATA", `groupRows must be a positive integer, got ${opts.groupRows}`);
    // rows of a group in stream order (EOS mode: empty rows left out, an EOS between rows)
    const streamLength = (g0: number, g1: number): number => {
      let len = 0;
      let first = true;
      for (let r = g0; r < g1; r++) {
        if (withEos && rowLen(r) <= emptyLen) continue;
        len += rowLen(r) + (withEos && !first ? 1 : 0);
        first = false;
      }
      return len;
    };
    const blocksOf: number[] = [];
    let total = 0;
    for (let g0 = 0; g0 < numRows && total < limit; g0 += group) {
      const nb = Math.min(Math.floor(streamLength(g0, Math.min(g0 + group, numRows)) / L), limit - total);
      blocksOf.push(nb);
      total += nb;
    }
    const packed = new Int32Array(total * L);
    let at = 0;
    blocksOf.forEach((nb, g) => {
      const end = at + nb * L;
      let first = true;
      for (let r = g * group; r < Math.min((g + 1) * group, numRows) && at < end; r++) {
        if (withEos && rowLen(r) <= emptyLen) continue;
        if (withEos && !first) packed[at++] = opts.eosId;
        first = false;
        if (at >= end) break;
        const take = Math.min(rowLen(r), end - at);
        packed.set(rows.ids.subarray(rows.offsets[r], rows.offsets[r] + take), at);
        at += take;
      }
    });
    const starts = Uint32Array.from({ length: total }, (_, i) => i * L);
    const lengths = new Uint32Array(total).fill(L);
    return new ExampleSet(packed, starts, lengths, L, true);
  }

  get length(): number {
    return this.starts.length;
  }

  /** Tokens of example i (a view, unpadded). */
  tokens(i: number): Int32Array {
    return this.ids.subarray(this.starts[i], this.starts[i] + this.lengths[i]);
  }

  /** Next-token targets over all examples: sum of (length - 1). */
  targetCount(): number {
    let n = 0;
    for (const l of this.lengths) n += Math.max(0, l - 1);
    return n;
  }

  /** Total tokens over all examples. */
  totalTokens(): number {
    let n = 0;
    for (const l of this.lengths) n += l;
    return n;
  }
}

export interface CollateOptions {
  padId: number;
  /** "max_length" pads to the example set's maxLength; "longest" to the batch's longest row. */
  padding?: "max_length" | "longest";
}

/**
 * A batch with no rows (batchSize 0, empty arrays, no tokens or targets): what a data-parallel
 * rank gets at an epoch's end when its shard has run out (ts/data/sampler.ts). The training loop
 * leaves it out of the model call; the rank still joins the step's all-reduce.
 */
export function emptyBatch(seqLen: number): Batch {
  return { inputIds: new Int32Array(0), attentionMask: new Int32Array(0), labels: new Int32Array(0), batchSize: 0, seqLen, numTokens: 0, numTargets: 0 };
}

/** Builds one batch from the examples at `indices` (at least one; see emptyBatch). */
export function collate(examples: ExampleSet, indices: ArrayLike<number>, opts: CollateOptions): Batch {
  const b = indices.length;
  if (b === 0) throw new QloraError("E_DATA", "cannot build an empty batch");
  let seqLen = examples.maxLength;
  if (opts.padding === "longest") {
    seqLen = 1;
    for (let i = 0; i < b; i++) seqLen = Math.max(seqLen, examples.tokens(indices[i]).length);
  }
  const inputIds = new Int32Array(b * seqLen).fill(opts.padId);
  const attentionMask = new Int32Array(b * seqLen);
  const labels = new Int32Array(b * seqLen).fill(IGNORE_INDEX);
  let numTokens = 0;
  let numTargets = 0;
  for (let i = 0; i < b; i++) {
    const tok = examples.tokens(indices[i]);
    const base = i * seqLen;
    inputIds.set(tok, base);
    labels.set(tok, base);
    attentionMask.fill(1, base, base + tok.length);
    numTokens += tok.length;
    numTargets += Math.max(0, tok.length - 1);
  }
  return { inputIds, attentionMask, labels, batchSize: b, seqLen, numTokens, numTargets };
}
