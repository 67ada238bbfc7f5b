// `qlora-native bench` runs the native benchmarks and its --json output parses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "bin", "qlora-native.js");

test("bench rmsnorm --json gives rows with the copy-bandwidth fraction", { timeout: 300_000 }, () => {
  const r = spawnSync(process.execPath, [cli, "bench", "rmsnorm", "--iters", "3", "--json"], { encoding: "utf8", timeout: 280_000 });
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.ok(rows.length >= 2);
  assert.ok(rows.some((x) => x.case === "copy" && x.fractionOfCopy === 1));
  for (const x of rows) assert.ok(x.ms > 0 && x.gbs > 0, JSON.stringify(x));
});

test("bench rejects unknown kernels", () => {
  const r = spawnSync(process.execPath, [cli, "bench", "warp-drive"], { encoding: "utf8" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /unknown kernel 'warp-drive'/);
});
