// train(): the library entry behind `qlora-native train`. Resolves the config, device, model and
// data; loads the model with NF4 base weights and LoRA; runs the loop (ts/train/loop.ts) with
// evaluation before (training.eval_on_start) and after, checkpoints and resume; writes the adapter (PEFT format),
// trainer_state.json, plots and config.resolved.yaml into output.dir.
import { existsSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, validateConfig } from "../config/load.js";
import { resolveModelPath } from "../config/resolve-model.js";
import { saveResolvedConfig } from "../config/save.js";
import type { ResolvedConfig } from "../config/types.js";
import { assertHasTargets, buildExampleSets, TrainLoader } from "../data/loader.js";
import { prepareDataset } from "../data/prepare.js";
import { resolveDevice } from "../device.js";
import { QloraError } from "../errors.js";
import { initWorld, launcherRanks, rankDevice, threadsPerRank } from "../dist.js";
import { loadModel, type LoraTarget, type QwenModel } from "../model/index.js";
import { native } from "../native.js";
import { writePlots } from "../report/index.js";
import { adapterTargets, readAdapter, writeAdapter } from "../train/adapter.js";
import { assertNoForeignCheckpoints, damagedCheckpoints, deleteCheckpointsExcept, findLatestCheckpoint, loadCheckpoint, saveCheckpoint } from "../train/checkpoint.js";
import { lockOutputDir } from "../train/output-lock.js";
import { evaluateExamples, type EvalResult } from "../train/evaluate.js";
import { lossTotalFromHistory, runTrainingLoop, totalStepsFor, type LoopState } from "../train/loop.js";
import { nextBestCheckpoint, TrainerStateLog } from "../train/trainer-state.js";
import { totalFlos } from "../train/flos.js";
import { stepsFrom } from "../train/schedule.js";
import type { LogEntry, TrainEvents } from "../train/types.js";
import { openSession, type Session } from "../tensor.js";

export interface TrainOptions extends TrainEvents {
  /** a config object (validated like a file: missing keys take their defaults), or a YAML path plus overrides */
  config?: ResolvedConfig | Record<string, unknown>;
  configPath?: string;
  set?: string[];
  /** "latest" or a checkpoint folder */
  resume?: string;
  signal?: AbortSignal;
  /** free-form progress lines (data preparation, loading) */
  onInfo?(line: string): void;
}

export interface TrainResult {
  outputDir: string;
  adapterDir: string;
  globalStep: number;
  totalSteps: number;
  /** transformers' train_loss: the mean step loss since step 0 (carried over a resume, so it is the
   * uninterrupted run's); NaN when no step ran */
  trainLoss: number;
  initialEval: EvalResult | null;
  finalEval: EvalResult | null;
  /** the test split (data.test_split) after the last step: logged as test_loss / test_perplexity */
  testEval: EvalResult | null;
  tokensPerSecond: number;
  stoppedBy: "completed" | "abort" | "nonfinite";
  peakMemoryBytes: number;
  device: string;
}

export function loraConfigFor(config: ResolvedConfig, baseModel: string) {
  const l = config.lora;
  const targets = l.target_modules === "all-linear" ? ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] : [...l.target_modules];
  // PEFT records the hub revision the base was loaded at (null: the default branch).
  const revision = config.model.revision && config.model.revision !== "main" ? config.model.revision : null;
  return { r: l.r, alpha: l.alpha, dropout: l.dropout, targets, useRslora: l.use_rslora, baseModel, extra: { revision } };
}

/** rank > 0 (data parallel) gives the LoRA dropout masks their own stream per rank; the LoRA
 * initialisation stays the same on every rank. */
