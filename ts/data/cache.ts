// The on-disk cache of tokenized splits. One file per split, named by its key: the sha256 of the
// tokenizer fingerprint, the sha256 of every data file's bytes, the reader settings and the
// format version, so any change to tokenizer, data or settings gives a new key (a stale cache
// cannot be found). Files are written atomically and carry a sha256 trailer checked on load;
// a damaged file is ignored (and rewritten by the caller).
//
// Layout (little-endian):
//   "QNTOKv1\n"                 8 bytes magic
//   u32 H, H bytes of JSON       header (TokenCacheMeta), zero-padded to a multiple of 4
//   u32[numRows + 1]             row offsets into ids
//   i32[numTokens]               token ids
//   32 bytes                     sha256 of everything above

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { writeFileAtomic } from "../config/atomic-write.js";
import { expandHome } from "../config/hf-cache.js";

/** Bump when tokenization or row semantics change: old cache files then no longer match. */
export const TOKEN_CACHE_VERSION = 4; // 2: BOM kept, lone \r a line break; 3: empty rows kept; 4: whitespace rows blank unless kept, .txt lines end at \n only (datasets' text loader)
const MAGIC = Buffer.from("QNTOKv1\n", "latin1");

export interface TokenCacheMeta {
  version: number;
  key: string;
  split: string;
  format: string;
  files: { path: string; bytes: number; sha256: string }[];
  numRows: number;
  numTokens: number;
  eosId: number;
  padId: number;
  vocabSize: number;
  tokenizerFingerprint: string;
  /** the tokenizer's special-token template (absent in caches written before it was recorded) */
  specialPrefix?: number[];
  specialSuffix?: number[];
  createdAt: string;
}

export interface CachedTokens {
  meta: TokenCacheMeta;
  ids: Int32Array;
  offsets: Uint32Array;
}

/** The cache folder: advanced.cache_dir, else $XDG_CACHE_HOME/qlora-native/tokens, else ~/.cache/qlora-native/tokens. */
export function defaultTokenCacheDir(configured: string | null = null, env: NodeJS.ProcessEnv = process.env): string {
  if (configured) return resolve(expandHome(configured));
  const base = env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : join(homedir(), ".cache");
  return resolve(base, "qlora-native", "tokens");
}

/** sha256 (hex) of a file's bytes, streamed. */
export function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  return new Promise((ok, fail) => {
    const h = createHash("sha256");
    let bytes = 0;
    createReadStream(path, { highWaterMark: 1 << 22 })
      .on("data", (chunk) => {
        bytes += chunk.length;
        h.update(chunk);
      })
      .on("error", fail)
      .on("end", () => ok({ sha256: h.digest("hex"), bytes }));
  });
}

/** The cache key of a split: everything its token ids depend on. */
export function tokenCacheKey(parts: { tokenizerFingerprint: string; fileHashes: string[]; format: string; textField: string; addSpecialTokens?: boolean }): string {
  const h = createHash("sha256");
  const { addSpecialTokens, ...rest } = parts;
  // (rows without special tokens keep the keys they had before the option existed)
  h.update(JSON.stringify({ v: TOKEN_CACHE_VERSION, ...rest, ...(addSpecialTokens ? { specials: true } : {}) }));
  return h.digest("hex");
}

export function tokenCachePath(dir: string, key: string): string {
  return join(dir, `${key}.tok`);
}

/** Loads a cached split, or null when absent, damaged, or written for another key. */
export async function readTokenCache(dir: string, key: string): Promise<CachedTokens | null> {
  const path = tokenCachePath(dir, key);
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    return null;
  }
  const parsed = parseCacheFile(buf, key);
  // a damaged entry is a miss: removed when the folder allows it (a read-only cache keeps it)
  if (!parsed) await rm(path, { force: true }).catch(() => {});
  return parsed;
}

function parseCacheFile(buf: Buffer, key: string): CachedTokens | null {
  if (buf.length < MAGIC.length + 4 + 32 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  const body = buf.subarray(0, buf.length - 32);
  if (!createHash("sha256").update(body).digest().equals(buf.subarray(buf.length - 32))) return null;
  const headerLen = buf.readUInt32LE(MAGIC.length);
  let meta: TokenCacheMeta;
  try {
    meta = JSON.parse(buf.toString("utf8", MAGIC.length + 4, MAGIC.length + 4 + headerLen)) as TokenCacheMeta;
  } catch {
    return null;
  }
  if (meta.key !== key || meta.version !== TOKEN_CACHE_VERSION) return null;
  const start = align4(MAGIC.length + 4 + headerLen);
  const offBytes = (meta.numRows + 1) * 4;
  if (start + offBytes + meta.numTokens * 4 !== body.length) return null;
  // Copy out: the views must be 4-byte aligned and must not pin the whole file buffer.
  const offsets = new Uint32Array(meta.numRows + 1);
  new Uint8Array(offsets.buffer).set(buf.subarray(start, start + offBytes));
  const ids = new Int32Array(meta.numTokens);
  new Uint8Array(ids.buffer).set(buf.subarray(start + offBytes, start + offBytes + meta.numTokens * 4));
  if (offsets[meta.numRows] !== meta.numTokens) return null;
  return { meta, ids, offsets };
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Writes a split to the cache atomically. */
export async function writeTokenCache(dir: string, data: CachedTokens): Promise<string> {
  const header = Buffer.from(JSON.stringify(data.meta), "utf8");
  const pre = Buffer.alloc(align4(MAGIC.length + 4 + header.length));
  MAGIC.copy(pre, 0);
  pre.writeUInt32LE(header.length, MAGIC.length);
  header.copy(pre, MAGIC.length + 4);
  const offsets = new Uint8Array(data.offsets.buffer, data.offsets.byteOffset, data.offsets.byteLength);
  const ids = new Uint8Array(data.ids.buffer, data.ids.byteOffset, data.ids.byteLength);
  const digest = createHash("sha256").update(pre).update(offsets).update(ids).digest();
  const path = tokenCachePath(dir, data.meta.key);
  await writeFileAtomic(path, [pre, offsets, ids, digest]);
  return path;
}
