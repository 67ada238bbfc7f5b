// The config schema: every key of every section with its type, default, allowed values or range,
// and a doc string. The defaults reproduce the flagship job: QLoRA of Qwen2.5-3B on WikiText-2 raw,
// NF4 with double quantization, bf16 compute, paged AdamW, LoRA r=16 on all seven linear modules.
// The type annotation makes the compiler check that the schema covers exactly the keys of QloraConfig.

import type { QloraConfig, SectionName } from "./types.js";
import { bool, custom, int, intIn, isInt, nullable, num, oneOf, stepsOrFraction, str, type FieldSpec } from "./fields.js";

export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

export type ConfigSchema = {
  readonly [S in SectionName]: { readonly [K in keyof QloraConfig[S]]-?: FieldSpec<QloraConfig[S][K]> };
};

const DEVICE_RE = /^(auto|cpu|cuda|cuda:(0|[1-9][0-9]{0,2}))$/;

const targetModules = custom<QloraConfig["lora"]["target_modules"]>(
  [...LORA_MODULES],
  "Linear layers that get LoRA adapters: a list drawn from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or \"all-linear\".",
  `a non-empty list of distinct names from ${LORA_MODULES.join(", ")}, or "all-linear"`,
  (v) =>
    v === "all-linear" ||
    (Array.isArray(v) &&
      v.length > 0 &&
      new Set(v).size === v.length &&
      v.every((m) => typeof m === "string" && (LORA_MODULES as readonly string[]).includes(m))),
);

