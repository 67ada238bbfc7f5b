// trainer_state.json: transformers' TrainerState field set and formatting (sorted keys, indent 2),
// best_* from eval_loss, atomic rewrites (a reader never sees a partial file), and loading back.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { buildTrainerState, loadTrainerState, nextBestCheckpoint, stringifySorted, TrainerStateLog } from "../dist/train/trainer-state.js";

const config = {
  training: { max_steps: 0, num_train_epochs: 1.5, per_device_train_batch_size: 4, logging_steps: 10, eval_steps: 50, save_steps: 100 },
};

const history = [
  { step: 0, epoch: 0, eval_loss: 3.2, eval_perplexity: 24.5 },
  { step: 10, epoch: 0.1, loss: 3.1, learning_rate: 2e-4, grad_norm: 1.25, tokens_per_second: 1234.5, peak_memory_bytes: 123456789 },
  { step: 50, epoch: 0.5, eval_loss: 2.5, eval_perplexity: 12.18 },
  { step: 100, epoch: 1.0, eval_loss: 2.7, eval_perplexity: 14.9 },
];

// Every field transformers' TrainerState dataclass has (4.5x / 5.x).
const HF_FIELDS = [
  "best_global_step", "best_metric", "best_model_checkpoint", "epoch", "eval_steps", "global_step", "is_hyper_param_search",
  "is_local_process_zero", "is_world_process_zero", "log_history", "logging_steps", "max_steps", "num_input_tokens_seen",
  "num_train_epochs", "save_steps", "stateful_callbacks", "total_flos", "train_batch_size", "trial_name", "trial_params",
];

