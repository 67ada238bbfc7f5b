// The embedded default: `npx qlora-native train` with no arguments runs the whole demo on the CPU
// (random Qwen2 model with the real tokenizer, NF4 + LoRA, bundled corpus) and writes its outputs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("the demo runs to completion and eval perplexity falls", { timeout: 10 * 60 * 1000 }, (t) => {
  const cwd = mkdtempSync(path.join(os.tmpdir(), "qn-demo-"));
  t.after(() => process.env.QN_KEEP_TEST_DIRS || rmSync(cwd, { recursive: true, force: true }));
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [path.join(root, "bin", "qlora-native.js"), "train"], {
    cwd,
    encoding: "utf8",
    env: { ...process.env, XDG_CACHE_HOME: path.join(cwd, "cache") },
    timeout: 9 * 60 * 1000,
  });
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(r.status, 0, r.stderr + r.stdout.slice(-3000));
  const lines = r.stdout.trim().split("\n");
  console.log(`demo: ${seconds.toFixed(0)} s; ${lines.find((l) => l.startsWith("eval loss"))}`);
  assert.match(lines.at(-1), /npx qlora-native train --config configs\/qwen2\.5-3b-wikitext2\.yaml/);
  const m = /eval loss ([\d.]+) -> ([\d.]+), perplexity ([\d.]+) -> ([\d.]+)/.exec(r.stdout);
  assert.ok(m, "before/after line present");
  assert.ok(Number(m[2]) < Number(m[1]) - 1, `eval loss fell by more than 1 nat: ${m[1]} -> ${m[2]}`);
  const out = path.join(cwd, "outputs", "demo");
  for (const f of ["adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "training_curves.html", "training_curves.svg", "config.resolved.yaml"]) {
    assert.ok(existsSync(path.join(out, f)), f);
  }
  const state = JSON.parse(readFileSync(path.join(out, "trainer_state.json"), "utf8"));
  assert.equal(state.global_step, state.max_steps);
});

test("ensureDemoModel never replaces a folder that is not a demo model; concurrent calls agree", async (t) => {
  const { ensureDemoModel } = await import("../dist/demo/model.js");
  const { mkdirSync, writeFileSync, readdirSync } = await import("node:fs");
  const base = mkdtempSync(path.join(os.tmpdir(), "qn-demo-model-"));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const user = path.join(base, "user");
  mkdirSync(path.join(user, "important"), { recursive: true });
  writeFileSync(path.join(user, "important", "notes.txt"), "keep me");
  await assert.rejects(ensureDemoModel(user), (e) => e.code === "E_ARG" && /not a demo model folder/.test(e.message));
  assert.equal(readFileSync(path.join(user, "important", "notes.txt"), "utf8"), "keep me");
  const dir = path.join(base, "demo");
  const r = await Promise.all([1, 2, 3].map(() => ensureDemoModel(dir)));
  assert.deepEqual(r, [dir, dir, dir]);
  assert.ok(existsSync(path.join(dir, "model.safetensors")) && existsSync(path.join(dir, "qlora-native-demo.txt")));
  assert.deepEqual(readdirSync(base).sort(), ["demo", "user"], "no temp folders left");
});