/** The model of a config on its own session; dispose both (model first) when done. */
export async function openModelFor(config: ResolvedConfig, device: string, info: (s: string) => void, rank = 0): Promise<{ model: QwenModel; modelDir: string; session: Session }> {
  const modelDir = resolveModelPath(config.model.name_or_path, config.model.revision);
  if (config.advanced.threads > 0) native.setNumThreads(config.advanced.threads);
  const session = openSession(device);
  // the reported peak is this run's (loading included), not an earlier high-water mark of the
  // process; the counter is per device, so runs at the same time in one process share it
  session.resetPeak();
  const lora = loraConfigFor(config, config.model.name_or_path);
  info(`loading ${modelDir} (${config.model.quantization === "nf4" ? "NF4 base weights" : "dense base weights"}, ${config.model.compute_dtype}) on ${device}`);
  let model: QwenModel;
  try {
    model = await loadModel(modelDir, {
    session,
    computeDtype: config.model.compute_dtype === "float32" ? "f32" : "bf16",
    quantization: config.model.quantization,
    quantBlocksize: config.model.quant_blocksize,
    doubleQuant: config.model.double_quant,
    gradientCheckpointing: config.training.gradient_checkpointing,
    lora: { r: lora.r, alpha: lora.alpha, dropout: lora.dropout, targets: lora.targets as LoraTarget[], useRslora: lora.useRslora, seed: config.training.seed + rank * 1000003 },
    });
    await model.initLora(config.training.seed);
  } catch (e) {
    session.dispose();
    throw e;
  }
  return { model, modelDir, session };
}

export async function train(options: TrainOptions = {}): Promise<TrainResult> {
  // a config object is validated like a file (defaults filled in, bad values named)
  let config = options.config ? validateConfig(options.config) : await loadConfig(options.configPath, { set: options.set });
  const info = options.onInfo ?? (() => {});
  // Continuing from an adapter: its shape (r, alpha, rsLoRA, modules) is the run's LoRA layout.
  const initAdapter = config.lora.init_adapter ? await readAdapter(config.lora.init_adapter) : null;
  if (initAdapter) {
    const c = initAdapter.config;
    const targets = adapterTargets(initAdapter, config.lora.init_adapter!) as ResolvedConfig["lora"]["target_modules"];
    config = { ...config, lora: { ...config.lora, r: c.r, alpha: c.lora_alpha, use_rslora: c.use_rslora === true, target_modules: targets } };
    info(`LoRA from the adapter in ${config.lora.init_adapter}: r=${c.r}, alpha=${c.lora_alpha}${c.use_rslora ? ", rsLoRA" : ""}, modules ${(targets as string[]).join(", ")}`);
  }
  // data parallel under mpirun (ts/dist.ts): one device (cuda:<local rank>) or an equal share of
  // the cores per rank; rank 0 alone writes outputs and fills the token cache first
  const world = initWorld();
  const dp = world.worldSize > 1;
  const device = rankDevice(resolveDevice(config.advanced.device, (m) => options.onWarning?.(m)), world.localRank);
  if (dp && config.advanced.threads <= 0 && device === "cpu") native.setNumThreads(threadsPerRank(launcherRanks()?.localSize ?? world.worldSize));
  if (config.advanced.threads > os.availableParallelism())
    options.onWarning?.(`advanced.threads = ${config.advanced.threads} is more than this machine's ${os.availableParallelism()} cores: the CPU backend will run slower, not faster`);
  // an interrupt before the first step (even before the call): nothing to save yet
  const stopIfAborted = (stage: string) => {
    if (!dp && options.signal?.aborted) throw new QloraError("E_ABORTED", `interrupted ${stage}; no training step ran, nothing to save`);
  };
  stopIfAborted("before training started");
  const outputDir = path.resolve(config.output.dir);
  let unlock = () => {};
  if (world.isMain) {
    mkdirSync(outputDir, { recursive: true });
    unlock = lockOutputDir(outputDir); // one run per output folder
    try {
      assertNoForeignCheckpoints(outputDir); // before any work: saving would replace them
    } catch (e) {
      unlock();
      throw e;
    }
  }
  try {
    if (world.isMain) await saveResolvedConfig(config, outputDir);
    return await trainInFolder(config, options, { world, dp, device, outputDir, info, stopIfAborted, initAdapter });
  } finally {
    unlock();
  }
}

