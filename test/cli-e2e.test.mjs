// The CLI end to end on the demo model (random Qwen2 with the real Qwen2.5 tokenizer) and the
// bundled corpus: train, --json, resume (bit-identical on the CPU), eval with the adapter, merge,
// Ctrl-C, bad flags and bad configs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureDemoModel } from "../dist/demo/model.js";
import { SafetensorsFile } from "../dist/io/safetensors.js";
import { loadCheckpoint, findLatestCheckpoint } from "../dist/train/checkpoint.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "bin", "qlora-native.js");
const work = mkdtempSync(path.join(os.tmpdir(), "qn-e2e-"));
const env = { ...process.env, XDG_CACHE_HOME: path.join(work, "cache") };
let modelDir;
// (QN_KEEP_TEST_DIRS=1 keeps the ~60 MB work folder for a look)
after(() => {
  if (!process.env.QN_KEEP_TEST_DIRS) rmSync(work, { recursive: true, force: true });
});

const run = (...args) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env, timeout: 300_000 });

function writeConfig(name, outDir, extra = "") {
  const file = path.join(work, `${name}.yaml`);
  writeFileSync(
    file,
    `model:\n  name_or_path: ${modelDir}\n  compute_dtype: float32\n` +
      `data:\n  dataset: demo\n  path: ${path.join(root, "assets", "demo")}\n  max_length: 32\n  packing: true\n  max_train_samples: 64\n  max_eval_samples: 8\n` +
      `training:\n  max_steps: 6\n  per_device_train_batch_size: 2\n  per_device_eval_batch_size: 4\n  gradient_accumulation_steps: 2\n  learning_rate: 0.003\n  bf16: false\n` +
      `  logging_steps: 2\n  eval_steps: 3\n  save_steps: 3\n  optim: adamw_32bit\n  lr_scheduler_type: cosine\n  warmup_steps: 1\n` +
      `output:\n  dir: ${outDir}\n  save_total_limit: 3\n` +
      `advanced:\n  device: cpu\n  cache_dir: ${path.join(work, "tokens")}\n` +
      extra,
  );
  return file;
}

async function tensors(file) {
  const f = await SafetensorsFile.open(file);
  const out = {};
  for (const name of f.tensors.keys()) out[name] = Buffer.from(await f.read(name)).toString("hex");
  await f.close();
  return out;
}

before(async () => {
  modelDir = await ensureDemoModel(path.join(work, "demo-model"));
});

