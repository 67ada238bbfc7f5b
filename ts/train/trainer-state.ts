// trainer_state.json in transformers' layout (TrainerState.save_to_json: every dataclass field,
// keys sorted at every level, indent 2, trailing newline), rewritten atomically (temp file +
// rename) at each log, and loadable for resume. log_history entries carry transformers' names
// (step, epoch, loss, learning_rate, grad_norm, eval_loss, ...) plus ours (eval_perplexity,
// tokens_per_second, peak_memory_bytes). Non-finite numbers are written as null (JSON has no NaN).
import { readFile, stat } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../config/atomic-write.js";
import { QloraError } from "../errors.js";

/** One log_history entry. */
export interface LogHistoryEntry {
  step: number;
  epoch?: number;
  [key: string]: number | undefined;
}

/** The fields of transformers' TrainerState (4.5x / 5.x), as written to trainer_state.json. */
export interface TrainerStateJson {
  best_global_step: number | null;
  best_metric: number | null;
  best_model_checkpoint: string | null;
  epoch: number | null;
  eval_steps: number;
  global_step: number;
  is_hyper_param_search: boolean;
  is_local_process_zero: boolean;
  is_world_process_zero: boolean;
  log_history: LogHistoryEntry[];
  logging_steps: number;
  max_steps: number;
  num_input_tokens_seen: number;
  num_train_epochs: number;
  save_steps: number;
  stateful_callbacks: Record<string, unknown>;
  total_flos: number;
  train_batch_size: number | null;
  trial_name: string | null;
  trial_params: Record<string, unknown> | null;
}

/** The training section fields trainer_state.json repeats (a ResolvedConfig fits). */
export interface TrainerStateConfig {
  training: {
    max_steps: number;
    num_train_epochs: number;
    per_device_train_batch_size: number;
    logging_steps: number;
    eval_steps: number;
    save_steps: number;
    metric_for_best_model?: string | null;
    greater_is_better?: boolean | null;
    save_strategy?: string;
  };
}

export interface TrainerStateInput {
  logHistory: readonly LogHistoryEntry[];
  /** optimizer steps completed */
  globalStep: number;
  config?: TrainerStateConfig;
  /** updates of the whole run (the loop's totalSteps); default: config max_steps when > 0 */
  maxSteps?: number;
  numTrainEpochs?: number;
  trainBatchSize?: number;
  loggingSteps?: number;
  evalSteps?: number;
  saveSteps?: number;
  numInputTokensSeen?: number;
  totalFlos?: number;
  /** metric for best_metric; undefined: config training.metric_for_best_model; null: none */
  metricForBest?: string | null;
  /** undefined: config training.greater_is_better, else by the metric's name */
  greaterIsBetter?: boolean | null;
  /** the run's best_model_checkpoint (nextBestCheckpoint); undefined: outputDir/checkpoint-<best
   * step> when that folder exists */
  bestModelCheckpoint?: string | null;
  /** state.epoch now; default: the last log entry's */
  epoch?: number;
}

export const TRAINER_STATE_FILE = "trainer_state.json";

/** transformers' metric_for_best_model: "loss" means "eval_loss" (an eval_ prefix is added). */
export function bestMetricName(metric: string): string {
  return metric.startsWith("eval_") ? metric : `eval_${metric}`;
}

/** The log entry with the best value of `metric` (null when none has it). greaterIsBetter null:
 * false for a loss or perplexity, true otherwise. The evaluation before training (step 0) is no
 * candidate: transformers' eval_on_start does not compete for the best model either. */
export function bestEntry(history: readonly LogHistoryEntry[], metric: string, greaterIsBetter: boolean | null = null): LogHistoryEntry | null {
  const name = bestMetricName(metric);
  const greater = greaterIsBetter ?? !/(loss|perplexity)$/.test(name);
  let best: LogHistoryEntry | null = null;
  for (const e of history) {
    if (e.step === 0) continue;
    const v = e[name];
    if (typeof v !== "number" || !Number.isFinite(v)) continue;
    const b = best?.[name] as number | undefined;
    if (b === undefined || (greater ? v > b : v < b)) best = e;
  }
  return best;
}

/** transformers' best_model_checkpoint when a checkpoint of step `savingStep` is being written:
 * the best step's folder if that is this checkpoint or exists, else the previous value `current`
 * (a best step without a checkpoint keeps the older one). Null without metric_for_best_model. */
export function nextBestCheckpoint(config: TrainerStateConfig, history: readonly LogHistoryEntry[], outputDir: string, savingStep: number, current: string | null): string | null {
  const metric = config.training.metric_for_best_model ?? null;
  const best = metric === null ? null : bestEntry(history, metric, config.training.greater_is_better ?? null);
  if (!best) return current;
  const dir = path.join(outputDir, `checkpoint-${best.step}`);
  return best.step === savingStep || existsSync(dir) ? dir : current;
}

