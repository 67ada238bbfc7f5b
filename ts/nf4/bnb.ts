// The bitsandbytes 4-bit serialization, as transformers saves a `load_in_4bit` model (quant_type
// "nf4"), for a weight W = `<P>.weight` of logical shape [rows, cols] (n elements, nb blocks):
//   W                                    U8  [ceil(n/2), 1]  codes, even element in the high nibble
//   W.absmax                             U8  [nb] (double quant) or F32 [nb] (plain)
//   W.quant_map                          F32 [16]            the NF4 table
//   W.nested_absmax                      F32 [ceil(nb/256)]  (double quant)
//   W.nested_quant_map                   F32 [256]           (double quant) signed 8-bit dynamic map
//   W.quant_state.bitsandbytes__nf4      U8  [len]           UTF-8 JSON: {"quant_type": "nf4",
//        "blocksize": 64, "dtype": "bfloat16", "shape": [rows, cols], "nested_blocksize": 256,
//        "nested_dtype": "float32", "nested_offset": <float>}  (json.dumps style, keys in this order)
// plus `quantization_config` in config.json. See test/fixtures/README.md ("bnb_linear").
import { QloraError } from "../errors.js";
import { numelOf, type StDType, type StTensorInfo } from "../io/safetensors.js";

export const NF4_STATE_SUFFIX = ".quant_state.bitsandbytes__nf4";
export const FP4_STATE_SUFFIX = ".quant_state.bitsandbytes__fp4";
const AUX_SUFFIXES = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", NF4_STATE_SUFFIX, FP4_STATE_SUFFIX];

/** An NF4 weight in host memory (what a checkpoint stores, decoded). */
export interface Nf4HostWeight {
  /** the weight's logical shape, [rows, cols] (or [n]) */
  shape: number[];
  blocksize: number;
  /** the dtype the weight had before quantization ("bfloat16", "float16", "float32") */
  dtype: string;
  /** ceil(n/2) bytes */
  codes: Uint8Array;
  nested: boolean;
  /** plain: f32 [nb] */
  absmax?: Float32Array;
  /** nested: u8 [nb] */
  absmaxQ?: Uint8Array;
  nestedAbsmax?: Float32Array;
  nestedMap?: Float32Array;
  nestedOffset?: number;
  nestedBlocksize?: number;
  /** the stored quant_map (the NF4 table) */
  quantMap?: Float32Array;
}

export interface Nf4StateJson {
  quant_type: "nf4";
  blocksize: number;
  dtype: string;
  shape: number[];
  nested_blocksize?: number;
  nested_dtype?: string;
  nested_offset?: number;
}

/** A reader the functions below can take (Checkpoint and SafetensorsFile both fit). */
export interface TensorSource {
  has(name: string): boolean;
  info(name: string): StTensorInfo;
  read(name: string): Promise<Buffer>;
}

/** The companion tensors of a 4-bit weight `<P>.weight` (everything but the packed codes). */
export function isBnbAuxiliary(name: string): boolean {
  return AUX_SUFFIXES.some((s) => name.endsWith(".weight" + s));
}

export function bnbNames(weightName: string) {
  return {
    weight: weightName,
    absmax: `${weightName}.absmax`,
    quantMap: `${weightName}.quant_map`,
    nestedAbsmax: `${weightName}.nested_absmax`,
    nestedMap: `${weightName}.nested_quant_map`,
    quantState: `${weightName}${NF4_STATE_SUFFIX}`,
  };
}

export function blocksizeOk(bs: unknown): bs is number {
  return typeof bs === "number" && Number.isInteger(bs) && bs >= 32 && bs <= 4096 && (bs & (bs - 1)) === 0;
}

/** torch dtype name of a safetensors float dtype ("BF16" -> "bfloat16"). */
export function torchDtypeName(dt: StDType): string {
  return dt === "BF16" ? "bfloat16" : dt === "F16" ? "float16" : dt === "F32" ? "float32" : dt === "F64" ? "float64" : dt.toLowerCase();
}

