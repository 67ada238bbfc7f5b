// The training loop's semantics with a stand-in model: window-wide loss normalization, the lr per
// update, logging cadence, and non-finite steps (skipped, counted, stop after the patience with a
// checkpoint of the last good state).
import { test } from "node:test";
import assert from "node:assert/strict";
import { validateConfig } from "../dist/config/load.js";
import { ExampleSet } from "../dist/data/batches.js";
import { TrainLoader } from "../dist/data/loader.js";
import { runTrainingLoop } from "../dist/train/loop.js";
import { lrAt } from "../dist/train/schedule.js";
import { QloraError } from "../dist/errors.js";

function setup(training, model) {
  const config = validateConfig({ model: { name_or_path: "/nowhere" }, training: { logging_steps: 2, eval_strategy: "no", save_strategy: "no", ...training }, advanced: { nonfinite_patience: 3 } });
  // 12 rows of varied lengths -> padded examples, so targets differ per batch
  const ids = [];
  const offsets = [0];
  for (let r = 0; r < 12; r++) {
    for (let t = 0; t < 3 + (r % 5); t++) ids.push(10 + r + t);
    offsets.push(ids.length);
  }
  const examples = ExampleSet.build({ ids: Int32Array.from(ids), offsets: Uint32Array.from(offsets) }, { maxLength: 8, packing: false, eosId: 1 });
  const loader = new TrainLoader(examples, { batchSize: 2, seed: 7, padId: 1 });
  const saved = [];
  const logs = [];
  const ctx = {
    config,
    model,
    loader,
    evalSet: null,
    padId: 1,
    device: "cpu",
    dataParallel: 1,
    state: { globalStep: 0, nonFiniteRun: 0, skippedSteps: 0, logHistory: [], sampler: loader.state(), logWindow: { lossSum: 0, steps: 0, tokens: 0 }, inputNumel: 0 },
    events: { onLog: (e) => logs.push(e), onWarning: () => {} },
    memoryBytes: () => 0,
    saveCheckpoint: async (reason) => {
      saved.push(reason);
      return `/tmp/checkpoint-${reason}`;
    },
    writeLogs: async () => {},
  };
  return { ctx, saved, logs, config };
}

const targetsOf = (b) => {
  let n = 0;
  for (let r = 0; r < b.batchSize; r++) for (let t = 1; t < b.seqLen; t++) if (b.labels[r * b.seqLen + t] !== -100) n++;
  return n;
};

/** A model whose steps report a loss of 1 per target (grad norm `gradNorm`); evalLoss as given. */
const unitLossModel = ({ gradNorm = 0.5, evalLoss = async () => ({ lossSum: 0, tokens: 1 }) } = {}) => ({
  paramCount: 10,
  async trainStep(micro) {
    const tokens = micro.reduce((s, b) => s + targetsOf(b), 0);
    return { lossSum: tokens, tokens, gradNorm, nonFinite: false, skipped: false };
  },
  evalLoss,
});

test("one native call per step with gradScale = 1 / targets of the whole window, lr from the schedule", async () => {
  const calls = [];
  const model = {
    paramCount: 10,
    async trainStep(micro, gradScale, opt) {
      calls.push({ micro, gradScale, opt });
      const tokens = micro.reduce((s, b) => s + targetsOf(b), 0);
      return { lossSum: 2 * tokens, tokens, gradNorm: 0.5, nonFinite: false, skipped: false };
    },
    async evalLoss() {
      return { lossSum: 0, tokens: 1 };
    },
  };
  const { ctx, logs } = setup({ max_steps: 5, gradient_accumulation_steps: 3, lr_scheduler_type: "linear", warmup_steps: 2, learning_rate: 0.01 }, model);
  const res = await runTrainingLoop(ctx);
  assert.equal(res.globalStep, 5);
  assert.equal(calls.length, 5);
  for (const [k, c] of calls.entries()) {
    assert.equal(c.micro.length, 3);
    const window = c.micro.reduce((s, b) => s + targetsOf(b), 0);
    assert.equal(c.gradScale, 1 / window);
    assert.equal(c.opt.lr, lrAt(k, { type: "linear", peak: 0.01, totalSteps: 5, warmupSteps: 2 }));
    assert.equal(c.opt.maxGradNorm, 1);
  }
  // as transformers: entries every logging_steps only (step 5 is in the summary's train_loss)
  assert.deepEqual(logs.map((e) => e.step), [2, 4]);
  for (const e of logs) assert.equal(e.loss, 2);
});

