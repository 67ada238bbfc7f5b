// Reading the rows of a split from its files, with the row semantics of the Hugging Face loaders:
//   wikitext raw: one row per line, line break kept ("text\n"), blank lines become "" (as the
//                 wikitext dataset script and its parquet copy have them)
//   txt:          one row per line, line break dropped (the HF "text" loader; kept with
//                 data.keep_linebreaks, as run_clm.py asks it to); lines end at \n only, after
//                 universal newlines, as datasets' loader reads them (StringIO.readlines: \f,
//                 U+2028 and the other str.splitlines separators stay inside a row)
// Files are read as Python's open(encoding="utf-8") reads them: universal newlines (\r\n and a
// lone \r are line breaks) and a byte-order mark kept as U+FEFF text.
//   jsonl:        one row per non-blank line, the string in `text_field`
//   parquet:      one row per record, the string column `text_field` (null becomes "")
// Every row is kept, blank ones too, as "" (they tokenize to nothing, or to the tokenizer's special
// tokens alone, and count in run_clm-style row groups: data.packing_group_rows); with
// keepBlankRows (run_clm's plain concatenation) a whitespace row keeps its text as the HF loaders
// give it ("\n" with keep_linebreaks), since run_clm tokenizes it. Invalid UTF-8, unreadable files, bad JSON and
// missing fields raise QloraError E_DATA naming the file (and line where there is one).

import { open } from "node:fs/promises";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { asyncBufferFromFile, parquetMetadataAsync, parquetRead, parquetSchema } from "hyparquet";
import { QloraError } from "../errors.js";
import type { SplitSource } from "./sources.js";

export interface SplitRows {
  /** Every row, in file order, as the Hugging Face loader gives it (empty ones included). */
  rows: string[];
  /** Rows with non-whitespace text. */
  textRows: number;
  /** Bytes of the files read. */
  bytes: number;
}

// Line files are read in blocks of about this size, each cut after a line break, so files of any
// size stream through (a whole-file read stops at 2 GiB) and no string gets too long.
let BLOCK = 64 << 20;
/** Testing hook: the block size of line files (to cross block boundaries with small files). */
export function setLineBlockBytes(n: number): void {
  BLOCK = n;
}

function readError(file: string, err: unknown): QloraError {
  const code = (err as NodeJS.ErrnoException).code;
  return new QloraError(code === "ENOENT" ? "E_NOT_FOUND" : "E_DATA", `cannot read data file ${file}: ${(err as Error).message}`, { cause: err });
}

/** Index of the first byte of the first ill-formed UTF-8 sequence in `b` (Unicode's well-formed
 * byte sequences table: no overlongs, no surrogates, nothing above U+10FFFF, no truncation). */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let n = 0;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) n = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c === 0xe0) lo = 0xa0;
      if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xbf)) return i;
    }
    i += n + 1;
  }
  return b.length;
}

/** Line number (1-based, from `firstLine`) and byte offset (from `base`) of the first invalid
 * UTF-8 sequence in `buf`. */
function findInvalidUtf8(buf: Uint8Array, firstLine: number, base: number): { line: number; offset: number } {
  const dec = new TextDecoder("utf-8", { fatal: true });
  let line = firstLine;
  let start = 0;
  while (start <= buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    const bytes = buf.subarray(start, end);
    try {
      dec.decode(bytes);
    } catch {
      return { line, offset: base + start + firstInvalidUtf8(bytes) };
    }
    start = end + 1;
    line++;
  }
  return { line, offset: base + buf.length };
}

// Python's universal newlines: \r\n and a lone \r read as \n.
const UNIVERSAL_NL = /\r\n?/g;

interface LineBlock {
  lines: string[];
  /** the file's last block */
  last: boolean;
  /** the file ends with a line break (\n or \r) */
  endsWithBreak: boolean;
}

/** The lines of `file` as strict UTF-8, block by block (each block cut after a \n); `\r\n` and a
 * lone `\r` end a line too. A byte-order mark stays (as Python reads it). Counts the bytes. */
async function* lineBlocks(file: string, out: SplitRows): AsyncGenerator<LineBlock> {
  let fh;
  try {
    fh = await open(file, "r");
  } catch (err) {
    throw readError(file, err);
  }
  const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let line = 1; // number of the first line of the pending block
  let offset = 0; // file offset of the pending block
  let lastByte = -1;
  const decode = (bytes: Buffer): string[] => {
    let text: string;
    try {
      text = dec.decode(bytes);
    } catch {
      const at = findInvalidUtf8(bytes, line, offset);
      throw new QloraError("E_DATA", `${file}: invalid UTF-8 at line ${at.line} (byte ${at.offset}); the data files must be UTF-8 text`);
    }
    for (const b of bytes) if (b === 0x0a) line++;
    offset += bytes.length;
    const lines = text.replace(UNIVERSAL_NL, "\n").split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    return lines;
  };
  try {
    let carry: Buffer = Buffer.alloc(0);
    for (;;) {
      const chunk = Buffer.allocUnsafe(BLOCK);
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(chunk, 0, BLOCK, null));
      } catch (err) {
        throw readError(file, err);
      }
      if (bytesRead === 0) break;
      out.bytes += bytesRead;
      lastByte = chunk[bytesRead - 1];
      const data = carry.length ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      const nl = data.lastIndexOf(0x0a);
      if (nl < 0) {
        carry = Buffer.from(data); // one line longer than a block so far
        continue;
      }
      const lines = decode(data.subarray(0, nl + 1));
      carry = Buffer.from(data.subarray(nl + 1));
      if (lines.length) yield { lines, last: false, endsWithBreak: false };
    }
    const endsWithBreak = lastByte === 0x0a || lastByte === 0x0d;
    yield { lines: carry.length ? decode(carry) : [], last: true, endsWithBreak };
  } finally {
    await fh.close();
  }
}

