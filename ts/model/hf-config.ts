// Reading an HF model folder's config.json into the architecture the native model needs.
// Qwen2ForCausalLM (q/k/v biases) and LlamaForCausalLM (no biases) share one graph. Both the
// transformers-4 style (top-level rope_theta, torch_dtype) and the transformers-5 style
// (rope_parameters.rope_theta, dtype) are accepted. Anything the graph does not implement
// (rope scaling, sliding windows, MLP biases, other activations) is an E_FORMAT error naming the key.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { QloraError } from "../errors.js";
import type { ModelShape } from "./native-model.js";

export interface ModelArch extends ModelShape {
  modelType: "qwen2" | "llama";
  /** dtype the checkpoint was saved in ("float32", "bfloat16", ...), informational */
  torchDtype: string | null;
  /** bitsandbytes 4-bit quantization_config, when the folder holds a bnb-4bit checkpoint */
  bnb4bit: { blocksize?: number; doubleQuant: boolean; computeDtype: string | null } | null;
}

type Json = Record<string, unknown>;

function fmt(file: string, msg: string): QloraError {
  return new QloraError("E_FORMAT", `${file}: ${msg}`);
}

function positive(cfg: Json, key: string, file: string, fallback: number | undefined, integer: boolean): number {
  const v = cfg[key] ?? fallback;
  if (v === undefined || v === null) throw fmt(file, `missing "${key}"`);
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))
    throw fmt(file, `"${key}" must be a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(v)}`);
  return v;
}
const positiveInt = (cfg: Json, key: string, file: string, fallback?: number) => positive(cfg, key, file, fallback, true);
const positiveNumber = (cfg: Json, key: string, file: string, fallback?: number) => positive(cfg, key, file, fallback, false);

