// Examples, batches and the sampler (ts/data/batches.ts, ts/data/sampler.ts, ts/data/loader.ts)
// on synthetic token rows: padding/mask/label invariants, truncation, packing invariants,
// reproducible and resumable order, disjoint shards.

import assert from "node:assert/strict";
import { test } from "node:test";
import { BatchSampler, collate, emptyBatch, epochPermutation, evalBatches, ExampleSet, IGNORE_INDEX, TrainLoader, Xoshiro128 } from "../dist/data/index.js";

const PAD = 151643; // Qwen's <|endoftext|>: pad and EOS at once
const EOS = 151643;

/** Token rows from arrays of ids. */
function rowsOf(list) {
  const offsets = new Uint32Array(list.length + 1);
  list.forEach((r, i) => (offsets[i + 1] = offsets[i] + r.length));
  return { ids: Int32Array.from(list.flat()), offsets };
}

function randomRows(n, maxLen, seed = 1) {
  const g = new Xoshiro128(seed, 0);
  return Array.from({ length: n }, () => Array.from({ length: 1 + g.below(maxLen) }, () => g.below(1000)));
}

test("padding mode: mask, labels and padding decided by the mask", () => {
  // Row 1 holds the pad/EOS id as real text: it must stay unmasked and keep its label.
  const rows = [[5, 6, 7], [EOS, 9, EOS, 10], [11]];
  const ex = ExampleSet.build(rowsOf(rows), { maxLength: 6, packing: false, eosId: EOS });
  assert.equal(ex.length, 3);
  const b = collate(ex, [0, 1, 2], { padId: PAD });
  assert.deepEqual([b.batchSize, b.seqLen], [3, 6]);
  assert.deepEqual(Array.from(b.inputIds), [5, 6, 7, PAD, PAD, PAD, EOS, 9, EOS, 10, PAD, PAD, 11, PAD, PAD, PAD, PAD, PAD]);
  assert.deepEqual(Array.from(b.attentionMask), [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]);
  assert.deepEqual(Array.from(b.labels), [5, 6, 7, -100, -100, -100, EOS, 9, EOS, 10, -100, -100, 11, -100, -100, -100, -100, -100]);
  assert.equal(b.numTokens, 8);
  assert.equal(b.numTargets, 2 + 3 + 0);
});

test("padding invariants on random rows, truncation to max_length", () => {
  const rows = randomRows(200, 40, 3);
  const maxLength = 16;
  const ex = ExampleSet.build(rowsOf(rows), { maxLength, packing: false, eosId: EOS });
  const idx = Array.from({ length: ex.length }, (_, i) => i);
  const b = collate(ex, idx, { padId: PAD });
  for (let i = 0; i < rows.length; i++) {
    const len = Math.min(rows[i].length, maxLength);
    assert.deepEqual(Array.from(ex.tokens(i)), rows[i].slice(0, maxLength), "truncated, never padded");
    for (let t = 0; t < maxLength; t++) {
      const k = i * maxLength + t;
      const real = t < len;
      assert.equal(b.attentionMask[k], real ? 1 : 0);
      assert.equal(b.labels[k], real ? b.inputIds[k] : IGNORE_INDEX);
      if (real) assert.equal(b.inputIds[k], rows[i][t]);
      else assert.equal(b.inputIds[k], PAD);
    }
  }
  assert.ok(rows.some((r) => r.length > maxLength), "some rows were truncated");
});

test("padding to the longest row of the batch", () => {
  const ex = ExampleSet.build(rowsOf([[1, 2], [3, 4, 5, 6], [7]]), { maxLength: 8, packing: false, eosId: EOS });
  const b = collate(ex, [0, 2], { padId: 0, padding: "longest" });
  assert.equal(b.seqLen, 2);
  assert.deepEqual(Array.from(b.inputIds), [1, 2, 7, 0]);
  assert.deepEqual(Array.from(b.attentionMask), [1, 1, 1, 0]);
  assert.equal(collate(ex, [1], { padId: 0, padding: "longest" }).seqLen, 4);
});

