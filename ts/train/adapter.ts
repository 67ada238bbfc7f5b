// PEFT LoRA adapter files: adapter_model.safetensors (f32 tensors under PEFT's keys, e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight: A [r, in], B [out, r]; keys
// sorted, metadata {"format": "pt"}, as PEFT's save_pretrained writes them) and
// adapter_config.json (PEFT 0.21's LoraConfig field set, keys sorted, indent 2). readAdapter also
// takes adapters PEFT wrote: f32 / bf16 / f16 tensors, keys with or without the ".default"
// adapter name. Both files are written atomically (temp file + rename).
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../config/atomic-write.js";
import { QloraError } from "../errors.js";
import { SafetensorsFile, toFloat32, writeSafetensors, type StDType } from "../io/safetensors.js";
import { stringifySorted } from "./trainer-state.js";

export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";
export const ADAPTER_CONFIG_FILE = "adapter_config.json";

export interface LoraWeight {
  shape: number[];
  data: Float32Array;
}

export type LoraWeights = Map<string, LoraWeight> | Record<string, LoraWeight>;

/** The adapter's settings: PEFT names (lora_alpha, ...) or the config's short names (alpha, ...). */
export interface AdapterConfigInput {
  r: number;
  lora_alpha?: number;
  alpha?: number;
  lora_dropout?: number;
  dropout?: number;
  target_modules?: readonly string[];
  targets?: readonly string[];
  use_rslora?: boolean;
  useRslora?: boolean;
  base_model_name_or_path?: string | null;
  baseModel?: string | null;
  /** any other adapter_config.json field to set (e.g. revision) */
  extra?: Record<string, unknown>;
}

/** adapter_config.json as read (PEFT's field names). */
export interface PeftAdapterConfig {
  peft_type: string;
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  use_rslora: boolean;
  base_model_name_or_path: string | null;
  task_type: string | null;
  [key: string]: unknown;
}

export interface AdapterFiles {
  config: PeftAdapterConfig;
  /** PEFT keys without the adapter name, f32 data */
  loraWeights: Map<string, LoraWeight & { dtype: StDType }>;
}

/** The PEFT version whose adapter_config.json field set this file writes. */
export const PEFT_FORMAT_VERSION = "0.21.0";

// Every field PEFT 0.21's LoraConfig.save_pretrained writes, with PEFT's defaults (checked
// against test/fixtures/models/*/adapter/adapter_config.json).
const PEFT_DEFAULTS: Record<string, unknown> = {
  alora_invocation_tokens: null,
  alpha_pattern: {},
  arrow_config: null,
  auto_mapping: null, // PEFT writes a class mapping only when task_type is null
  base_model_name_or_path: null,
  bias: "none",
  corda_config: null,
  ensure_weight_tying: false,
  eva_config: null,
  exclude_modules: null,
  fan_in_fan_out: false,
  inference_mode: true,
  init_lora_weights: true,
  kasa_config: null,
  layer_replication: null,
  layers_pattern: null,
  layers_to_transform: null,
  loftq_config: {},
  lora_alpha: 8,
  lora_bias: false,
  lora_dropout: 0.0,
  lora_ga_config: null,
  megatron_config: null,
  megatron_core: "megatron.core",
  modules_to_save: null,
  monteclora_config: null,
  peft_type: "LORA",
  peft_version: PEFT_FORMAT_VERSION,
  qalora_group_size: 16,
  r: 8,
  rank_pattern: {},
  revision: null,
  target_modules: null,
  target_parameters: null,
  task_type: "CAUSAL_LM",
  trainable_token_indices: null,
  use_bdlora: null,
  use_dora: false,
  use_qalora: false,
  use_rslora: false,
  velora_config: null,
};

const KEY_RE = /^(.+)\.(lora_A|lora_B)(?:\.([A-Za-z0-9_-]+))?\.weight$/;

/** PEFT key without the adapter name: "...q_proj.lora_A.default.weight" -> "...q_proj.lora_A.weight". */
export function normalizeLoraKey(key: string): string {
  const m = KEY_RE.exec(key);
  if (!m) throw new QloraError("E_FORMAT", `'${key}' is not a LoRA weight key (expected <module>.lora_A.weight or <module>.lora_B.weight)`);
  return `${m[1]}.${m[2]}.weight`;
}

function entriesOf(w: LoraWeights): [string, LoraWeight][] {
  return w instanceof Map ? [...w.entries()] : Object.entries(w);
}

