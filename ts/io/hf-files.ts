// Files of a Hugging Face model folder that the commands writing a new folder (quantize, merge)
// share: which files hold weights, copying every other file (tokenizer, chat template, generation
// config, ...), config.json text that Python reads back with the same types, and the checks on
// an output folder.
import { existsSync, readdirSync, statSync } from "node:fs";
import { copyFile, readdir } from "node:fs/promises";
import path from "node:path";
import { QloraError } from "../errors.js";

/** Weight files and their indexes: not copied into a rewritten checkpoint. */
export function isWeightFile(f: string): boolean {
  return /\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx)$/i.test(f) || f === "model.safetensors.index.json" || f === "pytorch_model.bin.index.json";
}

/** Copies every plain file of `from` that is not a weight file nor in `skip` into `to`. */
export async function copyNonWeightFiles(from: string, to: string, skip: readonly string[] = ["config.json"]): Promise<string[]> {
  const copied: string[] = [];
  for (const ent of await readdir(from, { withFileTypes: true })) {
    if (!ent.isFile() || skip.includes(ent.name) || isWeightFile(ent.name)) continue;
    await copyFile(path.join(from, ent.name), path.join(to, ent.name));
    copied.push(ent.name);
  }
  return copied;
}

// config.json fields that transformers types as float and may check with isinstance(x, float)
// (BitsAndBytesConfig does for llm_int8_threshold): JSON.stringify writes 6.0 as "6", which Python
// reads back as an int, so integral values of these keys get their ".0" back.
const FLOAT_KEYS = [
  "llm_int8_threshold", "rope_theta", "rms_norm_eps", "layer_norm_eps", "initializer_range", "attention_dropout",
  "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "router_aux_loss_coef", "partial_rotary_factor",
];

/** config.json text (indent 2, newline at the end) with the float fields above written as floats. */
export function hfConfigJson(config: Record<string, unknown>): string {
  const re = new RegExp(`^(\\s*"(?:${FLOAT_KEYS.join("|")})": )(-?\\d+)(,?)$`, "gm");
  return JSON.stringify(config, null, 2).replace(re, "$1$2.0$3") + "\n";
}

/**
 * An output folder must not be an input and must be new or empty: the commands write a temp
 * folder and rename it into place, and never delete what a user had there.
 */
export function checkNewOutputFolder(out: string, inputs: { label: string; dir: string }[]): void {
  const o = path.resolve(out);
  for (const i of inputs) {
    if (path.resolve(i.dir) === o) throw new QloraError("E_ARG", `--out must differ from ${i.label} (${out})`);
  }
  if (!existsSync(o)) return;
  if (!statSync(o).isDirectory() || readdirSync(o).length) {
    throw new QloraError("E_ARG", `${out} already exists and is not an empty folder; choose another --out or remove it`);
  }
}