async function trainInFolder(
  config: ResolvedConfig,
  options: TrainOptions,
  ctx: {
    world: ReturnType<typeof initWorld>; dp: boolean; device: string; outputDir: string; info: (s: string) => void;
    stopIfAborted: (stage: string) => void; initAdapter: Awaited<ReturnType<typeof readAdapter>> | null;
  },
): Promise<TrainResult> {
  const { world, dp, device, outputDir, info, stopIfAborted, initAdapter } = ctx;

  info(dp ? `data parallel: rank ${world.rank} of ${world.worldSize} on ${device}; preparing data` : "preparing data");
  if (dp && !world.isMain) world.barrier("data preparation on rank 0");
  const prepared = await prepareDataset(config, { log: info });
  if (dp && world.isMain) world.barrier("data preparation on rank 0");
  const sets = buildExampleSets(prepared, config);
  const padId = prepared.tokenizer.padId;
  assertHasTargets(sets.train, `training split (data.train_split ${JSON.stringify(config.data.train_split)})`, config);
  // an eval or test split that would fail only after training is refused now
  if (sets.eval && config.training.eval_strategy !== "no") assertHasTargets(sets.eval, `eval split (data.eval_split ${JSON.stringify(config.data.eval_split)})`, config);
  if (sets.test) assertHasTargets(sets.test, `test split (data.test_split ${JSON.stringify(config.data.test_split)})`, config);
  stopIfAborted("while preparing the data");
  info(`train: ${sets.train.length} examples; eval: ${sets.eval?.length ?? 0} examples (${prepared.stats.cacheHits} splits from the token cache)`);

  const { model, session } = await openModelFor(config, device, info, world.rank);
  try {
    stopIfAborted("while loading the model");
    const loader = TrainLoader.fromConfig(sets.train, config, padId, { rank: world.rank, worldSize: world.worldSize });
    const evalShard = dp ? { rank: world.rank, worldSize: world.worldSize, reduce: world.allreduce } : undefined;
    const stateLog = new TrainerStateLog(outputDir);
    const totalSteps = totalStepsFor(config, loader.batchesPerEpoch());
    const state: LoopState = { globalStep: 0, nonFiniteRun: 0, skippedSteps: 0, logHistory: [], sampler: loader.state(), logWindow: { lossSum: 0, steps: 0, tokens: 0 }, inputNumel: 0, bestModelCheckpoint: null, epoch: 0, lossTotal: { sum: 0, steps: 0 } };
    let initialEval: EvalResult | null = null;

    const resumeFrom = options.resume === "latest" ? findLatestCheckpoint(outputDir) : options.resume ? path.resolve(options.resume) : null;
    if (options.resume && options.resume !== "latest" && !existsSync(resumeFrom!))
      throw new QloraError("E_NOT_FOUND", `--resume ${options.resume}: no such checkpoint folder`);
    if (options.resume === "latest") {
      // a damaged checkpoint newer than the one found is an error, not a silent step back
      const latestStep = resumeFrom ? Number(/checkpoint-(\d+)/.exec(path.basename(resumeFrom))?.[1] ?? -1) : -1;
      const damaged = damagedCheckpoints(outputDir).filter((d) => d.step > latestStep);
      if (damaged.length) {
        const d = damaged[0];
        throw new QloraError(
          "E_FORMAT",
          `--resume latest: ${d.path} is damaged (${d.problem}); ${resumeFrom ? `resume from the newest complete one with --resume ${resumeFrom}` : "there is no complete checkpoint to resume from"}, or move the damaged folder away`,
        );
      }
      if (!resumeFrom) options.onWarning?.(`--resume latest: no checkpoint in ${outputDir}; starting from scratch`);
    }
    if (resumeFrom) {
      const ck = await loadCheckpoint(resumeFrom);
      // the checkpoint's LoRA layout must be the config's: say which setting differs
      const cc = ck.adapterConfig;
      if (cc) {
        const want = loraConfigFor(config, config.model.name_or_path);
        const have = typeof cc.target_modules === "string" ? cc.target_modules : [...cc.target_modules].sort().join(", ");
        const diffs = [
          cc.r !== want.r ? `r = ${cc.r} (the config says ${want.r})` : "",
          cc.lora_alpha !== want.alpha ? `alpha = ${cc.lora_alpha} (the config says ${want.alpha})` : "",
          (cc.use_rslora === true) !== want.useRslora ? `use_rslora = ${cc.use_rslora === true} (the config says ${want.useRslora})` : "",
          have !== [...want.targets].sort().join(", ") ? `target_modules ${have} (the config says ${[...want.targets].sort().join(", ")})` : "",
        ].filter(Boolean);
        if (diffs.length) throw new QloraError("E_CONFIG", `cannot resume from ${resumeFrom}: the checkpoint has LoRA ${diffs.join(", ")}; resume with the config it was trained with`);
      }
      if (ck.step > totalSteps)
        throw new QloraError("E_CONFIG", `cannot resume from ${resumeFrom}: it is at step ${ck.step}, past this run's last step ${totalSteps} (training.max_steps / num_train_epochs); raise them to continue`);
      for (const [key, t] of Object.entries(ck.adapter)) await model.setLora(key, t.data);
      await model.setOptimizerState(ck.optimizer);
      // rank 0's sampler state; every rank has handed out as many batches of the epoch (the
      // sampler restores by batch count: shards may differ by one example)
      loader.restore({ ...(ck.dataPosition as object), ...(dp ? { rank: world.rank } : {}) } as never);
      state.globalStep = ck.step;
      state.logHistory = ck.logHistory as LogEntry[];
      state.skippedSteps = ck.skippedSteps ?? 0;
      const w = ck.extra.logWindow as LoopState["logWindow"] | undefined;
      if (w) state.logWindow = { ...w };
      state.inputNumel = typeof ck.extra.inputNumel === "number" ? ck.extra.inputNumel : 0;
      const lt = ck.extra.lossTotal as LoopState["lossTotal"] | undefined;
      state.lossTotal = lt && typeof lt.sum === "number" && typeof lt.steps === "number" ? { ...lt } : lossTotalFromHistory(state.logHistory, state.logWindow);
      // the best checkpoint by name, in this output folder (the folder may have been copied); as
      // transformers: a recorded best checkpoint that is gone is forgotten. A checkpoint from
      // before the field existed: the best step's folder if there is one
      const best = ck.extra.bestModelCheckpoint;
      const here = typeof best === "string" ? path.join(outputDir, path.basename(best)) : null;
      state.bestModelCheckpoint = here !== null ? (existsSync(here) ? here : null) : nextBestCheckpoint(config, state.logHistory, outputDir, -1, null);
      state.sampler = loader.state();
      info(`resumed from ${resumeFrom} at step ${ck.step}`);
    } else if (initAdapter) {
      const expected = new Set(model.loraLayout().map((l) => l.key));
      for (const [key, w] of initAdapter.loraWeights) {
        if (!expected.has(key)) throw new QloraError("E_FORMAT", `${config.lora.init_adapter}: adapter tensor ${key} does not match the model (expected keys like ${[...expected][0]})`);
        await model.setLora(key, w.data);
      }
    }
    if (!resumeFrom && sets.eval && config.training.eval_strategy !== "no" && config.training.eval_on_start) {
      info("evaluating before training");
      initialEval = await evaluateExamples(model, sets.eval, { batchSize: config.training.per_device_eval_batch_size, padId, padding: config.data.padding, signal: dp ? undefined : options.signal, shard: evalShard });
      const entry: LogEntry = { step: 0, epoch: 0, eval_loss: initialEval.eval_loss, eval_perplexity: initialEval.perplexity, eval_tokens: initialEval.eval_tokens, eval_runtime: Math.round(initialEval.eval_seconds * 1e4) / 1e4 };
      state.logHistory.push(entry);
      options.onEval?.(entry);
    }

    // what trainer_state.json holds, in the output folder and in every checkpoint
    const stateInput = () => {
      // with max_steps the epochs the run spans (as transformers stores num_train_epochs)
      const spe = Math.max(1, Math.ceil(loader.batchesPerEpoch() / config.training.gradient_accumulation_steps));
      return {
        logHistory: state.logHistory, config, maxSteps: totalSteps,
        numTrainEpochs: config.training.max_steps > 0 ? Math.ceil(totalSteps / spe) : undefined,
        totalFlos: totalFlos(model.arch, model.paramCount, state.inputNumel),
        loggingSteps: stepsFrom(config.training.logging_steps, totalSteps),
        evalSteps: stepsFrom(config.training.eval_steps, totalSteps),
        saveSteps: stepsFrom(config.training.save_steps, totalSteps),
        bestModelCheckpoint: state.bestModelCheckpoint,
        epoch: state.epoch,
      };
    };
    const writeLogs = async () => {
      if (!world.isMain) return;
      await stateLog.write({ ...stateInput(), globalStep: state.globalStep });
      if (config.output.plot) await writePlots(outputDir, state.logHistory);
    };
    const saveCk = async (): Promise<string> => {
      if (!world.isMain) return path.join(outputDir, `checkpoint-${state.globalStep}`);
      const adapter = await model.getLora();
      const optimizer = await model.getOptimizerState();
      state.bestModelCheckpoint = nextBestCheckpoint(config, state.logHistory, outputDir, state.globalStep, state.bestModelCheckpoint);
      return saveCheckpoint(outputDir, state.globalStep, {
        adapter,
        adapterConfig: loraConfigFor(config, config.model.name_or_path),
        optimizer,
        dataPosition: state.sampler,
        trainerState: stateInput(),
        skippedSteps: state.skippedSteps,
        seed: config.training.seed,
        extra: { logWindow: state.logWindow, inputNumel: state.inputNumel, bestModelCheckpoint: state.bestModelCheckpoint, lossTotal: state.lossTotal },
        saveTotalLimit: config.output.save_total_limit,
        keepCheckpoint: state.bestModelCheckpoint,
      });
    };

    const trainStart = performance.now();
    const startStep = state.globalStep;
    const result = await runTrainingLoop({
      config,
      model,
      loader,
      evalSet: config.training.eval_strategy === "no" ? null : sets.eval,
      padId,
      device,
      dataParallel: world.worldSize,
      world,
      state,
      events: options,
      signal: options.signal,
      memoryBytes: () => native.memoryStats(device).peak,
      saveCheckpoint: saveCk,
      writeLogs,
    });

    // the final test evaluation (data.test_split), logged as transformers names predict metrics
    let testEval: EvalResult | null = null;
    let stoppedBy = result.stoppedBy;
    if (stoppedBy === "completed" && sets.test && result.globalStep > 0) {
      info("evaluating the test split");
      try {
        testEval = await evaluateExamples(model, sets.test, { batchSize: config.training.per_device_eval_batch_size, padId, padding: config.data.padding, signal: dp ? undefined : options.signal, shard: evalShard });
      } catch (e) {
        if (dp || !options.signal?.aborted || (e as { code?: string }).code !== "E_ABORTED") throw e;
        // a checkpoint of the last step (the loop saves one unless save_strategy is "no") holds the
        // trained run: a resume only evaluates and finishes
        stoppedBy = "abort";
        if (!existsSync(path.join(outputDir, `checkpoint-${result.globalStep}`))) await saveCk();
        info(`interrupted during the test split evaluation; every step is done and checkpointed: --resume latest finishes the run`);
      }
      if (testEval) {
        const entry: LogEntry = {
          step: result.globalStep, epoch: result.epoch,
          test_loss: testEval.eval_loss, test_perplexity: testEval.perplexity, test_tokens: testEval.eval_tokens,
        };
        state.logHistory.push(entry);
        options.onEval?.(entry);
      }
    }
    // transformers ends log_history with the run's summary entry
    // (also when a resumed run had no step left: its checkpoint was saved before the summary)
    if (stoppedBy === "completed" && !state.logHistory.some((e) => e.step === result.globalStep && "train_runtime" in e)) {
      const runtime = (performance.now() - trainStart) / 1000;
      const stepsRun = result.globalStep - startStep;
      state.logHistory.push({
        step: result.globalStep, epoch: result.epoch,
        train_loss: result.trainLoss, train_runtime: Math.round(runtime * 1e4) / 1e4,
        train_samples_per_second: Math.round(((stepsRun * config.training.per_device_train_batch_size * config.training.gradient_accumulation_steps * world.worldSize) / runtime) * 1e3) / 1e3,
        train_steps_per_second: Math.round((stepsRun / runtime) * 1e3) / 1e3,
        total_flos: totalFlos(model.arch, model.paramCount, state.inputNumel),
      });
    }
    const adapterDir = outputDir;
    if (stoppedBy === "completed" && world.isMain) {
      await writeAdapter(adapterDir, { loraWeights: await model.getLora(), config: loraConfigFor(config, config.model.name_or_path) });
      // as transformers ends a run with save_total_limit 1 and a best model: only that checkpoint stays
      const best = state.bestModelCheckpoint;
      if (config.output.save_total_limit === 1 && best && existsSync(best)) {
        const removed = await deleteCheckpointsExcept(outputDir, best);
        if (removed.length) info(`save_total_limit 1 with metric_for_best_model: kept only the best checkpoint, ${path.basename(best)}; removed ${removed.map((r) => path.basename(r)).join(", ")}`);
      }
    }
    await writeLogs();
    return {
      outputDir,
      adapterDir,
      globalStep: result.globalStep,
      totalSteps: result.totalSteps,
      trainLoss: result.trainLoss,
      initialEval,
      finalEval: result.lastEval,
      testEval,
      tokensPerSecond: result.tokensPerSecond,
      stoppedBy,
      peakMemoryBytes: native.memoryStats(device).peak,
      device,
    };
  } finally {
    model.dispose();
    session.dispose();
  }
}
