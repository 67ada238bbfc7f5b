// Reading and writing safetensors files (https://github.com/huggingface/safetensors) and HF
// checkpoint folders (model.safetensors, or shards listed in model.safetensors.index.json).
//
// File layout: u64 little-endian header length N, N bytes of JSON
//   { "__metadata__"?: {string: string}, name: { dtype, shape, data_offsets: [begin, end] }, ... },
// then the data region; offsets are relative to the data region. Validation follows the reference
// Rust implementation (what Python's `safetensors` accepts): header at most 100 MB, every dtype and
// shape valid, byte length = element count x dtype size, the tensors tile the data region exactly
// (no overlap, no gap) and the file ends where the last tensor ends. Every failure is a QloraError
// E_FORMAT naming the file (and the tensor), or E_IO for the file system.
//
// Writing streams tensor data in declared order into `<path>.tmp-<pid>-<random>`, then fsync and an
// atomic rename: readers never see a partial file, and abort() (or any failure) leaves nothing.
import { randomBytes } from "node:crypto";
import { constants as fsConstants, existsSync } from "node:fs";
import { open, readFile, rename, rm, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { QloraError } from "../errors.js";

export type StDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export interface StTensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  /** absolute byte offset of the data in the file */
  offset: number;
  byteLength: number;
  /** the file that holds the tensor */
  file: string;
}

export const ST_DTYPE_SIZE: Readonly<Record<StDType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** The largest header the reference implementation accepts. */
export const MAX_HEADER_BYTES = 100_000_000;
const READ_CHUNK = 1 << 30; // FileHandle.read moves at most 2 GiB per call

export function isStDType(s: unknown): s is StDType {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(ST_DTYPE_SIZE, s);
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function formatError(file: string, message: string): QloraError {
  return new QloraError("E_FORMAT", `${file}: ${message}`);
}

function ioError(what: string, file: string, e: unknown): QloraError {
  const err = e as NodeJS.ErrnoException;
  const why = err?.code === "ENOENT" ? "no such file" : err?.code === "EACCES" ? "permission denied" : err?.message ?? String(e);
  return new QloraError("E_IO", `cannot ${what} ${file}: ${why}`, { cause: e });
}

function validShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

async function readFully(fh: FileHandle, target: Uint8Array, position: number, file: string, what: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const len = Math.min(READ_CHUNK, target.byteLength - done);
    const { bytesRead } = await fh.read(target, done, len, position + done);
    if (bytesRead === 0) {
      throw formatError(file, `unexpected end of file reading ${what} (${done} of ${target.byteLength} bytes at offset ${position}); the file is truncated or changed while open`);
    }
    done += bytesRead;
  }
}

async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const len = Math.min(READ_CHUNK, data.byteLength - done);
    const { bytesWritten } = await fh.write(data, done, len, position + done);
    done += bytesWritten;
  }
}

