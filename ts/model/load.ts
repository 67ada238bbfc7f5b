// loadModel: an HF model folder (config.json + model.safetensors or an index with shards, weights in
// f32/bf16/f16, or a bitsandbytes 4-bit checkpoint) streamed tensor by tensor into the native
// Qwen2 model. Decoder linear weights are quantized to NF4 on the device while streaming (or kept
// dense with quantization "none"); embeddings, norms, biases and the LM head are stored in the
// compute dtype. Only one tensor is on the host at a time (plus the one being read ahead), so host
// memory stays at a few hundred MB above the model's own device/host copy (Qwen2.5-3B: the largest
// tensor is the 0.62 GB bf16 embedding).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { QloraError } from "../errors.js";
import { Checkpoint, type StTensorInfo } from "../io/safetensors.js";
import { native, type NativeSession } from "../native.js";
import { bnbNames, isBnbAuxiliary, nf4Tables, readNf4Weight } from "../nf4/index.js";
import { readHfConfig, type ModelArch } from "./hf-config.js";
import { LORA_TARGETS, type LoraTarget, type NativeModel, type NativeModelClass, type NativeModelOptions } from "./native-model.js";
import { QwenModel } from "./qwen-model.js";

export interface LoadModelOptions {
  session: NativeSession;
  /** "f32" (CPU reference) or "bf16" (default); "float32" / "bfloat16" accepted */
  computeDtype?: "f32" | "bf16" | "float32" | "bfloat16";
  /** "nf4" (default) or "none" (dense base weights) */
  quantization?: "nf4" | "none";
  quantBlocksize?: number;
  doubleQuant?: boolean;
  gradientCheckpointing?: boolean;
  lora: {
    r: number;
    alpha: number;
    dropout?: number;
    targets?: LoraTarget[] | "all-linear";
    useRslora?: boolean;
    seed?: number;
  };
  /** called after each tensor (progress) */
  onTensor?(name: string, index: number, total: number): void;
}

function fmt(file: string, msg: string): QloraError {
  return new QloraError("E_FORMAT", `${file}: ${msg}`);
}

function withFile(e: unknown, file: string, name: string): unknown {
  if (e instanceof QloraError) {
    if (e.message.startsWith(file)) return e;
    const msg = e.message.includes(name) ? e.message : `tensor '${name}': ${e.message}`;
    return new QloraError(e.code, `${file}: ${msg}`, { cause: e });
  }
  return e;
}

const dims = (s: readonly number[]) => `[${s.join(", ")}]`;
const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function nativeDtype(info: StTensorInfo): "f32" | "bf16" | "f16" {
  switch (info.dtype) {
    case "F32":
      return "f32";
    case "BF16":
      return "bf16";
    case "F16":
      return "f16";
    default:
      throw fmt(info.file, `tensor '${info.name}' has dtype ${info.dtype}; model weights must be F32, BF16 or F16`);
  }
}

export function nativeModelOptions(arch: ModelArch, opts: LoadModelOptions): NativeModelOptions {
  const cd = opts.computeDtype ?? "bf16";
  const computeDtype = cd === "float32" || cd === "f32" ? "f32" : cd === "bfloat16" || cd === "bf16" ? "bf16" : null;
  if (!computeDtype) throw new QloraError("E_ARG", `loadModel: computeDtype must be "f32" or "bf16", got ${JSON.stringify(cd)}`);
  const q = opts.quantization ?? "nf4";
  if (q !== "nf4" && q !== "none") throw new QloraError("E_ARG", `loadModel: quantization must be "nf4" or "none", got ${JSON.stringify(q)}`);
  const l = opts.lora;
  if (!l || typeof l !== "object") throw new QloraError("E_ARG", "loadModel: lora options are required ({ r, alpha, ... })");
  if (l.targets !== undefined && l.targets !== "all-linear" && !Array.isArray(l.targets))
    throw new QloraError("E_ARG", `loadModel: lora.targets must be "all-linear" or an array of ${LORA_TARGETS.join(", ")}, got ${JSON.stringify(l.targets)}`);
  const targets = l.targets === undefined || l.targets === "all-linear" ? [...LORA_TARGETS] : [...l.targets];
  for (const t of targets)
    if (!LORA_TARGETS.includes(t)) throw new QloraError("E_ARG", `loadModel: unknown LoRA target ${JSON.stringify(t)} (expected ${LORA_TARGETS.join(", ")})`);
  const { modelType: _t, torchDtype: _d, bnb4bit: _b, ...shape } = arch;
  return {
    ...shape,
    computeDtype,
    quantization: q,
    quantBlocksize: opts.quantBlocksize ?? 64,
    doubleQuant: opts.doubleQuant ?? true,
    gradientCheckpointing: opts.gradientCheckpointing ?? false,
    lora: {
      r: l.r,
      alpha: l.alpha,
      dropout: l.dropout ?? 0,
      targets,
      useRslora: l.useRslora ?? false,
      seed: l.seed ?? 0,
    },
  };
}

