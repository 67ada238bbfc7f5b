// Finding split files across layouts and reading their rows (ts/data/sources.ts, ts/data/read.ts).

import assert from "node:assert/strict";
import { cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { defaultConfig } from "../dist/config/index.js";
import { datasetRoot, findSplit, readSplitRows, resolveSplits, setLineBlockBytes, splitAliases } from "../dist/data/index.js";
import { hfRows, MINI_SPLITS, rawText, ROOT, tempDir, textRows, writeTree } from "./assets/data/helpers.mjs";

const PARQUET_DIR = join(ROOT, "test", "assets", "data", "wikitext-mini-parquet");

function dataConfig(over) {
  return { ...defaultConfig().data, ...over };
}

function writeRawFolder(dir) {
  return writeTree(dir, { "wiki.train.raw": rawText("train"), "wiki.valid.raw": rawText("validation"), "wiki.test.raw": rawText("test") });
}

test("split aliases", () => {
  assert.deepEqual(splitAliases("validation"), ["validation", "valid", "val", "eval", "dev"]);
  assert.deepEqual(splitAliases("valid"), ["valid", "validation", "val", "eval", "dev"]);
  assert.deepEqual(splitAliases("train"), ["train", "training"]);
  assert.deepEqual(splitAliases("holdout"), ["holdout"]);
});

test("raw WikiText folder: rows as the HF wikitext loader gives them", async (t) => {
  const dir = writeRawFolder(tempDir(t));
  const s = resolveSplits(dataConfig({ path: dir }));
  assert.deepEqual(s.train, { split: "train", format: "wikitext-raw", files: [join(dir, "wiki.train.raw")] });
  assert.equal(s.eval.files[0], join(dir, "wiki.valid.raw"));
  assert.equal(s.test.files[0], join(dir, "wiki.test.raw"));
  const rows = await readSplitRows(s.train, "text");
  // every row, blank ones as "" (they count in run_clm's row groups and tokenize to nothing)
  assert.deepEqual(rows.rows, hfRows("train"));
  assert.equal(rows.rows.length, MINI_SPLITS.train.length);
  assert.equal(rows.textRows, textRows("train").length);
  assert.ok(rows.rows.every((r) => r === "" || r.endsWith(" \n")), "line break kept, as in the HF rows");
  assert.equal(rows.bytes, Buffer.byteLength(rawText("train")));
});

test("HF parquet layout gives the same rows as the raw files", async (t) => {
  const root = tempDir(t);
  const rawDir = writeRawFolder(join(root, "raw"));
  // data.path at the repo root: the split files are in the <dataset>/ subfolder.
  const s = resolveSplits(dataConfig({ path: PARQUET_DIR }));
  assert.equal(s.train.format, "parquet");
  assert.deepEqual(s.eval.files, [join(PARQUET_DIR, "wikitext-2-raw-v1", "validation-00000-of-00001.parquet")]);
  for (const [role, split] of [["train", "train"], ["eval", "validation"], ["test", "test"]]) {
    const fromParquet = await readSplitRows(s[role], "text");
    const fromRaw = await readSplitRows(resolveSplits(dataConfig({ path: rawDir }))[role], "text");
    assert.deepEqual(fromParquet.rows, fromRaw.rows, split);
    assert.deepEqual(fromParquet.rows, hfRows(split));
  }
});

test("HF hub cache layout for datasets (datasets--Salesforce--wikitext)", async (t) => {
  const cache = tempDir(t);
  const snap = join(cache, "datasets--Salesforce--wikitext", "snapshots", "c".repeat(40));
  mkdirSync(snap, { recursive: true });
  cpSync(PARQUET_DIR, snap, { recursive: true });
  writeTree(cache, { "datasets--Salesforce--wikitext/refs/main": "c".repeat(40) });
  const env = { HF_HUB_CACHE: cache };
  assert.equal(datasetRoot(dataConfig({}), env), join(snap, "wikitext-2-raw-v1"));
  const s = resolveSplits(dataConfig({}), env);
  assert.deepEqual(s.test.files, [join(snap, "wikitext-2-raw-v1", "test-00000-of-00001.parquet")]);
  assert.deepEqual((await readSplitRows(s.test, "text")).rows, hfRows("test"));
});

test("missing dataset: says what to download", (t) => {
  const cache = tempDir(t);
  assert.throws(() => datasetRoot(dataConfig({}), { HF_HUB_CACHE: cache }), (err) => {
    assert.equal(err.code, "E_NOT_FOUND");
    assert.equal(
      err.message,
      [
        `Dataset "wikitext-2-raw-v1" was not found: data.path is not set and the Hugging Face cache has no copy at ${join(cache, "datasets--Salesforce--wikitext")}.`,
        "Download it into that cache with:",
        '  huggingface-cli download --repo-type dataset Salesforce/wikitext --include "wikitext-2-raw-v1/*"',
        "or set data.path to a folder holding the split files (wiki.train.raw, wiki.valid.raw, wiki.test.raw; or train/validation/test as .parquet, .jsonl or .txt).",
      ].join("\n"),
    );
    return true;
  });
  assert.throws(() => datasetRoot(dataConfig({ path: join(cache, "nope") })), { code: "E_NOT_FOUND", message: `data.path not found: ${join(cache, "nope")}` });
});

test("jsonl and txt folders, split names mapped (validation -> dev, eval)", async (t) => {
  const dir = writeTree(tempDir(t), {
    "train.jsonl": '{"text": "first row", "id": 1}\n\n{"text": "  "}\n{"text": null}\n{"text": "second row"}\n',
    "dev.jsonl": '{"text": "dev row"}\n',
    "test.txt": "line one\r\n\r\nline two\nlast line without break",
  });
  const s = resolveSplits(dataConfig({ path: dir }));
  assert.deepEqual([s.train.format, s.eval.format, s.test.format], ["jsonl", "jsonl", "txt"]);
  assert.equal(s.eval.files[0], join(dir, "dev.jsonl"));
  const train = await readSplitRows(s.train, "text");
  // jsonl: a blank line is no row; a null or whitespace text is "" (kept as is for run_clm's
  // plain concatenation, which tokenizes it)
  assert.deepEqual(train.rows, ["first row", "", "", "second row"]);
  assert.equal(train.textRows, 2);
  assert.deepEqual((await readSplitRows(s.train, "text", { keepBlankRows: true })).rows, ["first row", "  ", "", "second row"]);
  // txt: every line, empty ones too (the HF text loader)
  assert.deepEqual((await readSplitRows(s.test, "text")).rows, ["line one", "", "line two", "last line without break"]);
});

test("a split given as a file path; data.path as a single file", async (t) => {
  const dir = writeTree(tempDir(t), { "corpus/my-train.txt": "a\nb\n", "corpus/valid.txt": "v\n", "elsewhere/held.jsonl": '{"body":"x"}\n' });
  const c = dataConfig({ path: join(dir, "corpus", "my-train.txt"), test_split: join(dir, "elsewhere", "held.jsonl") });
  const s = resolveSplits(c);
  assert.deepEqual(s.train.files, [join(dir, "corpus", "my-train.txt")]);
  assert.deepEqual(s.eval.files, [join(dir, "corpus", "valid.txt")], "other splits are looked up beside the file");
  assert.deepEqual(s.test, { split: join(dir, "elsewhere", "held.jsonl"), format: "jsonl", files: [join(dir, "elsewhere", "held.jsonl")] });
  assert.deepEqual((await readSplitRows(s.test, "body")).rows, ["x"]);
});

test("sharded parquet files are read in order", async (t) => {
  const dir = tempDir(t);
  const src = join(PARQUET_DIR, "wikitext-2-raw-v1");
  cpSync(join(src, "validation-00000-of-00001.parquet"), join(dir, "train-00000-of-00002.parquet"));
  cpSync(join(src, "test-00000-of-00001.parquet"), join(dir, "train-00001-of-00002.parquet"));
  const s = findSplit(dir, "wikitext-2-raw-v1", "train");
  assert.equal(s.files.length, 2);
  assert.deepEqual((await readSplitRows(s, "text")).rows, [...hfRows("validation"), ...hfRows("test")]);
});

test("missing split: names the folder, the names tried and the files present", (t) => {
  const dir = writeTree(tempDir(t), { "wiki.train.raw": "x\n", "notes.md": "" });
  assert.throws(() => resolveSplits(dataConfig({ path: dir })), (err) => {
    assert.equal(err.code, "E_DATA");
    assert.equal(
      err.message,
      [
        `split "validation" not found in ${dir}.`,
        "Looked for wiki.validation.raw, wiki.valid.raw, wiki.val.raw, wiki.eval.raw, wiki.dev.raw, validation-NNNNN-of-MMMMM[-hash].parquet, validation.parquet, validation/*.parquet, valid-NNNNN-of-MMMMM[-hash].parquet, valid.parquet, valid/*.parquet, val-NNNNN-of-MMMMM[-hash].parquet, val.parquet, val/*.parquet, eval-NNNNN-of-MMMMM[-hash].parquet, eval.parquet, eval/*.parquet, dev-NNNNN-of-MMMMM[-hash].parquet, dev.parquet, dev/*.parquet, validation.jsonl/.txt, valid.jsonl/.txt, val.jsonl/.txt, eval.jsonl/.txt, dev.jsonl/.txt.",
        `Data files present: ${join(dir, "wiki.train.raw")}`,
        "Set data.eval_split to a split name present there or to a file path, or to null to skip this split.",
      ].join("\n"),
    );
    return true;
  });
  assert.throws(() => findSplit(dir, "wikitext-2-raw-v1", "missing/file.txt"), /data file for split "missing\/file.txt" not found/);
});

test("bad data files: clear errors naming the file", async (t) => {
  const dir = tempDir(t);
  const bad = (name, content) => {
    const p = join(dir, name);
    writeFileSync(p, content);
    return p;
  };
  const utf8 = bad("bad-utf8.txt", Buffer.concat([Buffer.from("good line\nsecond ok\nthird \xff\xfe broken\n", "latin1")]));
  await assert.rejects(readSplitRows({ split: "train", format: "txt", files: [utf8] }, "text"), {
    code: "E_DATA",
    message: `${utf8}: invalid UTF-8 at line 3 (byte 26); the data files must be UTF-8 text`,
  });
  const truncated = bad("trunc.raw", Buffer.from([0x20, 0x61, 0x0a, 0x20, 0xe6, 0x9d, 0x0a]));
  await assert.rejects(readSplitRows({ split: "train", format: "wikitext-raw", files: [truncated] }, "text"), { code: "E_DATA", message: `${truncated}: invalid UTF-8 at line 2 (byte 4); the data files must be UTF-8 text` });
  const notParquet = bad("train-00000-of-00001.parquet", "this is not parquet at all");
  await assert.rejects(readSplitRows({ split: "train", format: "parquet", files: [notParquet] }, "text"), (err) => err.code === "E_DATA" && err.message.startsWith(`${notParquet}: not a readable parquet file (`));
  const parquet = join(PARQUET_DIR, "wikitext-2-raw-v1", "test-00000-of-00001.parquet");
  await assert.rejects(readSplitRows({ split: "test", format: "parquet", files: [parquet] }, "content"), { code: "E_DATA", message: `${parquet}: no column "content" (data.text_field); its columns: "text"` });
  const jsonl = bad("rows.jsonl", '{"text": "ok"}\n{"txt": "wrong field", "id": 2}\n');
  await assert.rejects(readSplitRows({ split: "train", format: "jsonl", files: [jsonl] }, "text"), { code: "E_DATA", message: `${jsonl}: line 2 has no field "text" (data.text_field); its fields: "txt", "id"` });
  const badJson = bad("broken.jsonl", '{"text": "ok"}\n{"text": \n');
  await assert.rejects(readSplitRows({ split: "train", format: "jsonl", files: [badJson] }, "text"), (err) => err.code === "E_DATA" && err.message.startsWith(`${badJson}: line 2 is not valid JSON (`));
  const numbers = bad("numbers.jsonl", '{"text": 5}\n');
  await assert.rejects(readSplitRows({ split: "train", format: "jsonl", files: [numbers] }, "text"), { code: "E_DATA", message: `${numbers}: line 1: field "text" holds number, expected a string` });
  await assert.rejects(readSplitRows({ split: "train", format: "txt", files: [join(dir, "gone.txt")] }, "text"), (err) => err.code === "E_NOT_FOUND" && err.message.includes(join(dir, "gone.txt")));
});

test("a UTF-8 byte order mark stays text, as Python's open(encoding='utf-8') reads it", async (t) => {
  const dir = writeTree(tempDir(t), { "train.txt": "\ufeffhello\nworld\n" });
  assert.deepEqual((await readSplitRows({ split: "train", format: "txt", files: [join(dir, "train.txt")] }, "text")).rows, ["\ufeffhello", "world"]);
});

test(".txt lines split as datasets' text loader splits them (universal newlines, then at \\n only); keep_linebreaks keeps the breaks", async (t) => {
  // datasets 5 (packaged_modules/text): StringIO(open(f, encoding="utf-8").read()).readlines(),
  // rstrip("\n") without keep_linebreaks; \f, \v, U+2028, \x85 stay inside a row
  const text = "one\r\ntwo\rthree\x0bfour\x0cfive\u2028six\x85seven\nlast\x0c";
  const dir = writeTree(tempDir(t), { "train.txt": text, "wiki.train.raw": "a\rb\r\nc\n" });
  const txt = { split: "train", format: "txt", files: [join(dir, "train.txt")] };
  assert.deepEqual((await readSplitRows(txt, "text")).rows, ["one", "two", "three\x0bfour\x0cfive\u2028six\x85seven", "last\x0c"]);
  assert.deepEqual((await readSplitRows(txt, "text", { keepLinebreaks: true })).rows, ["one\n", "two\n", "three\x0bfour\x0cfive\u2028six\x85seven\n", "last\x0c"]);
  // wikitext raw (the dataset script iterates the file: line breaks only, universal newlines)
  const raw = { split: "train", format: "wikitext-raw", files: [join(dir, "wiki.train.raw")] };
  assert.deepEqual((await readSplitRows(raw, "text")).rows, ["a\n", "b\n", "c\n"]);
});

test("parquet: GZIP and BROTLI pages read; ZSTD is a clear error; the BOM stays", async () => {
  const dir = join(ROOT, "test", "assets", "data", "parquet-codecs");
  for (const codec of ["gzip", "brotli"]) {
    const r = await readSplitRows({ split: "train", format: "parquet", files: [join(dir, `train-${codec}.parquet`)] }, "text");
    assert.deepEqual(r.rows, ["\ufeffA byte order mark starts this row.", "Second row, plain.", "", "Third row: 東京 and an emoji 🙂."], codec);
    assert.equal(r.textRows, 3);
  }
  await assert.rejects(readSplitRows({ split: "train", format: "parquet", files: [join(dir, "train-zstd.parquet")] }, "text"), (e) => e.code === "E_DATA" && /compression ZSTD is not supported.*snappy/.test(e.message));
});

test("hub shard names with a hash suffix and the converted <split>/NNNN.parquet layout are found", (t) => {
  const dir = writeTree(tempDir(t), {
    "data/train-00000-of-00002-d9a5a2a1c0e6b7f5.parquet": "x",
    "data/train-00001-of-00002-d9a5a2a1c0e6b7f5.parquet": "x",
    "default/validation/0000.parquet": "x",
    "default/validation/0001.parquet": "x",
  });
  const train = findSplit(dir, "any", "train");
  assert.deepEqual(train.files.map((f) => f.slice(dir.length + 1)), ["data/train-00000-of-00002-d9a5a2a1c0e6b7f5.parquet", "data/train-00001-of-00002-d9a5a2a1c0e6b7f5.parquet"]);
  const val = findSplit(dir, "any", "validation", "eval_split");
  assert.deepEqual(val.files.map((f) => f.slice(dir.length + 1)), ["default/validation/0000.parquet", "default/validation/0001.parquet"]);
});

test("line files stream in blocks: tiny blocks give the same rows, errors keep their line and byte", async (t) => {
  // every block boundary position: lines longer than a block, CRLF, a lone CR, multi-byte text,
  // a last line without a break
  const text = "\ufeffalpha\r\nbeta gamma delta epsilon\rzeta 東京 🙂\n\nη θ\x0cιota\n{\"text\": \"x\"}\nlast";
  const dir = writeTree(tempDir(t), { "train.txt": text, "wiki.train.raw": text, "bad.txt": Buffer.concat([Buffer.from("ok line\nsecond\nbad \xe2\x82 here\n", "latin1")]) });
  const read = (format, file, opts) => readSplitRows({ split: "train", format, files: [join(dir, file)] }, "text", opts);
  const want = { txt: await read("txt", "train.txt"), keep: await read("txt", "train.txt", { keepLinebreaks: true }), raw: await read("wikitext-raw", "wiki.train.raw") };
  t.after(() => setLineBlockBytes(64 << 20));
  for (const block of [1, 2, 3, 5, 7, 16]) {
    setLineBlockBytes(block);
    assert.deepEqual(await read("txt", "train.txt"), want.txt, `txt, block ${block}`);
    assert.deepEqual(await read("txt", "train.txt", { keepLinebreaks: true }), want.keep, `keep, block ${block}`);
    assert.deepEqual(await read("wikitext-raw", "wiki.train.raw"), want.raw, `raw, block ${block}`);
    await assert.rejects(read("txt", "bad.txt"), { message: `${join(dir, "bad.txt")}: invalid UTF-8 at line 3 (byte 19); the data files must be UTF-8 text` });
  }
  assert.deepEqual(want.raw.rows, ["\ufeffalpha\n", "beta gamma delta epsilon\n", "zeta 東京 🙂\n", "", "η θ\x0cιota\n", "{\"text\": \"x\"}\n", "last"]);
  // datasets' text loader: StringIO(text).readlines(), "\\n" stripped
  assert.deepEqual(want.txt.rows, ["\ufeffalpha", "beta gamma delta epsilon", "zeta 東京 🙂", "", "η θ\x0cιota", "{\"text\": \"x\"}", "last"]);
  assert.equal(want.txt.bytes, Buffer.byteLength(text));
});
