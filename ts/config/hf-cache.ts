// The Hugging Face hub cache layout, read-only: where the cache is (HF_HUB_CACHE, the legacy
// HUGGINGFACE_HUB_CACHE, HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub) and
// how a repo id + revision maps to a snapshot folder:
//   <cache>/<type>s--<Org>--<Name>/refs/<revision>      holds a commit hash
//   <cache>/<type>s--<Org>--<Name>/snapshots/<hash>/    holds the files (symlinks into blobs/)

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

export type RepoType = "model" | "dataset";

/** Expands a leading `~` to the home folder. */
export function expandHome(p: string): string {
  return p === "~" || p.startsWith("~/") ? join(homedir(), p.slice(1)) : p;
}

/** The hub cache folder, following the same variables as huggingface_hub. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const direct = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (direct) return resolve(expandHome(direct));
  if (env.HF_HOME) return resolve(expandHome(env.HF_HOME), "hub");
  const xdg = env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : join(homedir(), ".cache");
  return resolve(xdg, "huggingface", "hub");
}

/** `models--Org--Name` / `datasets--Org--Name`. */
export function repoFolderName(type: RepoType, repoId: string): string {
  return `${type}s--${repoId.split("/").join("--")}`;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;

export function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * The snapshot folder of `repoId` at `revision` in the cache, or undefined when it is not there.
 * A branch or tag goes through refs/<revision>; a 40-hex commit hash names the snapshot directly.
 * When refs/main is missing but the repo holds exactly one snapshot, that snapshot is used
 * (copies of a cache often lose refs/).
 */
export function findSnapshot(cacheDir: string, type: RepoType, repoId: string, revision: string): string | undefined {
  const repoDir = join(cacheDir, repoFolderName(type, repoId));
  const snapshots = join(repoDir, "snapshots");
  if (!isDir(snapshots)) return undefined;
  if (COMMIT_RE.test(revision)) {
    const snap = join(snapshots, revision);
    return isDir(snap) ? snap : undefined;
  }
  const ref = join(repoDir, "refs", ...revision.split("/"));
  if (existsSync(ref)) {
    const hash = readFileSync(ref, "utf8").trim();
    const snap = join(snapshots, hash);
    return hash && isDir(snap) ? snap : undefined;
  }
  if (revision === "main") {
    const all = readdirSync(snapshots).filter((d) => isDir(join(snapshots, d)));
    if (all.length === 1) return join(snapshots, all[0]);
  }
  return undefined;
}
