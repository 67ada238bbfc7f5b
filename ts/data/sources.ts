// Finding the files of each split across the layouts a dataset comes in:
//   wikitext raw folder   wiki.{train,valid,test}.raw (or .tokens)
//   parquet               {split}-NNNNN-of-MMMMM.parquet shards (also with push_to_hub's -<hash>
//                         suffix), {split}.parquet, {split}/NNNN.parquet (the hub's converted layout)
//   jsonl / txt           {split}.jsonl, {split}.txt
// searched in the folder itself, in <folder>/<dataset>/ (the HF repo layout), <folder>/data/ and
// <folder>/default/.
// Without data.path the dataset is looked up in the Hugging Face hub cache
// (datasets--Salesforce--wikitext for WikiText configs, datasets--Org--Name for hub ids).
// Split names map across layouts: validation = valid = val = eval = dev; train = training; test = testing.

import { readdirSync } from "node:fs";
import { dirname, extname, join, resolve } from "node:path";
import { expandHome, findSnapshot, hubCacheDir, isDir, isFile, repoFolderName } from "../config/hf-cache.js";
import type { DataConfig } from "../config/types.js";
import { QloraError } from "../errors.js";

export type SourceFormat = "wikitext-raw" | "parquet" | "jsonl" | "txt";

export interface SplitSource {
  /** The split name as configured. */
  split: string;
  format: SourceFormat;
  /** Absolute paths, in row order (parquet shards sorted by name). */
  files: string[];
}

const ALIASES: readonly (readonly string[])[] = [
  ["train", "training"],
  ["validation", "valid", "val", "eval", "dev"],
  ["test", "testing"],
];

/** The names a split may go by, the configured name first. */
export function splitAliases(split: string): string[] {
  const group = ALIASES.find((g) => g.includes(split.toLowerCase()));
  return group ? [split, ...group.filter((n) => n !== split)] : [split];
}

const EXT_FORMAT: Record<string, SourceFormat> = { ".raw": "wikitext-raw", ".tokens": "wikitext-raw", ".parquet": "parquet", ".jsonl": "jsonl", ".txt": "txt" };

