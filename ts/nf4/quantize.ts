// quantizeCheckpoint: an HF checkpoint (safetensors, one file or shards; bf16/f16/f32) -> the same
// checkpoint with every decoder linear weight in the bitsandbytes NF4 layout (bnb.ts) and
// `quantization_config` in config.json, loadable by transformers + bitsandbytes and by us.
//
// Streaming: one tensor at a time is read, quantized with the native op and written, so memory
// holds one tensor (plus its device copy), never two copies of the model. Output shards mirror
// the input shards. Everything is written into `<out>.tmp-XXXX` and renamed to `out` at the end; on
// any failure (or Ctrl-C) the temporary folder is removed and nothing half-written is left.
import { randomBytes } from "node:crypto";
import { existsSync, rmSync, statSync } from "node:fs";
import { mkdir, readFile, rename, rm, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { QloraError } from "../errors.js";
import { checkNewOutputFolder, copyNonWeightFiles, hfConfigJson } from "../io/hf-files.js";
import { Checkpoint, SafetensorsWriter, numelOf, syncDir, type StDType, type StEntry, type StTensorInfo } from "../io/safetensors.js";
import type { NativeSession, NativeTensor } from "../native.js";
import { openSession } from "../tensor.js";
import {
  blocksizeOk,
  bnbEntries,
  bnbQuantizationConfig,
  bnbTensorData,
  encodeQuantState,
  isBnbAuxiliary,
  quantStateOf,
  torchDtypeName,
  type Nf4HostWeight,
} from "./bnb.js";
import { disposeNf4Weight, nf4Ops, nf4Tables } from "./native-ops.js";

/** Decoder linear weights of Qwen2 / Llama: the ones QLoRA keeps in NF4. */
export const LINEAR_WEIGHT_RE = /^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$/;

export interface QuantizeProgress {
  /** tensor being processed */
  name: string;
  action: "quantize" | "copy";
  /** 1-based position among all tensors */
  index: number;
  total: number;
  /** input bytes processed so far / in all */
  bytesDone: number;
  bytesTotal: number;
}

export interface QuantizeOptions {
  /** HF checkpoint folder (config.json + model.safetensors or index + shards) */
  model: string;
  /** output folder; must not exist, or be empty */
  out: string;
  /** 64 by default; a power of two in 32..4096 */
  blocksize?: number;
  /** double quantization of the block scales (default true) */
  doubleQuant?: boolean;
  /** "auto" (default), "cpu", "cuda", "cuda:N"; or pass an open session */
  device?: string;
  session?: NativeSession;
  onProgress?: (p: QuantizeProgress) => void;
}

export interface QuantizeResult {
  out: string;
  device: string;
  quantizedTensors: number;
  /** parameters of the quantized weights */
  quantizedParams: number;
  /** bytes that hold them (codes, scales, maps, quant states) */
  quantizedBytes: number;
  /** quantizedBytes * 8 / quantizedParams */
  bitsPerParam: number;
  copiedTensors: number;
  inputBytes: number;
  outputBytes: number;
  seconds: number;
}

type Plan = { info: StTensorInfo; quantize: boolean; entries: StEntry[]; stateBytes: number };

const SAFETENSORS_FLOATS = new Set<StDType>(["F32", "F16", "BF16"]);
const COPY_CHUNK = 64 << 20;

function planTensor(info: StTensorInfo, blocksize: number, doubleQuant: boolean): Plan {
  if (!LINEAR_WEIGHT_RE.test(info.name)) return { info, quantize: false, entries: [{ name: info.name, dtype: info.dtype, shape: info.shape }], stateBytes: 0 };
  if (!SAFETENSORS_FLOATS.has(info.dtype)) {
    throw new QloraError("E_FORMAT", `${info.file}: tensor '${info.name}' has dtype ${info.dtype}; a linear weight to quantize must be F32, F16 or BF16`);
  }
  if (info.shape.length !== 2 || info.shape.some((d) => d < 1)) {
    throw new QloraError("E_FORMAT", `${info.file}: tensor '${info.name}' has shape [${info.shape.join(", ")}]; a linear weight must be 2-D [out, in]`);
  }
  // The quant state's length is fixed before the offset is known (fixed-width offset format).
  const probe: Nf4HostWeight = { shape: info.shape, blocksize, dtype: torchDtypeName(info.dtype), codes: new Uint8Array(0), nested: doubleQuant, nestedOffset: 0, nestedBlocksize: 256 };
  const stateBytes = encodeQuantState(quantStateOf(probe), true).length;
  return { info, quantize: true, entries: bnbEntries(info.name, info.shape, blocksize, doubleQuant, stateBytes), stateBytes };
}

function hostArrayOf(buf: Buffer, dtype: StDType): Float32Array | Uint16Array {
  // Buffers from Checkpoint.read are unpooled (offset 0), so these views are aligned.
  if (dtype === "F32") return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  return new Uint16Array(buf.buffer, buf.byteOffset, buf.byteLength / 2);
}

async function toHostBytes(t: NativeTensor): Promise<Uint8Array> {
  const a = await t.toHost();
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

async function toHostF32(t: NativeTensor): Promise<Float32Array> {
  return (await t.toHost()) as Float32Array;
}

/** Quantizes one weight tensor with the native op; returns the host parts. */
async function quantizeOne(session: NativeSession, info: StTensorInfo, data: Buffer, blocksize: number, doubleQuant: boolean): Promise<Nf4HostWeight> {
  const dt = info.dtype === "F32" ? "f32" : info.dtype === "F16" ? "f16" : "bf16";
  const src = session.fromHost(hostArrayOf(data, info.dtype), dt, info.shape);
  try {
    const q = await nf4Ops().nf4QuantizeWeight(src, blocksize, doubleQuant, info.name);
    try {
      const w: Nf4HostWeight = { shape: info.shape, blocksize, dtype: torchDtypeName(info.dtype), codes: await toHostBytes(q.codes), nested: q.nested };
      if (q.nested) {
        w.absmaxQ = await toHostBytes(q.absmaxQ!);
        w.nestedAbsmax = await toHostF32(q.nestedAbsmax!);
        w.nestedMap = nf4Tables().dynamicMap;
        w.nestedOffset = q.nestedOffset;
        w.nestedBlocksize = q.nestedBlocksize;
      } else {
        w.absmax = await toHostF32(q.absmax!);
      }
      return w;
    } finally {
      disposeNf4Weight(q);
    }
  } finally {
    src.dispose();
  }
}

async function readJson(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new QloraError("E_IO", `cannot read ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new QloraError("E_FORMAT", `${file}: ${(e as Error).message}`);
  }
}

/** Quantizes an HF checkpoint folder to a bnb-NF4 checkpoint folder (see the file header). */
export async function quantizeCheckpoint(opts: QuantizeOptions): Promise<QuantizeResult> {
  if (!opts || typeof opts.model !== "string" || typeof opts.out !== "string")
    throw new QloraError("E_ARG", "quantizeCheckpoint: options { model: string, out: string, ... } are required");
  const t0 = performance.now();
  const blocksize = opts.blocksize ?? 64;
  const doubleQuant = opts.doubleQuant ?? true;
  if (!blocksizeOk(blocksize)) throw new QloraError("E_ARG", `blocksize must be a power of two in 32..4096, got ${blocksize}`);
  const model = path.resolve(opts.model);
  const out = path.resolve(opts.out);
  checkNewOutputFolder(out, [{ label: "--model", dir: model }]);
  const config = await readJson(path.join(model, "config.json"));
  if (config.quantization_config) {
    throw new QloraError("E_FORMAT", `${path.join(model, "config.json")}: the model is already quantized (quantization_config present)`);
  }
  const src = await Checkpoint.open(model);
  const tmp = `${out}.tmp-${randomBytes(4).toString("hex")}`;
  const cleanupSync = () => rmSync(tmp, { recursive: true, force: true });
  const onSignal = (sig: NodeJS.Signals) => {
    cleanupSync();
    process.kill(process.pid, sig);
  };
  let session: NativeSession | undefined;
  const ownSession = !opts.session;
  try {
    const names = src.names();
    if (names.some(isBnbAuxiliary)) throw new QloraError("E_FORMAT", `${model}: the checkpoint already holds bitsandbytes 4-bit tensors`);
    const plans = names.map((n) => planTensor(src.info(n), blocksize, doubleQuant));
    if (!plans.some((p) => p.quantize)) {
      throw new QloraError("E_FORMAT", `${model}: no decoder linear weights (model.layers.N.self_attn.{q,k,v,o}_proj / mlp.{gate,up,down}_proj .weight) to quantize`);
    }
    // Output shards mirror the input files.
    const sharded = existsSync(path.join(model, "model.safetensors.index.json"));
    const shards = new Map<string, Plan[]>();
    for (const p of plans) {
      const f = path.basename(p.info.file);
      if (!shards.has(f)) shards.set(f, []);
      shards.get(f)!.push(p);
    }
    session = opts.session ?? openSession(opts.device ?? "auto");
    await mkdir(path.dirname(out), { recursive: true });
    await mkdir(tmp, { recursive: false });
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const codes = nf4Tables().codes;
    const bytesTotal = plans.reduce((s, p) => s + p.info.byteLength, 0);
    let bytesDone = 0;
    let index = 0;
    const r: QuantizeResult = {
      out, device: session.device, quantizedTensors: 0, quantizedParams: 0, quantizedBytes: 0, bitsPerParam: 0, copiedTensors: 0,
      inputBytes: bytesTotal, outputBytes: 0, seconds: 0,
    };
    const weightMap: Record<string, string> = {};
    for (const [file, list] of shards) {
      const entries = list.flatMap((p) => p.entries);
      const writer = await SafetensorsWriter.create(path.join(tmp, file), entries, { format: "pt" });
      try {
        for (const p of list) {
          const { info } = p;
          opts.onProgress?.({ name: info.name, action: p.quantize ? "quantize" : "copy", index: ++index, total: plans.length, bytesDone, bytesTotal });
          if (p.quantize) {
            const data = await src.read(info.name);
            const w = await quantizeOne(session, info, data, blocksize, doubleQuant);
            const state = encodeQuantState(quantStateOf(w), true);
            if (state.length !== p.stateBytes) throw new QloraError("E_INTERNAL", `quant state of '${info.name}' changed length (${state.length} vs ${p.stateBytes})`);
            const parts = bnbTensorData(w, codes, state);
            for (let i = 0; i < parts.length; i++) {
              await writer.write(p.entries[i].name, parts[i]);
              r.quantizedBytes += parts[i].byteLength;
            }
            r.quantizedTensors++;
            r.quantizedParams += numelOf(info.shape);
          } else {
            const chunk = Buffer.allocUnsafeSlow(Math.min(COPY_CHUNK, info.byteLength));
            for (let at = 0; at < info.byteLength; at += COPY_CHUNK) {
              const part = chunk.subarray(0, Math.min(COPY_CHUNK, info.byteLength - at));
              await src.readInto(info.name, part, at);
              await writer.writeChunk(info.name, part);
            }
            if (info.byteLength === 0) await writer.write(info.name, new Uint8Array(0));
            r.copiedTensors++;
          }
          bytesDone += info.byteLength;
          for (const e of p.entries) weightMap[e.name] = file;
        }
        await writer.commit();
      } catch (e) {
        await writer.abort();
        throw e;
      }
    }
    // config.json with quantization_config; the index for shards; every other non-weight file.
    const computeDtype = (config.torch_dtype ?? config.dtype ?? "bfloat16") as string;
    const newConfig = { ...config, quantization_config: bnbQuantizationConfig({ computeDtype: typeof computeDtype === "string" ? computeDtype : "bfloat16", doubleQuant }) };
    await writeFile(path.join(tmp, "config.json"), hfConfigJson(newConfig));
    let totalSize = 0;
    for (const f of shards.keys()) totalSize += statSync(path.join(tmp, f)).size;
    if (sharded) {
      const indexJson = { metadata: { total_size: totalSize }, weight_map: Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
      await writeFile(path.join(tmp, "model.safetensors.index.json"), JSON.stringify(indexJson, null, 2) + "\n");
    }
    await copyNonWeightFiles(model, tmp);
    await syncDir(tmp);
    if (existsSync(out)) await rmdir(out); // empty, checked above
    await rename(tmp, out);
    await syncDir(path.dirname(out));
    r.outputBytes = totalSize;
    r.bitsPerParam = (r.quantizedBytes * 8) / r.quantizedParams;
    r.seconds = (performance.now() - t0) / 1000;
    return r;
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await src.close();
    if (ownSession) session?.dispose();
  }
}
