// Seeded, epoch-aware, resumable batch order, shardable across data-parallel ranks.
//
// PRNG (documented so the order can be reproduced anywhere): for epoch e and seed s, SplitMix64
// is started at state (s << 32) | e and its first two outputs, split into 32-bit halves
// (low word first), seed xoshiro128** (Blackman & Vigna, 2018). A Fisher-Yates shuffle
// (i from n-1 down to 1, j uniform in [0, i] by rejection sampling of 32-bit outputs below
// 2^32 - (2^32 mod (i+1))) turns 0..n-1 into the epoch's permutation. Every rank computes the same
// permutation and takes the positions congruent to its rank modulo the world size, so ranks cover
// disjoint examples and together all of them. The state is (epoch, position) and nothing else.

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
  /** Drop the last size % worldSize examples of each epoch's order so every rank gets as many. Default true when worldSize > 1. */
  evenShards?: boolean;
  /** Skip a final batch smaller than batchSize. Default false. */
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
  /** Examples of this rank's epoch order already handed out. */
  position: number;
}

export interface SampledBatch {
  indices: Uint32Array;
  epoch: number;
  /** Batch number within the epoch (0-based). */
  batchIndex: number;
}

export class BatchSampler {
  private readonly o: Required<SamplerOptions>;
  private epochValue = 0;
  private positionValue = 0;
  private order: Uint32Array | null = null;
  private orderEpoch = -1;

  constructor(options: SamplerOptions) {
    const worldSize = options.worldSize ?? 1;
    this.o = {
      size: options.size,
      batchSize: options.batchSize,
      seed: options.seed,
      shuffle: options.shuffle ?? true,
      rank: options.rank ?? 0,
      worldSize,
      evenShards: options.evenShards ?? worldSize > 1,
      dropLastBatch: options.dropLastBatch ?? false,
    };
    const { size, batchSize, rank, seed } = this.o;
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

  get position(): number {
    return this.positionValue;
  }

  /** Examples this rank sees per epoch. */
  shardSize(): number {
    const { size, worldSize, rank, evenShards } = this.o;
    const full = Math.floor(size / worldSize);
    return evenShards ? full : full + (rank < size % worldSize ? 1 : 0);
  }

  batchesPerEpoch(): number {
    const n = this.shardSize();
    return this.o.dropLastBatch ? Math.floor(n / this.o.batchSize) : Math.ceil(n / this.o.batchSize);
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

  /** The next batch; moves to the next epoch when the current one is used up. */
  next(): SampledBatch {
    if (this.batchesPerEpoch() === 0) throw new QloraError("E_DATA", `not enough examples for one batch (${this.shardSize()} on this rank, batch size ${this.o.batchSize})`);
    const n = this.shardSize();
    const remaining = n - this.positionValue;
    if (remaining <= 0 || (this.o.dropLastBatch && remaining < this.o.batchSize)) {
      this.epochValue++;
      this.positionValue = 0;
    }
    if (this.orderEpoch !== this.epochValue) {
      this.order = this.epochOrder(this.epochValue);
      this.orderEpoch = this.epochValue;
    }
    const start = this.positionValue;
    const end = Math.min(n, start + this.o.batchSize);
    this.positionValue = end;
    return { indices: this.order!.slice(start, end), epoch: this.epochValue, batchIndex: Math.floor(start / this.o.batchSize) };
  }

  state(): SamplerState {
    const { size, batchSize, seed, shuffle, rank, worldSize } = this.o;
    return { version: 1, size, batchSize, seed, shuffle, rank, worldSize, epoch: this.epochValue, position: this.positionValue };
  }

  /** Continues from a saved state; the data and settings must be the ones it was saved with. */
  restore(state: SamplerState): void {
    const mine = this.state();
    const keys = ["size", "batchSize", "seed", "shuffle", "rank", "worldSize"] as const;
    const diff = keys.filter((k) => state[k] !== mine[k]);
    if (state.version !== 1 || diff.length > 0) {
      throw new QloraError("E_DATA", `cannot resume the data order: ${diff.map((k) => `${k} was ${state[k]}, now ${mine[k]}`).join("; ") || "unknown state version"} (the data or batch settings changed since the checkpoint)`);
    }
    if (!Number.isInteger(state.epoch) || state.epoch < 0 || !Number.isInteger(state.position) || state.position < 0 || state.position > this.shardSize()) {
      throw new QloraError("E_DATA", `cannot resume the data order: invalid epoch ${state.epoch} / position ${state.position}`);
    }
    this.epochValue = state.epoch;
    this.positionValue = state.position;
  }
}
