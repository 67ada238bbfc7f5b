// Types of the native Qwen2 model (binding/model_wrap.cpp), exported by the addon as `Model`.
// Heavy calls run on the session's ordered queue and return promises; argument checks throw a
// QloraError synchronously (E_ARG, E_SHAPE, E_DTYPE, ...).
import type { NativeSession } from "../native.js";
import type { Nf4HostWeight } from "../nf4/bnb.js";

export type LoraTarget = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj";
export const LORA_TARGETS: readonly LoraTarget[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

export interface NativeLoraOptions {
  r: number;
  alpha: number;
  /** dropout probability on the input of A (0 = off) */
  dropout: number;
  targets: LoraTarget[];
  /** scale alpha / sqrt(r) instead of alpha / r */
  useRslora: boolean;
  /** seeds initLora's default and the dropout streams */
  seed: number;
}

/** The architecture fields of config.json the graph needs (camelCase). */
export interface ModelShape {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
}

export interface NativeModelOptions extends ModelShape {
  /** "f32": everything fp32 (CPU reference); "bf16": bf16 weights/activations, fp32 accumulation */
  computeDtype: "f32" | "bf16";
  /** "nf4": decoder linear weights quantized while loading; "none": dense base weights */
  quantization: "nf4" | "none";
  quantBlocksize: number;
  doubleQuant: boolean;
  gradientCheckpointing: boolean;
  lora: NativeLoraOptions;
}

/** A batch as the data pipeline makes it (row-major [batchSize * seqLen]). */
export interface ModelBatch {
  inputIds: Int32Array;
  attentionMask: Int32Array | Uint8Array;
  /** -100 = ignored; shifted inside: logits at t predict labels[t + 1] */
  labels?: Int32Array;
  batchSize: number;
  seqLen: number;
  /** default arange(seqLen) for every row */
  positionIds?: Int32Array;
}

export type OptimizerName = "adamw_32bit" | "paged_adamw_32bit" | "paged_adamw_8bit";

export interface NativeOptimOptions {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** <= 0 disables clipping */
  maxGradNorm: number;
  optim: OptimizerName;
}

export interface LossResult {
  /** sum of token cross-entropies over the non-ignored shifted targets */
  lossSum: number;
  /** number of those targets */
  tokens: number;
}

export interface OptimizerStepResult {
  /** global L2 norm of the gradients before clipping */
  gradNorm: number;
  clipped: boolean;
  nonFinite: boolean;
  /** true when the update was skipped (non-finite gradients): parameters unchanged */
  skipped: boolean;
}

export type TrainStepResult = LossResult & OptimizerStepResult;

export interface LoraTensorData {
  shape: number[];
  data: Float32Array;
}

/** bitsandbytes 4-bit parts of one linear weight: ts/nf4's host weight (readNf4Weight). Plain:
 * `absmax` f32; double quant: `absmaxQ` u8 + nestedAbsmax, nestedMap, nestedOffset. */
export type Nf4Parts = Pick<Nf4HostWeight, "shape" | "blocksize" | "codes" | "absmax" | "absmaxQ" | "nestedAbsmax" | "nestedMap" | "nestedOffset" | "nestedBlocksize" | "quantMap">;

export interface ExpectedWeight {
  name: string;
  shape: number[];
  /** a decoder linear weight (may be given as NF4 parts) */
  linear: boolean;
}

export interface MemoryReport {
  weights: number;
  adapters: number;
  optimizer: number;
  activations: number;
  peak: number;
}

export interface OptimizerStateBlob {
  step: number;
  tensors: Record<string, Uint8Array>;
}

export interface NativeModel {
  readonly paramCount: number;
  readonly disposed: boolean;
  /** every weight finalizeLoad expects, with its shape */
  expectedWeights(): ExpectedWeight[];
  setWeight(hfName: string, dtype: "f32" | "bf16" | "f16", shape: number[], data: Uint8Array): Promise<void>;
  setNf4Weight(hfName: string, parts: Nf4Parts): Promise<void>;
  finalizeLoad(): Promise<void>;
  initLora(seed: number): Promise<void>;
  setLora(peftKey: string, data: Float32Array): Promise<void>;
  getLora(): Promise<Record<string, LoraTensorData>>;
  /** PEFT keys in the buffer's layout order, with shapes and offsets (elements) */
  loraLayout(): { key: string; shape: number[]; offset: number }[];
  zeroGrad(): Promise<void>;
  accumulate(batch: ModelBatch, gradScale: number): Promise<LossResult>;
  optimizerStep(opt: NativeOptimOptions): Promise<OptimizerStepResult>;
  /** step.allreduce: sum gradients, loss sum and tokens across MPI ranks before the optimizer step (data parallel); only then may microBatches be empty */
  trainStep(microBatches: ModelBatch[], gradScale: number, opt: NativeOptimOptions, step?: { allreduce?: boolean }): Promise<TrainStepResult>;
  evalLoss(batch: ModelBatch): Promise<LossResult>;
  /** [batchSize * seqLen * vocab] fp32 logits (parity tests; small models only) */
  logits(batch: ModelBatch): Promise<Float32Array>;
  /** the gradient buffer, in the layout of loraLayout() */
  getGrads(): Promise<Float32Array>;
  getOptimizerState(): Promise<OptimizerStateBlob>;
  setOptimizerState(state: OptimizerStateBlob): Promise<void>;
  memoryReport(): MemoryReport;
  dispose(): void;
}

export interface NativeModelClass {
  new (session: NativeSession, opts: NativeModelOptions): NativeModel;
}
