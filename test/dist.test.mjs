// Data parallel over Open MPI on the CPU (issue 8): 2 ranks with batch B reproduce 1 rank with
// batch 2B (losses, grad norms, eval loss, final adapter) within fp32 rounding, also when the
// epoch's last global batch is partial (a rank's micro-batch short or empty); the sampler's shards
// are disjoint and cover each epoch; only rank 0 writes; killing a rank ends the run with a message
// naming it in bounded time and the last checkpoint stays loadable; with 3 ranks, the watchdogs
// name the one rank that hangs before a collective (heartbeat files, cuda/core/dist_mpi.cpp).
// Skipped where mpirun is absent (.ci/run installs openmpi-bin).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
// heartbeat files of the collectives (cuda/core/dist_mpi.cpp) go here, not to /tmp
env.QN_DIST_HEARTBEAT_DIR = path.join(work, "heartbeat");
let modelDir;

/** opts.samples: max_train_samples (packed blocks of 32 tokens); opts.accum: gradient_accumulation_steps. */
function writeConfig(name, batch, maxSteps = 4, extra = "", { samples = 64, accum = 2 } = {}) {
  const file = path.join(work, `${name}.yaml`);
  writeFileSync(
    file,
    `model:\n  name_or_path: ${modelDir}\n  compute_dtype: float32\nlora:\n  dropout: 0\n` +
      `data:\n  dataset: demo\n  path: ${path.join(root, "assets", "demo")}\n  max_length: 32\n  packing: true\n  max_train_samples: ${samples}\n  max_eval_samples: 8\n` +
      `training:\n  max_steps: ${maxSteps}\n  per_device_train_batch_size: ${batch}\n  per_device_eval_batch_size: 2\n  gradient_accumulation_steps: ${accum}\n  learning_rate: 0.003\n  bf16: false\n` +
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

// ~30 MB of runs, checkpoints and caches per run of this file; keep it with QN_KEEP_TEST_DIRS=1
after(() => {
  if (!process.env.QN_KEEP_TEST_DIRS) rmSync(work, { recursive: true, force: true });
});

test("sampler shards are disjoint and cover the epoch; rank r batch i = part of the 1-rank batch i of size 2B", () => {
  for (const size of [64, 67]) {
    const one = new BatchSampler({ size, batchSize: 4, seed: 7 });
    const ranks = [0, 1].map((rank) => new BatchSampler({ size, batchSize: 2, seed: 7, rank, worldSize: 2 }));
    assert.deepEqual(ranks.map((s) => s.batchesPerEpoch()), [one.batchesPerEpoch(), one.batchesPerEpoch()]);
    for (let epoch = 0; epoch < 2; epoch++) {
      const orders = ranks.map((s) => s.epochOrder(epoch));
      assert.deepEqual([orders[0].length, orders[1].length], [Math.ceil(size / 2), Math.floor(size / 2)]);
      const seen = new Set([...orders[0], ...orders[1]]);
      assert.equal(seen.size, orders[0].length + orders[1].length, "disjoint");
      assert.equal(seen.size, size, "covers the epoch (no example dropped)");
      const full = one.epochOrder(epoch);
      for (let i = 0; i < size; i += 4) {
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
  await assertSameTraining("one", JSON.parse(r1.stdout.trim().split("\n").pop()), "two", JSON.parse(lines[0]), 4);
});

const logHistory = (name) => JSON.parse(readFileSync(path.join(work, `out-${name}`, "trainer_state.json"), "utf8")).log_history;

/**
 * The 1-rank run `n1` and the 2-rank run `n2` (summaries s1, s2) agree within fp32 rounding:
 * losses, grad norms, eval losses, final adapter, files written. The adapter is compared per
 * tensor (relative L2 difference; a run on other data differs by 1e-1 and more) and per element
 * (relative, floor 1e-3) up to `elementwise`: AdamW turns the rounding of a near-zero gradient
 * (summed in another order over ranks) into a difference of up to a fraction of lr in single
 * elements, so a longer run needs a looser per-element bound.
 */
async function assertSameTraining(n1, s1, n2, s2, steps, elementwise = 1e-3) {
  assert.equal(s2.global_step, steps);
  close(s1.train_loss, s2.train_loss, 1e-5, "train loss");
  close(s1.eval_loss, s2.eval_loss, 1e-5, "eval loss");
  close(s1.eval_loss_before, s2.eval_loss_before, 1e-6, "eval loss before");
  const h1 = logHistory(n1);
  const h2 = logHistory(n2);
  assert.equal(h1.length, h2.length);
  for (let i = 0; i < h1.length; i++) {
    assert.equal(h1[i].epoch, h2[i].epoch, `entry ${i} epoch`);
    for (const k of ["loss", "grad_norm", "eval_loss"]) if (h1[i][k] !== undefined) close(h1[i][k], h2[i][k], 1e-5, `step ${h1[i].step} ${k}`);
  }
  const a1 = await tensors(path.join(work, `out-${n1}`, "adapter_model.safetensors"));
  const a2 = await tensors(path.join(work, `out-${n2}`, "adapter_model.safetensors"));
  assert.deepEqual(Object.keys(a1).sort(), Object.keys(a2).sort());
  let worst = 0;
  for (const k of Object.keys(a1)) {
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < a1[k].length; i++) {
      worst = Math.max(worst, Math.abs(a1[k][i] - a2[k][i]) / Math.max(1e-3, Math.abs(a1[k][i])));
      diff += (a1[k][i] - a2[k][i]) ** 2;
      norm += a1[k][i] ** 2;
    }
    assert.ok(Math.sqrt(diff) <= 1e-4 * Math.sqrt(norm), `${k}: relative L2 difference ${Math.sqrt(diff / norm)}`);
  }
  assert.ok(worst < elementwise, `adapter relative difference ${worst}`);
  // one writer: the same files as the single-process run, no leftover temporary folders
  assert.deepEqual(readdirSync(path.join(work, `out-${n2}`)).sort(), readdirSync(path.join(work, `out-${n1}`)).sort());
}

test("uneven epoch (13 examples, 2 ranks x batch 2 vs 1 rank x batch 4): a short and an empty micro-batch, across an epoch end, and resume there", { skip, timeout: 300_000 }, async () => {
  // 13 packed examples, global batch 4, one micro-batch per step: 4 steps per epoch; the epoch's
  // last global batch holds 1 example, so rank 0 gets 1 and rank 1 NONE (its step 4 window is
  // empty: trainStep([]) with the all-reduce). 6 steps cross into epoch 1.
  const ranks = [0, 1].map((rank) => new BatchSampler({ size: 13, batchSize: 2, seed: 42, rank, worldSize: 2 }));
  assert.deepEqual(ranks.map((r) => r.batchesPerEpoch()), [4, 4]);
  assert.deepEqual(ranks.map((r) => Array.from({ length: 4 }, () => r.next().indices.length)), [[2, 2, 2, 1], [2, 2, 2, 0]]);
  const opts = { samples: 13, accum: 1 };
  const r1 = spawnSync(process.execPath, [cli, "train", "--config", writeConfig("odd-one", 4, 6, "", opts), "--json"], { encoding: "utf8", env, timeout: 120_000 });
  assert.equal(r1.status, 0, r1.stderr);
  const r2 = spawnSync(process.execPath, [cli, "train", "--config", writeConfig("odd-two", 2, 6, "", opts), "--json", "--nproc", "2"], { encoding: "utf8", env, timeout: 120_000 });
  assert.equal(r2.status, 0, r2.stdout + r2.stderr);
  const lines = r2.stdout.trim().split("\n").filter((l) => l.startsWith("{"));
  assert.equal(lines.length, 1, "one summary (rank 0 only)");
  await assertSameTraining("odd-one", JSON.parse(r1.stdout.trim().split("\n").pop()), "odd-two", JSON.parse(lines[0]), 6, 1e-2);
  const steps = logHistory("odd-two").filter((e) => e.loss !== undefined);
  assert.deepEqual(steps.map((e) => [e.step, e.epoch]), [1, 2, 3, 4, 5, 6].map((k) => [k, k / 4]), "13 examples: 4 steps per epoch");
  // checkpoint-4 is at the epoch's end, where rank 0 has handed out 7 examples and rank 1 6: every
  // rank resumes from rank 0's data position and the run ends on the same adapter
  const ck = await loadCheckpoint(path.join(work, "out-odd-two", "checkpoint-4"));
  assert.deepEqual([ck.dataPosition.epoch, ck.dataPosition.batches, ck.dataPosition.position], [0, 4, 7]);
  const r3 = spawnSync(process.execPath, [cli, "train", "--config", writeConfig("odd-resume", 2, 6, "", opts), "--json", "--nproc", "2", "--resume", path.join(work, "out-odd-two", "checkpoint-4")], { encoding: "utf8", env, timeout: 120_000 });
  assert.equal(r3.status, 0, r3.stdout + r3.stderr);
  const a = await tensors(path.join(work, "out-odd-two", "adapter_model.safetensors"));
  const b = await tensors(path.join(work, "out-odd-resume", "adapter_model.safetensors"));
  for (const k of Object.keys(a)) assert.deepEqual(b[k], a[k], k);
});

/** Starts a 2-rank run and resolves once rank 0 saved a checkpoint: { rank1 pid, exit promise, output() }. */
/** A live process (not a zombie left for an init that does not reap: mpirun's ranks after it ended). */
function running(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

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

for (const [signal, status, name] of [["SIGINT", 130, "interrupt"], ["SIGTERM", 143, "terminate"]]) {
  test(`${signal} to train --nproc: every rank stops after the step, rank 0 saves a checkpoint, exit ${status}`, { skip, timeout: 180_000 }, async () => {
    const { child, rank1, done, output } = await startUntilCheckpoint(name);
    child.kill(signal);
    assert.equal(await done, status, output());
    assert.match(output(), /interrupt: finishing the current step/);
    const last = findLatestCheckpoint(path.join(work, `out-${name}`));
    const saved = [...output().matchAll(/checkpoint saved: (\S+)/g)].map((m) => m[1]);
    assert.equal(last, saved[saved.length - 1]);
    assert.ok((await loadCheckpoint(last)).step >= 2);
    assert.ok(!running(rank1), "no rank outlives the launcher");
  });
}

test("--nproc far above this machine's cores without a hostfile is refused", () => {
  const r = spawnSync(process.execPath, [cli, "train", "--nproc", "1000000000"], { encoding: "utf8", env, timeout: 60_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--nproc 1000000000 is more than 4 ranks per core on this machine .*--hostfile.*\[E_ARG\]/);
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

// QN_DIST_TIMEOUT_S for the 3-rank runs: rank 0 alone prepares the data (the others wait in a
// barrier) and 3 ranks share 2 cores in CI, so 5 s could time out early on a busy machine
const HANG_TIMEOUT_S = 10;

/** Runs `mpirun -n 3` through `train --nproc 3` with rank `rank` stopping (alive) before collective #at (test-only hook in cuda/core/dist_mpi.cpp). */
async function runWithHungRank(name, rank, at, extraEnv) {
  const child = spawn(process.execPath, [cli, "train", "--config", writeConfig(name, 2, 400), "--nproc", "3"], {
    env: { ...env, QN_DIST_TIMEOUT_S: String(HANG_TIMEOUT_S), QN_DIST_TEST_HANG_RANK: String(rank), QN_DIST_TEST_HANG_AT: String(at), ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const t0 = Date.now();
  let out = "";
  let hungAt = 0;
  const onData = (d) => {
    out += d;
    if (!hungAt && /test hook: hanging/.test(out)) hungAt = Date.now();
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  // the watchdog must end the job; this only keeps a broken build from leaving ranks behind
  const guard = setTimeout(() => killTree(child.pid), 150_000);
  const code = await new Promise((resolve) => child.on("exit", (c) => resolve(c)));
  clearTimeout(guard);
  return { code, out, total: (Date.now() - t0) / 1000, afterHang: (Date.now() - hungAt) / 1000, hung: hungAt > 0 };
}

test("3 ranks: a rank that hangs before a collective is named by every other rank's watchdog, in bounded time (rank 2 mid-training, rank 1 at the first evaluation)", { skip, timeout: 300_000 }, async () => {
  const hb = path.join(work, "heartbeat-3");
  // #1 dist init, #2 data preparation barrier, #3 evaluation before training, then per step:
  // #4 target count, #5 gradient all-reduce, #6 loss all-reduce, #7 target count, #8 gradient ...
  const dirs = [];
  for (const [rank, at] of [[2, 8], [1, 3]]) {
    const r = await runWithHungRank(`hang3-r${rank}`, rank, at, { QN_DIST_HEARTBEAT_DIR: hb });
    assert.ok(r.hung, r.out);
    assert.match(r.out, new RegExp(`rank ${rank}: test hook: hanging before collective #${at}\\b`));
    assert.notEqual(r.code, 0, r.out);
    assert.ok(r.afterHang < HANG_TIMEOUT_S + 20, `the job ended ${r.afterHang} s after rank ${rank} hung (timeout ${HANG_TIMEOUT_S} s)`);
    assert.ok(r.total < 120, `the run took ${r.total} s`);
    const reports = r.out.split("\n").filter((l) => /did not complete within/.test(l));
    assert.ok(reports.length >= 1, r.out);
    for (const l of reports) {
      const m = /^qlora-native: rank (\d+) of 3: collective '[^']+' \(#(\d+)\) did not complete within (\d+) s: (.*); aborting the job \(QN_DIST_TIMEOUT_S sets the limit\)$/.exec(l);
      assert.ok(m, l);
      assert.notEqual(Number(m[1]), rank, "the hung rank is not in a collective");
      assert.equal(Number(m[2]), at, l);
      assert.equal(Number(m[3]), HANG_TIMEOUT_S, l);
      // A rank whose watchdog fires after another's abort has already begun may find the hung
      // rank's process gone (the launcher kills the job) and says so.
      assert.match(m[4], new RegExp(`^rank ${rank} died or hangs: it did not reach this collective \\(the last one it entered was #${at - 1} '[^']+'\\)(; its process \\(pid \\d+ on this node\\) (has exited|is stopped))?$`), l);
    }
    console.log(`# rank ${rank} hung before #${at}: job ended ${r.afterHang.toFixed(1)} s later (run ${r.total.toFixed(1)} s)\n# ${reports[0]}`);
    // the aborted job leaves its directory; the next job's local rank 0 sweeps it
    dirs.push(readdirSync(hb).filter((d) => d.startsWith("qn-heartbeat-")));
  }
  assert.equal(dirs[0].length, 1, String(dirs[0]));
  assert.equal(dirs[1].length, 1, String(dirs[1]));
  assert.notEqual(dirs[1][0], dirs[0][0]);
});

test("heartbeat files: a finished job removes them; an unusable directory falls back to the old message", { skip, timeout: 120_000 }, () => {
  const script = path.join(work, "collectives.mjs");
  writeFileSync(script, `import { native } from ${JSON.stringify(path.join(root, "dist", "native.js"))};\nnative.dist.init();\nfor (let k = 0; k < 4; k++) native.dist.allreduceSum(new Float64Array([1]), "step " + k);\nnative.dist.finalize();\n`);
  const mpirun = (extraEnv) =>
    spawnSync("mpirun", ["-n", "3", "--oversubscribe", "--bind-to", "none", process.execPath, script], { encoding: "utf8", env: { ...env, ...extraEnv }, timeout: 60_000, killSignal: "SIGKILL" });
  const hb = path.join(work, "heartbeat-clean");
  const ok = mpirun({ QN_DIST_HEARTBEAT_DIR: hb });
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.deepEqual(readdirSync(hb), []);
  const blocked = path.join(work, "not-a-directory");
  writeFileSync(blocked, "");
  const t0 = Date.now();
  const r = mpirun({ QN_DIST_HEARTBEAT_DIR: blocked, QN_DIST_TIMEOUT_S: "2", QN_DIST_TEST_HANG_RANK: "1", QN_DIST_TEST_HANG_AT: "3" });
  assert.notEqual(r.status, 0);
  assert.ok(Date.now() - t0 < 30_000);
  assert.match(r.stderr, /warning: heartbeat files off/);
  assert.match(r.stderr, /collective 'step 1' \(#3\) did not complete within 2 s: another rank died or hangs; aborting the job/, r.stderr);
});

/** SIGKILLs a process and its descendants (children first found through /proc). */
function killTree(pid) {
  let kids = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {}
  try {
    process.kill(pid, "SIGKILL");
  } catch {}
  for (const k of kids) killTree(k);
}

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
