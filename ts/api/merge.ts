// merge(): folds a LoRA adapter into its base model, W' = W + s B A (s = alpha/r, or
// alpha/sqrt(r) with rsLoRA), and writes an HF checkpoint in bf16 that transformers loads
// without PEFT. The base may be dense (bf16/f16/f32) or bnb 4-bit (dequantized first). Streams
// tensor by tensor; the output folder appears atomically (temp folder, then rename).
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { resolveModelPath } from "../config/resolve-model.js";
import { QloraError } from "../errors.js";
import { checkNewOutputFolder, copyNonWeightFiles, hfConfigJson } from "../io/hf-files.js";
import { Checkpoint, fromFloat32, SafetensorsWriter, toFloat32, type StEntry } from "../io/safetensors.js";
import { native } from "../native.js";
import { dequantizeNf4Host, isBnbAuxiliary, readNf4Weight } from "../nf4/bnb.js";
import { nf4Tables } from "../nf4/native-ops.js";
import { loraScaling, readAdapter, type LoraWeight } from "../train/adapter.js";
import { openSession } from "../tensor.js";

export interface MergeOptions {
  /** base model folder or hub id (defaults to the adapter's base_model_name_or_path) */
  model?: string;
  adapter: string;
  /** hub revision of a hub-id base (defaults to the adapter's `revision`, else "main") */
  revision?: string;
  /** a new or empty folder (never one of the inputs) */
  out: string;
  onInfo?(line: string): void;
}

export interface MergeResult {
  out: string;
  mergedTensors: number;
  scale: number;
}

/** PEFT key "base_model.model.<P>.lora_A.weight" -> base weight name "<P>.weight". */
function baseNameOf(peftKey: string): { base: string; which: "A" | "B" } {
  const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(peftKey);
  if (!m) throw new QloraError("E_FORMAT", `unexpected adapter key ${peftKey}`);
  return { base: `${m[1]}.weight`, which: m[2] as "A" | "B" };
}

export async function merge(options: MergeOptions): Promise<MergeResult> {
  if (!options || typeof options.adapter !== "string" || typeof options.out !== "string")
    throw new QloraError("E_ARG", "merge: options { adapter: string, out: string, model?, revision? } are required");
  const info = options.onInfo ?? (() => {});
  const adapter = await readAdapter(options.adapter);
  const modelRef = options.model ?? adapter.config.base_model_name_or_path;
  if (!modelRef) throw new QloraError("E_ARG", `merge: give --model (the adapter in ${options.adapter} does not name its base model)`);
  const revision = options.revision ?? (typeof adapter.config.revision === "string" ? adapter.config.revision : "main");
  const modelDir = resolveModelPath(modelRef, revision);
  checkNewOutputFolder(options.out, [
    { label: "--model", dir: modelDir },
    { label: "--adapter", dir: options.adapter },
  ]);
  const scale = loraScaling(adapter.config);
  const pairs = new Map<string, { A?: LoraWeight; B?: LoraWeight }>();
  for (const [key, w] of adapter.loraWeights) {
    const { base, which } = baseNameOf(key);
    const p = pairs.get(base) ?? {};
    p[which] = w;
    pairs.set(base, p);
  }
  const ckpt = await Checkpoint.open(modelDir);
  const out = path.resolve(options.out);
  const tmp = `${out}.tmp-${process.pid}`;
  const session = openSession("cpu");
  try {
    const names = ckpt.names().filter((n) => !isBnbAuxiliary(n));
    for (const base of pairs.keys()) {
      if (!ckpt.has(base)) throw new QloraError("E_FORMAT", `${modelDir}: the adapter targets ${base}, which the base model does not have`);
    }
    const entries: StEntry[] = names.map((n) => {
      const i = ckpt.info(n);
      const quantized = ckpt.has(`${n}.quant_state.bitsandbytes__nf4`);
      const shape = quantized ? undefined : i.shape;
      return { name: n, dtype: "BF16" as const, shape: shape ?? [] };
    });
    // bnb 4-bit weights keep their logical shape in the quant state: read it before writing the header.
    for (const e of entries) {
      if (e.shape.length === 0 && ckpt.has(`${e.name}.quant_state.bitsandbytes__nf4`)) {
        const w = await readNf4Weight(ckpt, e.name, nf4Tables().codes);
        e.shape = [...w.shape];
      }
    }
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true }); // and out's parent folders
    const writer = await SafetensorsWriter.create(path.join(tmp, "model.safetensors"), entries, { format: "pt" });
    let merged = 0;
    try {
      for (const e of entries) {
        let w: Float32Array;
        if (ckpt.has(`${e.name}.quant_state.bitsandbytes__nf4`)) {
          w = dequantizeNf4Host(await readNf4Weight(ckpt, e.name, nf4Tables().codes), nf4Tables().codes);
        } else {
          w = toFloat32(await ckpt.read(e.name), ckpt.info(e.name).dtype);
        }
        const pair = pairs.get(e.name);
        if (pair) {
          if (!pair.A || !pair.B) throw new QloraError("E_FORMAT", `${options.adapter}: ${e.name} has only one of lora_A / lora_B`);
          const [out_, inp] = e.shape;
          const r = pair.A.shape[0];
          if (pair.A.shape[1] !== inp || pair.B.shape[0] !== out_ || pair.B.shape[1] !== r) {
            throw new QloraError("E_SHAPE", `${e.name}: adapter A ${JSON.stringify(pair.A.shape)} / B ${JSON.stringify(pair.B.shape)} do not fit the weight [${out_}, ${inp}]`);
          }
          const tA = session.fromHost(pair.A.data, "f32", [r, inp]);
          const tB = session.fromHost(pair.B.data, "f32", [out_, r]);
          const tW = session.fromHost(w, "f32", [out_, inp]);
          await native.ops.gemm(tB, tA, tW, { alpha: scale, beta: 1 });
          w = (await tW.toHost()) as Float32Array;
          for (const t of [tA, tB, tW]) t.dispose();
          merged++;
        }
        await writer.write(e.name, fromFloat32(w, "BF16"));
      }
      await writer.commit();
    } catch (err) {
      await writer.abort();
      throw err;
    }
    const cfg = JSON.parse(await readFile(path.join(modelDir, "config.json"), "utf8")) as Record<string, unknown>;
    delete cfg.quantization_config;
    // transformers 4 reads torch_dtype, 5 reads dtype: both say what the weights now are.
    cfg.torch_dtype = "bfloat16";
    if ("dtype" in cfg) cfg.dtype = "bfloat16";
    await writeFile(path.join(tmp, "config.json"), hfConfigJson(cfg));
    await copyNonWeightFiles(modelDir, tmp); // tokenizer files, chat template, generation config, ...
    if (existsSync(out)) await rmdir(out); // empty (checked above)
    await rename(tmp, out);
    info(`merged ${merged} LoRA pairs (scale ${scale}) into ${out}`);
    return { out, mergedTensors: merged, scale };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    session.dispose();
    await ckpt.close();
  }
}
