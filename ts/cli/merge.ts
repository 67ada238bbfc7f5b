// `qlora-native merge --adapter DIR --out DIR [--model DIR|HUB_ID] [--revision REV] [--json]`.
import type { CommandModule } from "yargs";
import { merge } from "../api/merge.js";

interface MergeArgs {
  adapter: string;
  out: string;
  model?: string;
  revision?: string;
  json: boolean;
}

export const mergeCommand: CommandModule<object, MergeArgs> = {
  command: "merge",
  describe: "Fold a LoRA adapter into its base model: W' = W + (alpha/r) B A, saved as an HF bf16 checkpoint",
  builder: (y) =>
    y
      .option("adapter", { type: "string", demandOption: true, describe: "folder with adapter_model.safetensors + adapter_config.json" })
      .option("out", { type: "string", demandOption: true, describe: "output folder (HF layout, bf16); new or empty, never an input folder" })
      .option("model", { type: "string", describe: "base model folder or hub id (default: the adapter's base_model_name_or_path)" })
      .option("revision", { type: "string", describe: "hub revision of a hub-id base (default: the adapter's revision, else main)" })
      .option("json", { type: "boolean", default: false })
      .example("$0 merge --adapter outputs/demo --out outputs/demo-merged", "merge the demo adapter"),
  handler: async (argv) => {
    const r = await merge({ adapter: argv.adapter, out: argv.out, model: argv.model, revision: argv.revision, onInfo: argv.json ? undefined : (l) => console.log(l) });
    if (argv.json) process.stdout.write(JSON.stringify({ out: r.out, merged_tensors: r.mergedTensors, scale: r.scale }) + "\n");
  },
};
