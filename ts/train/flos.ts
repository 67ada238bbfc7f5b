// transformers' total_flos: Trainer.floating_point_ops = 6 x input_ids.numel() (padding included)
// x model.num_parameters(exclude_embeddings=True), summed over every micro-batch of the run
// (and across ranks). The parameters are the whole model's, frozen or not, less the embedding
// matrix; a tied LM head shares it and so is not counted, an untied one is. NF4 weights count as
// the parameters they store (transformers counts a Params4bit as 2 per byte).

import type { ModelShape } from "../model/native-model.js";

export function nonEmbeddingParams(s: ModelShape, loraParams: number): number {
  const q = s.numHeads * s.headDim;
  const kv = s.numKvHeads * s.headDim;
  const attn = s.hiddenSize * (q + 2 * kv) + q * s.hiddenSize + (s.qkvBias ? q + 2 * kv : 0);
  const mlp = 3 * s.hiddenSize * s.intermediateSize;
  const norms = 2 * s.hiddenSize;
  const head = s.tieWordEmbeddings ? 0 : s.vocabSize * s.hiddenSize;
  return s.numLayers * (attn + mlp + norms) + s.hiddenSize + head + loraParams;
}

/** total_flos for `inputNumel` input positions (batch x padded length, summed over micro-batches). */
export function totalFlos(s: ModelShape, loraParams: number, inputNumel: number): number {
  return 6 * inputNumel * nonEmbeddingParams(s, loraParams);
}