test("logging_steps / save_steps below 1 are fractions of the total steps (ceil), as transformers; input positions counted", async () => {
  const model = unitLossModel();
  const { ctx, logs, saved } = setup({ max_steps: 10, gradient_accumulation_steps: 1, logging_steps: 0.25, save_strategy: "steps", save_steps: 0.5 }, model);
  await runTrainingLoop(ctx);
  assert.deepEqual(logs.map((e) => e.step), [3, 6, 9]);
  assert.deepEqual(saved, ["interval", "final"]); // save_steps 0.5 x 10 = 5: at step 5, and the last step
  assert.ok(ctx.state.inputNumel > 0 && ctx.state.inputNumel % 2 === 0);
});

test("an abort during an evaluation keeps the steps done: the loop saves a checkpoint (mid-run and at the end)", async () => {
  for (const [evalSteps, abortAtEval, step] of [[2, 1, 2], [10, 1, 5]]) {
    const controller = new AbortController();
    let evals = 0;
    const model = unitLossModel({
      async evalLoss() {
        if (++evals === abortAtEval) controller.abort();
        return { lossSum: 1, tokens: 1 };
      },
    });
    const { ctx, saved } = setup({ max_steps: 5, gradient_accumulation_steps: 1, eval_strategy: "steps", eval_steps: evalSteps, save_strategy: "steps", save_steps: 100 }, model);
    ctx.evalSet = ctx.loader.examples;
    ctx.signal = controller.signal;
    const r = await runTrainingLoop(ctx);
    assert.equal(r.stoppedBy, "abort");
    assert.equal(r.globalStep, step);
    assert.deepEqual(saved, ["interrupt"]);
  }
});

test("lossTotalFromHistory: a checkpoint without lossTotal gets it back from the logged window means", async () => {
  const { lossTotalFromHistory } = await import("../dist/train/loop.js");
  // steps 1-2 mean 3, steps 3-4 mean 2 (logging_steps 2), step 5 in the open window (loss 1)
  const h = [{ step: 0, eval_loss: 9 }, { step: 2, loss: 3 }, { step: 4, loss: 2 }, { step: 4, eval_loss: 5 }];
  assert.deepEqual(lossTotalFromHistory(h, { lossSum: 1, steps: 1, tokens: 0 }), { sum: 11, steps: 5 });
});

test("non-finite steps are skipped and counted; the patience stops training with a checkpoint", async () => {
  let n = 0;
  const model = {
    paramCount: 10,
    async trainStep(micro) {
      n++;
      const tokens = micro.reduce((s, b) => s + targetsOf(b), 0);
      const bad = n >= 3; // two good steps, then NaN forever
      return { lossSum: bad ? NaN : tokens, tokens, gradNorm: bad ? NaN : 1, nonFinite: bad, skipped: bad };
    },
    async evalLoss() {
      return { lossSum: 0, tokens: 1 };
    },
  };
  const { ctx, saved } = setup({ max_steps: 50 }, model);
  await assert.rejects(runTrainingLoop(ctx), (e) => e instanceof QloraError && e.code === "E_NONFINITE" && /3 non-finite steps in a row/.test(e.message) && /checkpoint-nonfinite/.test(e.message));
  assert.equal(n, 5);
  assert.deepEqual(saved, ["nonfinite"]);
  assert.equal(ctx.state.skippedSteps, 3);
});

test("an aborted run saves a checkpoint and reports it", async () => {
  const ac = new AbortController();
  const model = {
    paramCount: 1,
    async trainStep(micro) {
      ac.abort();
      const tokens = micro.reduce((s, b) => s + targetsOf(b), 0);
      return { lossSum: tokens, tokens, gradNorm: 1, nonFinite: false, skipped: false };
    },
    async evalLoss() {
      return { lossSum: 0, tokens: 1 };
    },
  };
  const { ctx, saved } = setup({ max_steps: 50 }, model);
  ctx.signal = ac.signal;
  const res = await runTrainingLoop(ctx);
  assert.equal(res.stoppedBy, "abort");
  assert.equal(res.globalStep, 1);
  assert.deepEqual(saved, ["interrupt"]);
});

test("interval checkpoints (and the last step's) are written even with no onSave listener", async () => {
  const model = unitLossModel({ gradNorm: 1 });
  const { ctx, saved } = setup({ max_steps: 5, save_strategy: "steps", save_steps: 2 }, model);
  await runTrainingLoop(ctx);
  // steps 2 and 4, then the last step (5) as transformers saves it
  assert.deepEqual(saved, ["interval", "interval", "final"]);
  // a run that resumes at its end saves nothing new
  const again = setup({ max_steps: 5, save_strategy: "steps", save_steps: 2 }, model);
  again.ctx.state.globalStep = 5;
  await runTrainingLoop(again.ctx);
  assert.deepEqual(again.saved, []);
});