/** Loads an HF model folder into a new native model on `opts.session`. */
export async function loadModel(dir: string, opts: LoadModelOptions): Promise<QwenModel> {
  if (typeof dir !== "string") throw new QloraError("E_ARG", `loadModel: dir must be a model folder path, got ${typeof dir}`);
  if (!opts || typeof opts !== "object") throw new QloraError("E_ARG", "loadModel: options are required ({ session?, computeDtype?, quantization?, lora: { r, alpha, ... } })");
  const arch = readHfConfig(dir);
  const nopts = nativeModelOptions(arch, opts);
  if (!existsSync(join(dir, "model.safetensors")) && !existsSync(join(dir, "model.safetensors.index.json")))
    throw new QloraError("E_NOT_FOUND", `${dir}: no model.safetensors or model.safetensors.index.json (weights must be in safetensors format)`);
  const ckpt = await Checkpoint.open(dir);
  const Model = native.Model as unknown as NativeModelClass;
  let model: NativeModel | null = null;
  try {
    model = new Model(opts.session, nopts);
    await streamWeights(model, ckpt, arch, dir, opts.onTensor);
    return new QwenModel(model, arch, nopts, opts.session, dir);
  } catch (e) {
    model?.dispose();
    throw e;
  } finally {
    await ckpt.close().catch(() => {});
  }
}

async function streamWeights(
  model: NativeModel,
  ckpt: Checkpoint,
  arch: ModelArch,
  dir: string,
  onTensor?: (name: string, index: number, total: number) => void,
): Promise<void> {
  const expected = new Map(model.expectedWeights().map((w) => [w.name, w]));
  const cfgFile = join(dir, "config.json");
  const names = ckpt.names();
  const have = new Set(names);
  const done = new Set<string>();
  let i = 0;
  for (const name of names) {
    i++;
    if (isBnbAuxiliary(name)) continue;
    const info = ckpt.info(name);
    const w = expected.get(name);
    if (!w) {
      if (name.endsWith("rotary_emb.inv_freq")) continue;
      if (name === "lm_head.weight" && arch.tieWordEmbeddings) continue;  // tied: the embedding is the head
      throw fmt(info.file, `unexpected tensor '${name}' for a ${arch.modelType} model with ${arch.numLayers} layers (${cfgFile})`);
    }
    const quantState = bnbNames(name).quantState;
    try {
      if (have.has(quantState)) {
        if (!w.linear) throw fmt(info.file, `tensor '${name}' is 4-bit quantized but only decoder linear weights can be`);
        const parts = await readNf4Weight(ckpt, name, nf4Tables().codes);
        if (!sameShape(parts.shape, w.shape))
          throw fmt(info.file, `tensor '${name}' has shape ${dims(parts.shape)} (quant_state) but ${cfgFile} implies ${dims(w.shape)}`);
        await model.setNf4Weight(name, parts);
      } else {
        if (!sameShape(info.shape, w.shape))
          throw fmt(info.file, `tensor '${name}' has shape ${dims(info.shape)} but ${cfgFile} implies ${dims(w.shape)}`);
        const dt = nativeDtype(info);
        const data = await ckpt.read(name);
        await model.setWeight(name, dt, info.shape, data);
      }
    } catch (e) {
      throw withFile(e, info.file, name);
    }
    done.add(name);
    onTensor?.(name, i, names.length);
  }
  const missing = [...expected.keys()].filter((n) => !done.has(n));
  if (missing.length) {
    const files = ckpt.shardFiles().join(", ");
    throw fmt(files, `${missing.length} tensor(s) that ${cfgFile} requires are missing: ${missing.slice(0, 12).join(", ")}${missing.length > 12 ? ", ..." : ""}`);
  }
  await model.finalizeLoad();
}
