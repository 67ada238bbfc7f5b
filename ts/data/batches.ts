// From token ids to training batches, as the seed formulation describes.
// Padding mode: each row is one example, truncated to maxLength; a batch pads its rows on the
// right with the pad id to maxLength (or to its longest row), attention_mask is 1 on real tokens,
// and labels = input_ids with -100 wherever the mask is 0. Padding is decided by the mask, never
// by token id: Qwen's pad token <|endoftext|> is also its EOS and can appear inside real text.
// Packing mode: rows are joined with EOS between them and cut into full maxLength blocks; the
// incomplete tail is dropped; the mask is all ones and labels = input_ids.
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
    if (!opts.packing) {
      const n = Math.min(numRows, limit);
      const starts = rows.offsets.slice(0, n);
      const lengths = new Uint32Array(n);
      for (let i = 0; i < n; i++) lengths[i] = Math.min(rows.offsets[i + 1] - rows.offsets[i], opts.maxLength);
      return new ExampleSet(rows.ids, starts, lengths, opts.maxLength, false);
    }
    const streamLen = rows.ids.length + Math.max(0, numRows - 1);
    const n = Math.min(Math.floor(streamLen / opts.maxLength), limit);
    const packed = new Int32Array(n * opts.maxLength);
    let at = 0;
    for (let r = 0; r < numRows && at < packed.length; r++) {
      if (r > 0) packed[at++] = opts.eosId;
      const row = rows.ids.subarray(rows.offsets[r], rows.offsets[r + 1]);
      const take = Math.min(row.length, packed.length - at);
      packed.set(row.subarray(0, take), at);
      at += take;
    }
    const starts = Uint32Array.from({ length: n }, (_, i) => i * opts.maxLength);
    const lengths = new Uint32Array(n).fill(opts.maxLength);
    return new ExampleSet(packed, starts, lengths, opts.maxLength, true);
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