test("data parallel: an empty micro-batch is left out; a rank with none still steps (trainStep([], allreduce))", async () => {
  // 5 examples on 2 ranks with batch 2: rank 0 holds 3, rank 1 holds 2, so each epoch's second
  // micro-batch is [1 row] on rank 0 and EMPTY on rank 1. This runs rank 1; rank 0's window is
  // replayed inside the stand-in all-reduce.
  const rows = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14, 15, 16], [17, 18]];
  const examples = ExampleSet.build({ ids: Int32Array.from(rows.flat()), offsets: Uint32Array.from([0, 3, 5, 9, 12, 14]) }, { maxLength: 6, packing: false, eosId: 1 });
  const calls = [];
  const model = {
    paramCount: 1,
    async trainStep(micro, gradScale, opt, step) {
      calls.push({ micro, gradScale, step });
      const tokens = micro.reduce((s, b) => s + targetsOf(b), 0);
      return { lossSum: tokens, tokens, gradNorm: 1, nonFinite: false, skipped: false };
    },
    async evalLoss() {
      return { lossSum: 0, tokens: 1 };
    },
  };
  for (const K of [1, 2]) {
    calls.length = 0;
    const { ctx } = setup({ max_steps: 4, gradient_accumulation_steps: K, per_device_train_batch_size: 2 }, model);
    ctx.loader = new TrainLoader(examples, { batchSize: 2, seed: 3, padId: 1, rank: 1, worldSize: 2 });
    ctx.state.sampler = ctx.loader.state();
    ctx.dataParallel = 2;
    const peer = new TrainLoader(examples, { batchSize: 2, seed: 3, padId: 1, rank: 0, worldSize: 2 });
    const peerTargets = [];
    ctx.world = {
      rank: 1,
      worldSize: 2,
      localRank: 1,
      isMain: false,
      barrier() {},
      allreduce(values, what) {
        assert.equal(what, "target count");
        let t = 0;
        for (let i = 0; i < K; i++) t += targetsOf(peer.next());
        peerTargets.push(t);
        return [values[0] + t, values[1], values[2]];
      },
    };
    const res = await runTrainingLoop(ctx);
    assert.equal(res.globalStep, 4);
    assert.equal(calls.length, 4, "every step calls the model, empty window or not");
    for (const [k, c] of calls.entries()) {
      assert.deepEqual(c.step, { allreduce: true });
      assert.ok(c.micro.every((b) => b.batchSize > 0), "no empty batch reaches the model");
      const mine = c.micro.reduce((s, b) => s + targetsOf(b), 0);
      assert.equal(c.gradScale, 1 / (mine + peerTargets[k]), `step ${k}: 1 / targets of both ranks`);
    }
    // K = 1: steps 2 and 4 are the epoch's second micro-batch, empty on rank 1
    if (K === 1) assert.deepEqual(calls.map((c) => c.micro.length), [1, 0, 1, 0]);
    else assert.deepEqual(calls.map((c) => c.micro.length), [1, 1, 1, 1]);
    assert.deepEqual(ctx.state.sampler.epoch, K === 1 ? 1 : 3);
  }
});

test("an epoch's last window is short when K does not divide it, as transformers steps it; epoch values follow the batches", async () => {
  // 12 rows, batch 2 -> 6 batches per epoch; K = 4 -> windows of 4, 2 per epoch (ceil(6 / 4) = 2 updates)
  const calls = [];
  const model = {
    paramCount: 1,
    async trainStep(micro) {
      calls.push(micro.map((b) => b.epoch * 100 + b.batchIndex));
      const tokens = micro.reduce((s, b) => s + targetsOf(b), 0);
      return { lossSum: tokens, tokens, gradNorm: 1, nonFinite: false, skipped: false };
    },
  };
  const { ctx, logs } = setup({ num_train_epochs: 2, max_steps: -1, gradient_accumulation_steps: 4, logging_steps: 1 }, model);
  const r = await runTrainingLoop(ctx);
  assert.equal(r.totalSteps, 4);
  assert.deepEqual(calls, [[0, 1, 2, 3], [4, 5], [100, 101, 102, 103], [104, 105]]);
  // transformers' epoch, unrounded: whole epochs + micro-batches of this one / batches per epoch
  assert.deepEqual(logs.map((e) => e.epoch), [4 / 6, 1, 1 + 4 / 6, 2]);
  assert.equal(r.epoch, 2);
});
