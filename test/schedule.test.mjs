// LR schedules against transformers' get_scheduler (test/fixtures/trainer/schedules.json: every
// update of a 25-step run for the four schedule types, warmup from a ratio and from steps) and the
// 10-step trainer trajectory's logged learning rates.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { lrAt, lrFactor, stepsFrom, warmupStepsFrom } from "../dist/train/schedule.js";

const fixtures = new URL("./fixtures/trainer/", import.meta.url);
const schedules = JSON.parse(readFileSync(new URL("schedules.json", fixtures), "utf8"));
const meta = JSON.parse(readFileSync(new URL("meta.json", fixtures), "utf8"));

test("every schedule matches transformers over a whole run", () => {
  const S = schedules.num_training_steps;
  assert.equal(schedules.schedules.length, 8);
  for (const s of schedules.schedules) {
    const w = s.warmup.startsWith("ratio") ? warmupStepsFrom(0, 0.1, S) : warmupStepsFrom(3, 0.1, S);
    assert.equal(w, s.num_warmup_steps, `${s.name} ${s.warmup}: warmup steps`);
    assert.equal(s.lrs.length, S);
    s.lrs.forEach((want, k) => {
      const got = lrAt(k, { type: s.name, peak: schedules.peak_lr, totalSteps: S, warmupSteps: w });
      assert.ok(Math.abs(got - want) <= 1e-12, `${s.name} (${s.warmup}) update ${k}: ${got} vs ${want}`);
    });
  }
});

test("the trainer trajectory's learning rates (linear, warmup ceil(0.1 x 10) = 1, peak 1e-2)", () => {
  const S = meta.scheduler.num_training_steps;
  const w = warmupStepsFrom(0, 0.1, S);
  assert.equal(w, meta.scheduler.warmup_steps);
  meta.log.learning_rate.forEach((want, k) => {
    assert.ok(Math.abs(lrAt(k, { type: "linear", peak: meta.optimizer.lr, totalSteps: S, warmupSteps: w }) - want) <= 1e-12);
  });
});

test("warmup steps: steps win when >= 1, a fraction below 1, else ceil(ratio x S); fractional *_steps", () => {
  assert.equal(warmupStepsFrom(0, 0.1, 25), 3); // 2.5 -> 3, not 2
  assert.equal(warmupStepsFrom(0, 0.03, 1000), 30);
  assert.equal(warmupStepsFrom(0, 0, 100), 0);
  assert.equal(warmupStepsFrom(5, 0.5, 100), 5);
  // transformers 5: warmup_steps below 1 is a fraction of the steps; *_steps below 1 likewise
  assert.equal(warmupStepsFrom(0.1, 0.5, 25), 3);
  assert.equal(stepsFrom(0.25, 10), 3);
  assert.equal(stepsFrom(0.5, 10), 5);
  assert.equal(stepsFrom(7, 10), 7);
});

test("edge cases: no warmup, zero-length decay, past the end, bad input", () => {
  assert.equal(lrFactor(0, { type: "linear", totalSteps: 10, warmupSteps: 0 }), 1);
  assert.equal(lrFactor(0, { type: "cosine", totalSteps: 10, warmupSteps: 0 }), 1);
  assert.equal(lrFactor(12, { type: "linear", totalSteps: 10, warmupSteps: 2 }), 0); // clamped at 0
  assert.equal(lrFactor(5, { type: "linear", totalSteps: 5, warmupSteps: 5 }), 0); // max(1, S - w)
  assert.equal(lrFactor(0, { type: "constant_with_warmup", totalSteps: 10, warmupSteps: 4 }), 0);
  assert.equal(lrFactor(3, { type: "constant", totalSteps: 10, warmupSteps: 4 }), 1);
  assert.throws(() => lrAt(0, { type: "exponential", peak: 1, totalSteps: 1, warmupSteps: 0 }), { code: "E_ARG" });
  assert.throws(() => lrAt(-1, { type: "linear", peak: 1, totalSteps: 1, warmupSteps: 0 }), { code: "E_ARG" });
});
