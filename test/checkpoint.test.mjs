// Checkpoints: save / load round trip, save_total_limit rotation, incomplete folders ignored, and a
// save killed (SIGKILL) at random moments always leaving the previous checkpoint loadable. The kill
// test re-runs this file as the child process (QN_CKPT_CHILD=<dir>), which saves in a loop.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { assertNoForeignCheckpoints, deleteCheckpointsExcept, findLatestCheckpoint, foreignCheckpointEntries, listCheckpoints, loadCheckpoint, saveCheckpoint, verifyCheckpoint } from "../dist/train/checkpoint.js";

const MODULE = "base_model.model.model.layers.0.self_attn.q_proj";

// Deterministic contents for a step, so any loaded checkpoint can be checked against its step.
function stateFor(step, elems = 4096) {
  const fill = (n, salt) => Float32Array.from({ length: n }, (_, i) => step + salt + i * 1e-3);
  const A = fill(4 * 64, 0.25), B = fill(64 * 4, 0.5);
  const m = fill(elems, 1), v = fill(elems, 2);
  const codes = Uint8Array.from({ length: elems }, (_, i) => (i + step) & 255);
  return {
    adapter: { [`${MODULE}.lora_A.weight`]: { shape: [4, 64], data: A }, [`${MODULE}.lora_B.weight`]: { shape: [64, 4], data: B } },
    adapterConfig: { r: 4, alpha: 8, dropout: 0, targets: ["q_proj"], useRslora: false, baseModel: "tiny" },
    optimizer: { step, tensors: { m: new Uint8Array(m.buffer), v: new Uint8Array(v.buffer), codes } },
    scheduler: { last_epoch: step },
    rng: { seed: 7, draws: step * 3 },
    seed: 7,
    dataPosition: { epoch: 0, index: step * 2 },
    skippedSteps: step % 3,
    logHistory: Array.from({ length: step }, (_, i) => ({ step: i + 1, epoch: (i + 1) / 10, loss: 2 - i * 0.01, learning_rate: 1e-4 })),
  };
}

function checkLoaded(ck, step) {
  const want = stateFor(step);
  assert.equal(ck.step, step);
  assert.deepEqual(ck.adapter[`${MODULE}.lora_A.weight`].data, want.adapter[`${MODULE}.lora_A.weight`].data);
  assert.deepEqual(ck.adapter[`${MODULE}.lora_B.weight`].shape, [64, 4]);
  assert.equal(ck.adapterConfig.r, 4);
  assert.equal(ck.optimizer.step, step);
  assert.deepEqual(ck.optimizer.tensors.m, want.optimizer.tensors.m);
  assert.deepEqual(ck.optimizer.tensors.codes, want.optimizer.tensors.codes);
  assert.deepEqual(ck.scheduler, want.scheduler);
  assert.deepEqual(ck.rng, want.rng);
  assert.deepEqual(ck.dataPosition, want.dataPosition);
  assert.equal(ck.skippedSteps, want.skippedSteps);
  assert.equal(ck.seed, 7);
  assert.deepEqual(ck.logHistory, want.logHistory);
  assert.equal(ck.trainerState.global_step, step);
}

// ---- child mode: save checkpoints forever (the parent kills us) -----------------------------------
if (process.env.QN_CKPT_CHILD) {
  const dir = process.env.QN_CKPT_CHILD;
  const first = Number(process.env.QN_CKPT_FIRST ?? "1");
  for (let step = first; ; step++) {
    const s = stateFor(step, 1 << 18); // ~2 MB of optimizer state per checkpoint
    await saveCheckpoint(dir, step, { ...s, saveTotalLimit: 2 });
    process.stdout.write(`saved ${step}\n`);
  }
}

const tmp = () => mkdtempSync(path.join(tmpdir(), "qn-ckpt-"));