test("train --json writes the adapter, logs, plots and checkpoints; eval reproduces the final loss", async () => {
  const out = path.join(work, "run-a");
  const cfg = writeConfig("a", out);
  const r = run("train", "--config", cfg, "--json");
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.equal(s.global_step, 6);
  assert.equal(s.stopped_by, "completed");
  assert.ok(s.eval_loss < s.eval_loss_before, `eval loss fell: ${s.eval_loss_before} -> ${s.eval_loss}`);
  // checkpoints at save_steps and at the last step (as transformers saves)
  for (const f of ["adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "training_curves.html", "training_curves.svg", "config.resolved.yaml", "checkpoint-3", "checkpoint-6"]) {
    assert.ok(existsSync(path.join(out, f)), f);
  }
  const state = JSON.parse(readFileSync(path.join(out, "trainer_state.json"), "utf8"));
  assert.equal(state.global_step, 6);
  const logs = state.log_history.filter((e) => e.loss !== undefined);
  assert.deepEqual(logs.map((e) => e.step), [2, 4, 6]);
  for (const e of logs) for (const k of ["learning_rate", "grad_norm", "epoch", "tokens_per_second"]) assert.equal(typeof e[k], "number", k);
  const evals = state.log_history.filter((e) => e.eval_loss !== undefined);
  assert.deepEqual(evals.map((e) => e.step), [0, 3, 6]);
  assert.ok(Math.abs(evals[2].eval_perplexity - Math.exp(evals[2].eval_loss)) < 1e-6 * evals[2].eval_perplexity);
  // transformers' closing summary entry; num_train_epochs as the run spans them with max_steps
  const summary = state.log_history.at(-1);
  assert.equal(summary.step, 6);
  assert.ok(Math.abs(summary.train_loss - s.train_loss) < 1e-12 && summary.train_runtime > 0 && summary.train_steps_per_second > 0);
  assert.equal(state.num_train_epochs, Math.ceil(6 / (64 / 2 / 2)));
  // total_flos as transformers counts it (6 x input positions x non-embedding parameters)
  assert.ok(summary.total_flos > 0 && state.total_flos === summary.total_flos, `${summary.total_flos} ${state.total_flos}`);
  // every checkpoint holds the whole state, as transformers writes it
  const ck3 = JSON.parse(readFileSync(path.join(out, "checkpoint-3", "trainer_state.json"), "utf8"));
  assert.deepEqual([ck3.global_step, ck3.max_steps, ck3.logging_steps, ck3.eval_steps, ck3.save_steps], [3, 6, 2, 3, 3]);
  assert.ok(ck3.total_flos > 0 && ck3.total_flos === state.total_flos / 2, `${ck3.total_flos} vs ${state.total_flos}`);
  assert.equal(ck3.epoch, state.log_history.find((e) => e.step === 3 && e.eval_loss !== undefined).epoch, "the epoch at step 3, not the last log entry's");
  // the test split after the last step, in the summary and the log history
  const tests = state.log_history.filter((e) => e.test_loss !== undefined);
  assert.deepEqual(tests.map((e) => e.step), [6]);
  assert.equal(s.test_loss, tests[0].test_loss);
  assert.ok(Math.abs(s.test_perplexity - Math.exp(s.test_loss)) < 1e-6 * s.test_perplexity);
  const te = JSON.parse(run("eval", "--config", cfg, "--adapter", out, "--split", "test", "--json").stdout.trim());
  assert.ok(Math.abs(te.eval_loss - s.test_loss) < 1e-6, `eval --split test ${te.eval_loss} vs ${s.test_loss}`);

  const e = run("eval", "--config", cfg, "--adapter", out, "--json");
  assert.equal(e.status, 0, e.stderr);
  const ev = JSON.parse(e.stdout.trim());
  assert.deepEqual(Object.keys(ev).sort(), ["eval_loss", "eval_tokens", "perplexity"]);
  assert.ok(Math.abs(ev.eval_loss - s.eval_loss) < 1e-6, `${ev.eval_loss} vs ${s.eval_loss}`);
  const base = JSON.parse(run("eval", "--config", cfg, "--json").stdout.trim());
  assert.ok(Math.abs(base.eval_loss - s.eval_loss_before) < 1e-6, "without an adapter eval is the base model");

  // resume from checkpoint-3 in a fresh folder: the same trajectory, bit for bit on the CPU
  const outB = path.join(work, "run-b");
  cpSync(path.join(out, "checkpoint-3"), path.join(outB, "checkpoint-3"), { recursive: true });
  const rb = run("train", "--config", writeConfig("b", outB), "--resume", "latest", "--json");
  assert.equal(rb.status, 0, rb.stderr);
  assert.deepEqual(await tensors(path.join(outB, "adapter_model.safetensors")), await tensors(path.join(out, "adapter_model.safetensors")));
  const stateB = JSON.parse(readFileSync(path.join(outB, "trainer_state.json"), "utf8"));
  assert.equal(stateB.total_flos, state.total_flos, "total_flos carries over a resume");
  assert.deepEqual(stateB.log_history.filter((x) => x.loss !== undefined && x.step > 3).map((x) => [x.step, x.loss, x.grad_norm]), logs.filter((x) => x.step > 3).map((x) => [x.step, x.loss, x.grad_norm]));

  // resumed at its last step: nothing to train, no second evaluation there, the summary with the
  // whole run's train_loss (carried in the checkpoint); a checkpoint past max_steps is refused
  const outC = path.join(work, "run-c");
  cpSync(path.join(out, "checkpoint-6"), path.join(outC, "checkpoint-6"), { recursive: true });
  const rc = run("train", "--config", writeConfig("c", outC), "--resume", "latest", "--json");
  assert.equal(rc.status, 0, rc.stderr);
  const stateC = JSON.parse(readFileSync(path.join(outC, "trainer_state.json"), "utf8"));
  assert.deepEqual(stateC.log_history.filter((e) => e.eval_loss !== undefined).map((e) => e.step), [0, 3, 6]);
  assert.ok(Math.abs(stateC.log_history.at(-1).train_loss - summary.train_loss) < 1e-12, `${stateC.log_history.at(-1).train_loss} vs ${summary.train_loss}`);
  assert.ok(existsSync(path.join(outC, "adapter_model.safetensors")));
  const past = run("train", "--config", writeConfig("c", outC), "--resume", "latest", "--set", "training.max_steps=4");
  assert.equal(past.status, 2, past.stderr);
  assert.match(past.stderr, /it is at step 6, past this run's last step 4.*\[E_CONFIG\]/);

  // merge into a bf16 HF checkpoint
  const merged = path.join(work, "merged");
  const m = run("merge", "--adapter", out, "--out", merged, "--json");
  assert.equal(m.status, 0, m.stderr);
  assert.equal(JSON.parse(m.stdout.trim()).merged_tensors, 14);
  const mt = await SafetensorsFile.open(path.join(merged, "model.safetensors"));
  assert.equal(mt.tensors.get("model.layers.0.self_attn.q_proj.weight").dtype, "BF16");
  await mt.close();
  assert.ok(existsSync(path.join(merged, "tokenizer.json")));
  const mcfg = JSON.parse(readFileSync(path.join(merged, "config.json"), "utf8"));
  assert.equal(mcfg.torch_dtype, "bfloat16");
  if ("dtype" in mcfg) assert.equal(mcfg.dtype, "bfloat16");
  assert.match(readFileSync(path.join(merged, "config.json"), "utf8"), /"rope_theta": \d+\.\d/, "floats stay floats for Python");
  // merge never deletes: an existing folder, the adapter folder itself
  const again = run("merge", "--adapter", out, "--out", merged);
  assert.notEqual(again.status, 0);
  assert.match(again.stderr, /already exists and is not an empty folder/);
  assert.ok(existsSync(path.join(merged, "model.safetensors")));
  const self = run("merge", "--adapter", out, "--out", out);
  assert.notEqual(self.status, 0);
  assert.match(self.stderr, /--out must differ from --adapter/);
  assert.ok(existsSync(path.join(out, "adapter_model.safetensors")) && existsSync(path.join(out, "trainer_state.json")));

  // continue training from the adapter (not a checkpoint): its weights start the run, so the
  // step-0 evaluation is the first run's final one
  const wrong = run("train", "--config", writeConfig("c", path.join(work, "run-c")), "--resume", out);
  assert.notEqual(wrong.status, 0);
  assert.match(wrong.stderr, /adapter folder, not a training checkpoint.*train --adapter/);
  const outD = path.join(work, "run-d");
  const rd = run("train", "--config", writeConfig("d", outD), "--adapter", out, "--set", "training.max_steps=2", "--json");
  assert.equal(rd.status, 0, rd.stderr);
  const sd = JSON.parse(rd.stdout.trim().split("\n").pop());
  assert.ok(Math.abs(sd.eval_loss_before - s.eval_loss) < 1e-6, `${sd.eval_loss_before} vs ${s.eval_loss}`);
  assert.equal(sd.global_step, 2);

  // resuming with another LoRA layout names the setting
  const rr = run("train", "--config", writeConfig("b", outB), "--resume", path.join(outB, "checkpoint-3"), "--set", "lora.r=8");
  assert.notEqual(rr.status, 0);
  assert.match(rr.stderr, /checkpoint has LoRA r = 16 \(the config says 8\).*\[E_CONFIG\]/);
  // a damaged newest checkpoint stops --resume latest (no silent step back), naming the older one
  writeFileSync(path.join(outB, "checkpoint-6", "optimizer.safetensors"), "x");
  const rl = run("train", "--config", writeConfig("b", outB), "--resume", "latest", "--set", "training.max_steps=8");
  assert.notEqual(rl.status, 0);
  assert.match(rl.stderr, /checkpoint-6 is damaged \(optimizer\.safetensors has 1 bytes.*--resume .*checkpoint-3/);
});

test("Ctrl-C (SIGINT) and SIGTERM during training save a loadable checkpoint and exit 130 / 143", async () => {
  for (const [sig, want] of [["SIGINT", 130], ["SIGTERM", 143]]) {
    const out = path.join(work, `run-${sig}`);
    const cfg = writeConfig(sig, out, "");
    const child = spawn(process.execPath, [cli, "train", "--config", cfg, "--set", "training.max_steps=400", "--set", "training.save_steps=1000", "--set", "training.eval_strategy=no"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let sent = false;
    child.stdout.on("data", (d) => {
      stdout += d;
      if (!sent && /step 4\/400/.test(stdout)) {
        sent = true;
        child.kill(sig);
      }
    });
    const code = await new Promise((resolve) => child.on("exit", (c) => resolve(c)));
    assert.equal(code, want, stdout);
    const latest = findLatestCheckpoint(out);
    assert.ok(latest, "a checkpoint was written");
    const ck = await loadCheckpoint(latest);
    assert.ok(ck.step >= 4);
    assert.match(stdout, /resume with --resume latest/);
    assert.doesNotMatch(stdout, /eval  step 0/, "eval_strategy no: no evaluation before training either");
  }
});

test("file-system errors are E_IO with a plain reason; data with nothing to predict is refused", () => {
  const file = path.join(work, "a-file");
  writeFileSync(file, "x");
  const r = run("train", "--config", writeConfig("fs", path.join(file, "out")));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^qlora-native: cannot mkdir .*a-file\/out: a part of the path is a file, not a folder \[E_IO\]\n$/);
  const tiny = path.join(work, "one-token");
  mkdirSync(tiny, { recursive: true });
  writeFileSync(path.join(tiny, "train.txt"), "hi\nyo\nok\n");
  const d = run("train", "--config", writeConfig("tiny", path.join(work, "run-tiny")), "--set", `data.path=${tiny}`, "--set", "data.packing=false", "--set", "data.eval_split=null", "--set", "data.test_split=null", "--set", "training.eval_strategy=no");
  assert.equal(d.status, 2, d.stderr);
  assert.match(d.stderr, /no tokens to predict.*\[E_DATA\]/);
  // a test split that would fail only after training is refused before the model loads
  const t1 = run("train", "--config", writeConfig("tiny-test", path.join(work, "run-tiny-test")), "--set", `data.test_split=${path.join(tiny, "train.txt")}`, "--set", "data.packing=false");
  assert.equal(t1.status, 2, t1.stderr);
  assert.match(t1.stderr, /the test split \(data.test_split .*\) has no tokens to predict/);
  assert.doesNotMatch(t1.stdout, /loading /);
});

test("Ctrl-C during the test split evaluation: the run stops (abort) and --resume latest finishes it", async () => {
  const { train, loadConfig } = await import("../dist/index.js");
  // with save_strategy no the stop writes the checkpoint the loop did not
  for (const save of ["training.save_steps=2", "training.save_strategy=no"]) {
    const out = path.join(work, `run-test-abort-${save.includes("no") ? "nosave" : "save"}`);
    const cfg = writeConfig(`test-abort-${save.includes("no") ? "nosave" : "save"}`, out, "");
    const set = ["training.max_steps=2", save, "training.eval_on_start=false"];
    const ac = new AbortController();
    const r = await train({ config: await loadConfig(cfg, { set }), signal: ac.signal, onInfo: (l) => l.startsWith("evaluating the test split") && ac.abort() });
    assert.equal(r.stoppedBy, "abort", save);
    assert.equal(r.testEval, null);
    assert.ok(!existsSync(path.join(out, "adapter_model.safetensors")), "the run is not finished");
    assert.ok(existsSync(path.join(out, "checkpoint-2")), `${save}: the last step is checkpointed`);
    const again = await train({ config: await loadConfig(cfg, { set: [...set, "training.resume_from_checkpoint=true"] }) });
    assert.equal(again.stoppedBy, "completed");
    assert.equal(again.globalStep, 2);
    assert.ok(again.testEval && Number.isFinite(again.testEval.eval_loss));
    assert.ok(Number.isFinite(again.trainLoss), "train_loss carried in the checkpoint");
    const state = JSON.parse(readFileSync(path.join(out, "trainer_state.json"), "utf8"));
    assert.deepEqual(state.log_history.filter((e) => e.eval_loss !== undefined).map((e) => e.step), [2], "the final eval is not repeated");
    assert.ok(existsSync(path.join(out, "adapter_model.safetensors")));
  }
});

test("training.eval_on_start false: no step-0 evaluation; a last step between logging_steps is only in the summary", () => {
  const out = path.join(work, "run-no-start-eval");
  const r = run("train", "--config", writeConfig("no-start-eval", out), "--set", "training.max_steps=3", "--set", "training.eval_on_start=false", "--set", "training.save_strategy=no", "--set", "data.test_split=null", "--json");
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.equal(s.eval_loss_before, null);
  const state = JSON.parse(readFileSync(path.join(out, "trainer_state.json"), "utf8"));
  assert.deepEqual(state.log_history.filter((e) => e.eval_loss !== undefined).map((e) => e.step), [3]);
  assert.deepEqual(state.log_history.filter((e) => e.loss !== undefined).map((e) => e.step), [2]);
  assert.equal(state.log_history.at(-1).step, 3);
  assert.equal(typeof state.log_history.at(-1).train_loss, "number");
});

test("eval reads and tokenizes only the split it evaluates (no train split needed)", () => {
  const dir = path.join(work, "eval-only");
  mkdirSync(dir, { recursive: true });
  for (const f of ["validation.txt", "test.txt"]) cpSync(path.join(root, "assets", "demo", f), path.join(dir, f));
  const cfg = writeConfig("eval-only", path.join(work, "run-eval-only"));
  const r = run("eval", "--config", cfg, "--set", `data.path=${dir}`, "--split", "test", "--json");
  assert.equal(r.status, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout.trim()).eval_tokens > 0);
  // advanced.log_level warn: the result line only (info lines: loading, tokenizing, ...)
  const info = run("eval", "--config", cfg, "--set", `data.path=${dir}`, "--split", "test");
  const quiet = run("eval", "--config", cfg, "--set", `data.path=${dir}`, "--split", "test", "--set", "advanced.log_level=warn");
  assert.equal(quiet.status, 0, quiet.stderr);
  assert.ok(info.stdout.trim().split("\n").length > 1, info.stdout);
  assert.deepEqual(quiet.stdout.trim().split("\n"), [info.stdout.trim().split("\n").at(-1)]);
});

test("bad flags and bad configs give one-line errors and a non-zero exit", () => {
  const r = run("train", "--bogus");
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /^qlora-native: Unknown argument: bogus/);
  const bad = path.join(work, "bad.yaml");
  writeFileSync(bad, "training:\n  learnin_rate: 1\n");
  const c = run("train", "--config", bad);
  assert.notEqual(c.status, 0);
  assert.match(c.stderr, /training\.learnin_rate/);
  assert.match(c.stderr, /learning_rate/);
  assert.doesNotMatch(c.stderr, /\n\s+at /, "no stack trace");
  const e = run("eval", "--config", path.join(work, "missing.yaml"));
  assert.notEqual(e.status, 0);
  assert.equal(e.stderr.trim().split("\n").length, 1, e.stderr);
});
