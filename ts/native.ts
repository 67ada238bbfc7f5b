// The one file that types everything the native addon exports, and loads it.
// The addon is found by node-gyp-build (prebuilds/ or build/Release), or at $QN_ADDON_PATH.
// Loading is lazy: importing the library (or running `--help`) never needs the native build.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { QloraError } from "./errors.js";

export type DType = "f32" | "bf16" | "f16" | "u8" | "i32";
/** Typed arrays accepted and returned per dtype (bf16/f16 travel as their raw 16-bit patterns). */
export type HostArray = Float32Array | Uint16Array | Uint8Array | Int32Array;

export interface MemoryStats {
  /** bytes allocated through qlora-native on this device right now */
  allocated: number;
  /** high-water mark since start or the last resetPeak() */
  peak: number;
  /** live allocations */
  allocations: number;
}

export interface NativeTensor {
  readonly dtype: DType;
  readonly shape: number[];
  readonly device: string;
  readonly nbytes: number;
  readonly disposed: boolean;
  readonly session: NativeSession;
  /** Copies the data to the host after all queued work of the session finished. */
  toHost(): Promise<HostArray>;
  /** Frees the device memory now (unless queued work still uses it). Idempotent. */
  dispose(): void;
  [Symbol.dispose](): void;
}

export interface NativeSession {
  readonly device: string;
  readonly disposed: boolean;
  fromHost(data: HostArray, dtype: DType, shape: number[]): NativeTensor;
  empty(dtype: DType, shape: number[]): NativeTensor;
  memory(): MemoryStats;
  resetPeak(): void;
  /** Resolves when all work queued on the session (and its CUDA stream) is done. */
  synchronize(): Promise<void>;
  /** Waits for queued work, then releases the session (tensors keep their own memory). */
  dispose(): void;
  [Symbol.dispose](): void;
}

export interface CpuInfo {
  brand: string;
  hardwareThreads: number;
  threads: number;
  features: Record<"avx2" | "fma" | "f16c" | "avx512f" | "avx512bw" | "avx512vl" | "avx512_bf16" | "amx_bf16", boolean>;
}

export interface CudaDeviceInfo {
  index: number;
  name: string;
  totalMemory: number;
  freeMemory: number;
  computeCapability: string;
  multiprocessors: number;
}

export interface CudaInfo {
  compiled: boolean;
  available: boolean;
  reason: string;
  driverVersion: number;
  runtimeVersion: number;
  compiledArchs: string;
  devices: CudaDeviceInfo[];
  cublasLt: { built: boolean; probed: boolean; found: boolean; path: string; error: string; version: number };
}

export interface SystemInfo {
  cpu: CpuInfo;
  cuda: CudaInfo;
}

/** Op functions. Each validates its arguments at once (throwing QloraError) and returns a
 * promise that settles when the op ran on the session's ordered queue. */
export interface NativeOps {
  cast(src: NativeTensor, dst: NativeTensor): Promise<void>;
  fill(dst: NativeTensor, value: number): Promise<void>;
  axpby(x: NativeTensor, y: NativeTensor, alpha: number, beta: number): Promise<void>;
  /** C = alpha op(A) op(B) + beta C (+ bias); A/B f32 or bf16, C f32 or bf16, fp32 accumulation */
  gemm(a: NativeTensor, b: NativeTensor, c: NativeTensor, opts?: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number; bias?: NativeTensor }): Promise<void>;
  /** NF4 code table, decision thresholds and bitsandbytes' signed 8-bit dynamic map (synchronous) */
  nf4Tables(): { codes: Float32Array; thresholds: Float32Array; dynamicMap: Float32Array };
  nf4Quantize(src: NativeTensor, codes: NativeTensor, absmax: NativeTensor, blocksize: number, name?: string): Promise<void>;
  /** resolves to the offset (mean absmax) */
  nf4DoubleQuant(absmax: NativeTensor, absmaxQ: NativeTensor, nestedAbsmax: NativeTensor, nestedBlocksize?: number): Promise<number>;
  nf4DoubleDequant(absmaxQ: NativeTensor, nestedAbsmax: NativeTensor, nestedMap: NativeTensor, offset: number, absmaxOut: NativeTensor, nestedBlocksize?: number): Promise<void>;
  nf4Dequantize(weight: Record<string, unknown>, out: NativeTensor): Promise<void>;
  nf4QuantizeWeight(w: NativeTensor, blocksize?: number, doubleQuant?: boolean, name?: string): Promise<Record<string, unknown>>;
  optimStateCreate(session: NativeSession, n: number, kind: "adamw_32bit" | "adamw_8bit", opts?: { paged?: boolean }): Promise<Record<string, unknown>>;
  adamwStep(param: NativeTensor, grad: NativeTensor, state: Record<string, unknown>, opts: { step: number; lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; gradScale?: number; normSq?: NativeTensor; maxGradNorm?: number }): Promise<void>;
  gradNormSq(grad: NativeTensor, out?: NativeTensor, flag?: NativeTensor): Promise<{ normSq: number; nonfinite: boolean }>;
  nonfinite(x: NativeTensor): Promise<boolean>;
  [name: string]: (...args: any[]) => unknown;
}