/** Validates a parsed config.json object. `file` names it in errors. */
export function parseHfConfig(cfg: Json, file = "config.json"): ModelArch {
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) throw fmt(file, "expected a JSON object");
  const modelType = cfg.model_type;
  const archs = Array.isArray(cfg.architectures) ? (cfg.architectures as unknown[]) : [];
  if (modelType !== "qwen2" && modelType !== "llama")
    throw fmt(
      file,
      `unsupported model_type ${JSON.stringify(modelType)} (architectures ${JSON.stringify(archs)}); ` +
        `supported: "qwen2" (Qwen2ForCausalLM) and "llama" (LlamaForCausalLM)`,
    );
  const wanted = modelType === "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  if (archs.length && !archs.includes(wanted))
    throw fmt(file, `architectures ${JSON.stringify(archs)} does not include ${wanted} (model_type "${modelType}")`);

  const hiddenSize = positiveInt(cfg, "hidden_size", file);
  const numHeads = positiveInt(cfg, "num_attention_heads", file);
  const numKvHeads = positiveInt(cfg, "num_key_value_heads", file, numHeads);
  const headDim = positiveInt(cfg, "head_dim", file, Math.floor(hiddenSize / numHeads));
  if (cfg.head_dim === undefined && hiddenSize % numHeads !== 0)
    throw fmt(file, `hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} and no head_dim is given`);
  if (numHeads % numKvHeads !== 0)
    throw fmt(file, `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  if (headDim % 2 !== 0) throw fmt(file, `head_dim ${headDim} must be even (RoPE rotates halves)`);

  const act = cfg.hidden_act ?? "silu";
  if (act !== "silu") throw fmt(file, `hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  if (cfg.mlp_bias === true) throw fmt(file, `"mlp_bias": true is not supported`);
  if (cfg.use_sliding_window === true) throw fmt(file, `"use_sliding_window": true is not supported`);

  // rope: transformers 5 nests it in rope_parameters; transformers 4 has top-level rope_theta.
  const rp = (cfg.rope_parameters ?? null) as Json | null;
  const rs = (cfg.rope_scaling ?? null) as Json | null;
  for (const [k, o] of [
    ["rope_parameters", rp],
    ["rope_scaling", rs],
  ] as const) {
    if (o === null) continue;
    if (typeof o !== "object" || Array.isArray(o)) throw fmt(file, `"${k}" must be an object or null, got ${JSON.stringify(o)}`);
    const t = o.rope_type ?? o.type ?? "default";
    if (t !== "default") throw fmt(file, `${k}.rope_type ${JSON.stringify(t)} is not supported (only "default")`);
    // a default rope with scaling settings (e.g. {"factor": 4} without a type) would be read as
    // plain RoPE, which is not what the file asks for
    // (a scaling key that changes nothing, such as factor 1, is accepted as transformers accepts it)
    const extra = Object.keys(o).filter((x) => !["rope_type", "type", "rope_theta"].includes(x) && !((x === "partial_rotary_factor" || x === "factor") && o[x] === 1));
    if (extra.length) throw fmt(file, `${k} has ${extra.map((x) => JSON.stringify(x)).join(", ")}: RoPE scaling is not supported (only the default RoPE with rope_theta)`);
  }
  const ropeTheta =
    rp && typeof rp === "object" && rp.rope_theta !== undefined
      ? positiveNumber(rp, "rope_theta", file)
      : positiveNumber(cfg, "rope_theta", file, 10000);

  // Llama's attention_bias puts a bias on o_proj too; the graph here has q/k/v biases only (Qwen2's).
  if (modelType !== "qwen2" && cfg.attention_bias === true)
    throw fmt(file, `"attention_bias": true (biases on q/k/v/o_proj) is not supported for ${modelType}; only Qwen2's q/k/v biases are`);
  const qkvBias = modelType === "qwen2";
  let bnb4bit: ModelArch["bnb4bit"] = null;
  const qc = cfg.quantization_config as Json | undefined;
  if (qc && typeof qc === "object") {
    const method = qc.quant_method;
    const is4 = qc.load_in_4bit === true || qc._load_in_4bit === true;
    if (method !== "bitsandbytes" || !is4)
      throw fmt(file, `quantization_config ${JSON.stringify({ quant_method: method, load_in_4bit: qc.load_in_4bit })} is not supported (only bitsandbytes 4-bit NF4)`);
    if (qc.bnb_4bit_quant_type !== "nf4")
      throw fmt(file, `quantization_config.bnb_4bit_quant_type ${JSON.stringify(qc.bnb_4bit_quant_type)} is not supported (only "nf4")`);
    bnb4bit = {
      doubleQuant: qc.bnb_4bit_use_double_quant === true,
      computeDtype: typeof qc.bnb_4bit_compute_dtype === "string" ? qc.bnb_4bit_compute_dtype : null,
    };
  }
  const td = cfg.dtype ?? cfg.torch_dtype;
  return {
    modelType,
    hiddenSize,
    intermediateSize: positiveInt(cfg, "intermediate_size", file),
    numLayers: positiveInt(cfg, "num_hidden_layers", file),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(cfg, "vocab_size", file),
    rmsNormEps: positiveNumber(cfg, "rms_norm_eps", file, 1e-6),
    ropeTheta,
    tieWordEmbeddings: cfg.tie_word_embeddings === true,
    qkvBias,
    torchDtype: typeof td === "string" ? td : null,
    bnb4bit,
  };
}

/** Reads and validates `dir/config.json` (E_NOT_FOUND when missing, E_FORMAT when invalid). */
export function readHfConfig(dir: string): ModelArch {
  const file = join(dir, "config.json");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new QloraError("E_NOT_FOUND", `${file}: not found (is ${dir} a Hugging Face model folder?)`, { cause: e });
    throw new QloraError("E_IO", `${file}: ${(e as Error).message}`, { cause: e });
  }
  let cfg: Json;
  try {
    cfg = JSON.parse(text) as Json;
  } catch (e) {
    throw fmt(file, `invalid JSON (${(e as Error).message})`);
  }
  return parseHfConfig(cfg, file);
}