test("packing: EOS between rows, full blocks, tail dropped", () => {
  const rows = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]];
  // Stream: 1 2 3 E 4 5 E 6 7 8 9 E 10 -> 13 tokens -> 3 blocks of 4, tail [10] dropped.
  const ex = ExampleSet.build(rowsOf(rows), { maxLength: 4, packing: true, eosId: 99 });
  assert.equal(ex.length, 3);
  assert.deepEqual([0, 1, 2].map((i) => Array.from(ex.tokens(i))), [[1, 2, 3, 99], [4, 5, 99, 6], [7, 8, 9, 99]]);
  const b = collate(ex, [2, 0], { padId: PAD });
  assert.deepEqual(Array.from(b.inputIds), [7, 8, 9, 99, 1, 2, 3, 99]);
  assert.ok(b.attentionMask.every((m) => m === 1));
  assert.deepEqual(Array.from(b.labels), Array.from(b.inputIds));
  assert.equal(b.numTargets, 6);
});

test("blank rows: left out of padded examples and EOS packing, concatenated with separator none; row groups", () => {
  // rows 1 and 3 are blank; with a BOS-adding tokenizer a blank row is the BOS alone (emptyRowLength 1)
  const r = rowsOf([[7, 1, 2], [], [7, 3, 4, 5], []]);
  assert.equal(ExampleSet.build(r, { maxLength: 8, packing: false, eosId: EOS }).length, 2);
  const eos = ExampleSet.build(r, { maxLength: 4, packing: true, eosId: EOS });
  assert.deepEqual(Array.from(eos.tokens(0)), [7, 1, 2, EOS]); // no EOS for the blank rows
  const bos = rowsOf([[7, 1, 2], [7], [7, 3, 4, 5], [7]]);
  assert.equal(ExampleSet.build(bos, { maxLength: 8, packing: false, eosId: EOS, emptyRowLength: 1 }).length, 2);
  assert.deepEqual(Array.from(ExampleSet.build(bos, { maxLength: 4, packing: true, eosId: EOS, emptyRowLength: 1 }).tokens(1)), [7, 3, 4, 5]);
  // without special tokens (emptyRowLength 0) a one-token row is a row: 5, EOS, 6, 7, 8
  assert.deepEqual(Array.from(ExampleSet.build(rowsOf([[5], [6, 7, 8]]), { maxLength: 5, packing: true, eosId: EOS }).tokens(0)), [5, EOS, 6, 7, 8]);
  // separator none: every token, BOS-only rows too; groups of 2 rows, each remainder dropped
  const none = ExampleSet.build(bos, { maxLength: 2, packing: true, eosId: EOS, separator: "none" });
  assert.deepEqual(Array.from({ length: none.length }, (_, i) => Array.from(none.tokens(i))), [[7, 1], [2, 7], [7, 3], [4, 5]]);
  const grouped = ExampleSet.build(bos, { maxLength: 3, packing: true, eosId: EOS, separator: "none", groupRows: 2 });
  assert.deepEqual(Array.from({ length: grouped.length }, (_, i) => Array.from(grouped.tokens(i))), [[7, 1, 2], [7, 3, 4]]);
  assert.equal(ExampleSet.build(rowsOf([]), { maxLength: 3, packing: true, eosId: EOS }).length, 0);
});

test("packing invariants on random rows", () => {
  const rows = randomRows(300, 50, 9);
  const T = 64;
  const ex = ExampleSet.build(rowsOf(rows), { maxLength: T, packing: true, eosId: -7 });
  const stream = rows.flatMap((r, i) => (i === 0 ? r : [-7, ...r]));
  assert.equal(ex.length, Math.floor(stream.length / T));
  const joined = Array.from({ length: ex.length }, (_, i) => Array.from(ex.tokens(i))).flat();
  assert.deepEqual(joined, stream.slice(0, ex.length * T), "blocks are the EOS-joined stream, in order");
  for (let i = 0; i < ex.length; i++) assert.equal(ex.tokens(i).length, T);
  assert.equal(ex.totalTokens(), ex.length * T);
});

test("sample limits", () => {
  const r = rowsOf(randomRows(50, 10));
  assert.equal(ExampleSet.build(r, { maxLength: 8, packing: false, eosId: 0, limit: 7 }).length, 7);
  assert.equal(ExampleSet.build(r, { maxLength: 8, packing: true, eosId: 0, limit: 3 }).length, 3);
  assert.equal(ExampleSet.build(r, { maxLength: 8, packing: false, eosId: 0, limit: null }).length, 50);
});

