// Resolving model.name_or_path to an absolute folder: a local folder as is, or a hub id looked up
// in the Hugging Face cache at the requested revision. A missing model gives an error that says
// what to download and where it has to end up.

import { statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { QloraError } from "../errors.js";
import { expandHome, findSnapshot, hubCacheDir, repoFolderName } from "./hf-cache.js";

export interface ResolveModelOptions {
  /** Environment used to locate the cache (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Use this hub cache folder instead of the one the environment names. */
  cacheDir?: string;
}

const HUB_ID_RE = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

function statOrNull(p: string) {
  try {
    return statSync(p);
  } catch {
    return null;
  }
}

/** True when `s` can only be a filesystem path (not a hub id). */
function looksLikePath(s: string): boolean {
  return isAbsolute(s) || s.startsWith(".") || s.startsWith("~") || s.includes("\\") || s.split("/").length > 2 || !HUB_ID_RE.test(s);
}

function notFound(nameOrPath: string, revision: string, cacheDir: string, detail: string): QloraError {
  const rev = revision === "main" ? "" : ` --revision ${revision}`;
  return new QloraError(
    "E_NOT_FOUND",
    [
      `Model "${nameOrPath}" (revision "${revision}") was not found: ${detail}`,
      `Looked for a local folder "${nameOrPath}" and in the Hugging Face cache at ${join(cacheDir, repoFolderName("model", nameOrPath))}`,
      "Download it into that cache with:",
      `  huggingface-cli download ${nameOrPath}${rev}`,
      `or put config.json, tokenizer.json, tokenizer_config.json and the *.safetensors files in a folder and set model.name_or_path to that folder.`,
      "The cache location follows HF_HUB_CACHE, then HF_HOME/hub, then ~/.cache/huggingface/hub.",
    ].join("\n"),
  );
}

/**
 * Absolute folder holding the model files. Throws QloraError E_NOT_FOUND when the folder does not
 * exist, the hub id is not cached at that revision, or the cached snapshot lacks config.json.
 */
export function resolveModelPath(nameOrPath: string, revision = "main", options: ResolveModelOptions = {}): string {
  const local = expandHome(nameOrPath);
  const st = statOrNull(local);
  if (st?.isDirectory()) return resolve(local);
  if (st) throw new QloraError("E_NOT_FOUND", `model.name_or_path must be a folder holding config.json and the weights, found a file: ${resolve(local)}`);
  if (looksLikePath(nameOrPath)) {
    throw new QloraError("E_NOT_FOUND", `Model folder not found: ${resolve(local)}\nSet model.name_or_path to a folder holding config.json, tokenizer.json and *.safetensors, or to a hub id such as Qwen/Qwen2.5-3B that is in the Hugging Face cache.`);
  }
  const cacheDir = options.cacheDir ?? hubCacheDir(options.env);
  const snap = findSnapshot(cacheDir, "model", nameOrPath, revision);
  if (!snap) throw notFound(nameOrPath, revision, cacheDir, "it is not a local folder and not in the Hugging Face cache.");
  if (!statOrNull(join(snap, "config.json"))) {
    throw notFound(nameOrPath, revision, cacheDir, `the cached snapshot ${snap} has no config.json (an interrupted download?).`);
  }
  return snap;
}