export interface DistInfo {
  active: boolean;
  rank: number;
  worldSize: number;
  localRank: number;
  library: string;
  timeoutSeconds: number;
}

/** Synchronous MPI collectives (every call is guarded by the QN_DIST_TIMEOUT_S watchdog). */
export interface NativeDist {
  init(): DistInfo;
  info(): DistInfo;
  allreduceSum<T extends Float64Array | Float32Array>(data: T, what?: string): T;
  broadcast(bytes: Uint8Array, root: number): Uint8Array;
  barrier(what?: string): void;
  abort(message: string, code?: number): never;
  finalize(): void;
}

export interface NativeAddon {
  Session: new (device: string) => NativeSession;
  Tensor: Function;
  ops: NativeOps;
  napiVersion: number;
  systemInfo(probeCublasLt?: boolean): SystemInfo;
  setNumThreads(threads: number): void;
  numThreads(): number;
  memoryStats(device: string): MemoryStats;
  setErrorClass(ctor: typeof QloraError): void;
  /** data parallel over Open MPI (loaded at run time); see ts/dist.ts */
  dist: NativeDist;
  [name: string]: unknown;
}

export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

let addon: NativeAddon | undefined;
let addonPath = "";

function loadAddon(): NativeAddon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  try {
    if (process.env.QN_ADDON_PATH) {
      addonPath = path.resolve(process.env.QN_ADDON_PATH);
      addon = require(addonPath) as NativeAddon;
    } else {
      const gypBuild = require("node-gyp-build") as { (dir: string): NativeAddon; resolve(dir: string): string };
      addonPath = gypBuild.resolve(packageRoot);
      addon = require(addonPath) as NativeAddon;
    }
  } catch (e) {
    throw new QloraError(
      "E_NO_ADDON",
      `the native addon could not be loaded (${(e as Error).message.split("\n")[0]}); ` +
        `build it with "npm run build:native" (needs cmake and a C++ compiler)`,
      { cause: e },
    );
  }
  addon.setErrorClass(QloraError);
  installDisposers(addon);
  return addon;
}

function installDisposers(a: NativeAddon): void {
  for (const cls of [a.Tensor, a.Session]) {
    const proto = (cls as { prototype: Record<symbol, unknown> }).prototype;
    if (!proto[Symbol.dispose]) {
      Object.defineProperty(proto, Symbol.dispose, {
        value(this: { dispose(): void }) {
          this.dispose();
        },
      });
    }
  }
}

/** The raw addon, loaded on first use. */
export const native: NativeAddon = new Proxy({} as NativeAddon, {
  get(_t, prop) {
    return (loadAddon() as unknown as Record<string | symbol, unknown>)[prop];
  },
  has(_t, prop) {
    return prop in loadAddon();
  },
});

/** Loads the addon now (throws QloraError E_NO_ADDON) and tells where it came from. */
export function addonInfo(): { path: string; napiVersion: number } {
  const a = loadAddon();
  return { path: addonPath, napiVersion: a.napiVersion };
}
