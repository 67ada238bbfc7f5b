// The embedded default job (`npx qlora-native train` with no config): the demo model, the demo
// corpus shipped in assets/demo, NF4 base weights and LoRA, on the CPU, in about two minutes on
// two cores, writing everything to outputs/demo/.
import path from "node:path";
import { packageRoot } from "../native.js";

export const DEMO_OUTPUT_DIR = "outputs/demo";

/** Config overrides (on top of the defaults) for the demo run. */
export function demoConfig(modelDir: string, outputDir: string = DEMO_OUTPUT_DIR): Record<string, Record<string, unknown>> {
  return {
    model: { name_or_path: modelDir, quantization: "nf4", double_quant: true, quant_blocksize: 64, compute_dtype: "float32" },
    data: { dataset: "qlora-native-demo", path: path.join(packageRoot, "assets", "demo"), max_length: 64, packing: true, max_eval_samples: 64 },
    lora: { r: 16, alpha: 32, dropout: 0.05, target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] },
    training: {
      max_steps: 120,
      per_device_train_batch_size: 8,
      per_device_eval_batch_size: 16,
      gradient_accumulation_steps: 1,
      learning_rate: 3e-3,
      lr_scheduler_type: "cosine",
      warmup_ratio: 0.05,
      optim: "adamw_32bit",
      bf16: false,
      logging_steps: 5,
      eval_strategy: "steps",
      eval_steps: 40,
      save_strategy: "steps",
      save_steps: 60,
      seed: 42,
    },
    output: { dir: outputDir, save_total_limit: 2, plot: true },
    advanced: { device: "cpu" },
  };
}
