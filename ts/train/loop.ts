// The training loop: Hugging Face Trainer semantics on a TrainableModel.
//   - B_eff = B x K x D; each optimizer step runs K micro-batches (an epoch's last step the ones
//     left, as transformers does, so every epoch ends on an update) in ONE native call, the loss
//     normalized by the non-ignored targets of the whole window (of all ranks); with data
//     parallel a rank's micro-batches at an epoch's end may be short or empty, the step is still
//     taken on every rank (together they hold exactly what one rank with batch B x D would);
//   - lr per update k from the schedule (transformers' formulas), clipping by global norm;
//   - logging every logging_steps (mean loss since the last log), eval every eval_steps and at
//     the end, checkpoints every save_steps and at the last step (rotated), SIGINT/SIGTERM/abort ->
//     checkpoint and clean exit;
//   - non-finite steps are skipped and counted; nonfinite_patience in a row stops the run with a
//     checkpoint of the last good state.
import type { ResolvedConfig } from "../config/types.js";
import type { Batch, ExampleSet } from "../data/batches.js";
import type { TrainLoader } from "../data/loader.js";
import type { SamplerState } from "../data/sampler.js";
import { SINGLE, type World } from "../dist.js";
import { QloraError } from "../errors.js";
import { evaluateExamples, type EvalResult } from "./evaluate.js";
import { lrAt, stepsFrom, warmupStepsFrom } from "./schedule.js";
import { windowGradScale } from "./tokens.js";
import type { LogEntry, OptimizerName, OptimOptions, TrainableModel, TrainEvents } from "./types.js";

export interface LoopState {
  /** optimizer steps completed */
  globalStep: number;
  /** consecutive non-finite steps */
  nonFiniteRun: number;
  /** total skipped steps */
  skippedSteps: number;
  logHistory: LogEntry[];
  /** data order position after the last completed step */
  sampler: SamplerState;
  /** the open logging window (mean loss since the last log), kept across a resume */
  logWindow: { lossSum: number; steps: number; tokens: number };
  /** input positions (batch x padded length) of every micro-batch so far, all ranks: total_flos */
  inputNumel: number;
  /** transformers' best_model_checkpoint (with training.metric_for_best_model), kept across a resume */
  bestModelCheckpoint: string | null;
  /** transformers' state.epoch after the last step (whole epochs + share of this one's batches) */
  epoch?: number;
  /** step losses summed since step 0 (kept across a resume): train_loss is the whole run's mean */
  lossTotal?: { sum: number; steps: number };
}

/** lossTotal of a checkpoint from before it was stored: each logged loss is the mean of the steps
 * since the previous training entry, plus the open logging window (exact unless steps were skipped
 * as non-finite). */
export function lossTotalFromHistory(history: readonly LogEntry[], window: { lossSum: number; steps: number }): { sum: number; steps: number } {
  let sum = window.lossSum;
  let steps = window.steps;
  let prev = 0;
  for (const e of history) {
    if (typeof e.loss !== "number" || !Number.isFinite(e.loss)) continue;
    sum += e.loss * (e.step - prev);
    steps += e.step - prev;
    prev = e.step;
  }
  return { sum, steps };
}

export interface LoopContext {
  config: ResolvedConfig;
  model: TrainableModel;
  loader: TrainLoader;
  evalSet: ExampleSet | null;
  padId: number;
  device: string;
  dataParallel: number;
  /** data parallel ranks (ts/dist.ts); absent: one process */
  world?: World;
  state: LoopState;
  events: TrainEvents;
  signal?: AbortSignal;
  memoryBytes(): number;
  /** writes a checkpoint of the current state; returns its folder */
  saveCheckpoint(reason: "interval" | "interrupt" | "nonfinite" | "final"): Promise<string>;
  /** writes trainer_state.json and plots */
  writeLogs(): Promise<void>;
}

export interface LoopResult {
  globalStep: number;
  totalSteps: number;
  /** transformers' train_loss: the mean step loss since step 0 (carried over a resume, so it is the
   * uninterrupted run's); NaN when no step ran */
  trainLoss: number;
  stoppedBy: "completed" | "abort" | "nonfinite";
  lastEval: EvalResult | null;
  tokensPerSecond: number;
  /** the epoch value at the end (transformers': whole epochs + this epoch's share of batches) */
  epoch: number;
}

export function optimizerName(optim: string): OptimizerName {
  return optim === "adamw_torch" ? "adamw_32bit" : (optim as OptimizerName);
}

/** Optimizer steps the run will make (max_steps wins when > 0, as in transformers). */
export function totalStepsFor(config: ResolvedConfig, batchesPerEpoch: number): number {
  const t = config.training;
  if (t.max_steps > 0) return t.max_steps;
  const perEpoch = Math.max(1, Math.ceil(batchesPerEpoch / t.gradient_accumulation_steps));
  return Math.max(1, Math.ceil(perEpoch * t.num_train_epochs));
}

// Logged values stay unrounded as transformers logs them; only timings are rounded.
const round = (x: number, digits = 6) => Number(x.toPrecision(digits));