/** Builds the TrainerState object. With a metric for the best model (training.metric_for_best_model),
 * best_* follow its best value in the log history (step 0 left out); best_model_checkpoint is the
 * run's tracked one (input.bestModelCheckpoint, moved only at saves: nextBestCheckpoint), or when
 * none is given outputDir/checkpoint-<best step> if that folder exists; without a metric all null. */
export function buildTrainerState(input: TrainerStateInput, outputDir?: string): TrainerStateJson {
  const t = input.config?.training;
  const history = input.logHistory.map((e) => ({ ...e }));
  const metric = input.metricForBest !== undefined ? input.metricForBest : (t?.metric_for_best_model ?? null);
  const best = metric === null ? null : bestEntry(history, metric, input.greaterIsBetter !== undefined ? input.greaterIsBetter : (t?.greater_is_better ?? null));
  const derived = best && outputDir ? path.join(outputDir, `checkpoint-${best.step}`) : null;
  const bestCk = input.bestModelCheckpoint !== undefined ? input.bestModelCheckpoint : derived && existsSync(derived) ? derived : null;
  // transformers records best_global_step only when checkpoints are saved
  const savesCheckpoints = (t?.save_strategy ?? "steps") !== "no";
  const maxSteps = input.maxSteps ?? (t && t.max_steps > 0 ? t.max_steps : 0);
  const last = history.length ? history[history.length - 1] : undefined;
  return {
    best_global_step: best && savesCheckpoints ? best.step : null,
    best_metric: best && metric !== null ? (best[bestMetricName(metric)] as number) : null,
    best_model_checkpoint: metric === null ? null : bestCk,
    epoch: input.epoch ?? last?.epoch ?? null,
    eval_steps: input.evalSteps ?? t?.eval_steps ?? 500,
    global_step: input.globalStep,
    is_hyper_param_search: false,
    is_local_process_zero: true,
    is_world_process_zero: true,
    log_history: history,
    logging_steps: input.loggingSteps ?? t?.logging_steps ?? 500,
    max_steps: maxSteps,
    num_input_tokens_seen: input.numInputTokensSeen ?? 0,
    num_train_epochs: input.numTrainEpochs ?? (t ? Math.ceil(t.num_train_epochs) : 0),
    save_steps: input.saveSteps ?? t?.save_steps ?? 500,
    stateful_callbacks: {
      TrainerControl: {
        args: {
          should_epoch_stop: false,
          should_evaluate: false,
          should_log: false,
          should_save: true,
          should_training_stop: maxSteps > 0 && input.globalStep >= maxSteps,
        },
        attributes: {},
      },
    },
    total_flos: input.totalFlos ?? 0,
    train_batch_size: input.trainBatchSize ?? t?.per_device_train_batch_size ?? null,
    trial_name: null,
    trial_params: null,
  };
}

function sortDeep(v: unknown): unknown {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortDeep(x);
    }
    return out;
  }
  return v;
}

/** json.dumps(..., indent=2, sort_keys=True) + "\n", with non-finite numbers as null. */
export function stringifySorted(value: unknown): string {
  return JSON.stringify(sortDeep(value), null, 2) + "\n";
}

/** Reads trainer_state.json (a file, or a folder holding one) and checks its shape. */
export async function loadTrainerState(fileOrDir: string): Promise<TrainerStateJson> {
  let file = fileOrDir;
  try {
    if ((await stat(fileOrDir)).isDirectory()) file = path.join(fileOrDir, TRAINER_STATE_FILE);
  } catch {
    // reported below
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code === "ENOENT" ? "E_IO" : "E_FORMAT";
    throw new QloraError(code, `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  const s = parsed as Partial<TrainerStateJson>;
  if (!s || typeof s !== "object" || !Array.isArray(s.log_history) || typeof s.global_step !== "number") {
    throw new QloraError("E_FORMAT", `${file} is not a trainer_state.json (needs global_step and log_history)`);
  }
  for (const e of s.log_history) {
    if (!e || typeof e !== "object" || typeof e.step !== "number") {
      throw new QloraError("E_FORMAT", `${file}: a log_history entry has no numeric step`);
    }
    // null stands for a non-finite value in the file
    for (const k of Object.keys(e)) if (e[k] === null) e[k] = Number.NaN;
  }
  return s as TrainerStateJson;
}

/** trainer_state.json of one output folder, rewritten atomically at each write(). */
export class TrainerStateLog {
  readonly path: string;

  constructor(readonly outputDir: string, fileName = TRAINER_STATE_FILE) {
    this.path = path.join(outputDir, fileName);
  }

  /** Writes the state (temp file + rename: readers see the old file or the new one). */
  async write(input: TrainerStateInput): Promise<TrainerStateJson> {
    const state = buildTrainerState(input, this.outputDir);
    await writeFileAtomic(this.path, stringifySorted(state));
    return state;
  }

  /** The state last written, or null when there is none yet. */
  async load(): Promise<TrainerStateJson | null> {
    if (!existsSync(this.path)) return null;
    return loadTrainerState(this.path);
  }
}
