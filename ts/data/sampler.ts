// Seeded, epoch-aware, resumable batch order, shardable across data-parallel ranks.
//
// PRNG (documented so the order can be reproduced anywhere): for epoch e and seed s, SplitMix64
// is started at state (s << 32) | e and its first two outputs, split into 32-bit halves
// (low word first), seed xoshiro128** (Blackman & Vigna, 2018). A Fisher-Yates shuffle
// (i from n-1 down to 1, j uniform in [0, i] by rejection sampling of 32-bit outputs below
// 2^32 - (2^32 mod (i+1))) turns 0..n-1 into the epoch's permutation.
//
// Sharding (data parallel, worldSize D): every rank computes the same permutation and takes the
// positions congruent to its rank modulo D, so ranks cover disjoint examples and together all of
// them; no example is dropped, so when D does not divide the size the first size % D ranks hold
// one example more. The ranks step in lockstep (each optimizer step all-reduces), so every rank
// has the same number of batches per epoch: ceil(shard of rank 0 / B) = ceil(size / (B*D)), or
// floor(size / (B*D)) with dropLastBatch. Batch j of an epoch on every rank is its shard's
// elements [jB, min(shard, (j+1)B)): together the ranks' batch j are exactly the permutation's
// positions [jBD, (j+1)BD), i.e. the batch j of one rank with batch size B*D. The last batch of an
// epoch may therefore be short on a rank, or EMPTY (the caller still steps with it).
//
// The state is (epoch, batches of the epoch handed out); `position` (examples of this rank's shard
// handed out) is kept in it for readability and for states written before `batches` existed.

import { QloraError } from "../errors.js";

const M64 = (1n << 64n) - 1n;

function splitmix64(state: bigint): [bigint, bigint] {
  const s = (state + 0x9e3779b97f4a7c15n) & M64;
  let z = s;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return [s, z ^ (z >> 31n)];
}

/** xoshiro128** seeded through SplitMix64 from (seed, stream). */
export class Xoshiro128 {
  private s = new Uint32Array(4);

  constructor(seed: number, stream: number) {
    let st = ((BigInt(seed) & 0xffffffffn) << 32n) | (BigInt(stream) & 0xffffffffn);
    for (let i = 0; i < 2; i++) {
      const [next, out] = splitmix64(st);
      st = next;
      this.s[2 * i] = Number(out & 0xffffffffn);
      this.s[2 * i + 1] = Number(out >> 32n);
    }
    if (this.s.every((w) => w === 0)) this.s[0] = 1;
  }

  /** A generator with the given four state words (for checking against published test vectors). */
  static fromState(words: readonly [number, number, number, number]): Xoshiro128 {
    const g = new Xoshiro128(0, 0);
    g.s.set(words);
    return g;
  }