/** Python's repr() of a float (what json.dumps writes): shortest round-trip digits. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, expStr] = x.toExponential().split("e");
  const sign = x < 0 ? "-" : "";
  const digits = mant.replace("-", "").replace(".", "");
  const exp = Number(expStr);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp >= 0) {
    const int = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
    return `${sign}${int}.${digits.slice(exp + 1) || "0"}`;
  }
  return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
}

/** A float with 17 significant digits in a fixed-width exponent form ("1.3218587636947632e-01":
 * 22 characters for any float32 value >= 0): round-trips exactly, and its length is known before
 * the value is, which lets the quantizer declare the quant-state tensor before quantizing. */
export function fixedFloatRepr(x: number): string {
  if (!Number.isFinite(x)) return pyFloatRepr(x);
  const [mant, expStr] = x.toExponential(16).split("e");
  const exp = Number(expStr);
  return `${mant}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
}

/** The quant-state JSON bytes, json.dumps style. `fixedWidth` formats nested_offset with fixedFloatRepr. */
export function encodeQuantState(s: Nf4StateJson, fixedWidth = false): Uint8Array {
  const parts = [
    `"quant_type": ${JSON.stringify(s.quant_type)}`,
    `"blocksize": ${s.blocksize}`,
    `"dtype": ${JSON.stringify(s.dtype)}`,
    `"shape": [${s.shape.join(", ")}]`,
  ];
  if (s.nested_blocksize !== undefined) {
    parts.push(`"nested_blocksize": ${s.nested_blocksize}`);
    parts.push(`"nested_dtype": ${JSON.stringify(s.nested_dtype ?? "float32")}`);
    parts.push(`"nested_offset": ${(fixedWidth ? fixedFloatRepr : pyFloatRepr)(s.nested_offset ?? 0)}`);
  }
  return new Uint8Array(Buffer.from(`{${parts.join(", ")}}`, "utf8"));
}

/** config.json's `quantization_config` as transformers writes it for BitsAndBytesConfig (sorted keys). */
export function bnbQuantizationConfig(o: { computeDtype: string; doubleQuant: boolean }): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: o.computeDtype,
    bnb_4bit_quant_storage: "uint8",
    bnb_4bit_quant_type: "nf4",
    bnb_4bit_use_double_quant: o.doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: "bitsandbytes",
  };
}

export interface BnbEntry {
  name: string;
  dtype: StDType;
  shape: number[];
}

/** The tensors a weight expands to, in the order we write them (data from bnbTensorData). */
export function bnbEntries(weightName: string, shape: number[], blocksize: number, nested: boolean, stateBytes: number): BnbEntry[] {
  const n = numelOf(shape);
  const nb = Math.ceil(n / blocksize);
  const names = bnbNames(weightName);
  const out: BnbEntry[] = [{ name: names.weight, dtype: "U8", shape: [Math.ceil(n / 2), 1] }];
  out.push({ name: names.absmax, dtype: nested ? "U8" : "F32", shape: [nb] });
  if (nested) {
    out.push({ name: names.nestedAbsmax, dtype: "F32", shape: [Math.ceil(nb / 256)] });
    out.push({ name: names.nestedMap, dtype: "F32", shape: [256] });
  }
  out.push({ name: names.quantMap, dtype: "F32", shape: [16] });
  out.push({ name: names.quantState, dtype: "U8", shape: [stateBytes] });
  return out;
}

function bytesOf(a: Uint8Array | Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The data of bnbEntries(...) in the same order. */
export function bnbTensorData(w: Nf4HostWeight, quantMap: Float32Array, state: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [w.codes];
  if (w.nested) out.push(w.absmaxQ!, bytesOf(w.nestedAbsmax!), bytesOf(w.nestedMap!));
  else out.push(bytesOf(w.absmax!));
  out.push(bytesOf(quantMap), state);
  return out;
}

/** The quant state of a host weight (nested fields when double-quantized). */
export function quantStateOf(w: Nf4HostWeight): Nf4StateJson {
  const s: Nf4StateJson = { quant_type: "nf4", blocksize: w.blocksize, dtype: w.dtype, shape: w.shape };
  if (w.nested) {
    s.nested_blocksize = w.nestedBlocksize ?? 256;
    s.nested_dtype = "float32";
    s.nested_offset = w.nestedOffset ?? 0;
  }
  return s;
}

/** Every tensor of one weight, ready for writeSafetensors (quant_map = the NF4 table). */
export function bnbTensors(
  weightName: string,
  w: Nf4HostWeight,
  quantMap: Float32Array,
  fixedWidth = false,
): Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> {
  const state = encodeQuantState(quantStateOf(w), fixedWidth);
  const entries = bnbEntries(weightName, w.shape, w.blocksize, w.nested, state.length);
  const data = bnbTensorData(w, quantMap, state);
  const out: Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> = {};
  entries.forEach((e, i) => (out[e.name] = { dtype: e.dtype, shape: e.shape, data: data[i] }));
  return out;
}

// ---- reading ---------------------------------------------------------------------------------

function fmt(file: string, name: string, msg: string): QloraError {
  return new QloraError("E_FORMAT", `${file}: tensor '${name}': ${msg}`);
}

async function readAs(src: TensorSource, name: string, dtype: "F32" | "U8", numel: number, owner: string): Promise<Uint8Array> {
  if (!src.has(name)) throw fmt(src.info(owner).file, owner, `4-bit weight without its companion tensor '${name}'`);
  const info = src.info(name);
  if (info.dtype !== dtype) throw fmt(info.file, name, `dtype ${info.dtype}, expected ${dtype}`);
  const have = numelOf(info.shape);
  if (have !== numel) throw fmt(info.file, name, `${have} elements (shape [${info.shape.join(", ")}]), expected ${numel}`);
  const buf = await src.read(name);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function f32View(b: Uint8Array): Float32Array {
  return b.byteOffset % 4 === 0 ? new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Float32Array(b.slice().buffer);
}

/**
 * Reads the 4-bit weight `weightName` (`<P>.weight`) with all its companions. E_FORMAT naming the
 * file and tensor on any mismatch: fp4 or another quant_type, bad JSON, an unsupported blocksize,
 * sizes that do not fit the shape, wrong dtypes, a quant_map that is not the NF4 table (when
 * `nf4Codes` is given), a non-finite offset.
 */
export async function readNf4Weight(src: TensorSource, weightName: string, nf4Codes?: Float32Array): Promise<Nf4HostWeight> {
  const names = bnbNames(weightName);
  const winfo = src.info(weightName);
  const file = winfo.file;
  if (winfo.dtype !== "U8") throw fmt(file, weightName, `a 4-bit weight must be U8 packed codes, got ${winfo.dtype}`);
  if (!src.has(names.quantState)) {
    if (src.has(`${weightName}${FP4_STATE_SUFFIX}`)) throw fmt(file, weightName, "quant_type fp4 is not supported (only nf4)");
    throw fmt(file, weightName, `U8 weight without '${names.quantState}' (not a bitsandbytes nf4 weight)`);
  }
  const qsInfo = src.info(names.quantState);
  if (qsInfo.dtype !== "U8") throw fmt(qsInfo.file, names.quantState, `dtype ${qsInfo.dtype}, expected U8 (UTF-8 JSON)`);
  let qs: Record<string, unknown>;
  try {
    qs = JSON.parse(Buffer.from(await src.read(names.quantState)).toString("utf8"));
    if (qs === null || typeof qs !== "object" || Array.isArray(qs)) throw new Error("not an object");
  } catch (e) {
    throw fmt(qsInfo.file, names.quantState, `quant state is not a JSON object (${(e as Error).message})`);
  }
  const bad = (msg: string) => fmt(qsInfo.file, names.quantState, msg);
  if (qs.quant_type !== "nf4") throw bad(`quant_type ${JSON.stringify(qs.quant_type)} is not supported (only nf4)`);
  if (!blocksizeOk(qs.blocksize)) throw bad(`blocksize ${JSON.stringify(qs.blocksize)} is not supported (a power of two in 32..4096)`);
  const shape = qs.shape;
  if (!Array.isArray(shape) || shape.length < 1 || shape.length > 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw bad(`shape ${JSON.stringify(shape)} is not a 1-D or 2-D weight shape`);
  }
  const n = numelOf(shape);
  const blocksize = qs.blocksize;
  const nb = Math.ceil(n / blocksize);
  if (numelOf(winfo.shape) !== Math.ceil(n / 2)) {
    throw fmt(file, weightName, `${numelOf(winfo.shape)} code bytes (shape [${winfo.shape.join(", ")}]) do not fit the quant state shape [${shape.join(", ")}] (expected ${Math.ceil(n / 2)})`);
  }
  const w: Nf4HostWeight = {
    shape: shape.slice(),
    blocksize,
    dtype: typeof qs.dtype === "string" ? qs.dtype : "float32",
    codes: new Uint8Array(await src.read(weightName)),
    nested: src.has(names.nestedAbsmax) || qs.nested_blocksize !== undefined,
  };
  if (src.has(names.quantMap)) {
    w.quantMap = f32View(await readAs(src, names.quantMap, "F32", 16, weightName));
    if (nf4Codes && !w.quantMap.every((v, i) => Object.is(v, nf4Codes[i]) || (v === 0 && nf4Codes[i] === 0))) {
      throw fmt(src.info(names.quantMap).file, names.quantMap, "quant_map is not the NF4 code table (a custom map is not supported)");
    }
  }
  if (w.nested) {
    const nbs = qs.nested_blocksize ?? 256;
    if (!blocksizeOk(nbs)) throw bad(`nested_blocksize ${JSON.stringify(nbs)} is not supported`);
    if (qs.nested_dtype !== undefined && qs.nested_dtype !== "float32") throw bad(`nested_dtype ${JSON.stringify(qs.nested_dtype)} is not supported (float32)`);
    const off = qs.nested_offset;
    if (typeof off !== "number" || !Number.isFinite(off)) throw bad(`nested_offset ${JSON.stringify(off)} is not a finite number`);
    w.absmaxQ = await readAs(src, names.absmax, "U8", nb, weightName);
    w.nestedAbsmax = f32View(await readAs(src, names.nestedAbsmax, "F32", Math.ceil(nb / nbs), weightName));
    w.nestedMap = f32View(await readAs(src, names.nestedMap, "F32", 256, weightName));
    w.nestedOffset = Math.fround(off);
    w.nestedBlocksize = nbs;
    if (!w.nestedAbsmax.every(Number.isFinite) || !w.nestedMap.every(Number.isFinite)) {
      throw fmt(file, weightName, "non-finite values in nested_absmax or nested_quant_map");
    }
  } else {
    w.absmax = f32View(await readAs(src, names.absmax, "F32", nb, weightName));
    if (!w.absmax.every(Number.isFinite)) throw fmt(src.info(names.absmax).file, names.absmax, "non-finite absmax values");
  }
  return w;
}

/** The weights of a checkpoint stored in 4 bits (names `<P>.weight` with an nf4 or fp4 quant state). */
export function quantizedWeightNames(names: Iterable<string>): string[] {
  const all = new Set(names);
  const out: string[] = [];
  for (const name of all) {
    if (isBnbAuxiliary(name)) continue;
    if (all.has(name + NF4_STATE_SUFFIX) || all.has(name + FP4_STATE_SUFFIX)) out.push(name);
  }
  return out;
}

// ---- host reference ---------------------------------------------------------------------------

/** The f32 block scales (restored from the double quant when nested): f32(f32(map[q] * nested) + offset). */
export function nf4BlockScales(w: Nf4HostWeight): Float32Array {
  if (!w.nested) return w.absmax!;
  const nb = w.absmaxQ!.length;
  const nbs = w.nestedBlocksize ?? 256;
  const out = new Float32Array(nb);
  const off = Math.fround(w.nestedOffset ?? 0);
  for (let i = 0; i < nb; i++) {
    // Both roundings are exact float32 operations: the double product / sum of two floats rounds
    // once more to the same float32 as the native code.
    out[i] = Math.fround(Math.fround(w.nestedMap![w.absmaxQ![i]] * w.nestedAbsmax![Math.floor(i / nbs)]) + off);
  }
  return out;
}

/** Dequantizes on the host to f32 (bit-identical to the native nf4_dequantize; for tools and tests). */
export function dequantizeNf4Host(w: Nf4HostWeight, nf4Codes: Float32Array): Float32Array {
  const n = numelOf(w.shape);
  const scales = nf4BlockScales(w);
  const out = new Float32Array(n);
  const bs = w.blocksize;
  for (let i = 0; i < n; i++) {
    const b = w.codes[i >> 1];
    const c = i & 1 ? b & 15 : b >> 4;
    out[i] = Math.fround(nf4Codes[c] * scales[Math.floor(i / bs)]);
  }
  return out;
}