/** The format of a single data file, by extension. */
export function formatOf(file: string): SourceFormat | undefined {
  return EXT_FORMAT[extname(file).toLowerCase()];
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** The files of `split` in `dir` alone (no subfolders), by layout priority. */
function findInDir(dir: string, split: string): SplitSource | undefined {
  const names = listDir(dir);
  for (const n of splitAliases(split)) {
    for (const ext of [".raw", ".tokens"]) {
      if (names.includes(`wiki.${n}${ext}`)) return { split, format: "wikitext-raw", files: [join(dir, `wiki.${n}${ext}`)] };
    }
    // train-00000-of-00002.parquet, with the hash suffix older push_to_hub wrote
    // (train-00000-of-00001-d9a5a2a1c0e6b7f5.parquet), or train.parquet
    const shardRe = new RegExp(`^${n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-\\d+-of-\\d+(-[0-9a-f]+)?\\.parquet$`);
    const shards = names.filter((f) => shardRe.test(f) || f === `${n}.parquet`);
    if (shards.length) return { split, format: "parquet", files: shards.map((f) => join(dir, f)) };
    // the hub's converted layout: <split>/0000.parquet, 0001.parquet, ...
    if (names.includes(n) && isDir(join(dir, n))) {
      const inner = listDir(join(dir, n)).filter((f) => f.endsWith(".parquet"));
      if (inner.length) return { split, format: "parquet", files: inner.map((f) => join(dir, n, f)) };
    }
    for (const ext of [".jsonl", ".txt"]) {
      if (names.includes(n + ext)) return { split, format: EXT_FORMAT[ext], files: [join(dir, n + ext)] };
    }
  }
  return undefined;
}

/** Folders searched for split files under a dataset root. */
export function searchDirs(root: string, dataset: string): string[] {
  return [root, join(root, dataset), join(root, "data"), join(root, dataset, "data"), join(root, "default")].filter(isDir);
}

function missingSplit(split: string, dirs: string[], key: string): QloraError {
  const names = splitAliases(split);
  const seen = dirs.flatMap((d) => listDir(d).filter((f) => formatOf(f)).map((f) => join(d, f)));
  return new QloraError(
    "E_DATA",
    [
      `split "${split}" not found in ${dirs.join(", ") || "(no folder)"}.`,
      `Looked for ${names.map((n) => `wiki.${n}.raw`).join(", ")}, ${names.map((n) => `${n}-NNNNN-of-MMMMM[-hash].parquet, ${n}.parquet, ${n}/*.parquet`).join(", ")}, ${names.map((n) => `${n}.jsonl/.txt`).join(", ")}.`,
      seen.length ? `Data files present: ${seen.slice(0, 12).join(", ")}${seen.length > 12 ? ", ..." : ""}` : "No data files (.raw, .parquet, .jsonl, .txt) are there.",
      `Set data.${key} to a split name present there or to a file path${key === "train_split" ? "" : ", or to null to skip this split"}.`,
    ].join("\n"),
  );
}

/** The hub repo and subfolder holding `dataset`, e.g. wikitext-2-raw-v1 -> Salesforce/wikitext. */
export function datasetRepo(dataset: string): { repos: string[]; subdir: string } {
  if (/^wikitext-/.test(dataset)) return { repos: ["Salesforce/wikitext", "wikitext"], subdir: dataset };
  return { repos: [dataset], subdir: "" };
}

/** The root folder of the dataset: data.path, or its snapshot in the HF hub cache. */
export function datasetRoot(data: DataConfig, env: NodeJS.ProcessEnv = process.env): string {
  if (data.path !== null) {
    const p = resolve(expandHome(data.path));
    if (!isDir(p) && !isFile(p)) throw new QloraError("E_NOT_FOUND", `data.path not found: ${p}`);
    return p;
  }
  const cache = hubCacheDir(env);
  const { repos, subdir } = datasetRepo(data.dataset);
  for (const repo of repos) {
    const snap = findSnapshot(cache, "dataset", repo, "main");
    if (snap) return subdir && isDir(join(snap, subdir)) ? join(snap, subdir) : snap;
  }
  const include = subdir ? ` --include "${subdir}/*"` : "";
  throw new QloraError(
    "E_NOT_FOUND",
    [
      `Dataset "${data.dataset}" was not found: data.path is not set and the Hugging Face cache has no copy at ${join(cache, repoFolderName("dataset", repos[0]))}.`,
      "Download it into that cache with:",
      `  huggingface-cli download --repo-type dataset ${repos[0]}${include}`,
      `or set data.path to a folder holding the split files (wiki.train.raw, wiki.valid.raw, wiki.test.raw; or train/validation/test as .parquet, .jsonl or .txt).`,
    ].join("\n"),
  );
}

/**
 * The files of one split. `split` may also be a file path (absolute, or relative to the dataset
 * folder or the working directory). When data.path is a single file it is the train split and
 * the other splits are looked up beside it.
 */
export function findSplit(root: string, dataset: string, split: string, key = "train_split"): SplitSource {
  const asPath = expandHome(split);
  const fmt = formatOf(asPath);
  if (fmt) {
    const rootDir = isFile(root) ? dirname(root) : root;
    for (const p of [resolve(rootDir, asPath), resolve(asPath)]) if (isFile(p)) return { split, format: fmt, files: [p] };
    if (split.includes("/") || split.includes("\\")) throw new QloraError("E_DATA", `data file for split "${split}" not found (looked in ${rootDir} and the working directory)`);
  }
  if (isFile(root)) {
    const f = formatOf(root);
    if (!f) throw new QloraError("E_DATA", `data.path ${root} has an unknown extension: use a folder, or a .raw, .parquet, .jsonl or .txt file`);
    return { split, format: f, files: [root] };
  }
  const dirs = searchDirs(root, dataset);
  for (const d of dirs) {
    const found = findInDir(d, split);
    if (found) return found;
  }
  throw missingSplit(split, dirs, key);
}

/** The train, eval and test sources of a data config (eval/test null when disabled). */
export function resolveSplits(data: DataConfig, env: NodeJS.ProcessEnv = process.env): { train: SplitSource; eval: SplitSource | null; test: SplitSource | null } {
  const root = datasetRoot(data, env);
  const other = (split: string | null, key: string) => {
    if (split === null) return null;
    try {
      return findSplit(isFile(root) ? dirname(root) : root, data.dataset, split, key);
    } catch (e) {
      if (!(e instanceof QloraError) || !isFile(root)) throw e;
      throw new QloraError(e.code, `${e.message}\ndata.path is a single file (the train split): give data.${key} a file path, or set it to null${key === "eval_split" ? " together with training.eval_strategy: no" : ""}.`, { cause: e });
    }
  };
  return {
    train: findSplit(root, data.dataset, data.train_split, "train_split"),
    eval: other(data.eval_split, "eval_split"),
    test: other(data.test_split, "test_split"),
  };
}

