// `qlora-native quantize --model DIR --out DIR [--blocksize 64] [--no-double-quant] [--device auto]`:
// streams an HF checkpoint to a bitsandbytes-NF4 checkpoint (ts/nf4/quantize.ts) and prints the
// bits per parameter of the quantized weights.
import type { CommandModule } from "yargs";
import { quantizeCheckpoint, type QuantizeProgress } from "../nf4/quantize.js";

interface QuantizeArgs {
  model: string;
  out: string;
  blocksize: number;
  "double-quant": boolean;
  device: string;
  json: boolean;
}

const gb = (b: number) => (b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${(b / 1e6).toFixed(1)} MB`);
const params = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(2)}M`);

export const quantizeCommand: CommandModule<object, QuantizeArgs> = {
  command: "quantize",
  describe: "Quantize an HF checkpoint's linear weights to bitsandbytes NF4 (an HF load_in_4bit folder)",
  builder: (y) =>
    y
      .option("model", { type: "string", demandOption: true, describe: "HF checkpoint folder (safetensors, sharded or not; bf16/f16/f32)" })
      .option("out", { type: "string", demandOption: true, describe: "output folder (must not exist, or be empty)" })
      .option("blocksize", { type: "number", default: 64, describe: "NF4 block size: a power of two in 32..4096" })
      .option("double-quant", { type: "boolean", default: true, describe: "8-bit double quantization of the block scales (--no-double-quant keeps f32 scales)" })
      .option("device", { type: "string", default: "auto", describe: "auto, cpu, cuda or cuda:N" })
      .option("json", { type: "boolean", default: false, describe: "print the summary as one JSON object" })
      .example("$0 quantize --model Qwen2.5-3B --out Qwen2.5-3B-nf4", "NF4, blocksize 64, double quant")
      .example("$0 quantize --model m --out m-nf4 --blocksize 128 --no-double-quant", "f32 block scales"),
  handler: async (argv) => {
    const tty = process.stderr.isTTY && !argv.json;
    const progress = (p: QuantizeProgress) => {
      if (!tty) return;
      const pct = p.bytesTotal ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 100;
      const line = `[${p.index}/${p.total}] ${pct}% ${p.action} ${p.name}`;
      process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns || 120) - 1)}`);
    };
    const r = await quantizeCheckpoint({
      model: argv.model,
      out: argv.out,
      blocksize: argv.blocksize,
      doubleQuant: argv["double-quant"],
      device: argv.device,
      onProgress: progress,
    });
    if (tty) process.stderr.write("\r\x1b[2K");
    if (argv.json) {
      process.stdout.write(JSON.stringify(r) + "\n");
      return;
    }
    process.stdout.write(
      `quantized ${r.quantizedTensors} linear weights (${params(r.quantizedParams)} parameters) to NF4 ` +
        `(blocksize ${argv.blocksize}${argv["double-quant"] ? ", double quant" : ""}) on ${r.device} in ${r.seconds.toFixed(1)} s\n` +
        `${r.bitsPerParam.toFixed(3)} bits/param for the quantized weights; ${r.copiedTensors} tensors copied unchanged; ` +
        `checkpoint ${gb(r.inputBytes)} -> ${gb(r.outputBytes)}\n` +
        `wrote ${r.out}\n`,
    );
  },
};