/** Parses and validates a header (exported for tests and tools). `dataBytes` = file size - 8 - N. */
export function parseHeader(
  file: string,
  json: string,
  dataStart: number,
  dataBytes: number,
): { metadata: Record<string, string>; tensors: Map<string, StTensorInfo> } {
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (e) {
    throw formatError(file, `the header is not valid JSON (${(e as Error).message}); not a safetensors file or corrupt`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw formatError(file, "the header is not a JSON object; not a safetensors file");
  }
  const metadata: Record<string, string> = {};
  const list: StTensorInfo[] = [];
  const begins = new Map<string, number>();
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
        throw formatError(file, "__metadata__ must be an object of strings");
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") throw formatError(file, `__metadata__.${k} must be a string, got ${typeof v}`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor '${name}'`;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) throw formatError(file, `${where}: entry is not an object`);
    const e = entry as Record<string, unknown>;
    if (!isStDType(e.dtype)) {
      throw formatError(file, `${where}: unsupported dtype ${JSON.stringify(e.dtype)} (expected one of ${Object.keys(ST_DTYPE_SIZE).join(", ")})`);
    }
    if (!validShape(e.shape)) throw formatError(file, `${where}: shape ${JSON.stringify(e.shape)} is not an array of non-negative integers`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && x >= 0) || off[0] > off[1]) {
      throw formatError(file, `${where}: data_offsets ${JSON.stringify(off)} must be [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = off as [number, number];
    const need = numelOf(e.shape) * ST_DTYPE_SIZE[e.dtype];
    if (need !== end - begin) {
      throw formatError(file, `${where}: dtype ${e.dtype} x shape [${e.shape.join(", ")}] needs ${need} bytes but data_offsets span ${end - begin}`);
    }
    if (end > dataBytes) {
      throw formatError(file, `${where}: data ends at byte ${end} of the data region, which has only ${dataBytes} bytes; the file is truncated or corrupt`);
    }
    begins.set(name, begin);
    list.push({ name, dtype: e.dtype, shape: e.shape.slice(), offset: dataStart + begin, byteLength: end - begin, file });
  }
  // The tensors must tile the data region in offset order: no overlap, no gap, nothing after.
  list.sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let at = 0;
  for (const t of list) {
    const begin = begins.get(t.name)!;
    if (begin < at) throw formatError(file, `tensor '${t.name}' overlaps the tensor before it (starts at ${begin}, previous ends at ${at})`);
    if (begin > at) throw formatError(file, `gap in the data region before tensor '${t.name}' (bytes ${at}..${begin} belong to no tensor)`);
    at = begin + t.byteLength;
  }
  if (at !== dataBytes) {
    throw formatError(file, `the data region has ${dataBytes} bytes but the tensors cover ${at}; the file is truncated, padded or corrupt`);
  }
  return { metadata, tensors: new Map(list.map((t) => [t.name, t])) };
}

export class SafetensorsFile {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly metadata: Record<string, string>,
    readonly tensors: Map<string, StTensorInfo>,
    private readonly fh: FileHandle,
    readonly fileSize: number,
  ) {}

  /** Opens and fully validates the header (E_IO when unreadable, E_FORMAT when corrupt). */
  static async open(file: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(file, "r");
    } catch (e) {
      throw ioError("open", file, e);
    }
    try {
      const st = await fh.stat();
      if (st.isDirectory()) throw formatError(file, "is a folder, not a safetensors file");
      const size = st.size;
      if (size < 8) throw formatError(file, `not a safetensors file: ${size} bytes, shorter than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await readFully(fh, lenBuf, 0, file, "the header length");
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw formatError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit; not a safetensors file or corrupt`);
      }
      const headerLen = Number(n);
      if (8 + headerLen > size) {
        throw formatError(file, `header length ${headerLen} runs past the end of the ${size}-byte file; truncated or not a safetensors file`);
      }
      const hb = Buffer.alloc(headerLen);
      await readFully(fh, hb, 8, file, "the header");
      const { metadata, tensors } = parseHeader(file, hb.toString("utf8"), 8 + headerLen, size - 8 - headerLen);
      return new SafetensorsFile(file, metadata, tensors, fh, size);
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): StTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new QloraError("E_ARG", `${this.path}: no tensor '${name}'`);
    return t;
  }

  /** The tensor's bytes (a fresh, unpooled Buffer: typed-array views on it are aligned). */
  async read(name: string): Promise<Buffer> {
    const t = this.info(name);
    const buf = Buffer.allocUnsafeSlow(t.byteLength);
    await this.readInto(name, buf);
    return buf;
  }

  /** Reads bytes [start, start + target.byteLength) of a tensor's data into target. */
  async readInto(name: string, target: Uint8Array, start = 0): Promise<void> {
    const t = this.info(name);
    if (this.closed) throw new QloraError("E_ARG", `${this.path}: read after close()`);
    if (start < 0 || start + target.byteLength > t.byteLength) {
      throw new QloraError("E_ARG", `${this.path}: range [${start}, ${start + target.byteLength}) outside tensor '${name}' (${t.byteLength} bytes)`);
    }
    await readFully(this.fh, target, t.offset + start, this.path, `tensor '${name}'`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** An HF checkpoint folder: model.safetensors, or the shards of model.safetensors.index.json. */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
    /** the index's "metadata" (sharded) or the single file's __metadata__ */
    readonly metadata: Record<string, unknown>,
  ) {}

  static async open(dir: string): Promise<Checkpoint> {
    const indexPath = path.join(dir, "model.safetensors.index.json");
    const single = path.join(dir, "model.safetensors");
    if (existsSync(indexPath)) {
      let index: { weight_map?: unknown; metadata?: unknown };
      try {
        index = JSON.parse(await readFile(indexPath, "utf8"));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code) throw ioError("read", indexPath, e);
        throw formatError(indexPath, `not valid JSON (${(e as Error).message})`);
      }
      const wm = index?.weight_map;
      if (wm === null || typeof wm !== "object" || Array.isArray(wm)) throw formatError(indexPath, "no \"weight_map\" object");
      if (Object.keys(wm).length === 0) throw formatError(indexPath, "\"weight_map\" is empty: it names no tensor or shard");
      const byFile = new Map<string, SafetensorsFile>();
      const where = new Map<string, SafetensorsFile>();
      try {
        for (const [name, f] of Object.entries(wm as Record<string, unknown>)) {
          if (typeof f !== "string" || f.includes("/") || f.includes("\\") || f === ".." || !f.endsWith(".safetensors")) {
            throw formatError(indexPath, `weight_map["${name}"] = ${JSON.stringify(f)} is not a .safetensors file name in the folder`);
          }
          let st = byFile.get(f);
          if (!st) {
            st = await SafetensorsFile.open(path.join(dir, f));
            byFile.set(f, st);
          }
          if (!st.has(name)) throw formatError(st.path, `tensor '${name}' is listed in model.safetensors.index.json but missing from this shard`);
          where.set(name, st);
        }
      } catch (e) {
        await Promise.all([...byFile.values()].map((s) => s.close().catch(() => {})));
        throw e;
      }
      const md = index.metadata && typeof index.metadata === "object" ? (index.metadata as Record<string, unknown>) : {};
      return new Checkpoint(dir, [...byFile.values()], where, md);
    }
    if (!existsSync(single)) {
      throw new QloraError("E_IO", `${dir}: no model.safetensors or model.safetensors.index.json (not an HF safetensors checkpoint folder)`);
    }
    const st = await SafetensorsFile.open(single);
    return new Checkpoint(dir, [st], new Map([...st.tensors.keys()].map((k) => [k, st])), st.metadata);
  }

  /** Tensor names: file order (by offset) for one file, index order for shards. */
  names(): string[] {
    return [...this.where.keys()];
  }

  /** The safetensors files, in the order first referenced. */
  shardFiles(): string[] {
    return this.files.map((f) => f.path);
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): StTensorInfo {
    const st = this.where.get(name);
    if (!st) throw new QloraError("E_ARG", `${this.dir}: the checkpoint has no tensor '${name}'`);
    return st.info(name);
  }

  read(name: string): Promise<Buffer> {
    const st = this.where.get(name);
    if (!st) return Promise.reject(new QloraError("E_ARG", `${this.dir}: the checkpoint has no tensor '${name}'`));
    return st.read(name);
  }

  readInto(name: string, target: Uint8Array, start = 0): Promise<void> {
    const st = this.where.get(name);
    if (!st) return Promise.reject(new QloraError("E_ARG", `${this.dir}: the checkpoint has no tensor '${name}'`));
    return st.readInto(name, target, start);
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
}

export interface StEntry {
  name: string;
  dtype: StDType;
  shape: number[];
}

/** Builds the header bytes (8-byte length + JSON padded with spaces to a multiple of 8). */
export function encodeHeader(entries: readonly StEntry[], metadata?: Record<string, string>): { header: Buffer; dataBytes: number; offsets: number[] } {
  const obj: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new QloraError("E_ARG", `safetensors metadata '${k}' must be a string, got ${typeof v}`);
    }
    obj.__metadata__ = metadata;
  }
  let at = 0;
  const offsets: number[] = [];
  const seen = new Set<string>();
  for (const e of entries) {
    if (typeof e.name !== "string" || !e.name || e.name === "__metadata__") throw new QloraError("E_ARG", `bad safetensors tensor name ${JSON.stringify(e.name)}`);
    if (seen.has(e.name)) throw new QloraError("E_ARG", `tensor '${e.name}' is listed twice`);
    seen.add(e.name);
    if (!isStDType(e.dtype)) throw new QloraError("E_DTYPE", `tensor '${e.name}': unsupported dtype ${JSON.stringify(e.dtype)}`);
    if (!validShape(e.shape)) throw new QloraError("E_SHAPE", `tensor '${e.name}': shape ${JSON.stringify(e.shape)} is not an array of non-negative integers`);
    const bytes = numelOf(e.shape) * ST_DTYPE_SIZE[e.dtype];
    offsets.push(at);
    obj[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [at, at + bytes] };
    at += bytes;
  }
  let json = JSON.stringify(obj);
  const jsonBytes = Buffer.byteLength(json, "utf8");
  json += " ".repeat((8 - (jsonBytes % 8)) % 8);
  const body = Buffer.from(json, "utf8");
  const header = Buffer.alloc(8 + body.length);
  header.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(header, 8);
  return { header, dataBytes: at, offsets };
}

/** Streams a safetensors file: declare every tensor first, then write the data in that order. */
export class SafetensorsWriter {
  private next = 0; // index of the tensor being written
  private written = 0; // bytes of that tensor written so far
  private pos: number;
  private state: "open" | "committed" | "aborted" = "open";

  private constructor(
    readonly path: string,
    readonly tmpPath: string,
    private readonly fh: FileHandle,
    private readonly entries: StEntry[],
    private readonly sizes: number[],
    headerBytes: number,
  ) {
    this.pos = headerBytes;
  }

  static async create(file: string, entries: StEntry[], metadata?: Record<string, string>): Promise<SafetensorsWriter> {
    const { header } = encodeHeader(entries, metadata);
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    let fh: FileHandle;
    try {
      fh = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
    } catch (e) {
      throw ioError("create", tmp, e);
    }
    try {
      await writeFully(fh, header, 0);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw ioError("write", tmp, e);
    }
    const list = entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape.slice() }));
    return new SafetensorsWriter(file, tmp, fh, list, list.map((e) => numelOf(e.shape) * ST_DTYPE_SIZE[e.dtype]), header.length);
  }

  /** The next tensor expected by write() (undefined when all are written). */
  get pending(): string | undefined {
    return this.entries[this.next]?.name;
  }

  /** Writes one whole tensor; tensors must come in declared order. */
  async write(name: string, data: Uint8Array): Promise<void> {
    this.expect(name);
    if (this.written !== 0) throw new QloraError("E_ARG", `${this.path}: tensor '${name}' was partly written with writeChunk()`);
    if (data.byteLength !== this.sizes[this.next]) {
      const e = this.entries[this.next];
      throw new QloraError("E_SHAPE", `${this.path}: tensor '${name}' (${e.dtype} [${e.shape.join(", ")}]) needs ${this.sizes[this.next]} bytes, got ${data.byteLength}`);
    }
    await this.append(data);
  }

  /** Appends part of the current tensor's data (for tensors streamed in pieces). */
  async writeChunk(name: string, chunk: Uint8Array): Promise<void> {
    this.expect(name);
    if (this.written + chunk.byteLength > this.sizes[this.next]) {
      throw new QloraError("E_SHAPE", `${this.path}: more data than the ${this.sizes[this.next]} bytes of tensor '${name}'`);
    }
    await this.append(chunk);
  }

  private expect(name: string): void {
    if (this.state !== "open") throw new QloraError("E_ARG", `${this.path}: the writer was already ${this.state}`);
    const e = this.entries[this.next];
    if (!e) throw new QloraError("E_ARG", `${this.path}: all declared tensors are written; '${name}' is extra`);
    if (e.name !== name) throw new QloraError("E_ARG", `${this.path}: expected tensor '${e.name}' next (declared order), got '${name}'`);
  }

  private async append(data: Uint8Array): Promise<void> {
    try {
      await writeFully(this.fh, data, this.pos);
    } catch (e) {
      await this.abort();
      throw ioError("write", this.tmpPath, e);
    }
    this.pos += data.byteLength;
    this.written += data.byteLength;
    if (this.written === this.sizes[this.next]) {
      this.next++;
      this.written = 0;
    }
  }

  /** Flushes, then renames the temporary file over `path` (atomic on one file system). */
  async commit(): Promise<void> {
    if (this.state !== "open") throw new QloraError("E_ARG", `${this.path}: the writer was already ${this.state}`);
    if (this.next < this.entries.length) {
      const missing = this.entries.length - this.next;
      await this.abort();
      throw new QloraError("E_ARG", `${this.path}: ${missing} declared tensor(s) not written, starting with '${this.entries[this.next].name}'`);
    }
    try {
      await this.fh.sync();
      await this.fh.close();
      this.state = "committed";
      await rename(this.tmpPath, this.path);
    } catch (e) {
      this.state = "aborted";
      await this.fh.close().catch(() => {});
      await rm(this.tmpPath, { force: true });
      throw ioError("write", this.path, e);
    }
    await syncDir(path.dirname(this.path));
  }

  /** Drops the temporary file. Idempotent; a no-op after commit(). */
  async abort(): Promise<void> {
    if (this.state !== "open") return;
    this.state = "aborted";
    await this.fh.close().catch(() => {});
    await rm(this.tmpPath, { force: true });
  }
}

/** fsync of a directory so a rename survives a crash (best effort: not every platform allows it). */
export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // ignored
  }
}

/** Writes a whole safetensors file atomically (insertion order of `tensors`). */
export async function writeSafetensors(
  file: string,
  tensors: Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }>,
  metadata?: Record<string, string>,
): Promise<void> {
  const names = Object.keys(tensors);
  const w = await SafetensorsWriter.create(file, names.map((name) => ({ name, dtype: tensors[name].dtype, shape: tensors[name].shape })), metadata);
  try {
    for (const name of names) await w.write(name, tensors[name].data);
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

// ---- element conversions ----------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f16BitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** float -> bf16 bits, round to nearest even (NaN stays a quiet NaN). */
export function floatToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float -> f16 bits, round to nearest even. */
export function floatToF16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    if (abs < 0x33000000) return sign;
    const exp = abs >>> 23;
    const man = (abs & 0x7fffff) | 0x800000;
    const shift = 126 - exp;
    let r = man >>> shift;
    const rem = man & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  const r = (abs + 0xfff + ((abs >>> 13) & 1) - 0x38000000) >>> 13;
  return r >= 0x7c00 ? sign | 0x7c00 : sign | r;
}

function aligned(buf: Uint8Array, n: number): boolean {
  return buf.byteOffset % n === 0;
}

/**
 * F32, F16 or BF16 (also F64) tensor bytes as a Float32Array. F32 data that is 4-byte aligned is
 * returned as a view on `buf` (no copy); everything else is converted into a new array.
 */
export function toFloat32(buf: Uint8Array, dtype: StDType): Float32Array {
  const size = ST_DTYPE_SIZE[dtype];
  if (buf.byteLength % (size ?? 1) !== 0) throw new QloraError("E_SHAPE", `toFloat32: ${buf.byteLength} bytes is not a whole number of ${dtype} elements`);
  switch (dtype) {
    case "F32":
      if (aligned(buf, 4)) return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    case "BF16": {
      const n = buf.byteLength / 2;
      const out = new Float32Array(n);
      const o32 = new Uint32Array(out.buffer);
      if (aligned(buf, 2)) {
        const h = new Uint16Array(buf.buffer, buf.byteOffset, n);
        for (let i = 0; i < n; i++) o32[i] = h[i] << 16;
      } else {
        for (let i = 0; i < n; i++) o32[i] = (buf[2 * i] | (buf[2 * i + 1] << 8)) << 16;
      }
      return out;
    }
    case "F16": {
      const n = buf.byteLength / 2;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16BitsToFloat(buf[2 * i] | (buf[2 * i + 1] << 8));
      return out;
    }
    case "F64": {
      const n = buf.byteLength / 8;
      const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    }
    default:
      throw new QloraError("E_DTYPE", `toFloat32: expected F32, F16, BF16 or F64 data, got ${dtype}`);
  }
}

/** A Float32Array encoded as F32, F16 or BF16 bytes (round to nearest even). */
export function fromFloat32(values: Float32Array, dtype: "F32" | "F16" | "BF16"): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  const conv = dtype === "BF16" ? floatToBf16Bits : floatToF16Bits;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]);
  return new Uint8Array(out.buffer);
}
