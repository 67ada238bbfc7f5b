// Evaluation: token-weighted mean cross-entropy over every non-ignored (shifted) target of a
// split, and perplexity = exp(eval_loss).
import type { Batch } from "../data/batches.js";
import { evalBatches } from "../data/loader.js";
import type { ExampleSet } from "../data/batches.js";
import { QloraError } from "../errors.js";

export interface LossModel {
  evalLoss(batch: Batch): Promise<{ lossSum: number; tokens: number }>;
}

export interface EvalResult {
  eval_loss: number;
  perplexity: number;
  eval_tokens: number;
  eval_seconds: number;
}

export async function evaluateExamples(
  model: LossModel,
  examples: ExampleSet,
  opts: {
    batchSize: number;
    padId: number;
    padding?: "max_length" | "longest";
    signal?: AbortSignal;
    /** data parallel: this rank evaluates batches i with i % worldSize == rank; reduce sums the totals over ranks */
    shard?: { rank: number; worldSize: number; reduce(values: number[], what: string): number[] };
  },
): Promise<EvalResult> {
  const t0 = performance.now();
  let lossSum = 0;
  let tokens = 0;
  let i = 0;
  for (const batch of evalBatches(examples, opts.batchSize, opts.padId, opts.padding ?? "max_length")) {
    if (opts.signal?.aborted) throw new QloraError("E_ABORTED", "evaluation was cancelled");
    if (opts.shard && i++ % opts.shard.worldSize !== opts.shard.rank) continue;
    if (batch.numTargets === 0) continue;
    const r = await model.evalLoss(batch);
    lossSum += r.lossSum;
    tokens += r.tokens;
  }
  if (opts.shard && opts.shard.worldSize > 1) [lossSum, tokens] = opts.shard.reduce([lossSum, tokens], "evaluation loss");
  if (tokens === 0) throw new QloraError("E_DATA", "the evaluation split has no tokens to predict (every row is shorter than 2 tokens)");
  const loss = lossSum / tokens;
  return { eval_loss: loss, perplexity: Math.exp(loss), eval_tokens: tokens, eval_seconds: (performance.now() - t0) / 1000 };
}