function peftConfigFrom(c: AdapterConfigInput): Record<string, unknown> {
  const pick = <T>(...xs: (T | undefined)[]): T | undefined => xs.find((x) => x !== undefined);
  const r = c.r;
  const alpha = pick(c.lora_alpha, c.alpha);
  const targets = pick(c.target_modules, c.targets);
  if (!Number.isInteger(r) || r <= 0) throw new QloraError("E_ARG", `adapter config: r must be a positive integer, got ${r}`);
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) throw new QloraError("E_ARG", "adapter config: lora_alpha (alpha) is required");
  if (!targets || targets.length === 0) throw new QloraError("E_ARG", "adapter config: target_modules (targets) is required");
  return {
    ...PEFT_DEFAULTS,
    ...(c.extra ?? {}),
    r,
    lora_alpha: alpha,
    lora_dropout: pick(c.lora_dropout, c.dropout) ?? 0.0,
    target_modules: [...new Set(targets)].sort(),
    use_rslora: pick(c.use_rslora, c.useRslora) ?? false,
    base_model_name_or_path: pick(c.base_model_name_or_path, c.baseModel) ?? null,
  };
}

/** Checks keys, shapes and pairs: every module has A [r, in] and B [out, r]. */
function checkPairs(weights: Map<string, LoraWeight>, r: number | undefined, where: string): void {
  const modules = new Map<string, { A?: number[]; B?: number[] }>();
  for (const [key, w] of weights) {
    const m = KEY_RE.exec(key)!;
    if (w.shape.length !== 2 || !w.shape.every((d) => Number.isInteger(d) && d > 0)) {
      throw new QloraError("E_SHAPE", `${where}: '${key}' must be 2-D, got [${w.shape.join(", ")}]`);
    }
    if (w.data.length !== w.shape[0] * w.shape[1]) {
      throw new QloraError("E_SHAPE", `${where}: '${key}' has ${w.data.length} values for shape [${w.shape.join(", ")}]`);
    }
    const e = modules.get(m[1]) ?? {};
    e[m[2] === "lora_A" ? "A" : "B"] = w.shape;
    modules.set(m[1], e);
  }
  for (const [mod, { A, B }] of modules) {
    if (!A || !B) throw new QloraError("E_FORMAT", `${where}: ${mod} has lora_${A ? "A" : "B"} but no lora_${A ? "B" : "A"}`);
    if (A[0] !== B[1]) throw new QloraError("E_SHAPE", `${where}: ${mod}: lora_A [${A.join(", ")}] and lora_B [${B.join(", ")}] disagree on r`);
    if (r !== undefined && A[0] !== r) throw new QloraError("E_SHAPE", `${where}: ${mod}: rank ${A[0]}, but the config says r = ${r}`);
  }
}

/** Writes adapter_model.safetensors (f32) and adapter_config.json into dir. */
export async function writeAdapter(
  dir: string,
  opts: { loraWeights: LoraWeights; config: AdapterConfigInput; metadata?: Record<string, string> },
): Promise<{ weights: string; config: string }> {
  const config = peftConfigFrom(opts.config);
  const weights = new Map<string, LoraWeight>();
  for (const [key, w] of entriesOf(opts.loraWeights)) {
    const k = normalizeLoraKey(key);
    if (weights.has(k)) throw new QloraError("E_ARG", `writeAdapter: '${key}' is given twice`);
    weights.set(k, w);
  }
  if (weights.size === 0) throw new QloraError("E_ARG", "writeAdapter: no LoRA weights");
  checkPairs(weights, config.r as number, "writeAdapter");
  const tensors: Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> = {};
  for (const k of [...weights.keys()].sort()) {
    const w = weights.get(k)!;
    tensors[k] = { dtype: "F32", shape: [...w.shape], data: new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength) };
  }
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS_FILE);
  const configPath = path.join(dir, ADAPTER_CONFIG_FILE);
  // Weights first, config last (each atomic): a failure in between (a full disk) leaves the old
  // config, which describes the same layout for a given run, never a config without its weights.
  await mkdir(dir, { recursive: true });
  await writeSafetensors(weightsPath, tensors, { format: "pt", ...(opts.metadata ?? {}) });
  await writeFileAtomic(configPath, stringifySorted(config));
  return { weights: weightsPath, config: configPath };
}

