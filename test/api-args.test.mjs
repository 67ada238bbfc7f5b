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
