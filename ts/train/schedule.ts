// Learning-rate schedules with transformers' exact formulas (optimization.py, get_scheduler):
// lr(k) = peak * lambda(k) for the 0-based optimizer update k (the lr that update k uses, i.e.
// scheduler.get_last_lr() before scheduler.step() number k). With w warmup steps and S updates:
//   warmup (k < w, all but "constant"):  k / max(1, w)
//   linear:                max(0, (S - k) / max(1, S - w))
//   cosine:                max(0, 0.5 * (1 + cos(pi * 2 * 0.5 * (k - w) / max(1, S - w))))
//   constant:              1 (ignores warmup)
//   constant_with_warmup:  1 after warmup
import type { SchedulerType } from "../config/types.js";
import { QloraError } from "../errors.js";

export interface ScheduleOptions {
  type: SchedulerType;
  /** the configured learning_rate */
  peak: number;
  /** S: optimizer updates of the whole run */
  totalSteps: number;
  /** w: from warmupStepsFrom */
  warmupSteps: number;
}

const TYPES: readonly SchedulerType[] = ["linear", "cosine", "constant", "constant_with_warmup"];

/** transformers' lr_lambda for update k (the multiplier of the peak lr). */
export function lrFactor(k: number, o: Omit<ScheduleOptions, "peak">): number {
  if (!TYPES.includes(o.type)) {
    throw new QloraError("E_ARG", `unknown lr scheduler "${String(o.type)}"; expected one of ${TYPES.join(", ")}`);
  }
  if (!Number.isInteger(k) || k < 0) throw new QloraError("E_ARG", `lr schedule: step must be an integer >= 0, got ${k}`);
  const S = o.totalSteps;
  const w = o.warmupSteps;
  if (o.type === "constant") return 1.0;
  if (k < w) return k / Math.max(1, w);
  switch (o.type) {
    case "linear":
      return Math.max(0.0, (S - k) / Math.max(1, S - w));
    case "cosine": {
      const progress = (k - w) / Math.max(1, S - w);
      // num_cycles = 0.5: pi * num_cycles * 2.0 * progress, evaluated left to right as Python does
      return Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * 0.5 * 2.0 * progress)));
    }
    default:
      return 1.0;
  }
}

/** The learning rate of optimizer update k (0-based): peak * lambda(k), as torch's LambdaLR. */
export function lrAt(k: number, o: ScheduleOptions): number {
  return o.peak * lrFactor(k, o);
}

/** transformers' TrainingArguments.get_warmup_steps: warmup_steps when >= 1, a fraction of S
 *  when in (0, 1) (transformers 5), else warmup_ratio's ceil(ratio * S) (transformers 4). */
export function warmupStepsFrom(warmupSteps: number, warmupRatio: number, totalSteps: number): number {
  if (warmupSteps >= 1) return Math.floor(warmupSteps);
  if (warmupSteps > 0) return Math.ceil(totalSteps * warmupSteps);
  return Math.ceil(totalSteps * warmupRatio);
}

/** transformers' TrainerState.compute_steps: a *_steps value below 1 is ceil(fraction * S). */
export function stepsFrom(steps: number, totalSteps: number): number {
  return steps < 1 ? Math.ceil(totalSteps * steps) : steps;
}
