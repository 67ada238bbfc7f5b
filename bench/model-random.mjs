// Writes a random Qwen2-family model folder (config.json + model.safetensors, bf16) of a given
// shape, for benchmarks (the code lives in ts/bench/random-model.ts; `qlora-native bench e2e`
// uses it too). Needs dist/ (npm run build:ts).
//
//   node bench/model-random.mjs <dir> [--preset qwen2.5-0.5b|qwen2.5-3b|tiny]
import { fileURLToPath } from "node:url";
import { MODEL_PRESETS, qwenConfig, writeRandomQwen } from "../dist/bench/random-model.js";

export const PRESETS = MODEL_PRESETS;
export { qwenConfig, writeRandomQwen };

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  const i = process.argv.indexOf("--preset");
  const preset = i > 0 ? process.argv[i + 1] : "qwen2.5-0.5b";
  if (!dir || !PRESETS[preset]) {
    console.error(`usage: node bench/model-random.mjs <dir> [--preset ${Object.keys(PRESETS).join("|")}]`);
    process.exit(2);
  }
  await writeRandomQwen(dir, PRESETS[preset]);
  console.log(`wrote ${preset} to ${dir}`);
}
