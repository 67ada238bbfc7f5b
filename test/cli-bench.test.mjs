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
  // every kernel row was checked against a float64 loop first: bf16 output, so errors of a few
  // bf16 ulps of the largest value (rel ~ 2^-8)
  const checked = rows.filter((x) => x.case !== "copy");
  assert.ok(checked.length >= 2);
  for (const x of checked) {
    assert.equal(typeof x.maxError, "number", JSON.stringify(x));
    assert.ok(x.maxError >= 0 && x.maxError < 0.05 && x.relError < 0.01, JSON.stringify(x));
  }
});

test("bench e2e --json trains the tiny shape and reports tokens/s and MFU", { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, [cli, "bench", "e2e", "--model-shape", "tiny", "--steps", "3", "--json"], { encoding: "utf8", timeout: 110_000 });
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.equal(rows.length, 1);
  const [e] = rows;
  assert.equal(e.kernel, "e2e");
  assert.ok(e.tokens_per_second > 0, JSON.stringify(e));
  assert.ok(e.mfu > 0 && e.mfu < 1, JSON.stringify(e));
  assert.ok(e.model_flops_per_token > 0 && e.peak_flops > 0);
  assert.match(e.flop_method, /2 x non-embedding/);
});

test("bench rejects unknown kernels", () => {
  const r = spawnSync(process.execPath, [cli, "bench", "warp-drive"], { encoding: "utf8" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /unknown kernel 'warp-drive'/);
});
