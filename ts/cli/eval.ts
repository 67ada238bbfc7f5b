// `qlora-native eval --config FILE [--set k=v ...] [--adapter DIR] [--split validation|test]
//   [--device D] [--json]`.
import type { CommandModule } from "yargs";
import { evaluate } from "../api/evaluate.js";
import { loadConfig } from "../config/load.js";
import { QloraError } from "../errors.js";

interface EvalArgs {
  config: string;
  set: string[];
  adapter?: string;
  split: "validation" | "test";
  device?: string;
  json: boolean;
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: "eval",
  describe: "Loss and perplexity of the base model or base + adapter",
  builder: (y) =>
    y
      .option("config", { type: "string", demandOption: true, describe: "YAML config (model, data)" })
      .option("set", { type: "string", array: true, default: [], describe: "override a key: --set data.max_length=256" })
      .option("adapter", { type: "string", describe: "PEFT adapter folder (ours or PEFT-made)" })
      .option("split", { choices: ["validation", "test"] as const, default: "validation" as const })
      .option("device", { type: "string", describe: "cpu, cuda, cuda:N or auto (same as --set advanced.device=...)" })
      .option("json", { type: "boolean", default: false, describe: 'one line {"eval_loss":..,"perplexity":..,"eval_tokens":..}' })
      .example("$0 eval --config configs/qwen2.5-3b-wikitext2.yaml --split test", "base model perplexity")
      .example("$0 eval --config my.yaml --adapter outputs/run1 --json", "with an adapter, machine-readable"),
  handler: async (argv) => {
    const set = argv.device !== undefined ? [...argv.set, `advanced.device=${argv.device}`] : argv.set;
    const config = await loadConfig(argv.config, { set });
    const chatty = !argv.json && (config.advanced.log_level === "info" || config.advanced.log_level === "debug");
    const r = await evaluate({ config, adapter: argv.adapter, split: argv.split, onInfo: chatty ? (l) => console.log(l) : undefined });
    if (argv.json) process.stdout.write(JSON.stringify({ eval_loss: r.eval_loss, perplexity: r.perplexity, eval_tokens: r.eval_tokens }) + "\n");
    else console.log(`${r.split}: eval_loss ${r.eval_loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(3)} over ${r.eval_tokens} tokens${r.adapter ? ` (adapter ${r.adapter})` : " (base model)"}`);
    if (!Number.isFinite(r.eval_loss)) throw new QloraError("E_NONFINITE", `the ${r.split} loss is not finite (${r.eval_loss}): the model produced NaN or Inf`);
  },
};
