// Reading one bitsandbytes 4-bit (load_in_4bit, nf4) linear weight from a checkpoint into the parts
// Model.setNf4Weight takes. Layout (test/fixtures/README.md, "bnb_linear"), prefix W = `<P>.weight`:
//   W                                   u8 [ceil(n/2), 1]  packed codes (even element in the high nibble)
//   W.absmax                            u8 [nb] (double quant) or f32 [nb]
//   W.quant_map                         f32 [16]
//   W.nested_absmax, W.nested_quant_map f32 [nn], f32 [256]   (double quant only)
//   W.quant_state.bitsandbytes__nf4     u8: UTF-8 JSON {quant_type, blocksize, dtype, shape,
//                                       nested_blocksize?, nested_dtype?, nested_offset?}
import { QloraError } from "../errors.js";
import type { Checkpoint } from "../io/safetensors.js";
import type { Nf4Parts } from "./native-model.js";

const AUX = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"];

/** True for the companion tensors of a 4-bit weight (everything but the packed codes). */
export function isBnbAuxiliary(name: string): boolean {
  return name.includes(".weight.") && AUX.some((s) => name.endsWith(".weight" + s));
}

export function bnbAuxiliaryNames(weightName: string) {
  return {
    absmax: `${weightName}.absmax`,
    quantMap: `${weightName}.quant_map`,
    nestedAbsmax: `${weightName}.nested_absmax`,
    nestedMap: `${weightName}.nested_quant_map`,
    quantState: `${weightName}.quant_state.bitsandbytes__nf4`,
  };
}

function fmt(file: string, name: string, msg: string): QloraError {
  return new QloraError("E_FORMAT", `${file}: tensor '${name}': ${msg}`);
}

async function readTyped(ckpt: Checkpoint, name: string, dtype: "F32" | "U8", owner: string): Promise<Float32Array | Uint8Array> {
  if (!ckpt.has(name)) throw fmt(ckpt.info(owner).file, owner, `4-bit weight without its '${name}'`);
  const info = ckpt.info(name);
  if (info.dtype !== dtype) throw fmt(info.file, name, `dtype ${info.dtype}, expected ${dtype}`);
  const buf = await ckpt.read(name);
  return dtype === "F32" ? new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Reads the parts of the 4-bit weight `weightName` (E_FORMAT naming file and tensor on any mismatch). */
export async function readBnbNf4Parts(ckpt: Checkpoint, weightName: string): Promise<Nf4Parts> {
  const n = bnbAuxiliaryNames(weightName);
  const winfo = ckpt.info(weightName);
  const file = winfo.file;
  if (winfo.dtype !== "U8") throw fmt(file, weightName, `4-bit weight stored as ${winfo.dtype}, expected U8 packed codes`);
  const qsInfo = ckpt.info(n.quantState);
  if (qsInfo.dtype !== "U8") throw fmt(qsInfo.file, n.quantState, `dtype ${qsInfo.dtype}, expected U8 (UTF-8 JSON)`);
  let qs: Record<string, unknown>;
  try {
    qs = JSON.parse(Buffer.from(await ckpt.read(n.quantState)).toString("utf8")) as Record<string, unknown>;
  } catch (e) {
    throw fmt(qsInfo.file, n.quantState, `not valid JSON (${(e as Error).message})`);
  }
  if (qs.quant_type !== "nf4") throw fmt(qsInfo.file, n.quantState, `quant_type ${JSON.stringify(qs.quant_type)} is not supported (only nf4)`);
  const shape = qs.shape;
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0))
    throw fmt(qsInfo.file, n.quantState, `shape ${JSON.stringify(shape)} is not a 2-D weight shape`);
  const blocksize = qs.blocksize;
  if (typeof blocksize !== "number" || !Number.isInteger(blocksize)) throw fmt(qsInfo.file, n.quantState, `blocksize ${JSON.stringify(blocksize)} is not an integer`);
  const codes = new Uint8Array(await ckpt.read(weightName));
  const quantMap = ckpt.has(n.quantMap) ? ((await readTyped(ckpt, n.quantMap, "F32", weightName)) as Float32Array) : undefined;
  const absInfo = ckpt.has(n.absmax) ? ckpt.info(n.absmax) : null;
  if (!absInfo) throw fmt(file, weightName, `4-bit weight without its '${n.absmax}'`);
  const nested = ckpt.has(n.nestedAbsmax);
  if (nested) {
    const absmax = (await readTyped(ckpt, n.absmax, "U8", weightName)) as Uint8Array;
    const nestedAbsmax = (await readTyped(ckpt, n.nestedAbsmax, "F32", weightName)) as Float32Array;
    const nestedMap = (await readTyped(ckpt, n.nestedMap, "F32", weightName)) as Float32Array;
    const off = qs.nested_offset;
    if (typeof off !== "number" || !Number.isFinite(off)) throw fmt(qsInfo.file, n.quantState, `nested_offset ${JSON.stringify(off)} is not a number`);
    const nbs = qs.nested_blocksize ?? 256;
    if (typeof nbs !== "number") throw fmt(qsInfo.file, n.quantState, `nested_blocksize ${JSON.stringify(nbs)} is not a number`);
    return { shape, blocksize, codes, absmax, quantMap, nestedAbsmax, nestedMap, nestedOffset: off, nestedBlocksize: nbs };
  }
  const absmax = (await readTyped(ckpt, n.absmax, "F32", weightName)) as Float32Array;
  return { shape, blocksize, codes, absmax, quantMap };
}
