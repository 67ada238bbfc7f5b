// Reading the rows of a split from its files, with the row semantics of the Hugging Face loaders:
//   wikitext raw: one row per line, line break kept ("text\n"), blank lines become "" (as the
//                 wikitext dataset script and its parquet copy have them)
//   txt:          one row per line, line break dropped (the HF "text" loader)
//   jsonl:        one row per non-blank line, the string in `text_field`
//   parquet:      one row per record, the string column `text_field` (null becomes "")
// Only rows with non-whitespace text are kept. Invalid UTF-8, unreadable files, bad JSON and
// missing fields raise QloraError E_DATA naming the file (and line where there is one).

import { readFile } from "node:fs/promises";
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

/** Decodes `buf` as strict UTF-8 in blocks cut at line breaks (strings have a length limit). */
function* decodeLines(buf: Buffer, file: string): Generator<string[]> {
  const dec = new TextDecoder("utf-8", { fatal: true });
  let start = buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0;
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
    const lines = text.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    yield lines;
    start = end;
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

function hasText(s: string): boolean {
  return s.trim() !== "";
}

async function readLinesFile(file: string, keepBreak: boolean, out: SplitRows): Promise<void> {
  const buf = await readBytes(file);
  out.bytes += buf.length;
  const lastHasBreak = buf.length > 0 && buf[buf.length - 1] === 0x0a;
  const blocks = [...decodeLines(buf, file)];
  blocks.forEach((lines, b) => {
    lines.forEach((raw, i) => {
      out.totalRows++;
      const line = stripCr(raw);
      if (!hasText(line)) return;
      const isLast = b === blocks.length - 1 && i === lines.length - 1;
      out.rows.push(keepBreak && (!isLast || lastHasBreak) ? line + "\n" : line);
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
  const dec = new TextDecoder("utf-8", { fatal: true });
  let values: unknown[] = [];
  try {
    await parquetRead({
      file: buffer,
      metadata,
      columns: [field],
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
export async function readSplitRows(source: SplitSource, textField: string): Promise<SplitRows> {
  const out: SplitRows = { rows: [], totalRows: 0, bytes: 0 };
  for (const file of source.files) {
    switch (source.format) {
      case "wikitext-raw":
        await readLinesFile(file, true, out);
        break;
      case "txt":
        await readLinesFile(file, false, out);
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
