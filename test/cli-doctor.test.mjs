// `qlora-native doctor` tells the truth about this machine, in text and JSON.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "bin", "qlora-native.js");
const run = (...args) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });

test("doctor --json parses and reports the CPU backend usable, no GPU", () => {
  const r = run("doctor", "--json");
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.addon.loaded, true);
  assert.equal(rep.backends.cpu.usable, true);
  assert.ok(rep.backends.cpu.threads >= 1);
  assert.equal(typeof rep.backends.cuda.built, "boolean");
  // usable on a GPU machine with a CUDA build; otherwise it says why not
  if (!rep.backends.cuda.usable) assert.ok(rep.backends.cuda.reason.length > 0);
  assert.equal(typeof rep.cpu.features.avx2, "boolean");
  assert.ok(Array.isArray(rep.cuda.devices));
});

test("doctor prints a readable report", () => {
  const r = run("doctor");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /CPU backend: +built yes, usable yes/);
  assert.match(r.stdout, /CUDA backend: built (yes|no)/);
});

test("unknown commands and flags give a one-line error and exit non-zero", () => {
  const r = run("frobnicate");
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /^qlora-native: Unknown argument: frobnicate/);
  const r2 = run("doctor", "--bogus");
  assert.notEqual(r2.status, 0);
  assert.match(r2.stderr, /Unknown argument: bogus/);
});
