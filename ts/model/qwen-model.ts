// QwenModel: the TypeScript face of the native Qwen2 model (binding/model_wrap.cpp). Every method
// forwards to the native object; heavy calls return promises that settle on the session's queue.
import { QloraError } from "../errors.js";
import type { NativeSession } from "../native.js";
import type { ModelArch } from "./hf-config.js";
import type {
  LoraTensorData,
  LossResult,
  MemoryReport,
  ModelBatch,
  NativeModel,
  NativeModelOptions,
  NativeOptimOptions,
  OptimizerStateBlob,
  OptimizerStepResult,
  TrainStepResult,
} from "./native-model.js";

export class QwenModel {
  #native: NativeModel | null;

  constructor(
    native: NativeModel,
    /** the architecture read from config.json */
    readonly arch: ModelArch,
    /** the options the native model was built with */
    readonly options: NativeModelOptions,
    readonly session: NativeSession,
    /** the folder it was loaded from */
    readonly dir: string,
  ) {
    this.#native = native;
  }

  private get n(): NativeModel {
    if (!this.#native) throw new QloraError("E_DISPOSED", "the model was disposed");
    return this.#native;
  }

  /** the native handle (for tools that need calls not wrapped here) */
  get native(): NativeModel {
    return this.n;
  }

  get paramCount(): number {
    return this.n.paramCount;
  }

  get disposed(): boolean {
    return this.#native === null;
  }

  /** PEFT init (A kaiming-uniform, B zeros) from a seed. */
  initLora(seed: number): Promise<void> {
    return this.n.initLora(seed);
  }

  setLora(peftKey: string, data: Float32Array): Promise<void> {
    return this.n.setLora(peftKey, data);
  }

  /** Sets every tensor of a PEFT adapter (keys as in adapter_model.safetensors). */
  /** Sets many LoRA tensors: a record or a Map (what readAdapter returns) of key -> data. */
  async setLoraAll(tensors: Record<string, { data: Float32Array } | Float32Array> | Map<string, { data: Float32Array } | Float32Array>): Promise<void> {
    if (tensors === null || typeof tensors !== "object") throw new TypeError("setLoraAll: expected a Map or an object of LoRA tensors");
    const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
    for (const [k, v] of entries) await this.n.setLora(k, v instanceof Float32Array ? v : v.data);
  }

  getLora(): Promise<Record<string, LoraTensorData>> {
    return this.n.getLora();
  }

  loraLayout(): { key: string; shape: number[]; offset: number }[] {
    return this.n.loraLayout();
  }

  /** the gradient buffer (layout of loraLayout()) */
  getGrads(): Promise<Float32Array> {
    return this.n.getGrads();
  }

  /** The gradient buffer split by PEFT key. */
  async getLoraGrads(): Promise<Record<string, LoraTensorData>> {
    const g = await this.n.getGrads();
    const out: Record<string, LoraTensorData> = {};
    for (const e of this.n.loraLayout()) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      out[e.key] = { shape: e.shape, data: g.slice(e.offset, e.offset + n) };
    }
    return out;
  }

  zeroGrad(): Promise<void> {
    return this.n.zeroGrad();
  }

  accumulate(batch: ModelBatch, gradScale: number): Promise<LossResult> {
    return this.n.accumulate(batch, gradScale);
  }

  optimizerStep(opt: NativeOptimOptions): Promise<OptimizerStepResult> {
    return this.n.optimizerStep(opt);
  }

  /** zeroGrad + accumulate every micro-batch + optimizerStep, in one native call. */
  trainStep(microBatches: ModelBatch[], gradScale: number, opt: NativeOptimOptions, step?: { allreduce?: boolean }): Promise<TrainStepResult> {
    return step ? this.n.trainStep(microBatches, gradScale, opt, step) : this.n.trainStep(microBatches, gradScale, opt);
  }

  evalLoss(batch: ModelBatch): Promise<LossResult> {
    return this.n.evalLoss(batch);
  }

  logits(batch: ModelBatch): Promise<Float32Array> {
    return this.n.logits(batch);
  }

  getOptimizerState(): Promise<OptimizerStateBlob> {
    return this.n.getOptimizerState();
  }

  setOptimizerState(state: OptimizerStateBlob): Promise<void> {
    return this.n.setOptimizerState(state);
  }

  memoryReport(): MemoryReport {
    return this.n.memoryReport();
  }

  /** Frees the weights, adapters and workspaces (after queued work finished). Idempotent. */
  dispose(): void {
    if (!this.#native) return;
    this.#native.dispose();
    this.#native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
