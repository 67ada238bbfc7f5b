// prepareDataset end to end (ts/data/prepare.ts): tokenization through the pool, the disk cache
// (hit, invalidation, damage), empty splits, examples and batches from a config, and the
// WikiText-2 reference count with throughput figures when ../shared/data is present.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { appendFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { loadConfig } from "../dist/config/index.js";
import { buildExampleSets, prepareDataset, TextTokenizer, TokenizePool, TrainLoader } from "../dist/data/index.js";
import { hfRows, makeModelDir, QWEN_TOKENIZER_DIR, rawText, ROOT, SHARED_SKIP, SHARED_WIKITEXT, tempDir, textRows, writeTree } from "./assets/data/helpers.mjs";

let tok; // reference tokenizer with the same files as the model folders below
before(async () => {
  tok = await TextTokenizer.load(QWEN_TOKENIZER_DIR);
});

/** A model folder, a raw WikiText folder of the mini corpus and a cache folder. */
function setup(t) {
  const root = tempDir(t);
  const model = makeModelDir(join(root, "model"));
  const data = writeTree(join(root, "data"), { "wiki.train.raw": rawText("train"), "wiki.valid.raw": rawText("validation"), "wiki.test.raw": rawText("test") });
  return { root, model, data, cache: join(root, "cache") };
}

function config(s, extra = []) {
  return loadConfig(undefined, { set: [`model.name_or_path=${s.model}`, `data.path=${s.data}`, `advanced.cache_dir=${s.cache}`, ...extra] });
}

function expectRows(set, rows) {
  assert.equal(set.numRows, rows.length);
  const ids = rows.map((r) => tok.encode(r));
  assert.deepEqual(Array.from(set.ids), ids.flat());
  assert.equal(set.offsets[0], 0);
  ids.forEach((r, i) => assert.equal(set.offsets[i + 1] - set.offsets[i], r.length));
}

test("tokenizes all splits, then loads them from the cache", async (t) => {
  const s = setup(t);
  const c = await config(s);
  const logs = [];
  const a = await prepareDataset(c, { log: (l) => logs.push(l) });
  assert.deepEqual([a.tokenizer.eosId, a.tokenizer.padId, a.tokenizer.vocabSize], [151643, 151643, 151669]);
  assert.equal(a.tokenizer.dir, s.model);
  // every row as the HF loader gives it, blank ones "" (no ids)
  expectRows(a.train, hfRows("train"));
  expectRows(a.eval, hfRows("validation"));
  expectRows(a.test, hfRows("test"));
  assert.deepEqual([a.train.fromCache, a.stats.cacheHits, a.stats.cacheMisses], [false, 0, 3]);
  assert.match(logs[0], /^tokenized train, eval, test: /);
  assert.equal(readdirSync(s.cache).filter((f) => f.endsWith(".tok")).length, 3);
  assert.ok(readdirSync(s.cache).every((f) => !f.endsWith(".tmp")));

  const b = await prepareDataset(c);
  assert.deepEqual([b.train.fromCache, b.eval.fromCache, b.test.fromCache, b.stats.cacheHits, b.stats.tokenizeSeconds], [true, true, true, 3, 0]);
  for (const role of ["train", "eval", "test"]) {
    assert.deepEqual(b[role].ids, a[role].ids);
    assert.deepEqual(b[role].offsets, a[role].offsets);
    assert.equal(b[role].cacheKey, a[role].cacheKey);
  }
  assert.deepEqual(b.tokenizer, a.tokenizer);
});

