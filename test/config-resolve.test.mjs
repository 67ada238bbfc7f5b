// Model resolution: local folders and hub ids against a cache laid out as huggingface_hub does
// (models--Org--Name/{refs,snapshots,blobs}), with the cache location taken from the environment.

import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { findSnapshot, hubCacheDir, resolveModelPath } from "../dist/config/index.js";
import { tempDir, writeTree } from "./assets/data/helpers.mjs";

const H1 = "a".repeat(40);
const H2 = "0123456789abcdef0123456789abcdef01234567";

/** A hub cache with Qwen/Qwen2.5-3B at two commits: main -> H1, tag v1 -> H2 (files as blob symlinks). */
function makeCache(root) {
  const repo = join(root, "models--Qwen--Qwen2.5-3B");
  writeTree(repo, {
    "blobs/cfg1": '{"model_type":"qwen2"}',
    "blobs/cfg2": '{"model_type":"qwen2","v":2}',
    "refs/main": H1 + "\n",
    "refs/v1": H2,
  });
  for (const [hash, blob] of [[H1, "cfg1"], [H2, "cfg2"]]) {
    mkdirSync(join(repo, "snapshots", hash), { recursive: true });
    symlinkSync(join("..", "..", "blobs", blob), join(repo, "snapshots", hash, "config.json"));
  }
  return root;
}

test("hub id resolves through refs/main to its snapshot", (t) => {
  const cache = makeCache(tempDir(t));
  assert.equal(resolveModelPath("Qwen/Qwen2.5-3B", "main", { cacheDir: cache }), join(cache, "models--Qwen--Qwen2.5-3B", "snapshots", H1));
});

test("a tag, a commit hash and a refs-less cache", (t) => {
  const cache = makeCache(tempDir(t));
  const snaps = join(cache, "models--Qwen--Qwen2.5-3B", "snapshots");
  assert.equal(resolveModelPath("Qwen/Qwen2.5-3B", "v1", { cacheDir: cache }), join(snaps, H2));
  assert.equal(resolveModelPath("Qwen/Qwen2.5-3B", H2, { cacheDir: cache }), join(snaps, H2));
  // A copy without refs/ and a single snapshot: main falls back to that snapshot.
  const other = tempDir(t);
  writeTree(other, { [`models--Org--Tiny/snapshots/${H2}/config.json`]: "{}" });
  assert.equal(resolveModelPath("Org/Tiny", "main", { cacheDir: other }), join(other, "models--Org--Tiny", "snapshots", H2));
  assert.equal(findSnapshot(other, "model", "Org/Tiny", "dev"), undefined);
});

test("cache location follows HF_HUB_CACHE, then HF_HOME, then XDG_CACHE_HOME, then ~/.cache", (t) => {
  const a = tempDir(t);
  assert.equal(hubCacheDir({ HF_HUB_CACHE: a, HF_HOME: "/elsewhere" }), a);
  assert.equal(hubCacheDir({ HUGGINGFACE_HUB_CACHE: a }), a);
  assert.equal(hubCacheDir({ HF_HOME: a }), join(a, "hub"));
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: a }), join(a, "huggingface", "hub"));
  assert.equal(hubCacheDir({}), join(homedir(), ".cache", "huggingface", "hub"));
  assert.equal(hubCacheDir({ HF_HOME: "~/hf" }), join(homedir(), "hf", "hub"));
  const home = tempDir(t);
  makeCache(join(home, "hub"));
  assert.equal(resolveModelPath("Qwen/Qwen2.5-3B", "main", { env: { HF_HOME: home } }), join(home, "hub", "models--Qwen--Qwen2.5-3B", "snapshots", H1));
});

test("a local folder is used as it is", (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "config.json"), "{}");
  assert.equal(resolveModelPath(dir), dir);
});

test("missing hub model: says what to download and where", (t) => {
  const cache = tempDir(t);
  assert.throws(
    () => resolveModelPath("Qwen/Qwen2.5-3B", "main", { cacheDir: cache }),
    (err) => {
      assert.equal(err.code, "E_NOT_FOUND");
      assert.equal(
        err.message,
        [
          'Model "Qwen/Qwen2.5-3B" (revision "main") was not found: it is not a local folder and not in the Hugging Face cache.',
          `Looked for a local folder "Qwen/Qwen2.5-3B" and in the Hugging Face cache at ${join(cache, "models--Qwen--Qwen2.5-3B")}`,
          "Download it into that cache with:",
          "  huggingface-cli download Qwen/Qwen2.5-3B",
          "or put config.json, tokenizer.json, tokenizer_config.json and the *.safetensors files in a folder and set model.name_or_path to that folder.",
          "The cache location follows HF_HUB_CACHE, then HF_HOME/hub, then ~/.cache/huggingface/hub.",
        ].join("\n"),
      );
      return true;
    },
  );
  makeCache(cache);
  assert.throws(() => resolveModelPath("Qwen/Qwen2.5-3B", "v2", { cacheDir: cache }), /huggingface-cli download Qwen\/Qwen2\.5-3B --revision v2/);
});

test("incomplete snapshot, missing local folder, and a file instead of a folder", (t) => {
  const cache = tempDir(t);
  writeTree(cache, { "models--Org--Half/refs/main": H1, [`models--Org--Half/snapshots/${H1}/tokenizer.json`]: "{}" });
  assert.throws(() => resolveModelPath("Org/Half", "main", { cacheDir: cache }), (err) => err.code === "E_NOT_FOUND" && err.message.includes("has no config.json (an interrupted download?)"));
  const dir = tempDir(t);
  assert.throws(() => resolveModelPath(join(dir, "missing-model")), (err) => err.code === "E_NOT_FOUND" && err.message.startsWith(`Model folder not found: ${join(dir, "missing-model")}`));
  assert.throws(() => resolveModelPath("./models/qwen"), { code: "E_NOT_FOUND" });
  writeFileSync(join(dir, "weights.bin"), "");
  assert.throws(() => resolveModelPath(join(dir, "weights.bin")), /must be a folder/);
});
