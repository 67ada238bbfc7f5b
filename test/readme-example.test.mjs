// The library example in README.md runs as written (with the package name pointed at dist/).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("the README library example runs", { timeout: 300_000 }, (t) => {
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  const block = /## Library\s+```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, "README has a js block under ## Library");
  const code = block[1].replace(/from "qlora-native"/g, `from ${JSON.stringify(pathToFileURL(path.join(root, "dist", "index.js")).href)}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "qn-readme-"));
  t.after(() => process.env.QN_KEEP_TEST_DIRS || rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, "example.mjs"), code);
  const r = spawnSync(process.execPath, ["example.mjs"], { cwd: dir, encoding: "utf8", timeout: 280_000, env: { ...process.env, XDG_CACHE_HOME: path.join(dir, "cache") } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Uint16Array\(3\) \[ 16256, 16384, 16448 \]/);
  const ppl = Number(r.stdout.trim().split("\n").pop());
  assert.ok(Number.isFinite(ppl) && ppl > 1, `perplexity printed last: ${ppl}`);
});
