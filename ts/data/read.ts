// Reading the rows of a split from its files, with the row semantics of the Hugging Face loaders:
//   wikitext raw: one row per line, line break kept ("text\n"), blank lines become "" (as the
//                 wikitext dataset script and its parquet copy have them)
//   txt:          one row per line, line break dropped (the HF "text" loader; kept with
//                 data.keep_linebreaks, as run_clm.py asks it to), lines split where Python's
//                 str.splitlines splits (also \v, \f, \x1c-\x1e, \x85, U+2028, U+2029)
// Files are read as Python's open(encoding="utf-8") reads them: universal newlines (\r\n and a
// lone \r are line breaks) and a byte-order mark kept as U+FEFF text.
//   jsonl:        one row per non-blank line, the string in `text_field`
//   parquet:      one row per record, the string column `text_field` (null becomes "")
// Only rows with non-whitespace text are kept. Invalid UTF-8, unreadable files, bad JSON and
// missing fields raise QloraError E_DATA naming the file (and line where there is one).

import { readFile } from "node:fs/promises";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { asyncBufferFromFile, parquetMetadataAsync, parquetRead, parquetSchema } from "hyparquet";
import { QloraError } from "../errors.js";
import type { SplitSource } from "./sources.js";

export interface SplitRows {
  /** Rows with non-whitespace text, in file order. */
  rows: string[];
  /** All rows read, empty ones included. */
  totalRows: number;
  /** Bytes of the files read. */
  bytes: number;
}

const BLOCK = 64 << 20;

async function readBytes(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new QloraError(code === "ENOENT" ? "E_NOT_FOUND" : "E_DATA", `cannot read data file ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Line number (1-based) and byte offset of the first invalid UTF-8 sequence in `buf`. */
function findInvalidUtf8(buf: Uint8Array): { line: number; offset: number } {
  const dec = new TextDecoder("utf-8", { fatal: true });
  let line = 1;
  let start = 0;
  while (start <= buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    try {
      dec.decode(buf.subarray(start, end));
    } catch {
      return { line, offset: start };
    }
    start = end + 1;
    line++;
  }
  return { line, offset: buf.length };
}

// Python's universal newlines, then str.splitlines' other separators (text files only).
const UNIVERSAL_NL = /\r\n?/g;
const SPLITLINES = /([\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])/;

/** Decodes `buf` as strict UTF-8 in blocks cut at line breaks (strings have a length limit);
 * `\r\n` and a lone `\r` end a line too. A byte-order mark stays (as Python reads it). */
function* decodeLines(buf: Buffer, file: string): Generator<string[]> {
  const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let start = 0;
  while (start < buf.length) {
    let end = Math.min(buf.length, start + BLOCK);
    if (end < buf.length) {
      const nl = buf.lastIndexOf(0x0a, end - 1);
      end = nl >= start ? nl + 1 : buf.indexOf(0x0a, end) + 1 || buf.length;
    }
    let text: string;
    try {
      text = dec.decode(buf.subarray(start, end));
    } catch {
      const at = findInvalidUtf8(buf);
      throw new QloraError("E_DATA", `${file}: invalid UTF-8 at line ${at.line} (byte ${at.offset}); the data files must be UTF-8 text`);
    }
    const lines = text.replace(UNIVERSAL_NL, "\n").split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    yield lines;
    start = end;
  }
}

function hasText(s: string): boolean {
  return s.trim() !== "";
}

/** wikitext raw: rows split at line breaks only, "\n" kept. txt (`splitlines`): also at
 * str.splitlines' other separators, each kept when `keepBreak`. */
async function readLinesFile(file: string, keepBreak: boolean, splitlines: boolean, out: SplitRows): Promise<void> {
  const buf = await readBytes(file);
  out.bytes += buf.length;
  const last = buf.length > 0 ? buf[buf.length - 1] : -1;
  const lastHasBreak = last === 0x0a || last === 0x0d;
  const blocks = [...decodeLines(buf, file)];
  const push = (line: string, brk: string) => {
    out.totalRows++;
    if (hasText(line)) out.rows.push(keepBreak ? line + brk : line);
  };
  blocks.forEach((lines, b) => {
    lines.forEach((line, i) => {
      const brk = b === blocks.length - 1 && i === lines.length - 1 && !lastHasBreak ? "" : "\n";
      if (!splitlines) return push(line, brk);
      const parts = line.split(SPLITLINES); // text, separator, text, ...
      for (let k = 0; k < parts.length; k += 2) {
        // "a\x0c" at the end of the file: no empty line after the separator (Python agrees)
        if (k === parts.length - 1 && parts[k] === "" && k > 0 && brk === "") break;
        push(parts[k], k + 1 < parts.length ? parts[k + 1] : brk);
      }
    });
  });
}

async function readJsonl(file: string, field: string, out: SplitRows): Promise<void> {
  const buf = await readBytes(file);
  out.bytes += buf.length;
  let lineNo = 0;
  for (const lines of decodeLines(buf, file)) {
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
      out.totalRows++;
      if (typeof v === "string" && hasText(v)) out.rows.push(v);
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

async function readParquet(file: string, field: string, out: SplitRows): Promise<void> {
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
    out.totalRows++;
    if (typeof v === "string" && hasText(v)) out.rows.push(v);
  }
}

/** Reads all rows of a split; keeps the rows with text. */
export async function readSplitRows(source: SplitSource, textField: string, options: { keepLinebreaks?: boolean } = {}): Promise<SplitRows> {
  const out: SplitRows = { rows: [], totalRows: 0, bytes: 0 };
  for (const file of source.files) {
    switch (source.format) {
      case "wikitext-raw":
        await readLinesFile(file, true, false, out);
        break;
      case "txt":
        await readLinesFile(file, options.keepLinebreaks === true, true, out);
        break;
      case "jsonl":
        await readJsonl(file, textField, out);
        break;
      case "parquet":
        await readParquet(file, textField, out);
        break;
    }
  }
  return out;
}