/** Reads adapter_config.json. */
export async function readAdapterConfig(dir: string): Promise<PeftAdapterConfig> {
  const file = path.join(dir, ADAPTER_CONFIG_FILE);
  let c: PeftAdapterConfig;
  try {
    c = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new QloraError("E_NOT_FOUND", `${dir} is not an adapter folder: no ${ADAPTER_CONFIG_FILE} there`, { cause: e });
    throw new QloraError(code !== undefined ? "E_IO" : "E_FORMAT", `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (!c || typeof c !== "object") throw new QloraError("E_FORMAT", `${file}: not a JSON object`);
  if (c.peft_type !== "LORA") throw new QloraError("E_FORMAT", `${file}: peft_type is ${JSON.stringify(c.peft_type)}, only "LORA" adapters are supported`);
  if (!Number.isInteger(c.r) || c.r <= 0) throw new QloraError("E_FORMAT", `${file}: r must be a positive integer`);
  if (typeof c.lora_alpha !== "number" || !Number.isFinite(c.lora_alpha)) throw new QloraError("E_FORMAT", `${file}: lora_alpha must be a finite number, got ${String(c.lora_alpha)}`);
  return c;
}

const nonEmpty = (v: unknown): boolean =>
  v !== null && v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0) && !(typeof v === "object" && Object.keys(v as object).length === 0);

/**
 * PEFT LoRA variants this adapter format can hold but qlora-native does not compute. Applying
 * such an adapter as plain LoRA would give other numbers than PEFT without a word, so each one is
 * refused by name.
 */
function unsupportedFeatures(c: PeftAdapterConfig, otherTensors: string[]): string[] {
  const out: string[] = [];
  if (c.use_dora === true) out.push("use_dora: true (DoRA's magnitude vectors)");
  if (c.bias !== undefined && c.bias !== "none") out.push(`bias: ${JSON.stringify(c.bias)} (trained biases)`);
  if (c.lora_bias === true) out.push("lora_bias: true (a bias on lora_B)");
  if (nonEmpty(c.alpha_pattern)) out.push("alpha_pattern (per-module alpha)");
  if (nonEmpty(c.rank_pattern)) out.push("rank_pattern (per-module rank)");
  if (nonEmpty(c.modules_to_save)) out.push(`modules_to_save: ${JSON.stringify(c.modules_to_save)} (fully trained modules)`);
  if (nonEmpty(c.trainable_token_indices)) out.push("trainable_token_indices");
  if (nonEmpty(c.target_parameters)) out.push("target_parameters");
  if (c.fan_in_fan_out === true) out.push("fan_in_fan_out: true");
  if (otherTensors.length) {
    const shown = otherTensors.slice(0, 3).join(", ") + (otherTensors.length > 3 ? `, ... (${otherTensors.length} in all)` : "");
    out.push(`tensors other than lora_A / lora_B weights (${shown})`);
  }
  return out;
}

/** Reads a LoRA adapter folder (ours or PEFT's): the config and every weight as f32. */
export async function readAdapter(dir: string): Promise<AdapterFiles> {
  const config = await readAdapterConfig(dir);
  const file = path.join(dir, ADAPTER_WEIGHTS_FILE);
  const st = await SafetensorsFile.open(file);
  const loraWeights = new Map<string, LoraWeight & { dtype: StDType }>();
  try {
    const other = [...st.tensors.keys()].filter((n) => !KEY_RE.test(n));
    const unsupported = unsupportedFeatures(config, other);
    if (unsupported.length) {
      throw new QloraError(
        "E_FORMAT",
        `${dir}: this PEFT adapter uses ${unsupported.join("; ")}, which qlora-native does not support (plain LoRA on q/k/v/o/gate/up/down_proj only); applying it as plain LoRA would give wrong results`,
      );
    }
    for (const [name, info] of st.tensors) {
      if (info.dtype !== "F32" && info.dtype !== "BF16" && info.dtype !== "F16" && info.dtype !== "F64") {
        throw new QloraError("E_DTYPE", `${file}: '${name}' is ${info.dtype}; expected F32, BF16 or F16`);
      }
      const key = normalizeLoraKey(name);
      if (loraWeights.has(key)) throw new QloraError("E_FORMAT", `${file}: '${key}' appears twice (with and without an adapter name)`);
      const data = toFloat32(await st.read(name), info.dtype);
      loraWeights.set(key, { shape: [...info.shape], data, dtype: info.dtype });
    }
  } finally {
    await st.close();
  }
  if (loraWeights.size === 0) throw new QloraError("E_FORMAT", `${file}: no LoRA weights (no *.lora_A.weight / *.lora_B.weight tensors)`);
  checkPairs(loraWeights, config.r, file);
  return { config, loraWeights };
}

const DECODER_MODULE_RE = /^base_model\.model\.model\.layers\.\d+\.(?:self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_[AB]\.weight$/;

/**
 * The decoder projections an adapter's tensors adapt (q_proj, ...), read from its weights (so
 * PEFT's target_modules spellings, regexes, suffixes like "mlp.down_proj" and
 * layers_to_transform all come out right). Throws for LoRA on anything else (embeddings, lm_head).
 */
export function adapterTargets(a: AdapterFiles, where: string): string[] {
  const found = new Set<string>();
  const other: string[] = [];
  for (const key of a.loraWeights.keys()) {
    const m = DECODER_MODULE_RE.exec(key);
    if (m) found.add(m[1]);
    else other.push(key);
  }
  if (other.length) {
    throw new QloraError("E_FORMAT", `${where}: LoRA on ${other[0]}${other.length > 1 ? ` and ${other.length - 1} more` : ""}: qlora-native adapts the decoder projections only (q/k/v/o/gate/up/down_proj)`);
  }
  return [...found].sort();
}

/** LoRA scaling of an adapter: alpha / r, or alpha / sqrt(r) with rsLoRA. */
export function loraScaling(c: { r: number; lora_alpha: number; use_rslora?: boolean }): number {
  return c.use_rslora ? c.lora_alpha / Math.sqrt(c.r) : c.lora_alpha / c.r;
}