test("save and load round trip; files and manifest", async () => {
  const dir = tmp();
  try {
    const p = await saveCheckpoint(dir, 5, stateFor(5));
    assert.equal(p, path.join(dir, "checkpoint-5"));
    assert.deepEqual(readdirSync(dir), ["checkpoint-5"]);
    assert.deepEqual(readdirSync(p).sort(), ["adapter_config.json", "adapter_model.safetensors", "manifest.json", "optimizer.safetensors", "trainer_state.json", "training_state.json"]);
    const man = JSON.parse(readFileSync(path.join(p, "manifest.json"), "utf8"));
    assert.equal(man.step, 5);
    assert.deepEqual(Object.keys(man.files).sort(), ["adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json", "training_state.json"]);
    checkLoaded(await loadCheckpoint(p), 5);
    assert.equal(findLatestCheckpoint(dir), p);
    // Float32Array optimizer tensors come back as Float32Array in optimizerState.
    const f = Float32Array.from([1, 2, 3.5]);
    const p2 = await saveCheckpoint(dir, 6, { adapter: stateFor(6).adapter, optimizerState: { exp_avg: f } });
    const ck = await loadCheckpoint(p2);
    assert.ok(ck.optimizerState.exp_avg instanceof Float32Array);
    assert.deepEqual(ck.optimizerState.exp_avg, f);
    assert.equal(ck.adapterConfig, null); // no adapter config given: weights only
    assert.equal(Object.keys(ck.adapter).length, 2);
    // Saving the same step again replaces it.
    await saveCheckpoint(dir, 6, stateFor(6));
    checkLoaded(await loadCheckpoint(p2), 6);
    assert.deepEqual(readdirSync(dir).sort(), ["checkpoint-5", "checkpoint-6"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("save_total_limit keeps the newest, deletes oldest first, never the one just written", async () => {
  const dir = tmp();
  try {
    for (const s of [10, 20, 30, 40]) await saveCheckpoint(dir, s, { ...stateFor(s), saveTotalLimit: 2 });
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [40, 30]);
    // Writing an older step (e.g. after resuming from 10) keeps it even though it is the oldest.
    await saveCheckpoint(dir, 15, { ...stateFor(15), saveTotalLimit: 2 });
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [40, 15]);
    await saveCheckpoint(dir, 50, { ...stateFor(50), saveTotalLimit: 1 });
    assert.deepEqual(readdirSync(dir), ["checkpoint-50"]);
    await saveCheckpoint(dir, 60, { ...stateFor(60), saveTotalLimit: null });
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [60, 50]);
    // the best model's checkpoint is kept, as transformers keeps it (limit 1 then keeps two)
    const best = path.join(dir, "checkpoint-50");
    await saveCheckpoint(dir, 70, { ...stateFor(70), saveTotalLimit: 1, keepCheckpoint: best });
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [70, 50]);
    await saveCheckpoint(dir, 80, { ...stateFor(80), saveTotalLimit: 2, keepCheckpoint: best });
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [80, 50]);
    // the end of a run with limit 1 and a best model: the best alone
    // a best checkpoint outside this folder (a copied output folder's record) deletes nothing
    assert.deepEqual(await deleteCheckpointsExcept(dir, path.join(tmpdir(), "elsewhere", "checkpoint-50")), []);
    assert.deepEqual(await deleteCheckpointsExcept(dir, best), [path.join(dir, "checkpoint-80")]);
    assert.deepEqual(readdirSync(dir), ["checkpoint-50"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a checkpoint-N entry that is not our checkpoint (a file, a folder without manifest) is never replaced", async () => {
  const dir = tmp();
  try {
    writeFileSync(path.join(dir, "checkpoint-2"), "my notes");
    mkdirSync(path.join(dir, "checkpoint-3"));
    writeFileSync(path.join(dir, "checkpoint-3", "results.csv"), "a,b");
    assert.deepEqual(foreignCheckpointEntries(dir).sort(), [path.join(dir, "checkpoint-2"), path.join(dir, "checkpoint-3")]);
    assert.throws(() => assertNoForeignCheckpoints(dir), (e) => e.code === "E_IO" && /not a qlora-native checkpoint .*nothing was overwritten/.test(e.message));
    for (const step of [2, 3]) await assert.rejects(saveCheckpoint(dir, step, stateFor(step)), (e) => e.code === "E_IO" && e.message.includes(`checkpoint-${step} is named like a checkpoint`));
    assert.equal(readFileSync(path.join(dir, "checkpoint-2"), "utf8"), "my notes");
    assert.equal(readFileSync(path.join(dir, "checkpoint-3", "results.csv"), "utf8"), "a,b");
    // our own checkpoint of the same step is replaced (a resumed run saving that step again)
    await saveCheckpoint(dir, 4, stateFor(4));
    await saveCheckpoint(dir, 4, stateFor(4));
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [4]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("findLatestCheckpoint ignores temp folders, missing manifests, truncated files; load detects corruption", async () => {
  const dir = tmp();
  try {
    assert.equal(findLatestCheckpoint(dir), null);
    assert.equal(findLatestCheckpoint(path.join(dir, "nope")), null);
    await saveCheckpoint(dir, 3, stateFor(3));
    mkdirSync(path.join(dir, "checkpoint-9.tmp-abcdef")); // interrupted save
    mkdirSync(path.join(dir, "checkpoint-8")); // no manifest
    writeFileSync(path.join(dir, "checkpoint-8", "adapter_model.safetensors"), "x");
    const p7 = await saveCheckpoint(dir, 7, stateFor(7));
    const opt = path.join(p7, "optimizer.safetensors");
    writeFileSync(opt, readFileSync(opt).subarray(0, 100)); // truncated
    assert.equal(findLatestCheckpoint(dir), path.join(dir, "checkpoint-3"));
    await assert.rejects(loadCheckpoint(p7), { code: "E_FORMAT" });
    // Same size, different bytes: only the hash check sees it.
    const p4 = await saveCheckpoint(dir, 4, stateFor(4));
    const a = path.join(p4, "adapter_model.safetensors");
    const bytes = readFileSync(a);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(a, bytes);
    assert.equal(findLatestCheckpoint(dir), p4);
    await assert.rejects(verifyCheckpoint(p4), { code: "E_FORMAT" });
    await assert.rejects(loadCheckpoint(p4), /sha256/);
    // A re-save of step 12 killed after moving the old checkpoint-12 aside: still found, and the
    // next save moves it back.
    const p12 = await saveCheckpoint(dir, 12, stateFor(12));
    renameSync(p12, `${p12}.old-0123456789ab`);
    assert.equal(findLatestCheckpoint(dir), `${p12}.old-0123456789ab`);
    checkLoaded(await loadCheckpoint(findLatestCheckpoint(dir)), 12);
    // The next save cleans the temp folder of the interrupted one and restores checkpoint-12.
    await saveCheckpoint(dir, 11, stateFor(11));
    assert.ok(!readdirSync(dir).includes("checkpoint-9.tmp-abcdef"));
    assert.equal(findLatestCheckpoint(dir), p12);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a save killed with SIGKILL at random moments leaves a loadable previous checkpoint", { timeout: 60_000 }, async () => {
  const dir = tmp();
  const self = fileURLToPath(import.meta.url);
  const started = Date.now();
  let nextFirst = 1;
  let kills = 0;
  try {
    for (let round = 0; round < 6 && Date.now() - started < 25_000; round++) {
      const child = spawn(process.execPath, [self], { env: { ...process.env, QN_CKPT_CHILD: dir, QN_CKPT_FIRST: String(nextFirst) }, stdio: ["ignore", "pipe", "pipe"] });
      let lastSaved = 0;
      let err = "";
      child.stderr.on("data", (d) => (err += d));
      const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
      // Wait for a first complete save, then kill after a random delay (mid-save most of the time).
      await new Promise((resolve, reject) => {
        child.stdout.on("data", (d) => {
          for (const m of String(d).matchAll(/saved (\d+)/g)) lastSaved = Math.max(lastSaved, Number(m[1]));
          if (lastSaved) resolve();
        });
        child.on("exit", () => reject(new Error(`child exited early: ${err}`)));
      });
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 150));
      child.kill("SIGKILL");
      const { signal } = await exited;
      assert.equal(signal, "SIGKILL", err);
      kills++;
      const latest = findLatestCheckpoint(dir);
      assert.ok(latest, "a checkpoint survives");
      const ck = await loadCheckpoint(latest);
      assert.ok(ck.step >= lastSaved, `latest ${ck.step} >= last reported ${lastSaved}`);
      const want = stateFor(ck.step, 1 << 18);
      assert.deepEqual(ck.optimizer.tensors.codes, want.optimizer.tensors.codes);
      assert.deepEqual(ck.dataPosition, want.dataPosition);
      // Every folder named checkpoint-N is either complete or was never published.
      for (const c of listCheckpoints(dir)) await verifyCheckpoint(c.path);
      nextFirst = ck.step + 1;
    }
    assert.ok(kills >= 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
