// Putting the pieces together for a training loop: example sets built from a prepared dataset and
// the config (max_length, packing, sample limits), a resumable shuffled loader of training
// batches (sharded across data-parallel ranks, see ts/data/sampler.ts), and a plain in-order pass
// over evaluation batches.

import type { QloraConfig, ResolvedConfig } from "../config/types.js";
import { QloraError } from "../errors.js";
import { collate, emptyBatch, ExampleSet, type Batch } from "./batches.js";
import type { PreparedDataset } from "./prepare.js";
import { BatchSampler, type SamplerState } from "./sampler.js";

type Config = QloraConfig | ResolvedConfig;

export interface ExampleSets {
  train: ExampleSet;
  eval: ExampleSet | null;
  test: ExampleSet | null;
}

/** Throws E_DATA, naming the settings to change, when a split's examples hold nothing to predict
 * (checked right after the data is prepared, before the model loads or any step runs). */
export function assertHasTargets(examples: ExampleSet, what: string, config: Config): void {
  if (examples.length > 0 && examples.targetCount() > 0) return;
  const d = config.data;
  const why = d.packing
    ? `no full block of data.max_length = ${d.max_length} tokens${d.packing_group_rows !== null ? ` in any group of data.packing_group_rows = ${d.packing_group_rows} rows` : ""}: lower data.max_length${d.packing_group_rows !== null ? " or raise data.packing_group_rows" : ""}, or check the data`
    : `${examples.length} examples, none with 2 or more tokens: check the data and data.max_length`;
  throw new QloraError("E_DATA", `the ${what} has no tokens to predict (${why})`);
}

/** Example sets for every split, in the config's mode (padding or packing). */
export function buildExampleSets(prepared: PreparedDataset, config: Config): ExampleSets {
  const { max_length: maxLength, packing, packing_separator: separator, packing_group_rows: groupRows, max_train_samples, max_eval_samples } = config.data;
  const { eosId, specialPrefix, specialSuffix } = prepared.tokenizer;
  // an empty row holds the tokenizer's special tokens alone (a Llama BOS; nothing for Qwen)
  const emptyRowLength = config.data.add_special_tokens ? (specialPrefix?.length ?? 0) + (specialSuffix?.length ?? 0) : 0;
  const build = (rows: PreparedDataset["train"] | null, limit: number | null) =>
    rows ? ExampleSet.build(rows, { maxLength, packing, eosId, separator, groupRows, emptyRowLength, limit }) : null;
  return { train: build(prepared.train, max_train_samples)!, eval: build(prepared.eval, max_eval_samples), test: build(prepared.test, max_eval_samples) };
}

export interface LoaderOptions {
  batchSize: number;
  seed: number;
  padId: number;
  padding?: "max_length" | "longest";
  shuffle?: boolean;
  rank?: number;
  worldSize?: number;
}

export interface LoadedBatch extends Batch {
  epoch: number;
  batchIndex: number;
  indices: Uint32Array;
}

/** Endless, epoch-aware stream of training batches; state()/restore() for resuming. */
export class TrainLoader {
  private readonly sampler: BatchSampler;

  constructor(
    readonly examples: ExampleSet,
    private readonly opts: LoaderOptions,
  ) {
    this.sampler = new BatchSampler({ size: examples.length, batchSize: opts.batchSize, seed: opts.seed, shuffle: opts.shuffle, rank: opts.rank, worldSize: opts.worldSize });
  }

  /** The loader a config asks for (per_device_train_batch_size, data_seed ?? seed, data.padding, data.shuffle). */
  static fromConfig(examples: ExampleSet, config: Config, padId: number, shard: { rank?: number; worldSize?: number } = {}): TrainLoader {
    return new TrainLoader(examples, {
      batchSize: config.training.per_device_train_batch_size,
      seed: config.training.data_seed ?? config.training.seed,
      padId,
      padding: config.data.padding,
      shuffle: config.data.shuffle,
      ...shard,
    });
  }

  batchesPerEpoch(): number {
    return this.sampler.batchesPerEpoch();
  }

  /** The next batch; with data parallel an epoch's last one may be short or empty (batchSize 0) on this rank. */
  next(): LoadedBatch {
    const s = this.sampler.next();
    const batch = s.indices.length === 0 ? emptyBatch(this.opts.padding === "longest" ? 1 : this.examples.maxLength) : collate(this.examples, s.indices, { padId: this.opts.padId, padding: this.opts.padding });
    return { ...batch, epoch: s.epoch, batchIndex: s.batchIndex, indices: s.indices };
  }

  state(): SamplerState {
    return this.sampler.state();
  }

  restore(state: SamplerState): void {
    this.sampler.restore(state);
  }
}

/** Evaluation batches in natural order (the last one may be smaller). */
export function* evalBatches(examples: ExampleSet, batchSize: number, padId: number, padding: "max_length" | "longest" = "max_length"): Generator<Batch> {
  for (let start = 0; start < examples.length; start += batchSize) {
    const end = Math.min(examples.length, start + batchSize);
    yield collate(examples, Uint32Array.from({ length: end - start }, (_, i) => start + i), { padId, padding });
  }
}