export async function runTrainingLoop(ctx: LoopContext): Promise<LoopResult> {
  const { config, model, loader, state, events } = ctx;
  const world = ctx.world ?? SINGLE;
  const dp = world.worldSize > 1;
  const t = config.training;
  const K = t.gradient_accumulation_steps;
  const batchesPerEpoch = loader.batchesPerEpoch();
  const totalSteps = totalStepsFor(config, batchesPerEpoch);
  const warmupSteps = warmupStepsFrom(t.warmup_steps, t.warmup_ratio, totalSteps);
  // As transformers: an epoch's last window holds the remaining micro-batches (fewer than K when
  // K does not divide the epoch), so every epoch has ceil(batches / K) updates and ends on one.
  const stepsPerEpoch = Math.max(1, Math.ceil(batchesPerEpoch / K));
  const logEvery = stepsFrom(t.logging_steps, totalSteps);
  const evalEvery = t.eval_strategy === "steps" ? stepsFrom(t.eval_steps, totalSteps) : t.eval_strategy === "epoch" ? stepsPerEpoch : 0;
  const saveEvery = t.save_strategy === "steps" ? stepsFrom(t.save_steps, totalSteps) : t.save_strategy === "epoch" ? stepsPerEpoch : 0;
  // transformers' epoch value: whole epochs done + micro-batches of this one / batches per epoch
  let epochNow = state.globalStep / stepsPerEpoch;
  state.epoch = epochNow;
  const patience = config.advanced.nonfinite_patience;

  events.onStart?.({ totalSteps, startStep: state.globalStep, effectiveBatch: t.per_device_train_batch_size * K * ctx.dataParallel, paramCount: model.paramCount, device: ctx.device });

  const win = state.logWindow;
  let logStart = performance.now();
  let runTokens = 0;
  const runStart = performance.now();
  // train_loss: the mean step loss of the whole run since step 0 (a resumed run carries the sum),
  // so it equals the uninterrupted run's; transformers' for a run from the start (after a resume
  // transformers divides the resumed steps' sum by all steps)
  const lossTotal = (state.lossTotal ??= { sum: 0, steps: 0 });
  let lastEval: EvalResult | null = null;
  let stoppedBy: LoopResult["stoppedBy"] = "completed";
  const startStep = state.globalStep;

  // false when the run was aborted during the evaluation (the caller then saves the steps done)
  const runEval = async (): Promise<boolean> => {
    if (!ctx.evalSet) return true;
    try {
      lastEval = await evaluateExamples(model, ctx.evalSet, { batchSize: t.per_device_eval_batch_size, padId: ctx.padId, padding: config.data.padding, signal: dp ? undefined : ctx.signal, shard: dp ? { rank: world.rank, worldSize: world.worldSize, reduce: world.allreduce } : undefined });
    } catch (e) {
      if (!dp && ctx.signal?.aborted && (e as { code?: string }).code === "E_ABORTED") return false;
      throw e;
    }
    const entry: LogEntry = { step: state.globalStep, epoch: epochNow, eval_loss: lastEval.eval_loss, eval_perplexity: lastEval.perplexity, eval_tokens: lastEval.eval_tokens, eval_runtime: round(lastEval.eval_seconds, 4) };
    state.logHistory.push(entry);
    events.onEval?.(entry);
    await ctx.writeLogs();
    return true;
  };

  while (state.globalStep < totalSteps) {
    if (!dp && ctx.signal?.aborted) {
      stoppedBy = "abort";
      break;
    }
    const k = state.globalStep;
    // data parallel: at an epoch's end a rank's micro-batch can be short or empty (ts/data/sampler.ts);
    // empty ones carry nothing and are left out of the model call. A rank left with none still
    // calls trainStep([]) below, so its all-reduce and update stay in lockstep with the others.
    const micro: Batch[] = [];
    for (let i = 0; i < K; i++) {
      const b = loader.next();
      if (b.batchSize > 0) micro.push(b);
      epochNow = b.epoch + (b.batchIndex + 1) / batchesPerEpoch;
      if (b.batchIndex === batchesPerEpoch - 1) break; // the epoch's last (possibly short) window
    }
    let { targets, gradScale } = windowGradScale(micro);
    let stepTokens = micro.reduce((s, b) => s + b.numTokens, 0);
    let stepNumel = micro.reduce((s, b) => s + b.batchSize * b.seqLen, 0);
    if (dp) {
      // every rank must agree on the normalization (targets of the whole window on ALL ranks)
      // and on stopping, before the step's collectives
      let aborted: number;
      [targets, stepTokens, aborted, stepNumel] = world.allreduce([targets, stepTokens, ctx.signal?.aborted ? 1 : 0, stepNumel], "target count");
      gradScale = targets > 0 ? 1 / targets : 0;
      if (aborted > 0) {
        stoppedBy = "abort";
        break;
      }
    }
    const lr = lrAt(k, { type: t.lr_scheduler_type, peak: t.learning_rate, totalSteps, warmupSteps });
    const opt: OptimOptions = { lr, weightDecay: t.weight_decay, beta1: t.adam_beta1, beta2: t.adam_beta2, eps: t.adam_epsilon, maxGradNorm: t.max_grad_norm, optim: optimizerName(t.optim) };
    const r = targets > 0 ? await (dp ? model.trainStep(micro, gradScale, opt, { allreduce: true }) : model.trainStep(micro, gradScale, opt)) : { lossSum: 0, tokens: 0, gradNorm: 0, nonFinite: false, skipped: true };
    if (r.nonFinite) {
      state.skippedSteps++;
      state.nonFiniteRun++;
      events.onWarning?.(`step ${k + 1}: non-finite loss or gradients (loss sum ${r.lossSum}, grad norm ${r.gradNorm}); step skipped (${state.nonFiniteRun} in a row, ${state.skippedSteps} in all)`);
      if (state.nonFiniteRun >= patience) {
        const dir = await ctx.saveCheckpoint("nonfinite");
        throw new QloraError("E_NONFINITE", `training stopped: ${state.nonFiniteRun} non-finite steps in a row (advanced.nonfinite_patience = ${patience}); the last good state is saved in ${dir}. Lower the learning rate or check the data.`);
      }
    } else {
      state.nonFiniteRun = 0;
    }
    state.globalStep++;
    state.epoch = epochNow;
    state.inputNumel += stepNumel;
    state.sampler = loader.state();
    const stepLoss = r.tokens > 0 ? r.lossSum / r.tokens : NaN;
    if (!r.nonFinite && r.tokens > 0) {
      win.lossSum += stepLoss;
      win.steps++;
      lossTotal.sum += stepLoss;
      lossTotal.steps++;
    }
    win.tokens += stepTokens;
    runTokens += stepTokens;
    const elapsed = (performance.now() - runStart) / 1000;
    events.onStep?.({ step: state.globalStep, totalSteps, loss: stepLoss, lr, tokensPerSecond: runTokens / Math.max(elapsed, 1e-9), elapsedSeconds: elapsed, memoryBytes: ctx.memoryBytes() });

    const last = state.globalStep === totalSteps;
    // As transformers: only every logging_steps (a last step between them is in the summary's
    // train_loss, not in an entry of its own)
    if (state.globalStep % logEvery === 0) {
      const secs = (performance.now() - logStart) / 1000;
      const entry: LogEntry = {
        step: state.globalStep,
        epoch: epochNow,
        ...(win.steps ? { loss: win.lossSum / win.steps } : {}),
        learning_rate: lr,
        grad_norm: r.gradNorm,
        tokens_per_second: round(win.tokens / Math.max(secs, 1e-9), 5),
        peak_memory_bytes: ctx.memoryBytes(),
      };
      state.logHistory.push(entry);
      events.onLog?.(entry);
      win.lossSum = 0;
      win.steps = 0;
      win.tokens = 0;
      logStart = performance.now();
      await ctx.writeLogs();
    }
    if (evalEvery > 0 && state.globalStep % evalEvery === 0 && !last && !(await runEval())) {
      stoppedBy = "abort";
      break;
    }
    if (saveEvery > 0 && state.globalStep % saveEvery === 0 && !last) {
      // (not `onSave?.(await save())`: an absent handler would skip the save itself)
      const dir = await ctx.saveCheckpoint("interval");
      events.onSave?.(dir);
    }
  }

  // (a run resumed at its last step that was evaluated there already is not evaluated twice)
  const done = state.logHistory.find((e) => e.step === state.globalStep && e.step > 0 && typeof e.eval_loss === "number");
  if (done && ctx.evalSet) lastEval = { eval_loss: done.eval_loss as number, perplexity: Math.exp(done.eval_loss as number), eval_tokens: (done.eval_tokens as number) ?? 0, eval_seconds: 0 };
  else if (stoppedBy === "completed" && !(await runEval())) stoppedBy = "abort";
  if (stoppedBy === "abort") {
    // nothing new to save when no step ran since the start (or the resume point)
    if (state.globalStep > startStep) {
      const dir = await ctx.saveCheckpoint("interrupt");
      events.onSave?.(dir);
    }
  } else {
    await ctx.writeLogs();
    // As transformers does: the last step is checkpointed too (after its evaluation, so the
    // checkpoint's log history has it), so --resume latest with a larger max_steps continues
    // from here and not from the last interval (unless save_total_limit 1 with a best model then
    // keeps only the best checkpoint, as transformers does: ts/api/train.ts).
    if (saveEvery > 0 && state.globalStep > startStep) {
      const dir = await ctx.saveCheckpoint("final");
      events.onSave?.(dir);
    }
  }
  const elapsed = (performance.now() - runStart) / 1000;
  return { globalStep: state.globalStep, totalSteps, trainLoss: lossTotal.steps ? lossTotal.sum / lossTotal.steps : NaN, stoppedBy, lastEval, tokensPerSecond: runTokens / Math.max(elapsed, 1e-9), epoch: epochNow };
}
