// Sessions and tensors for JS users. A Session is one device context (one CUDA stream on GPU);
// tensors live on the device and cross to the host only through toHost(). Both support
// dispose() and `using` (Symbol.dispose); the garbage collector frees leftovers as a safety net.
import { resolveDevice } from "./device.js";
import { QloraError } from "./errors.js";
import { native, type DType, type HostArray, type MemoryStats, type NativeSession, type NativeTensor } from "./native.js";

export type Tensor = NativeTensor;
export type Session = NativeSession;

/** Opens a session on "auto" (default), "cpu", "cuda" or "cuda:N". */
/** A session on a device ("auto" takes the first GPU, else the CPU: `onWarning` hears about that). */
export function openSession(device: string = "auto", options: { onWarning?: (message: string) => void } = {}): Session {
  return new native.Session(resolveDevice(device, options.onWarning)) as Session;
}

const DTYPE_OF: [new (...a: any[]) => HostArray, DType][] = [
  [Float32Array, "f32"],
  [Int32Array, "i32"],
  [Uint8Array, "u8"],
];

/** Creates a tensor from a typed array; dtype defaults from the array type (Uint16Array needs one). */
export function tensorFrom(session: Session, data: HostArray, shape?: number[], dtype?: DType): Tensor {
  const dt = dtype ?? DTYPE_OF.find(([ctor]) => data instanceof ctor)?.[1];
  if (!dt) throw new QloraError("E_DTYPE", "tensorFrom: give a dtype (bf16 or f16) for a Uint16Array");
  return session.fromHost(data, dt, shape ?? [data.length]);
}

/** Bytes allocated on a device ("cpu", "cuda:0") through qlora-native. */
export function memoryStats(device: string): MemoryStats {
  return native.memoryStats(device);
}

/** Sets the CPU worker thread count (0 = one per hardware thread). */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