test("PRNG: xoshiro128** and SplitMix64 seeding match reference values", () => {
  const ref = Xoshiro128.fromState([1, 2, 3, 4]);
  assert.deepEqual(Array.from({ length: 6 }, () => ref.next()), [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  const g = new Xoshiro128(42, 0);
  assert.deepEqual(Array.from({ length: 6 }, () => g.next()), [561131802, 1455960195, 1624807067, 676739556, 1573943148, 1661315153]);
  const h = new Xoshiro128(0xffffffff, 7);
  assert.deepEqual(Array.from({ length: 3 }, () => h.next()), [1886795607, 3918788527, 1750608572]);
  // The documented order, pinned: changing it would silently change every run's data order.
  assert.deepEqual(Array.from(epochPermutation(10, 42, 0)), [1, 9, 5, 4, 6, 8, 7, 3, 0, 2]);
  assert.deepEqual(Array.from(epochPermutation(10, 42, 1)), [8, 5, 9, 7, 4, 6, 1, 2, 0, 3]);
  assert.deepEqual(Array.from(epochPermutation(12, 7, 3)), [2, 0, 7, 9, 10, 1, 8, 3, 5, 11, 6, 4]);
});

test("permutations: valid, seeded, epoch-dependent, roughly uniform", () => {
  const p = epochPermutation(1000, 1, 0);
  assert.deepEqual(Array.from(p).sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i));
  assert.deepEqual(epochPermutation(1000, 1, 0), p);
  assert.notDeepEqual(epochPermutation(1000, 2, 0), p);
  assert.notDeepEqual(epochPermutation(1000, 1, 1), p);
  const firstCounts = new Array(4).fill(0);
  for (let e = 0; e < 4000; e++) firstCounts[epochPermutation(4, 5, e)[0]]++;
  for (const c of firstCounts) assert.ok(c > 850 && c < 1150, `first element spread ${firstCounts}`);
});

test("sampler: every example once per epoch, epochs roll over, order reproducible", () => {
  const s = new BatchSampler({ size: 10, batchSize: 4, seed: 3 });
  assert.equal(s.batchesPerEpoch(), 3);
  const seen = [];
  for (let i = 0; i < 3; i++) {
    const b = s.next();
    assert.equal(b.epoch, 0);
    assert.equal(b.batchIndex, i);
    seen.push(...b.indices);
  }
  assert.deepEqual(seen.slice().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(seen, Array.from(epochPermutation(10, 3, 0)));
  const next = s.next();
  assert.deepEqual([next.epoch, next.batchIndex, next.indices.length], [1, 0, 4]);
  const again = new BatchSampler({ size: 10, batchSize: 4, seed: 3 });
  assert.deepEqual(Array.from({ length: 4 }, () => Array.from(again.next().indices)), [...[0, 1, 2].map((i) => seen.slice(i * 4, i * 4 + 4)), Array.from(next.indices)]);
  const plain = new BatchSampler({ size: 5, batchSize: 2, seed: 3, shuffle: false, dropLastBatch: true });
  assert.deepEqual([Array.from(plain.next().indices), Array.from(plain.next().indices), plain.next().epoch], [[0, 1], [2, 3], 1]);
});

test("sampler: state/restore resumes exactly, even across an epoch end", () => {
  const a = new BatchSampler({ size: 23, batchSize: 5, seed: 11 });
  const full = Array.from({ length: 17 }, () => Array.from(a.next().indices));
  for (const cut of [0, 3, 4, 5, 9, 16]) {
    const b = new BatchSampler({ size: 23, batchSize: 5, seed: 11 });
    for (let i = 0; i < cut; i++) b.next();
    const state = JSON.parse(JSON.stringify(b.state()));
    const c = new BatchSampler({ size: 23, batchSize: 5, seed: 11 });
    c.restore(state);
    assert.deepEqual(Array.from({ length: 17 - cut }, () => Array.from(c.next().indices)), full.slice(cut), `cut ${cut}`);
  }
  const other = new BatchSampler({ size: 24, batchSize: 5, seed: 11 });
  assert.throws(() => other.restore(a.state()), { code: "E_DATA", message: "cannot resume the data order: size was 23, now 24 (the data or batch settings changed since the checkpoint)" });
});

test("sharding: ranks cover disjoint examples, together all of them (none dropped)", () => {
  for (const [size, world] of [[23, 4], [24, 4], [5, 2]]) {
    const shards = Array.from({ length: world }, (_, rank) => new BatchSampler({ size, batchSize: 3, seed: 9, rank, worldSize: world }));
    const all = shards.flatMap((s) => Array.from(s.epochOrder(2))).sort((a, b) => a - b);
    assert.deepEqual(all, Array.from({ length: size }, (_, i) => i), `${size}/${world}`);
    assert.deepEqual(shards.map((s) => s.shardSize()), Array.from({ length: world }, (_, r) => Math.floor(size / world) + (r < size % world ? 1 : 0)));
    assert.ok(shards.every((s) => s.batchesPerEpoch() === Math.ceil(size / (3 * world))), "same batch count on every rank");
  }
  assert.throws(() => new BatchSampler({ size: 4, batchSize: 1, seed: 0, rank: 2, worldSize: 2 }), { code: "E_DATA" });
});

const sorted = (a) => Array.from(a).sort((x, y) => x - y);

test("data parallel sampler: D ranks x batch B = 1 rank x batch B*D, for any size, every example once per epoch", () => {
  for (const world of [2, 3, 4]) {
    for (const B of [1, 2, 3]) {
      for (const size of [1, 2, 5, 7, B * world - 1, B * world, B * world + 1, 2 * B * world + 1, 23, 24]) {
        if (size < 1) continue;
        const what = `size ${size}, world ${world}, B ${B}`;
        const one = new BatchSampler({ size, batchSize: B * world, seed: 5 });
        const ranks = Array.from({ length: world }, (_, rank) => new BatchSampler({ size, batchSize: B, seed: 5, rank, worldSize: world }));
        const per = one.batchesPerEpoch();
        assert.deepEqual(ranks.map((r) => r.batchesPerEpoch()), Array(world).fill(per), `${what}: batchesPerEpoch`);
        for (let epoch = 0; epoch < 3; epoch++) {
          const seen = [];
          for (let j = 0; j < per; j++) {
            const ref = one.next();
            const got = ranks.map((r) => r.next());
            assert.ok(got.every((g) => g.epoch === epoch && g.batchIndex === j), `${what}: epoch ${epoch} batch ${j} in lockstep`);
            assert.ok(got.every((g) => g.indices.length <= B));
            const union = got.flatMap((g) => Array.from(g.indices));
            assert.deepEqual(sorted(union), sorted(ref.indices), `${what}: epoch ${epoch} micro-batch ${j}`);
            seen.push(...union);
          }
          assert.deepEqual(sorted(seen), Array.from({ length: size }, (_, i) => i), `${what}: epoch ${epoch} covers every example once`);
          assert.deepEqual(ranks.map((r) => r.position), ranks.map((r) => r.shardSize()), `${what}: shards used up`);
        }
      }
    }
  }
  // dropLastBatch: floor(size / (B*D)) full batches on every rank
  const drop = [0, 1, 2].map((rank) => new BatchSampler({ size: 20, batchSize: 3, seed: 1, rank, worldSize: 3, dropLastBatch: true }));
  assert.deepEqual(drop.map((s) => s.batchesPerEpoch()), [2, 2, 2]);
  for (let j = 0; j < 3; j++) assert.ok(drop.every((s) => s.next().indices.length === 3));
  assert.deepEqual(drop.map((s) => s.epoch), [1, 1, 1]);
  assert.throws(() => new BatchSampler({ size: 5, batchSize: 3, seed: 1, worldSize: 2, dropLastBatch: true }).next(), { code: "E_DATA", message: /not enough examples for one batch/ });
  assert.throws(() => new BatchSampler({ size: 0, batchSize: 1, seed: 1 }).next(), { code: "E_DATA" });
});

test("data parallel sampler: every rank resumes from rank 0's state, including across an epoch end", () => {
  for (const [size, world, B] of [[7, 2, 2], [9, 4, 2], [5, 2, 3], [23, 3, 2], [1, 2, 1], [10, 4, 1]]) {
    const what = `size ${size}, world ${world}, B ${B}`;
    const make = (rank) => new BatchSampler({ size, batchSize: B, seed: 13, rank, worldSize: world });
    const per = make(0).batchesPerEpoch();
    const total = 3 * per + 1;
    const full = Array.from({ length: world }, (_, rank) => {
      const s = make(rank);
      return Array.from({ length: total }, () => s.next()).map((b) => [b.epoch, b.batchIndex, Array.from(b.indices)]);
    });
    for (let cut = 0; cut < total; cut++) {
      const r0 = make(0);
      for (let i = 0; i < cut; i++) r0.next();
      const saved = JSON.parse(JSON.stringify(r0.state()));
      assert.equal(saved.batches, cut === 0 ? 0 : ((cut - 1) % per) + 1, `${what}: batches at cut ${cut}`);
      for (let rank = 0; rank < world; rank++) {
        const s = make(rank);
        s.restore({ ...saved, rank });
        const rest = Array.from({ length: total - cut }, () => s.next()).map((b) => [b.epoch, b.batchIndex, Array.from(b.indices)]);
        assert.deepEqual(rest, full[rank].slice(cut), `${what}: rank ${rank} resumed at cut ${cut}`);
      }
      // a state without `batches` (older checkpoints) resumes from its position
      const legacy = { ...saved };
      delete legacy.batches;
      const s = make(0);
      s.restore(legacy);
      assert.equal(s.batches, saved.batches, `${what}: legacy state at cut ${cut}`);
    }
  }
  const s = new BatchSampler({ size: 7, batchSize: 2, seed: 1, rank: 1, worldSize: 2 });
  const state = s.state();
  assert.throws(() => s.restore({ ...state, batches: 3 }), { code: "E_DATA", message: /batches must be an integer in \[0, 2\]/ });
  assert.throws(() => s.restore({ ...state, batches: 1, position: 3 }), { code: "E_DATA", message: /position must be in \[2, 2\]/ });
  assert.throws(() => s.restore({ ...state, epoch: -1 }), { code: "E_DATA" });
  assert.throws(() => s.restore({ ...state, position: 5, batches: undefined }), { code: "E_DATA" });
});

test("TrainLoader batches follow the sampler; evalBatches keeps the order", () => {
  const rows = randomRows(30, 12, 5);
  const ex = ExampleSet.build(rowsOf(rows), { maxLength: 8, packing: false, eosId: EOS });
  const loader = new TrainLoader(ex, { batchSize: 4, seed: 42, padId: PAD });
  assert.equal(loader.batchesPerEpoch(), 8);
  const b = loader.next();
  assert.deepEqual(Array.from(b.indices), Array.from(epochPermutation(30, 42, 0).slice(0, 4)));
  assert.deepEqual(b.inputIds.subarray(0, ex.tokens(b.indices[0]).length), ex.tokens(b.indices[0]));
  const state = loader.state();
  const x = loader.next();
  const resumed = new TrainLoader(ex, { batchSize: 4, seed: 42, padId: PAD });
  resumed.restore(state);
  assert.deepEqual(resumed.next().inputIds, x.inputIds);
  const evals = [...evalBatches(ex, 8, PAD)];
  assert.deepEqual(evals.map((e) => e.batchSize), [8, 8, 8, 6]);
  assert.deepEqual(evals[3].inputIds.subarray(0, ex.tokens(24).length), ex.tokens(24));
});

test("TrainLoader with data parallel: a rank whose shard ran out gets an empty batch, then the next epoch", () => {
  const rows = randomRows(5, 12, 6);
  const ex = ExampleSet.build(rowsOf(rows), { maxLength: 8, packing: false, eosId: EOS });
  // 5 examples, 2 ranks, batch 2: rank 0 holds 3, rank 1 holds 2 -> batch 1 is [1 row] and [none]
  const loaders = [0, 1].map((rank) => new TrainLoader(ex, { batchSize: 2, seed: 4, padId: PAD, rank, worldSize: 2 }));
  assert.deepEqual(loaders.map((l) => l.batchesPerEpoch()), [2, 2]);
  const first = loaders.map((l) => [l.next(), l.next()]);
  assert.deepEqual(first.map((bs) => bs.map((b) => b.batchSize)), [[2, 1], [2, 0]]);
  const empty = first[1][1];
  assert.deepEqual([empty.epoch, empty.batchIndex, empty.numTokens, empty.numTargets, empty.inputIds.length, empty.labels.length, empty.attentionMask.length, empty.indices.length], [0, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(emptyBatch(8), { inputIds: new Int32Array(0), attentionMask: new Int32Array(0), labels: new Int32Array(0), batchSize: 0, seqLen: 8, numTokens: 0, numTargets: 0 });
  assert.throws(() => collate(ex, [], { padId: PAD }), { code: "E_DATA" });
  const second = loaders.map((l) => l.next());
  assert.deepEqual(second.map((b) => [b.epoch, b.batchIndex, b.batchSize]), [[1, 0, 2], [1, 0, 2]]);
});
