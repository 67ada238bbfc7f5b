// evaluate(): loss and perplexity of the base model, or base + a PEFT adapter (ours or PEFT-made),
// on a split of the configured data set. Behind `qlora-native eval`.
import { loadConfig, validateConfig } from "../config/load.js";
import type { ResolvedConfig } from "../config/types.js";
import { assertHasTargets, buildExampleSets } from "../data/loader.js";
import { prepareDataset } from "../data/prepare.js";
import { resolveDevice } from "../device.js";
import { QloraError } from "../errors.js";
import { adapterTargets, readAdapter } from "../train/adapter.js";
import { evaluateExamples, type EvalResult } from "../train/evaluate.js";
import { openModelFor } from "./train.js";

export interface EvaluateOptions {
  /** a config object (validated like a file: missing keys take their defaults), or a YAML path plus overrides */
  config?: ResolvedConfig | Record<string, unknown>;
  configPath?: string;
  set?: string[];
  /** folder with adapter_model.safetensors + adapter_config.json */
  adapter?: string;
  /** "validation" (the config's eval split, default) or "test" */
  split?: "validation" | "test";
  signal?: AbortSignal;
  onInfo?(line: string): void;
}

export async function evaluate(options: EvaluateOptions = {}): Promise<EvalResult & { split: string; adapter: string | null }> {
  // a config object is validated like a file (defaults filled in, bad values named)
  let config = options.config ? validateConfig(options.config) : await loadConfig(options.configPath, { set: options.set });
  if (options.split !== undefined && options.split !== "validation" && options.split !== "test")
    throw new QloraError("E_ARG", `evaluate: split must be "validation" or "test", got ${JSON.stringify(options.split)}`);
  const info = options.onInfo ?? (() => {});
  let adapter = null;
  if (options.adapter) {
    adapter = await readAdapter(options.adapter);
    const c = adapter.config;
    const targets = adapterTargets(adapter, options.adapter);
    // The adapter's own shape decides the LoRA layout the model is built with.
    config = { ...config, lora: { ...config.lora, r: c.r, alpha: c.lora_alpha, dropout: 0, use_rslora: c.use_rslora, target_modules: targets as ResolvedConfig["lora"]["target_modules"] } };
  }
  const split = options.split ?? "validation";
  const wanted = split === "test" ? config.data.test_split : config.data.eval_split;
  if (wanted === null) throw new QloraError("E_DATA", `the data set has no ${split} split (data.${split === "test" ? "test_split" : "eval_split"} is null)`);
  // Only the evaluated split is read and tokenized: the train split points at the same files (one
  // tokenization, shared by cache key) and the other split is off.
  config = { ...config, data: { ...config.data, train_split: wanted, ...(split === "test" ? { eval_split: null } : { test_split: null }) } };
  const device = resolveDevice(config.advanced.device, info);
  const prepared = await prepareDataset(config, { log: info });
  const sets = buildExampleSets(prepared, config);
  const examples = split === "test" ? sets.test : sets.eval;
  if (!examples) throw new QloraError("E_DATA", `the data set has no ${split} split (data.${split === "test" ? "test_split" : "eval_split"})`);
  assertHasTargets(examples, `${split} split`, config);
  const { model, session } = await openModelFor(config, device, info);
  try {
    if (adapter) {
      const expected = new Set(model.loraLayout().map((l) => l.key));
      for (const [key, w] of adapter.loraWeights) {
        if (!expected.has(key)) throw new QloraError("E_FORMAT", `${options.adapter}: adapter tensor ${key} does not match the model (expected keys like ${[...expected][0]})`);
        await model.setLora(key, w.data);
      }
      info(`adapter ${options.adapter}: ${adapter.loraWeights.size} tensors, r=${adapter.config.r}, alpha=${adapter.config.lora_alpha}`);
    } else {
      // PEFT initialisation keeps B = 0, so the model computes the base model exactly.
      info("no adapter: evaluating the base model");
    }
    const r = await evaluateExamples(model, examples, { batchSize: config.training.per_device_eval_batch_size, padId: prepared.tokenizer.padId, padding: config.data.padding, signal: options.signal });
    return { ...r, split, adapter: options.adapter ?? null };
  } finally {
    model.dispose();
    session.dispose();
  }
}
