// prepareDataset: from a validated config to tokenized train / eval / test splits. Resolves the
// tokenizer folder and the split files, loads each split from the token cache when its key
// (tokenizer + data bytes + reader settings) matches, and otherwise reads the rows, tokenizes all
// missing splits in one worker pool and writes them to the cache.

import { resolve } from "node:path";
import { expandHome } from "../config/hf-cache.js";
import { resolveModelPath } from "../config/resolve-model.js";
import type { QloraConfig, ResolvedConfig } from "../config/types.js";
import { QloraError } from "../errors.js";
import type { TokenRows } from "./batches.js";
import { defaultTokenCacheDir, hashFile, readTokenCache, TOKEN_CACHE_VERSION, tokenCacheKey, writeTokenCache, type TokenCacheMeta } from "./cache.js";
import { TokenizePool, workerCount } from "./pool.js";
import { readSplitRows, type SplitRows } from "./read.js";
import { resolveSplits, type SplitSource } from "./sources.js";
import { readTokenizerFiles, type TokenizerInfo } from "./tokenizer.js";

export interface TokenSet extends TokenRows {
  /** "train", "eval" or "test": the role of the split in this run. */
  role: SplitRole;
  source: SplitSource;
  numRows: number;
  numTokens: number;
  cacheKey: string;
  fromCache: boolean;
}

export type SplitRole = "train" | "eval" | "test";

export interface PreparedDataset {
  tokenizer: TokenizerInfo;
  train: TokenSet;
  eval: TokenSet | null;
  test: TokenSet | null;
  stats: {
    seconds: number;
    /** Time spent reading rows and tokenizing (0 when every split came from the cache). */
    tokenizeSeconds: number;
    /** Bytes of data files tokenized in this call. */
    bytesTokenized: number;
    workers: number;
    cacheHits: number;
    cacheMisses: number;
  };
}