test("layout: transformers' fields, sorted keys, indent 2, best metric from metric_for_best_model", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-ts-"));
  try {
    mkdirSync(path.join(dir, "checkpoint-50"));
    const log = new TrainerStateLog(dir);
    // as transformers: no metric_for_best_model, no best_*
    const none = await log.write({ logHistory: history, globalStep: 100, config, maxSteps: 200 });
    assert.deepEqual([none.best_metric, none.best_global_step, none.best_model_checkpoint], [null, null, null]);
    // "loss" means eval_loss; lower is better for a loss, and for a perplexity
    const withMetric = { training: { ...config.training, metric_for_best_model: "loss", greater_is_better: null } };
    assert.equal((await log.write({ logHistory: history, globalStep: 100, config: { training: { ...withMetric.training, metric_for_best_model: "eval_perplexity" } } })).best_global_step, 50);
    // the evaluation before training (step 0, eval_loss 3.2) is no candidate, as in transformers
    assert.equal((await log.write({ logHistory: history, globalStep: 100, config: { training: { ...withMetric.training, greater_is_better: true } } })).best_global_step, 100);
    // no checkpoints saved: best_global_step stays null, best_metric is kept
    const noSave = await log.write({ logHistory: history, globalStep: 100, config: { training: { ...withMetric.training, save_strategy: "no" } } });
    assert.deepEqual([noSave.best_metric, noSave.best_global_step], [2.5, null]);
    const s = await log.write({ logHistory: history, globalStep: 100, config: withMetric, maxSteps: 200 });
    const text = readFileSync(path.join(dir, "trainer_state.json"), "utf8");
    assert.ok(text.endsWith("}\n"));
    assert.ok(text.startsWith('{\n  "best_global_step": 50,\n'));
    const parsed = JSON.parse(text);
    assert.deepEqual(Object.keys(parsed), HF_FIELDS);
    assert.deepEqual(Object.keys(parsed.log_history[1]), Object.keys(parsed.log_history[1]).sort());
    assert.equal(parsed.global_step, 100);
    assert.equal(parsed.max_steps, 200);
    assert.equal(parsed.num_train_epochs, 2); // ceil, as transformers stores it
    assert.equal(parsed.logging_steps, 10);
    assert.equal(parsed.eval_steps, 50);
    assert.equal(parsed.save_steps, 100);
    assert.equal(parsed.train_batch_size, 4);
    assert.equal(parsed.epoch, 1.0);
    assert.equal(parsed.best_metric, 2.5);
    assert.equal(parsed.best_global_step, 50);
    assert.equal(parsed.best_model_checkpoint, path.join(dir, "checkpoint-50"));
    assert.equal(parsed.stateful_callbacks.TrainerControl.args.should_training_stop, false);
    assert.deepEqual(parsed.log_history, history);
    assert.deepEqual(s.log_history, history);
    // No temp files left behind.
    assert.deepEqual(readdirSync(dir).sort(), ["checkpoint-50", "trainer_state.json"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("resume: load() gives the history back; NaN is written as null and read as NaN", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-ts-"));
  try {
    const log = new TrainerStateLog(dir);
    assert.equal(await log.load(), null);
    const h = [...history, { step: 110, epoch: 1.1, loss: Number.NaN, learning_rate: 1e-4, grad_norm: Number.POSITIVE_INFINITY }];
    await log.write({ logHistory: h, globalStep: 110, config });
    assert.match(readFileSync(log.path, "utf8"), /"loss": null/);
    const back = await loadTrainerState(dir);
    assert.equal(back.global_step, 110);
    assert.equal(back.log_history.length, 5);
    assert.ok(Number.isNaN(back.log_history[4].loss));
    assert.ok(Number.isNaN(back.log_history[4].grad_norm));
    assert.equal(back.best_model_checkpoint, null); // no checkpoint-50 folder here
    assert.deepEqual((await log.load()).log_history.slice(0, 4), history);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("atomic rewrites: a concurrent reader always parses a complete file", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-ts-"));
  try {
    const log = new TrainerStateLog(dir);
    await log.write({ logHistory: [], globalStep: 0, config });
    let writing = true;
    let reads = 0;
    const reader = (async () => {
      while (writing) {
        const s = JSON.parse(await readFile(log.path, "utf8"));
        assert.equal(s.log_history.length, s.global_step);
        reads++;
      }
    })();
    const big = [];
    for (let i = 1; i <= 60; i++) {
      big.push({ step: i, epoch: i / 100, loss: 1 / i, learning_rate: 1e-4, grad_norm: 0.5, tokens_per_second: 1000 + i });
      await log.write({ logHistory: big, globalStep: i, config });
    }
    writing = false;
    await reader;
    assert.ok(reads > 0);
    assert.equal((await log.load()).global_step, 60);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("bad files are reported with E_FORMAT / E_IO", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-ts-"));
  try {
    await assert.rejects(loadTrainerState(path.join(dir, "missing.json")), { code: "E_IO" });
    const f = path.join(dir, "trainer_state.json");
    await import("node:fs/promises").then((fs) => fs.writeFile(f, '{"global_step": 1}'));
    await assert.rejects(loadTrainerState(f), { code: "E_FORMAT" });
    await import("node:fs/promises").then((fs) => fs.writeFile(f, "{not json"));
    await assert.rejects(loadTrainerState(dir), { code: "E_FORMAT" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("best_model_checkpoint as transformers moves it: to the best step's checkpoint when that exists at a save", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-ts-"));
  try {
    const cfg = { training: { ...config.training, metric_for_best_model: "eval_loss" } };
    const h = [{ step: 0, eval_loss: 1 }, { step: 5, eval_loss: 3 }];
    // saving step 10: best is step 5, which has no checkpoint: nothing yet
    assert.equal(nextBestCheckpoint(cfg, h, dir, 10, null), null);
    // saving step 5 itself
    assert.equal(nextBestCheckpoint(cfg, h, dir, 5, null), path.join(dir, "checkpoint-5"));
    mkdirSync(path.join(dir, "checkpoint-5"));
    // a newer best (step 15) without a checkpoint keeps the older one; once saved it moves
    const h2 = [...h, { step: 15, eval_loss: 2 }];
    assert.equal(nextBestCheckpoint(cfg, h2, dir, 20, path.join(dir, "checkpoint-5")), path.join(dir, "checkpoint-5"));
    assert.equal(nextBestCheckpoint(cfg, h2, dir, 15, path.join(dir, "checkpoint-5")), path.join(dir, "checkpoint-15"));
    assert.equal(nextBestCheckpoint({ training: { ...config.training } }, h2, dir, 15, null), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("stringifySorted sorts nested keys and drops undefined", () => {
  assert.equal(stringifySorted({ b: 1, a: { d: undefined, c: [3, { z: 1, y: 2 }] } }), '{\n  "a": {\n    "c": [\n      3,\n      {\n        "y": 2,\n        "z": 1\n      }\n    ]\n  },\n  "b": 1\n}\n');
  const s = buildTrainerState({ logHistory: [{ step: 5, epoch: 1, eval_loss: 2 }], globalStep: 5, maxSteps: 5, metricForBest: "eval_loss" });
  assert.equal(s.stateful_callbacks.TrainerControl.args.should_training_stop, true);
  assert.equal(s.best_model_checkpoint, null);
});

test("total_flos counts parameters as transformers' num_parameters(exclude_embeddings=True) with PEFT", async () => {
  const { nonEmbeddingParams, totalFlos } = await import("../dist/train/flos.js");
  // the figures printed by transformers 5.18 + peft 0.21 for these configs (LoRA r = 8 on all 7
  // modules; PeftModel.num_parameters(exclude_embeddings=True) = base + LoRA)
  const shape = { hiddenSize: 64, intermediateSize: 176, numLayers: 2, numHeads: 4, headDim: 16, vocabSize: 1000, rmsNormEps: 1e-6, ropeTheta: 1e4 };
  const qwenTied = { ...shape, numKvHeads: 2, tieWordEmbeddings: true, qkvBias: true };
  const llamaUntied = { ...shape, numKvHeads: 1, tieWordEmbeddings: false, qkvBias: false };
  assert.equal(nonEmbeddingParams(qwenTied, 0), 92736);
  assert.equal(nonEmbeddingParams(qwenTied, 18688), 111424);
  assert.equal(nonEmbeddingParams(llamaUntied, 0), 152384);
  assert.equal(totalFlos(llamaUntied, 18176, 3 * 32), 6 * 96 * 170560);
});
