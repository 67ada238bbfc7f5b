// The high-level library calls (train, evaluate, merge, quantizeCheckpoint) as an embedding tool
// uses them: config objects are validated like files, bad options are QloraErrors with a code
// before any work, an already-aborted signal stops train() before it writes anything.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { evaluate, merge, quantizeCheckpoint, train } from "../dist/index.js";

const expectReject = (p, code, re) => assert.rejects(p, (e) => e.code === code && (!re || re.test(e.message)));

test("bad options are rejected with a code before any work", async () => {
  await expectReject(evaluate({ config: {}, split: "train" }), "E_ARG", /split must be "validation" or "test"/);
  await expectReject(evaluate({ config: { training: { learning_rate: "fast" } } }), "E_CONFIG", /learning_rate/);
  await expectReject(merge(), "E_ARG", /adapter: string, out: string/);
  await expectReject(quantizeCheckpoint({}), "E_ARG", /model: string, out: string/);
});

test("train() with an aborted signal stops before writing anything", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-api-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = path.join(dir, "out");
  const ac = new AbortController();
  ac.abort();
  await expectReject(train({ config: { output: { dir: out } }, signal: ac.signal }), "E_ABORTED", /before training started/);
  assert.equal(existsSync(out), false);
});

test("one training run per output folder: a live run's lock refuses a second; a stale lock is taken over", async (t) => {
  const { lockOutputDir, LOCK_FILE } = await import("../dist/train/output-lock.js");
  const { writeFileSync, readFileSync } = await import("node:fs");
  const { spawnSync } = await import("node:child_process");
  const { hostname } = await import("node:os");
  const dir = mkdtempSync(path.join(tmpdir(), "qn-lock-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const release = lockOutputDir(dir);
  assert.throws(() => lockOutputDir(dir), (e) => e.code === "E_ARG" && /in use by another training run \(pid \d+/.test(e.message));
  // train() itself refuses the folder while the lock is held (before any work)
  await expectReject(train({ config: { output: { dir } } }), "E_ARG", /in use by another training run/);
  release();
  assert.equal(existsSync(path.join(dir, LOCK_FILE)), false);
  // a lock left by a process that is gone
  const dead = spawnSync(process.execPath, ["-e", "0"]).pid;
  writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: dead, host: hostname() }));
  const again = lockOutputDir(dir);
  assert.equal(JSON.parse(readFileSync(path.join(dir, LOCK_FILE), "utf8")).pid, process.pid);
  again();
});
