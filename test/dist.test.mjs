// Data parallel over Open MPI on the CPU (issue 8): 2 ranks with batch B reproduce 1 rank with
// batch 2B (losses, grad norms, eval loss, final adapter) within fp32 rounding; the sampler's shards
// are disjoint and cover each epoch; only rank 0 writes; killing a rank ends the run with a message
// naming it in bounded time and the last checkpoint stays loadable. Skipped where mpirun is absent
// (.ci/run installs openmpi-bin).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureDemoModel } from "../dist/demo/model.js";
import { BatchSampler } from "../dist/data/sampler.js";
import { SafetensorsFile } from "../dist/io/safetensors.js";
import { findLatestCheckpoint, loadCheckpoint } from "../dist/train/checkpoint.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "bin", "qlora-native.js");
import { native } from "../dist/native.js";

const haveMpi = spawnSync("mpirun", ["--version"], { encoding: "utf8" }).status === 0;
const skip = !haveMpi ? "mpirun (openmpi-bin) is not installed" : !native.dist ? "the addon was built before data parallel support (npm run build:native)" : false;
const work = mkdtempSync(path.join(os.tmpdir(), "qn-dist-"));
const env = { ...process.env, XDG_CACHE_HOME: path.join(work, "cache"), OMPI_ALLOW_RUN_AS_ROOT: "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1", OMPI_MCA_btl_vader_single_copy_mechanism: "none" };
let modelDir;

function writeConfig(name, batch, maxSteps = 4, extra = "") {
  const file = path.join(work, `${name}.yaml`);
  writeFileSync(
    file,
    `model:\n  name_or_path: ${modelDir}\n  compute_dtype: float32\nlora:\n  dropout: 0\n` +
      `data:\n  dataset: demo\n  path: ${path.join(root, "assets", "demo")}\n  max_length: 32\n  packing: true\n  max_train_samples: 64\n  max_eval_samples: 8\n` +
      `training:\n  max_steps: ${maxSteps}\n  per_device_train_batch_size: ${batch}\n  per_device_eval_batch_size: 2\n  gradient_accumulation_steps: 2\n  learning_rate: 0.003\n  bf16: false\n` +
      `  logging_steps: 1\n  eval_steps: 2\n  save_steps: 2\n  optim: adamw_32bit\n  lr_scheduler_type: cosine\n  warmup_steps: 1\n` +
      `output:\n  dir: ${path.join(work, `out-${name}`)}\n  save_total_limit: 3\n` +
      `advanced:\n  device: cpu\n  cache_dir: ${path.join(work, "tokens")}\n` +
      extra,
  );
  return file;
}

async function tensors(file) {
  const f = await SafetensorsFile.open(file);
  const out = {};
  for (const name of f.tensors.keys()) {
    const bytes = new Uint8Array(await f.read(name));
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    out[name] = new Float32Array(copy.buffer);
  }
  await f.close();
  return out;
}

const close = (a, b, rel, what) => assert.ok(Math.abs(a - b) <= rel * Math.max(1, Math.abs(a), Math.abs(b)), `${what}: ${a} vs ${b}`);

before(async () => {
  modelDir = await ensureDemoModel(path.join(work, "demo-model"));
});

test("sampler shards are disjoint, equal and cover the epoch; rank r batch i = part of the 1-rank batch i of size 2B", () => {
  for (const size of [64, 67]) {
    const one = new BatchSampler({ size, batchSize: 4, seed: 7 });
    const ranks = [0, 1].map((rank) => new BatchSampler({ size, batchSize: 2, seed: 7, rank, worldSize: 2 }));
    for (let epoch = 0; epoch < 2; epoch++) {
      const orders = ranks.map((s) => s.epochOrder(epoch));
      assert.equal(orders[0].length, orders[1].length);
      const seen = new Set([...orders[0], ...orders[1]]);
      assert.equal(seen.size, orders[0].length * 2, "disjoint");
      assert.equal(seen.size, size - (size % 2), "covers the epoch (even shards)");
      const full = one.epochOrder(epoch);
      for (let i = 0; i + 4 <= seen.size; i += 4) {
        const a = new Set(full.slice(i, i + 4));
        const b = new Set([...orders[0].slice(i / 2, i / 2 + 2), ...orders[1].slice(i / 2, i / 2 + 2)]);
        assert.deepEqual([...b].sort(), [...a].sort());
      }
    }
  }
});

