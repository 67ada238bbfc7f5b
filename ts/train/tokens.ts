// Token bookkeeping for gradient accumulation: the loss of an optimizer step is the summed token
// cross-entropy of its whole accumulation window divided by the number of non-ignored targets in
// that window (not a mean of micro-batch means), so each micro-batch's gradient is scaled by
// 1 / (targets in the window). Empty batches (batchSize 0, data parallel at an epoch's end) count 0.
import type { Batch } from "../data/batches.js";

/** Shifted next-token targets that count in the loss: labels[t+1] != -100 within a row. */
export function countTargets(b: Pick<Batch, "labels" | "batchSize" | "seqLen">): number {
  let n = 0;
  for (let r = 0; r < b.batchSize; r++) {
    const row = r * b.seqLen;
    for (let t = 1; t < b.seqLen; t++) if (b.labels[row + t] !== -100) n++;
  }
  return n;
}

export function windowGradScale(batches: Pick<Batch, "labels" | "batchSize" | "seqLen">[]): { targets: number; gradScale: number } {
  const targets = batches.reduce((s, b) => s + countTargets(b), 0);
  return { targets, gradScale: targets > 0 ? 1 / targets : 0 };
}
