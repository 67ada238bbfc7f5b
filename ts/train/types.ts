// What the training loop needs from a model, and what it reports. The Qwen2 model (ts/model)
// implements TrainableModel; tests can drive the loop with any object that does.
import type { Batch } from "../data/batches.js";
import type { LoraTensorData, MemoryReport, NativeOptimOptions, TrainStepResult } from "../model/native-model.js";
import type { LossModel } from "./evaluate.js";

export type { OptimizerName, MemoryReport } from "../model/native-model.js";
/** Hyper-parameters of one optimizer step (the model's native options). */
export type OptimOptions = NativeOptimOptions;
/** What one training step reports: loss sum and target count, grad norm, non-finite flag. */
export type StepResult = Pick<TrainStepResult, "lossSum" | "tokens" | "gradNorm" | "nonFinite" | "skipped">;
export type LoraTensor = LoraTensorData;

export interface OptimizerStateBlob {
  step: number;
  tensors: Record<string, Uint8Array>;
}

export interface TrainableModel extends LossModel {
  readonly paramCount: number;
  /** step.allreduce (data parallel): gradients, loss sum and tokens are summed across ranks before the update; then microBatches may be empty (this rank contributes nothing but joins the step) */
  trainStep(microBatches: Batch[], gradScale: number, opt: OptimOptions, step?: { allreduce?: boolean }): Promise<StepResult>;
  getLora(): Promise<Record<string, LoraTensor>>;
  setLora(peftKey: string, data: Float32Array): Promise<void> | void;
  getOptimizerState(): Promise<OptimizerStateBlob>;
  setOptimizerState(state: OptimizerStateBlob): Promise<void> | void;
  memoryReport(): MemoryReport;
}

/** One entry of trainer_state.json's log_history (transformers' field names plus ours). */
export interface LogEntry {
  step: number;
  epoch: number;
  loss?: number;
  learning_rate?: number;
  grad_norm?: number;
  eval_loss?: number;
  eval_perplexity?: number;
  test_loss?: number;
  test_perplexity?: number;
  tokens_per_second?: number;
  peak_memory_bytes?: number;
  [key: string]: number | undefined;
}

export interface TrainEvents {
  /** once, before the first step */
  onStart?(info: { totalSteps: number; startStep: number; effectiveBatch: number; paramCount: number; device: string }): void;
  /** after every optimizer step (for progress bars) */
  onStep?(info: { step: number; totalSteps: number; loss: number; lr: number; tokensPerSecond: number; elapsedSeconds: number; memoryBytes: number }): void;
  onLog?(entry: LogEntry): void;
  onEval?(entry: LogEntry): void;
  onSave?(checkpointDir: string): void;
  onWarning?(message: string): void;
}