  /** Next 32-bit unsigned output. */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform integer in [0, n), n in [1, 2^32]. */
  below(n: number): number {
    const threshold = 4294967296 % n;
    for (;;) {
      const x = this.next();
      if (x >= threshold) return x % n;
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The shuffled order of 0..size-1 for one epoch. */
export function epochPermutation(size: number, seed: number, epoch: number): Uint32Array {
  const perm = new Uint32Array(size);
  for (let i = 0; i < size; i++) perm[i] = i;
  const rng = new Xoshiro128(seed, epoch);
  for (let i = size - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}

export interface SamplerOptions {
  /** Number of examples. */
  size: number;
  batchSize: number;
  seed: number;
  /** false keeps the natural order (evaluation). Default true. */
  shuffle?: boolean;
  rank?: number;
  worldSize?: number;
  /** Skip the epoch's last batch unless it is full on every rank (size % (batchSize * worldSize) examples). Default false. */
  dropLastBatch?: boolean;
}

export interface SamplerState {
  version: 1;
  size: number;
  batchSize: number;
  seed: number;
  shuffle: boolean;
  rank: number;
  worldSize: number;
  /** Current epoch (0-based). */
  epoch: number;
  /** Examples of this rank's shard of the epoch already handed out: min(shard size, batches * batchSize). */
  position: number;
  /** Batches of the epoch already handed out (the same on every rank). Absent in older states: ceil(position / batchSize). */
  batches?: number;
}

export interface SampledBatch {
  /** This rank's examples; fewer than batchSize (or none) on an epoch's last batch. */
  indices: Uint32Array;
  epoch: number;
  /** Batch number within the epoch (0-based), the same on every rank. */
  batchIndex: number;
}

/** Examples rank `rank` of `worldSize` holds of an epoch of `size`. */
function shardSizeOf(size: number, rank: number, worldSize: number): number {
  return Math.floor(size / worldSize) + (rank < size % worldSize ? 1 : 0);
}

export class BatchSampler {
  private readonly o: Required<SamplerOptions>;
  private epochValue = 0;
  /** batches of the current epoch handed out */
  private batchesValue = 0;
  private order: Uint32Array | null = null;
  private orderEpoch = -1;

  constructor(options: SamplerOptions) {
    this.o = {
      size: options.size,
      batchSize: options.batchSize,
      seed: options.seed,
      shuffle: options.shuffle ?? true,
      rank: options.rank ?? 0,
      worldSize: options.worldSize ?? 1,
      dropLastBatch: options.dropLastBatch ?? false,
    };
    const { size, batchSize, rank, worldSize, seed } = this.o;
    if (!Number.isInteger(size) || size < 0) throw new QloraError("E_DATA", `sampler size must be a non-negative integer, got ${size}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new QloraError("E_DATA", `batch size must be >= 1, got ${batchSize}`);
    if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new QloraError("E_DATA", `rank ${rank} is not in [0, worldSize ${worldSize})`);
    }
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new QloraError("E_DATA", `seed must be an integer in [0, 2^32), got ${seed}`);
  }

  get epoch(): number {
    return this.epochValue;
  }

  /** Examples of this rank's shard of the current epoch handed out. */
  get position(): number {
    return Math.min(this.shardSize(), this.batchesValue * this.o.batchSize);
  }

  /** Batches of the current epoch handed out (the same on every rank). */
  get batches(): number {
    return this.batchesValue;
  }

  /** Examples this rank sees per epoch (rank 0 holds the most). */
  shardSize(): number {
    return shardSizeOf(this.o.size, this.o.rank, this.o.worldSize);
  }

  /** Batches per epoch, the same on every rank: ceil(size / (B*D)), or floor with dropLastBatch. */
  batchesPerEpoch(): number {
    const { size, batchSize, worldSize, dropLastBatch } = this.o;
    return dropLastBatch ? Math.floor(size / (batchSize * worldSize)) : Math.ceil(shardSizeOf(size, 0, worldSize) / batchSize);
  }

  /** This rank's example order for `epoch`. */
  epochOrder(epoch: number): Uint32Array {
    const { size, seed, shuffle, rank, worldSize } = this.o;
    const perm = shuffle ? epochPermutation(size, seed, epoch) : Uint32Array.from({ length: size }, (_, i) => i);
    const n = this.shardSize();
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = perm[rank + i * worldSize];
    return out;
  }

  /** The next batch (possibly short or empty on an epoch's last batch); moves to the next epoch after batchesPerEpoch() batches. */
  next(): SampledBatch {
    const perEpoch = this.batchesPerEpoch();
    if (perEpoch === 0) {
      const { size, batchSize, worldSize } = this.o;
      throw new QloraError("E_DATA", `not enough examples for one batch (${size} examples, batch size ${batchSize}${worldSize > 1 ? ` on each of ${worldSize} ranks` : ""})`);
    }
    if (this.batchesValue >= perEpoch) {
      this.epochValue++;
      this.batchesValue = 0;
    }
    if (this.orderEpoch !== this.epochValue) {
      this.order = this.epochOrder(this.epochValue);
      this.orderEpoch = this.epochValue;
    }
    const n = this.shardSize();
    const j = this.batchesValue++;
    const start = Math.min(n, j * this.o.batchSize);
    const end = Math.min(n, start + this.o.batchSize);
    return { indices: this.order!.slice(start, end), epoch: this.epochValue, batchIndex: j };
  }

  state(): SamplerState {
    const { size, batchSize, seed, shuffle, rank, worldSize } = this.o;
    return { version: 1, size, batchSize, seed, shuffle, rank, worldSize, epoch: this.epochValue, position: this.position, batches: this.batchesValue };
  }

  /**
   * Continues from a saved state; the data and settings must be the ones it was saved with. The
   * batch count is what carries over, so a state saved by another rank of the same run (rank
   * overridden) restores this rank to the same step: ts/api/train.ts restores rank 0's state on
   * every rank.
   */
  restore(state: SamplerState): void {
    const mine = this.state();
    const keys = ["size", "batchSize", "seed", "shuffle", "rank", "worldSize"] as const;
    const diff = keys.filter((k) => state[k] !== mine[k]);
    if (state.version !== 1 || diff.length > 0) {
      throw new QloraError("E_DATA", `cannot resume the data order: ${diff.map((k) => `${k} was ${state[k]}, now ${mine[k]}`).join("; ") || "unknown state version"} (the data or batch settings changed since the checkpoint)`);
    }
    const { size, batchSize, worldSize } = this.o;
    const bad = (why: string) => new QloraError("E_DATA", `cannot resume the data order: invalid epoch ${state.epoch} / position ${state.position}${state.batches === undefined ? "" : ` / batches ${state.batches}`} (${why})`);
    if (!Number.isInteger(state.epoch) || state.epoch < 0) throw bad("epoch must be a non-negative integer");
    if (!Number.isInteger(state.position) || state.position < 0) throw bad("position must be a non-negative integer");
    const batches = state.batches ?? Math.ceil(state.position / batchSize);
    if (!Number.isInteger(batches) || batches < 0 || batches > this.batchesPerEpoch()) throw bad(`batches must be an integer in [0, ${this.batchesPerEpoch()}]`);
    // position is min(shard, batches * B) of the rank that saved it; shards differ by at most one
    const lo = Math.min(shardSizeOf(size, worldSize - 1, worldSize), batches * batchSize);
    const hi = Math.min(shardSizeOf(size, 0, worldSize), batches * batchSize);
    if (state.position < (state.batches === undefined ? 0 : lo) || state.position > hi) throw bad(`position must be in [${state.batches === undefined ? 0 : lo}, ${hi}]`);
    this.epochValue = state.epoch;
    this.batchesValue = batches;
  }
}