export interface PrepareOptions {
  /** Token cache folder (default: advanced.cache_dir, then ~/.cache/qlora-native/tokens). */
  cacheDir?: string;
  /** false: neither read nor write the cache. */
  useCache?: boolean;
  /** Tokenizer threads (default advanced.threads; 0 = all cores). */
  threads?: number;
  /** Folder with tokenizer.json, instead of model.tokenizer / the resolved model folder. */
  tokenizerDir?: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

type Config = QloraConfig | ResolvedConfig;

/** The folder holding tokenizer.json for this config. */
export function tokenizerDirFor(config: Config, env: NodeJS.ProcessEnv = process.env): string {
  if (config.model.tokenizer) return resolve(expandHome(config.model.tokenizer));
  return resolveModelPath(config.model.name_or_path, config.model.revision, { env });
}

interface Planned {
  role: SplitRole;
  source: SplitSource;
  key: string;
  files: TokenCacheMeta["files"];
}

function splitRows(all: TokenRows, rowStart: number, rowEnd: number): TokenRows {
  const base = all.offsets[rowStart];
  const offsets = all.offsets.slice(rowStart, rowEnd + 1);
  for (let i = 0; i < offsets.length; i++) offsets[i] -= base;
  return { ids: all.ids.slice(base, all.offsets[rowEnd]), offsets };
}

export async function prepareDataset(config: Config, options: PrepareOptions = {}): Promise<PreparedDataset> {
  const t0 = performance.now();
  const env = options.env ?? process.env;
  const log = options.log ?? (() => {});
  const useCache = options.useCache ?? true;
  const cacheDir = options.cacheDir ?? defaultTokenCacheDir(config.advanced.cache_dir, env);
  const tokenizerDir = options.tokenizerDir ?? tokenizerDirFor(config, env);
  const sources = resolveSplits(config.data, env);

  const roles = (["train", "eval", "test"] as const).filter((r) => sources[r] !== null);
  const fileHashes = new Map<string, Promise<{ sha256: string; bytes: number }>>();
  const hashOf = (f: string) => {
    if (!fileHashes.has(f)) fileHashes.set(f, hashFile(f));
    return fileHashes.get(f)!;
  };
  const [tokFiles, planned] = await Promise.all([
    readTokenizerFiles(tokenizerDir),
    Promise.all(roles.map(async (role) => {
      const source = sources[role]!;
      const hashes = await Promise.all(source.files.map(hashOf));
      return { role, source, hashes };
    })),
  ]);
  // run_clm's plain concatenation tokenizes whitespace rows too; the other modes leave them out
  const keepBlankRows = config.data.packing && config.data.packing_separator === "none";
  // the reader settings a split's ids depend on, in its cache key
  const readerKey = (format: string): string =>
    [format === "jsonl" || format === "parquet" ? config.data.text_field : format === "txt" && config.data.keep_linebreaks ? "keep_linebreaks" : "", keepBlankRows && format !== "wikitext-raw" ? "blank_rows" : ""]
      .filter((x, i) => i === 0 || x !== "")
      .join("+");
  const plans: Planned[] = planned.map(({ role, source, hashes }) => ({
    role,
    source,
    files: source.files.map((path, i) => ({ path, ...hashes[i] })),
    key: tokenCacheKey({ tokenizerFingerprint: tokFiles.fingerprint, fileHashes: hashes.map((h) => h.sha256), format: source.format, textField: readerKey(source.format), addSpecialTokens: config.data.add_special_tokens }),
  }));

  const loaded = new Map<string, { rows: TokenRows; meta?: TokenCacheMeta }>();
  if (useCache) {
    for (const p of plans) {
      if (loaded.has(p.key)) continue;
      const hit = await readTokenCache(cacheDir, p.key);
      if (hit) loaded.set(p.key, { rows: hit, meta: hit.meta });
    }
  }
  const hits = plans.filter((p) => loaded.has(p.key)).length;
  const missing = [...new Map(plans.filter((p) => !loaded.has(p.key)).map((p) => [p.key, p])).values()];

  let info: TokenizerInfo | null = null;
  let tokenizeSeconds = 0;
  let bytesTokenized = 0;
  let workers = 0;
  if (missing.length > 0) {
    const t1 = performance.now();
    const totalBytes = missing.reduce((s, p) => s + p.files.reduce((a, f) => a + f.bytes, 0), 0);
    workers = workerCount(totalBytes, options.threads ?? config.advanced.threads);
    // The workers load the tokenizer while the rows are read; the pool is closed on every path.
    const poolPromise = TokenizePool.open(tokenizerDir, workers, config.data.add_special_tokens);
    poolPromise.catch(() => {});
    let texts: SplitRows[];
    let all: TokenRows;
    try {
      texts = await Promise.all(missing.map((p) => readSplitRows(p.source, config.data.text_field, { keepLinebreaks: config.data.keep_linebreaks, keepBlankRows })));
      texts.forEach((t, i) => {
        if (t.textRows === 0) {
          const p = missing[i];
          throw new QloraError("E_DATA", `split "${p.source.split}" (data.${p.role}_split) has no rows with text: ${p.source.files.join(", ")} (${t.rows.length} rows, all empty)`);
        }
      });
      const pool = await poolPromise;
      info = pool.info;
      all = await pool.encode(texts.flatMap((t) => t.rows));
    } finally {
      await poolPromise.then((pool) => pool.close(), () => {});
    }
    bytesTokenized = texts.reduce((s, t) => s + t.bytes, 0);
    let row = 0;
    missing.forEach((p, i) => {
      const n = texts[i].rows.length;
      loaded.set(p.key, { rows: splitRows(all, row, row + n) });
      row += n;
    });
    tokenizeSeconds = (performance.now() - t1) / 1000;
    log(`tokenized ${missing.map((p) => p.role).join(", ")}: ${(bytesTokenized / 1e6).toFixed(1)} MB in ${tokenizeSeconds.toFixed(2)} s on ${workers} thread${workers === 1 ? "" : "s"} (${(bytesTokenized / 1e6 / tokenizeSeconds).toFixed(1)} MB/s)`);
    if (useCache) {
      for (const p of missing) {
        const rows = loaded.get(p.key)!.rows;
        const meta: TokenCacheMeta = {
          version: TOKEN_CACHE_VERSION, key: p.key, split: p.source.split, format: p.source.format, files: p.files,
          numRows: rows.offsets.length - 1, numTokens: rows.ids.length, eosId: info.eosId, padId: info.padId,
          vocabSize: info.vocabSize, tokenizerFingerprint: info.fingerprint, specialPrefix: info.specialPrefix ?? [],
          specialSuffix: info.specialSuffix ?? [], createdAt: new Date().toISOString(),
        };
        try {
          await writeTokenCache(cacheDir, { meta, ids: rows.ids, offsets: rows.offsets });
        } catch (err) {
          log(`warning: could not write the token cache in ${cacheDir}: ${(err as Error).message}`);
        }
      }
    }
  }
  if (!info) {
    const meta = loaded.get(plans[0].key)!.meta!;
    info = {
      dir: tokenizerDir, fingerprint: tokFiles.fingerprint, eosId: meta.eosId, padId: meta.padId, vocabSize: meta.vocabSize,
      ...(meta.specialPrefix ? { specialPrefix: meta.specialPrefix, specialSuffix: meta.specialSuffix ?? [] } : {}),
    };
  }

  const sets = new Map<SplitRole, TokenSet>();
  for (const p of plans) {
    const { rows } = loaded.get(p.key)!;
    sets.set(p.role, { role: p.role, source: p.source, ...rows, numRows: rows.offsets.length - 1, numTokens: rows.ids.length, cacheKey: p.key, fromCache: loaded.get(p.key)!.meta !== undefined });
  }
  if (hits > 0) log(`token cache: ${hits} of ${plans.length} splits loaded from ${cacheDir}`);
  return {
    tokenizer: info,
    train: sets.get("train")!,
    eval: sets.get("eval") ?? null,
    test: sets.get("test") ?? null,
    stats: { seconds: (performance.now() - t0) / 1000, tokenizeSeconds, bytesTokenized, workers, cacheHits: hits, cacheMisses: plans.length - hits },
  };
}