function hasText(s: string): boolean {
  return s.trim() !== "";
}

/** One row per line; the "\n" kept when `keepBreak`. wikitext: a blank line is "" as the dataset
 * script gives it; txt: a blank line as is with keepBlank (the HF text loader), else "". */
async function readLinesFile(file: string, keepBreak: boolean, wikitext: boolean, out: SplitRows, keepBlank: boolean): Promise<void> {
  for await (const block of lineBlocks(file, out)) {
    block.lines.forEach((line, i) => {
      const brk = block.last && i === block.lines.length - 1 && !block.endsWithBreak ? "" : "\n";
      const text = hasText(line);
      if (text) out.textRows++;
      out.rows.push(!text && (wikitext || !keepBlank) ? "" : keepBreak ? line + brk : line);
    });
  }
}

async function readJsonl(file: string, field: string, out: SplitRows, keepBlank: boolean): Promise<void> {
  let lineNo = 0;
  for await (const { lines } of lineBlocks(file, out)) {
    for (const line of lines) {
      lineNo++;
      if (!hasText(line)) continue;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (err) {
        throw new QloraError("E_DATA", `${file}: line ${lineNo} is not valid JSON (${(err as Error).message})`);
      }
      if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
        throw new QloraError("E_DATA", `${file}: line ${lineNo} is not a JSON object`);
      }
      const v = (obj as Record<string, unknown>)[field];
      if (v === undefined) {
        const keys = Object.keys(obj).map((k) => JSON.stringify(k)).join(", ") || "none";
        throw new QloraError("E_DATA", `${file}: line ${lineNo} has no field "${field}" (data.text_field); its fields: ${keys}`);
      }
      if (v !== null && typeof v !== "string") {
        throw new QloraError("E_DATA", `${file}: line ${lineNo}: field "${field}" holds ${Array.isArray(v) ? "a list" : typeof v}, expected a string`);
      }
      const text = typeof v === "string" && hasText(v);
      out.rows.push(typeof v === "string" && (text || keepBlank) ? v : "");
      if (text) out.textRows++;
    }
  }
}

class Utf8Error extends Error {}

// Page codecs beyond hyparquet's built-in SNAPPY: what Node's zlib decodes (ZSTD and LZ4 are not
// in Node 20's zlib).
const PARQUET_CODECS = {
  GZIP: (input: Uint8Array) => new Uint8Array(gunzipSync(input)),
  BROTLI: (input: Uint8Array) => new Uint8Array(brotliDecompressSync(input)),
};

async function readParquet(file: string, field: string, out: SplitRows, keepBlank: boolean): Promise<void> {
  let buffer;
  let metadata;
  try {
    buffer = await asyncBufferFromFile(file);
    metadata = await parquetMetadataAsync(buffer);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new QloraError("E_NOT_FOUND", `data file not found: ${file}`, { cause: err });
    throw new QloraError("E_DATA", `${file}: not a readable parquet file (${(err as Error).message})`, { cause: err });
  }
  out.bytes += buffer.byteLength;
  const columns = parquetSchema(metadata).children.map((c) => c.element.name);
  if (!columns.includes(field)) {
    throw new QloraError("E_DATA", `${file}: no column "${field}" (data.text_field); its columns: ${columns.map((c) => JSON.stringify(c)).join(", ")}`);
  }
  const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let values: unknown[] = [];
  try {
    await parquetRead({
      file: buffer,
      metadata,
      columns: [field],
      compressors: PARQUET_CODECS,
      parsers: {
        stringFromBytes: (bytes: Uint8Array) => {
          if (!bytes) return bytes;
          try {
            return dec.decode(bytes);
          } catch {
            throw new Utf8Error("invalid UTF-8");
          }
        },
      },
      onComplete: (rows: unknown[][]) => {
        values = rows.map((r) => r[0]);
      },
    });
  } catch (err) {
    if (err instanceof Utf8Error) throw new QloraError("E_DATA", `${file}: invalid UTF-8 in column "${field}"; the text must be UTF-8`);
    const codec = /unsupported compression codec: (\w+)/.exec((err as Error).message)?.[1];
    if (codec) throw new QloraError("E_DATA", `${file}: parquet compression ${codec} is not supported (SNAPPY, GZIP, BROTLI and uncompressed are); re-save it, e.g. pandas: df.to_parquet(path, compression="snappy")`, { cause: err });
    throw new QloraError("E_DATA", `${file}: cannot read column "${field}" (${(err as Error).message})`, { cause: err });
  }
  for (const v of values) {
    if (v !== null && v !== undefined && typeof v !== "string") {
      throw new QloraError("E_DATA", `${file}: column "${field}" holds ${typeof v} values, expected strings`);
    }
    const text = typeof v === "string" && hasText(v);
    out.rows.push(typeof v === "string" && (text || keepBlank) ? v : "");
    if (text) out.textRows++;
  }
}

/** Reads all rows of a split. */
export async function readSplitRows(source: SplitSource, textField: string, options: { keepLinebreaks?: boolean; keepBlankRows?: boolean } = {}): Promise<SplitRows> {
  const keepBlank = options.keepBlankRows === true;
  const out: SplitRows = { rows: [], textRows: 0, bytes: 0 };
  for (const file of source.files) {
    switch (source.format) {
      case "wikitext-raw":
        await readLinesFile(file, true, true, out, keepBlank);
        break;
      case "txt":
        await readLinesFile(file, options.keepLinebreaks === true, false, out, keepBlank);
        break;
      case "jsonl":
        await readJsonl(file, textField, out, keepBlank);
        break;
      case "parquet":
        await readParquet(file, textField, out, keepBlank);
        break;
    }
  }
  return out;
}