export const SCHEMA: ConfigSchema = {
  model: {
    name_or_path: str("Qwen/Qwen2.5-3B", "A local model folder, or a hub id looked up in the Hugging Face cache (HF_HUB_CACHE, HF_HOME, ~/.cache/huggingface/hub)."),
    revision: str("main", "Hub revision: a branch or tag name (resolved through refs/) or a 40-hex commit hash."),
    tokenizer: nullable(str("", ""), null, "Folder holding tokenizer.json and tokenizer_config.json; null uses the model folder."),
    quantization: oneOf(["nf4", "none"] as const, "nf4", "Base weight format: NF4 4-bit (QLoRA) or none (dense base weights in model.compute_dtype: plain LoRA)."),
    double_quant: bool(true, "Quantize the NF4 absmax constants again to 8 bits (QLoRA double quantization)."),
    quant_blocksize: intIn([32, 64, 128, 256, 512, 1024, 2048, 4096], 64, "Weights per NF4 absmax block."),
    compute_dtype: oneOf(["bfloat16", "float32"] as const, "bfloat16", "Dtype NF4 weights are dequantized to for the matrix multiplications."),
  },
  data: {
    dataset: str("wikitext-2-raw-v1", "Dataset name: a WikiText config (wikitext-2-raw-v1, wikitext-103-raw-v1, ...) or a hub dataset id Org/Name looked up in the HF cache when data.path is null."),
    path: nullable(str("", ""), null, "A folder (wiki.*.raw, *.parquet, *.txt or *.jsonl split files) or a single file used as the train split; null looks in the HF cache."),
    train_split: str("train", "Split used for training. Split names map across layouts: validation = valid = val = eval = dev; train = training; test = testing."),
    eval_split: nullable(str("", ""), "validation", "Split used for evaluation during training; null disables it."),
    test_split: nullable(str("", ""), "test", "Split evaluated after the last training step (test_loss and test_perplexity in trainer_state.json) and by eval --split test; null disables it."),
    text_field: str("text", "Field holding the text in .jsonl and parquet files."),
    keep_linebreaks: bool(false, "Keep each line's line break in .txt rows (what run_clm.py's keep_linebreaks asks of the HF text loader); false drops it, as the loader does by default."),
    max_length: int(512, "Tokens per training sequence: rows are truncated to it (padding mode) or cut into blocks of it (packing). 512 holds every WikiText-2 validation paragraph whole (the longest has 503 Qwen tokens).", { min: 2, max: 131072 }),
    packing: bool(false, "Pack rows into full max_length blocks, no padding (how rows are joined and grouped: packing_separator, packing_group_rows), instead of one padded row per sequence."),
    packing_separator: oneOf(["eos", "none"] as const, "eos", "With packing: eos puts an EOS token between rows (blank rows left out); none concatenates the tokens of every row, whitespace rows included, as run_clm.py's group_texts does."),
    packing_group_rows: nullable(int(1000, "", { min: 1 }), null, "With packing: null packs the whole split as one stream (only its last partial block dropped); N packs every N rows on their own and drops each group's partial block, as run_clm.py's group_texts under datasets.map(batched=True) does (its batch is 1000 rows; with packing_separator none that gives run_clm's exact blocks)."),
    padding: oneOf(["max_length", "longest"] as const, "max_length", "Pad each batch to max_length (as the seed formulation does) or to its longest row (same loss, less compute)."),
    shuffle: bool(true, "Shuffle the training examples each epoch (seeded by training.data_seed or training.seed)."),
    max_train_samples: nullable(int(1, "", { min: 1 }), null, "Keep only the first N training examples (after tokenization); null keeps all."),
    max_eval_samples: nullable(int(1, "", { min: 1 }), null, "Keep only the first N examples of the eval and test splits; null keeps all."),
    add_special_tokens: bool(true, "Put the tokenizer's own special tokens around each row (e.g. Llama's BOS), as transformers' tokenizer(text) does; Qwen's tokenizer adds none."),
  },
  lora: {
    r: int(16, "LoRA rank.", { min: 1, max: 4096 }),
    alpha: num(32, "LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with use_rslora).", { above: 0 }),
    dropout: num(0.05, "Dropout on the input of the LoRA A matrix.", { min: 0, below: 1 }),
    target_modules: targetModules,
    use_rslora: bool(false, "Rank-stabilized LoRA: scale by alpha/sqrt(r) instead of alpha/r."),
    init_adapter: nullable(str("", ""), null, "A PEFT adapter folder (ours or PEFT-made) to continue training from: its weights start training and its r, alpha, use_rslora and adapted modules replace those above; null starts from PEFT's initialisation."),
  },
  training: {
    num_train_epochs: num(3, "Epochs over the training split (ignored when max_steps > 0).", { above: 0 }),
    max_steps: custom(-1, "Total optimizer steps; -1 derives them from num_train_epochs.", "-1 or an integer >= 1", (v) => isInt(v) && (v === -1 || v >= 1)),
    per_device_train_batch_size: int(8, "Sequences per micro-batch on each device.", { min: 1 }),
    per_device_eval_batch_size: int(8, "Sequences per evaluation batch on each device.", { min: 1 }),
    gradient_accumulation_steps: int(1, "Micro-batches accumulated per optimizer step.", { min: 1 }),
    learning_rate: num(2e-4, "Peak learning rate (2e-4 is the usual QLoRA value).", { above: 0, max: 1 }),
    weight_decay: num(0, "AdamW decoupled weight decay.", { min: 0, max: 1 }),
    adam_beta1: num(0.9, "AdamW beta1.", { min: 0, below: 1 }),
    adam_beta2: num(0.999, "AdamW beta2.", { min: 0, below: 1 }),
    adam_epsilon: num(1e-8, "AdamW epsilon.", { above: 0, max: 1 }),
    max_grad_norm: num(1.0, "Clip the global gradient norm to this value; 0 disables clipping.", { min: 0 }),
    lr_scheduler_type: oneOf(["linear", "cosine", "constant", "constant_with_warmup"] as const, "linear", "Learning-rate schedule after warmup."),
    warmup_ratio: num(0.03, "Fraction of the total steps spent warming up linearly (used when warmup_steps is 0).", { min: 0, max: 1 }),
    warmup_steps: num(0, "Warmup steps; overrides warmup_ratio when > 0. A value below 1 is a fraction of the total steps (ceil(fraction x steps)), as transformers reads it.", { min: 0 }),
    optim: oneOf(["paged_adamw_32bit", "adamw_32bit", "paged_adamw_8bit", "adamw_torch"] as const, "paged_adamw_32bit", "Optimizer: AdamW (torch semantics) with fp32 state paged to host memory under pressure (paged_adamw_32bit), kept on the device (adamw_32bit; adamw_torch is an alias), or blockwise 8-bit paged state (paged_adamw_8bit)."),
    bf16: bool(true, "bf16 mixed precision (requires model.compute_dtype bfloat16)."),
    gradient_checkpointing: bool(true, "Recompute each layer's activations in the backward pass instead of storing them."),
    logging_steps: stepsOrFraction(10, "Log loss, learning rate and gradient norm every N optimizer steps (below 1: that fraction of the total steps, rounded up, as transformers)."),
    eval_strategy: oneOf(["no", "steps", "epoch"] as const, "steps", "When to evaluate on data.eval_split: every eval_steps, every epoch, or never."),
    eval_steps: stepsOrFraction(500, "Evaluate every N optimizer steps (eval_strategy steps; below 1: that fraction of the total steps, rounded up)."),
    eval_on_start: bool(true, "Evaluate once before the first step (a step-0 eval entry; not on a resume). transformers' default is false; ours is true so a run reports its loss before and after."),
    metric_for_best_model: nullable(oneOf(["eval_loss", "loss", "eval_perplexity", "perplexity"] as const, "eval_loss", ""), null, "Eval metric that picks best_metric / best_global_step / best_model_checkpoint in trainer_state.json (eval_loss or eval_perplexity; \"loss\" and \"perplexity\" mean those), and whose best checkpoint save_total_limit never deletes, as transformers does; null leaves them null (transformers' default)."),
    greater_is_better: nullable(bool(false, ""), null, "Whether a larger metric_for_best_model is better; null: false (lower loss and perplexity are better; transformers' default is true for any metric not ending in loss, which would pick the worst perplexity)."),
    save_strategy: oneOf(["no", "steps", "epoch"] as const, "steps", "When to write checkpoint-N/ folders: every save_steps, every epoch, or never."),
    save_steps: stepsOrFraction(500, "Save a checkpoint every N optimizer steps (save_strategy steps; below 1: that fraction of the total steps, rounded up)."),
    seed: int(42, "Seed for LoRA initialization, dropout and (unless data_seed is set) data order.", { min: 0, max: 4294967295 }),
    data_seed: nullable(int(0, "", { min: 0, max: 4294967295 }), null, "Seed for the data order; null uses seed."),
    resume_from_checkpoint: custom<string | boolean | null>(null, "Resume from a checkpoint folder, true for the latest checkpoint in output.dir, or null/false to start fresh.", "a checkpoint folder path, true, false or null", (v) => v === null || typeof v === "boolean" || (typeof v === "string" && v.trim() !== "")),
  },
  output: {
    dir: str("outputs/qwen2.5-3b-wikitext2", "Output folder: adapter, trainer_state.json, curves, config.resolved.yaml, checkpoints."),
    save_total_limit: nullable(int(1, "", { min: 1 }), 2, "Keep at most N checkpoint folders, deleting the oldest first; the best checkpoint (training.metric_for_best_model) is never deleted, so N + 1 can remain (with N = 1 only it remains after the last step, as in transformers); null keeps all."),
    plot: bool(true, "Write training_curves.html and training_curves.svg."),
  },
  advanced: {
    device: custom("auto", "auto (a CUDA device when one is available, else cpu), cpu, cuda, or cuda:N.", '"auto", "cpu", "cuda" or "cuda:N" (N a device index)', (v) => typeof v === "string" && DEVICE_RE.test(v)),
    num_devices: int(1, "Checked only (1 on the CPU or with a cuda:N device): data parallel starts with train --nproc N or mpirun, one device per rank.", { min: 1, max: 64 }),
    threads: int(0, "CPU threads for the CPU backend and tokenization; 0 uses all cores.", { min: 0, max: 1024 }),
    cache_dir: nullable(str("", ""), null, "Folder for the tokenized-data cache; null uses $XDG_CACHE_HOME/qlora-native/tokens or ~/.cache/qlora-native/tokens."),
    nonfinite_patience: int(5, "Stop after this many consecutive steps with a non-finite loss or gradient (such steps are skipped).", { min: 1 }),
    loss_chunk_tokens: int(4096, "No effect (kept so older configs load): the LM head + cross-entropy runs over vocabulary chunks, sized by QN_MODEL_HEAD_VOCAB_CHUNK / QN_MODEL_HEAD_CHUNK_MB.", { min: 256, max: 1048576 }),
    log_level: oneOf(["error", "warn", "info", "debug"] as const, "info", "Console output of train and eval: info (progress, logs, checkpoints), warn (warnings, errors and the summary only), error (no warnings), debug (info plus stack traces with errors)."),
  },
};

export const SECTIONS = Object.keys(SCHEMA) as SectionName[];

/** Documentation of the sections themselves, used as comments in generated YAML. */
export const SECTION_DOCS: { readonly [S in SectionName]: string } = {
  model: "Base model and its quantization.",
  data: "Dataset location, splits and how rows become sequences.",
  lora: "LoRA adapters.",
  training: "Optimization (names follow Hugging Face TrainingArguments).",
  output: "Where results go.",
  advanced: "Devices, threads, caches and safety valves.",
};

/** A fresh, mutable copy of the default configuration. */
export function defaultConfig(): QloraConfig {
  const out: Record<string, Record<string, unknown>> = {};
  for (const section of SECTIONS) {
    const fields: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(SCHEMA[section]) as [string, FieldSpec][]) {
      fields[key] = structuredClone(field.default);
    }
    out[section] = fields;
  }
  return out as unknown as QloraConfig;
}
