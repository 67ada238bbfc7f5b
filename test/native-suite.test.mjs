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
