// The shape of a validated qlora-native configuration: six sections, snake_case keys as in the
// YAML file. Every key is always present after loadConfig (defaults fill the gaps); the schema in
// schema.ts documents each key and is type-checked against these interfaces.

export type Quantization = "nf4" | "none";
export type ComputeDtype = "bfloat16" | "float32";
export type LoraModule = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj";
export type SchedulerType = "linear" | "cosine" | "constant" | "constant_with_warmup";
export type Optimizer = "paged_adamw_32bit" | "adamw_32bit" | "paged_adamw_8bit" | "adamw_torch";
export type IntervalStrategy = "no" | "steps" | "epoch";
export type PaddingMode = "max_length" | "longest";
export type LogLevel = "error" | "warn" | "info" | "debug";

export interface ModelConfig {
  name_or_path: string;
  revision: string;
  tokenizer: string | null;
  quantization: Quantization;
  double_quant: boolean;
  quant_blocksize: number;
  compute_dtype: ComputeDtype;
}

export interface DataConfig {
  dataset: string;
  path: string | null;
  train_split: string;
  eval_split: string | null;
  test_split: string | null;
  text_field: string;
  keep_linebreaks: boolean;
  max_length: number;
  packing: boolean;
  packing_separator: "eos" | "none";
  packing_group_rows: number | null;
  padding: PaddingMode;
  shuffle: boolean;
  max_train_samples: number | null;
  max_eval_samples: number | null;
  add_special_tokens: boolean;
}

export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  target_modules: LoraModule[] | "all-linear";
  use_rslora: boolean;
  init_adapter: string | null;
}

export interface TrainingConfig {
  num_train_epochs: number;
  max_steps: number;
  per_device_train_batch_size: number;
  per_device_eval_batch_size: number;
  gradient_accumulation_steps: number;
  learning_rate: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  max_grad_norm: number;
  lr_scheduler_type: SchedulerType;
  warmup_ratio: number;
  warmup_steps: number;
  optim: Optimizer;
  bf16: boolean;
  gradient_checkpointing: boolean;
  logging_steps: number;
  eval_strategy: IntervalStrategy;
  eval_steps: number;
  eval_on_start: boolean;
  metric_for_best_model: string | null;
  greater_is_better: boolean | null;
  save_strategy: IntervalStrategy;
  save_steps: number;
  seed: number;
  data_seed: number | null;
  resume_from_checkpoint: string | boolean | null;
}

export interface OutputConfig {
  dir: string;
  save_total_limit: number | null;
  plot: boolean;
}

export interface AdvancedConfig {
  device: string;
  num_devices: number;
  threads: number;
  cache_dir: string | null;
  nonfinite_patience: number;
  loss_chunk_tokens: number;
  log_level: LogLevel;
}

export interface QloraConfig {
  model: ModelConfig;
  data: DataConfig;
  lora: LoraConfig;
  training: TrainingConfig;
  output: OutputConfig;
  advanced: AdvancedConfig;
}

/** A config that passed validation: complete, defaults applied, deeply frozen. */
export type ResolvedConfig = {
  readonly [S in keyof QloraConfig]: Readonly<QloraConfig[S]>;
};

export type SectionName = keyof QloraConfig;

/** One validation problem: the key path, what was expected there, what was found. */
export interface ConfigProblem {
  path: string;
  expected: string;
  found: string;
  suggestion?: string;
}
