// The nf4 functions of the native addon (binding/ops_nf4.cpp), typed for the TS layer, and
// moving NF4 weights between host arrays and device tensors.
import { native, type NativeSession, type NativeTensor } from "../native.js";
import type { Nf4HostWeight } from "./bnb.js";

/** An NF4 weight whose parts are tensors of one session (the shape of qn::Nf4Weight). */
export interface NativeNf4Weight {
  rows: number;
  cols: number;
  blocksize: number;
  nested: boolean;
  /** u8 [ceil(rows*cols/2)] */
  codes: NativeTensor;
  /** f32 [nblocks], plain weights */
  absmax?: NativeTensor;
  /** u8 [nblocks], double-quantized weights */
  absmaxQ?: NativeTensor;
  /** f32 [ceil(nblocks / nestedBlocksize)] */
  nestedAbsmax?: NativeTensor;
  /** f32 [256] */
  nestedMap?: NativeTensor;
  nestedOffset?: number;
  nestedBlocksize?: number;
}

export interface Nf4Tables {
  /** the 16 NF4 code values, index = 4-bit code */
  codes: Float32Array;
  /** the 15 decision thresholds */
  thresholds: Float32Array;
  /** bitsandbytes' signed 8-bit dynamic map (nested_quant_map) */
  dynamicMap: Float32Array;
}

export interface Nf4Ops {
  nf4Tables(): Nf4Tables;
  nf4Quantize(src: NativeTensor, codes: NativeTensor, absmax: NativeTensor, blocksize: number, name?: string): Promise<void>;
  /** Resolves to the offset (mean of absmax). */
  nf4DoubleQuant(absmax: NativeTensor, absmaxQ: NativeTensor, nestedAbsmax: NativeTensor, nestedBlocksize?: number): Promise<number>;
  nf4DoubleDequant(
    absmaxQ: NativeTensor,
    nestedAbsmax: NativeTensor,
    nestedMap: NativeTensor,
    offset: number,
    absmaxOut: NativeTensor,
    nestedBlocksize?: number,
  ): Promise<void>;
  nf4Dequantize(weight: NativeNf4Weight, out: NativeTensor): Promise<void>;
  nf4QuantizeWeight(w: NativeTensor, blocksize?: number, doubleQuant?: boolean, name?: string): Promise<NativeNf4Weight>;
}

export function nf4Ops(): Nf4Ops {
  return native.ops as unknown as Nf4Ops;
}

let tables: Nf4Tables | undefined;
/** The code tables compiled into the addon (cached). */
export function nf4Tables(): Nf4Tables {
  tables ??= nf4Ops().nf4Tables();
  return tables;
}

/** Uploads a host weight to the session (the tensors belong to the caller: dispose them). */
export function nf4WeightToDevice(session: NativeSession, w: Nf4HostWeight): NativeNf4Weight {
  const [rows, cols] = w.shape.length === 2 ? w.shape : [1, w.shape[0]];
  const out: NativeNf4Weight = {
    rows,
    cols,
    blocksize: w.blocksize,
    nested: w.nested,
    codes: session.fromHost(w.codes, "u8", [w.codes.length]),
  };
  if (w.nested) {
    out.absmaxQ = session.fromHost(w.absmaxQ!, "u8", [w.absmaxQ!.length]);
    out.nestedAbsmax = session.fromHost(w.nestedAbsmax!, "f32", [w.nestedAbsmax!.length]);
    out.nestedMap = session.fromHost(w.nestedMap!, "f32", [w.nestedMap!.length]);
    out.nestedOffset = w.nestedOffset;
    out.nestedBlocksize = w.nestedBlocksize;
  } else {
    out.absmax = session.fromHost(w.absmax!, "f32", [w.absmax!.length]);
  }
  return out;
}

/** Disposes every tensor of a device weight. */
export function disposeNf4Weight(w: NativeNf4Weight): void {
  for (const t of [w.codes, w.absmax, w.absmaxQ, w.nestedAbsmax, w.nestedMap]) t?.dispose();
}
