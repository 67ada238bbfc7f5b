// Runs the native op suite (qn_tests, built by `npm run build:core`) on the CPU backend.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const exe = path.join(root, "build-core", "qn_tests");

test("native op suite passes on the CPU", { timeout: 15 * 60 * 1000 }, () => {
  assert.ok(existsSync(exe), `missing ${exe}: run "npm run build:core" first`);
  const r = spawnSync(exe, [], { encoding: "utf8", maxBuffer: 64 << 20 });
  const out = (r.stdout ?? "") + (r.stderr ?? "");
  const last = out.trim().split("\n").filter((l) => /passed, \d+ failed/.test(l)).pop();
  console.log(`qn_tests: ${last}`);
  assert.equal(r.status, 0, out.slice(-6000));
  assert.match(last ?? "", /^\d+ passed, 0 failed$/);
});

// The native whole-model bench (qn_bench --filter model, what a GPU session runs at the 3B shape
// without Node): on the tiny preset it must train (loss finite, near ln V, going down) and report.
test("native model bench runs training steps on the tiny preset", { timeout: 5 * 60 * 1000 }, () => {
  const bench = path.join(root, "build-core", "qn_bench");
  assert.ok(existsSync(bench), `missing ${bench}: run "npm run build:core" first`);
  const r = spawnSync(bench, ["--filter", "model", "--preset", "tiny", "--seq", "64", "--batch", "2", "--steps", "3"], { encoding: "utf8" });
  const out = (r.stdout ?? "") + (r.stderr ?? "");
  assert.equal(r.status, 0, out);
  assert.match(out, /check: first loss [\d.]+ vs ln\(vocab\) 5\.5452.*: ok/);
  const losses = [...out.matchAll(/step \d+(?: \(warm-up\))?: [\d.]+ s, loss ([\d.]+)/g)].map((m) => Number(m[1]));
  assert.equal(losses.length, 4);
  assert.ok(losses[3] < losses[0], `loss should go down over 4 AdamW steps on one batch: ${losses}`);
  assert.match(out, /tokens\/s: [\d.]+ .*\n.*model FLOPs\/token .*\n.*MFU [\d.]+% of/);
  assert.match(out, /memory: weights \d+ MB, .* device peak \d+ MB/);
  // Plain runs leave the heavy case out; bad settings fail with a message, not a crash.
  const bad = spawnSync(bench, ["--filter", "model", "--preset", "nope"], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /unknown --preset 'nope'/);
});