test("2 ranks x batch 2 reproduce 1 rank x batch 4: losses, grad norms, eval loss, adapter; only rank 0 writes", { skip, timeout: 240_000 }, async () => {
  const r1 = spawnSync(process.execPath, [cli, "train", "--config", writeConfig("one", 4), "--json"], { encoding: "utf8", env, timeout: 120_000 });
  assert.equal(r1.status, 0, r1.stderr);
  const r2 = spawnSync(process.execPath, [cli, "train", "--config", writeConfig("two", 2), "--json", "--nproc", "2"], { encoding: "utf8", env, timeout: 120_000 });
  assert.equal(r2.status, 0, r2.stdout + r2.stderr);
  const lines = r2.stdout.trim().split("\n").filter((l) => l.startsWith("{"));
  assert.equal(lines.length, 1, "one summary (rank 0 only)");
  const s1 = JSON.parse(r1.stdout.trim().split("\n").pop());
  const s2 = JSON.parse(lines[0]);
  assert.equal(s2.global_step, 4);
  close(s1.train_loss, s2.train_loss, 1e-5, "train loss");
  close(s1.eval_loss, s2.eval_loss, 1e-5, "eval loss");
  close(s1.eval_loss_before, s2.eval_loss_before, 1e-6, "eval loss before");
  const st = (n) => JSON.parse(readFileSync(path.join(work, `out-${n}`, "trainer_state.json"), "utf8")).log_history;
  const h1 = st("one");
  const h2 = st("two");
  assert.equal(h1.length, h2.length);
  for (let i = 0; i < h1.length; i++) {
    for (const k of ["loss", "grad_norm", "eval_loss"]) if (h1[i][k] !== undefined) close(h1[i][k], h2[i][k], 1e-5, `step ${h1[i].step} ${k}`);
  }
  const a1 = await tensors(path.join(work, "out-one", "adapter_model.safetensors"));
  const a2 = await tensors(path.join(work, "out-two", "adapter_model.safetensors"));
  assert.deepEqual(Object.keys(a1).sort(), Object.keys(a2).sort());
  let worst = 0;
  for (const k of Object.keys(a1)) for (let i = 0; i < a1[k].length; i++) worst = Math.max(worst, Math.abs(a1[k][i] - a2[k][i]) / Math.max(1e-3, Math.abs(a1[k][i])));
  assert.ok(worst < 1e-3, `adapter relative difference ${worst}`);
  // one writer: the same files as the single-process run, no leftover temporary folders
  assert.deepEqual(readdirSync(path.join(work, "out-two")).sort(), readdirSync(path.join(work, "out-one")).sort());
});

/** Starts a 2-rank run and resolves once rank 0 saved a checkpoint: { rank1 pid, exit promise, output() }. */
async function startUntilCheckpoint(name, extraEnv = {}) {
  const cfg = writeConfig(name, 2, 400);
  const child = spawn(process.execPath, [cli, "train", "--config", cfg, "--nproc", "2"], { env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const done = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  const t0 = Date.now();
  while (!/checkpoint saved/.test(out)) {
    assert.ok(Date.now() - t0 < 120_000, "no checkpoint within 120 s:\n" + out);
    await new Promise((r) => setTimeout(r, 200));
  }
  // rank 1 is found through mpirun's children and their environment
  const rank1 = findRank(child.pid, "1");
  assert.ok(rank1, "rank 1 process found");
  return { child, rank1, done, output: () => out };
}

test("2 ranks resume from rank 0's checkpoint: the same adapter as the uninterrupted run", { skip, timeout: 240_000 }, async () => {
  const cfg = writeConfig("resume", 2);
  const r = spawnSync(process.execPath, [cli, "train", "--config", cfg, "--json", "--nproc", "2", "--resume", path.join(work, "out-two", "checkpoint-2")], { encoding: "utf8", env, timeout: 120_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const a = await tensors(path.join(work, "out-two", "adapter_model.safetensors"));
  const b = await tensors(path.join(work, "out-resume", "adapter_model.safetensors"));
  for (const k of Object.keys(a)) assert.deepEqual(b[k], a[k], k);
});

test("Ctrl-C on train --nproc: every rank stops after the step, rank 0 saves a checkpoint, exit 130", { skip, timeout: 180_000 }, async () => {
  const { child, done, output } = await startUntilCheckpoint("interrupt");
  child.kill("SIGINT");
  assert.equal(await done, 130, output());
  assert.match(output(), /interrupt: finishing the current step/);
  const last = findLatestCheckpoint(path.join(work, "out-interrupt"));
  const saved = [...output().matchAll(/checkpoint saved: (\S+)/g)].map((m) => m[1]);
  assert.equal(last, saved[saved.length - 1]);
  assert.ok((await loadCheckpoint(last)).step >= 2);
});

test("killing one rank ends the run in bounded time with a message naming it; the last checkpoint loads", { skip, timeout: 180_000 }, async () => {
  const { rank1, done, output } = await startUntilCheckpoint("kill");
  const killedAt = Date.now();
  process.kill(rank1, "SIGKILL");
  const code = await done;
  const took = (Date.now() - killedAt) / 1000;
  assert.notEqual(code, 0);
  assert.ok(took < 60, `the job ended ${took}s after the kill`);
  const out = output();
  assert.match(out, /rank 1/, out);
  const last = findLatestCheckpoint(path.join(work, "out-kill"));
  assert.ok(last, "a checkpoint survived");
  const ck = await loadCheckpoint(last);
  assert.ok(ck.step >= 2);
});

test("a hung rank (SIGSTOP) ends the run after QN_DIST_TIMEOUT_S with a message naming it", { skip, timeout: 180_000 }, async () => {
  const { rank1, done, output } = await startUntilCheckpoint("hang", { QN_DIST_TIMEOUT_S: "5" });
  const stoppedAt = Date.now();
  process.kill(rank1, "SIGSTOP");
  try {
    const code = await done;
    const took = (Date.now() - stoppedAt) / 1000;
    assert.notEqual(code, 0);
    assert.ok(took < 60, `the job ended ${took}s after rank 1 stopped`);
    assert.match(output(), /did not complete within 5 s: rank 1 died or hangs/, output());
  } finally {
    try {
      process.kill(rank1, "SIGKILL");
    } catch {}
  }
});

function findRank(pid, rank) {
  const children = (p) => {
    try {
      return readFileSync(`/proc/${p}/task/${p}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop();
    try {
      const e = readFileSync(`/proc/${p}/environ`, "utf8").split("\0");
      if (e.includes(`OMPI_COMM_WORLD_RANK=${rank}`)) return p;
    } catch {}
    stack.push(...children(p));
  }
  return null;
}