test("cache invalidation: data bytes, tokenizer files, reader settings", async (t) => {
  const s = setup(t);
  const c = await config(s);
  const a = await prepareDataset(c);
  appendFileSync(join(s.data, "wiki.valid.raw"), " A new paragraph about terns . \n");
  const b = await prepareDataset(c);
  assert.deepEqual([b.train.fromCache, b.eval.fromCache, b.test.fromCache], [true, false, true]);
  assert.notEqual(b.eval.cacheKey, a.eval.cacheKey);
  expectRows(b.eval, [...hfRows("validation"), " A new paragraph about terns . \n"]);

  writeFileSync(join(s.model, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|im_end|>", pad_token: "<|endoftext|>" }));
  const d = await prepareDataset(c);
  assert.deepEqual([d.train.fromCache, d.eval.fromCache, d.test.fromCache], [false, false, false]);
  assert.deepEqual([d.tokenizer.eosId, d.tokenizer.padId], [151645, 151643]);
  const e = await prepareDataset(c);
  assert.deepEqual([e.tokenizer.eosId, e.tokenizer.padId], [151645, 151643], "special ids come back from the cache");

  const j = writeTree(join(s.root, "jsonl"), {
    "train.jsonl": '{"text": "alpha beta", "body": "gamma delta epsilon"}\n',
    "validation.jsonl": '{"text": "v", "body": "w"}\n',
    "test.jsonl": '{"text": "t", "body": "u"}\n',
  });
  const byText = await prepareDataset(await config({ ...s, data: j }));
  const byBody = await prepareDataset(await config({ ...s, data: j }, ["data.text_field=body"]));
  assert.equal(byBody.train.fromCache, false);
  assert.notEqual(byBody.train.cacheKey, byText.train.cacheKey);
  assert.deepEqual(Array.from(byBody.train.ids), tok.encode("gamma delta epsilon"));
});

test("a damaged cache file is ignored and rewritten; useCache false writes nothing", async (t) => {
  const s = setup(t);
  const c = await config(s, ["data.eval_split=null", "data.test_split=null", "training.eval_strategy=no"]);
  const a = await prepareDataset(c);
  const [file] = readdirSync(s.cache).filter((f) => f.endsWith(".tok"));
  const bytes = readFileSync(join(s.cache, file));
  bytes[bytes.length - 40] ^= 0xff;
  writeFileSync(join(s.cache, file), bytes);
  const b = await prepareDataset(c);
  assert.equal(b.train.fromCache, false);
  assert.deepEqual(b.train.ids, a.train.ids);
  assert.equal((await prepareDataset(c)).train.fromCache, true);
  assert.equal(a.eval, null);
  assert.equal(a.test, null);

  const other = join(s.root, "cache2");
  await prepareDataset(c, { cacheDir: other, useCache: false });
  assert.throws(() => readdirSync(other), { code: "ENOENT" });
});

test("parquet layout gives the same token ids as the raw files", async (t) => {
  const s = setup(t);
  const raw = await prepareDataset(await config(s));
  const pq = await prepareDataset(await config({ ...s, data: join(ROOT, "test", "assets", "data", "wikitext-mini-parquet") }));
  for (const role of ["train", "eval", "test"]) {
    assert.equal(pq[role].source.format, "parquet");
    assert.deepEqual(pq[role].ids, raw[role].ids, role);
    assert.deepEqual(pq[role].offsets, raw[role].offsets, role);
  }
});

test("an empty split is an error naming its file", async (t) => {
  const s = setup(t);
  writeFileSync(join(s.data, "wiki.test.raw"), " \n \n\n");
  await assert.rejects(prepareDataset(await config(s)), {
    code: "E_DATA",
    message: `split "test" (data.test_split) has no rows with text: ${join(s.data, "wiki.test.raw")} (3 rows, all empty)`,
  });
});

test("a pool whose workers cannot load the tokenizer fails with E_DATA, again and again, leaking nothing", (t) => {
  // terminating a worker that was still loading its modules crashed Node (a V8 check) or leaked
  // descriptors; the pool now waits for every worker to be ready or failed first
  const dir = writeTree(tempDir(t), { "tokenizer.json": "{ not json" });
  const script = `const { TokenizePool } = await import(${JSON.stringify(new URL("../dist/data/index.js", import.meta.url).href)});
    const { readdirSync } = await import("node:fs"); const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds(); const codes = new Set();
    for (let i = 0; i < 40; i++) { try { await TokenizePool.open(${JSON.stringify(dir)}, 2); } catch (e) { codes.add(e.code); } }
    console.log(JSON.stringify({ before, after: fds(), codes: [...codes] }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 120_000 });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.deepEqual(got.codes, ["E_DATA"]);
  assert.ok(got.after <= got.before + 2, `file descriptors ${got.before} -> ${got.after}`);
});

test("blank and whitespace lines of a .txt split are no examples (padding and EOS packing), with or without keep_linebreaks", async (t) => {
  const s = setup(t);
  const data = writeTree(join(s.root, "ws"), { "train.txt": "Hello there my friend.\n\nSecond paragraph here.\n  \t\n\nThird one.\n" });
  for (const keep of ["false", "true"]) {
    const c = await config({ ...s, data }, ["data.eval_split=null", "data.test_split=null", "training.eval_strategy=no", `data.keep_linebreaks=${keep}`]);
    const prepared = await prepareDataset(c);
    assert.equal(prepared.train.numRows, 6, "every line is a row (blank ones count in row groups)");
    assert.equal(buildExampleSets(prepared, c).train.length, 3, `keep_linebreaks ${keep}`);
  }
});

test("worker pool and calling thread give identical ids", async () => {
  const rows = [...textRows("train"), ...textRows("validation"), ...textRows("test")];
  const many = Array.from({ length: 40 }, (_, i) => rows.map((r) => `${r.trimEnd()} #${i}\n`)).flat();
  const pool = await TokenizePool.open(QWEN_TOKENIZER_DIR, 2);
  try {
    assert.equal(pool.size, 2);
    assert.deepEqual([pool.info.eosId, pool.info.padId], [tok.eosId, tok.padId]);
    const got = await pool.encode(many);
    assert.equal(got.offsets.length, many.length + 1);
    assert.deepEqual(Array.from(got.ids), many.flatMap((r) => tok.encode(r)));
    const empty = await pool.encode([]);
    assert.deepEqual([empty.ids.length, Array.from(empty.offsets)], [0, [0]]);
  } finally {
    await pool.close();
  }
});

test("examples and batches from a config (padding and packing)", async (t) => {
  const s = setup(t);
  const c = await config(s, ["data.max_length=16", "training.per_device_train_batch_size=3"]);
  const prepared = await prepareDataset(c);
  const sets = buildExampleSets(prepared, c);
  assert.equal(sets.train.length, textRows("train").length, "one example per row with text");
  const loader = TrainLoader.fromConfig(sets.train, c, prepared.tokenizer.padId);
  const b = loader.next();
  assert.deepEqual([b.batchSize, b.seqLen], [3, 16]);
  for (let k = 0; k < b.inputIds.length; k++) assert.equal(b.labels[k], b.attentionMask[k] ? b.inputIds[k] : -100);
  const again = TrainLoader.fromConfig(sets.train, c, prepared.tokenizer.padId).next();
  assert.deepEqual(again.inputIds, b.inputIds, "same seed, same first batch");

  const packed = await loadConfig(undefined, { base: c, set: ["data.packing=true", "data.max_train_samples=4"] });
  const p = buildExampleSets(await prepareDataset(packed), packed);
  assert.equal(p.train.length, 4);
  const stream = [];
  for (let r = 0; r < prepared.train.numRows; r++) {
    if (prepared.train.offsets[r + 1] === prepared.train.offsets[r]) continue; // empty rows: no EOS either
    if (stream.length > 0) stream.push(prepared.tokenizer.eosId);
    stream.push(...prepared.train.ids.subarray(prepared.train.offsets[r], prepared.train.offsets[r + 1]));
  }
  assert.deepEqual(Array.from(p.train.tokens(1)), stream.slice(16, 32));
});

/** The Qwen tokenizer with a post-processor that prepends <|im_start|> (151644), as a Llama
 * tokenizer prepends its BOS. */
function prefixTokenizerModel(dir, s) {
  const json = JSON.parse(readFileSync(join(QWEN_TOKENIZER_DIR, "tokenizer.json"), "utf8"));
  json.post_processor = {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<|im_start|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [{ SpecialToken: { id: "<|im_start|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: { "<|im_start|>": { id: "<|im_start|>", ids: [151644], tokens: ["<|im_start|>"] } },
  };
  return writeTree(dir, { "tokenizer.json": JSON.stringify(json), "tokenizer_config.json": readFileSync(join(s.model, "tokenizer_config.json")), "config.json": "{}" });
}

test("packing_separator none + packing_group_rows 1000 give run_clm.py's blocks (fixture from datasets + transformers)", async (t) => {
  // test/fixtures/gen_packing.py: the datasets text loader (keep_linebreaks), tokenizer(text),
  // group_texts under map(batched=True): 1000-row groups, each group's remainder dropped
  const fx = JSON.parse(readFileSync(join(ROOT, "test", "fixtures", "packing", "run_clm.json"), "utf8"));
  const s = setup(t);
  const data = writeTree(join(s.root, "corpus"), { "train.txt": readFileSync(join(ROOT, "test", "fixtures", "packing", "corpus.txt")) });
  const models = { qwen: s.model, prefix_151644: prefixTokenizerModel(join(s.root, "prefix-model"), s) };
  const set = [`data.path=${data}`, "data.eval_split=null", "data.test_split=null", "training.eval_strategy=no", "data.keep_linebreaks=true", "data.packing=true", `data.max_length=${fx.block_size}`];
  for (const [name, want] of Object.entries(fx.cases)) {
    const c = await config({ ...s, model: models[name] }, [...set, "data.packing_separator=none", `data.packing_group_rows=${fx.map_batch_size}`]);
    const prepared = await prepareDataset(c);
    assert.equal(prepared.train.numRows, want.rows, name);
    const { train } = buildExampleSets(prepared, c);
    assert.equal(train.length, want.blocks, name);
    const flat = new Int32Array(train.length * fx.block_size);
    for (let i = 0; i < train.length; i++) flat.set(train.tokens(i), i * fx.block_size);
    assert.deepEqual(Array.from(train.tokens(0)), want.first_block, name);
    assert.deepEqual(Array.from(train.tokens(train.length - 1)), want.last_block, name);
    assert.equal(createHash("sha256").update(new Uint8Array(flat.buffer)).digest("hex"), want.ids_sha256, name);
    // one stream (no groups): only the split's last partial block is dropped, so at least as many
    const whole = buildExampleSets(prepared, await config({ ...s, model: models[name] }, [...set, "data.packing_separator=none"])).train;
    const tokens = prepared.train.ids.length;
    assert.equal(whole.length, Math.floor(tokens / fx.block_size), name);
    assert.ok(whole.length >= want.blocks);
  }
});

test("WikiText-2 validation as train: 262,210 tokens; throughput and cached load", { skip: SHARED_SKIP }, async (t) => {
  const root = tempDir(t);
  const model = makeModelDir(join(root, "model"));
  const c = await loadConfig(undefined, {
    set: [`model.name_or_path=${model}`, `data.path=${SHARED_WIKITEXT}`, "data.train_split=validation", "data.eval_split=test", "data.test_split=null", `advanced.cache_dir=${join(root, "cache")}`],
  });
  const first = await prepareDataset(c);
  assert.equal(first.train.source.files[0], join(SHARED_WIKITEXT, "wiki.valid.raw"));
  // the row counts of the HF dataset (wikitext-2-raw-v1 validation / test), blank rows included
  assert.equal(first.train.numRows, 3760);
  assert.equal(first.train.numTokens, 262210);
  assert.equal(first.eval.numRows, 4358);
  const mb = first.stats.bytesTokenized / 1e6;
  t.diagnostic(`first pass: ${mb.toFixed(2)} MB in ${first.stats.tokenizeSeconds.toFixed(2)} s on ${first.stats.workers} thread(s) = ${(mb / first.stats.tokenizeSeconds).toFixed(2)} MB/s (tokenizer load included)`);
  const cached = await prepareDataset(c);
  assert.equal(cached.stats.cacheHits, 2);
  assert.deepEqual(cached.train.ids, first.train.ids);
  t.diagnostic(`cached load: ${(cached.stats.seconds * 1000).toFixed(0)} ms`);
  assert.ok(cached.stats.seconds < 1, `cached load took ${cached.stats.seconds} s`);
});

test("special tokens of the tokenizer's post-processor (a Llama-style BOS) start every row, as transformers adds them", async (t) => {
  const s = setup(t);
  // The Qwen tokenizer with a post-processor that prepends <|im_start|> (as Llama's BOS)
  const bosModel = prefixTokenizerModel(join(s.root, "bos-model"), s);
  const bosTok = await TextTokenizer.load(bosModel);
  assert.deepEqual([bosTok.specialPrefix, bosTok.specialSuffix], [[151644], []]);
  assert.deepEqual([tok.specialPrefix, tok.specialSuffix], [[], []], "Qwen's own tokenizer adds nothing");

  const withBos = await prepareDataset(await config({ ...s, model: bosModel }));
  // every row, blank ones too: tokenizer("") is the BOS alone in transformers
  const rows = hfRows("train");
  assert.equal(withBos.train.numRows, rows.length);
  const expected = rows.map((r) => [151644, ...tok.encode(r)]);
  assert.deepEqual(Array.from(withBos.train.ids), expected.flat());
  // off: the plain ids (and another cache entry); Qwen rows are the same either way
  const plain = await prepareDataset(await config({ ...s, model: bosModel }, ["data.add_special_tokens=false"]));
  expectRows(plain.train, rows);
  assert.notEqual(plain.train.cacheKey, withBos.train.cacheKey);
  const qwen = await prepareDataset(await config(s));
  expectRows(qwen.train, rows);
});
