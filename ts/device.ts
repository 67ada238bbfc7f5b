// Device selection: "auto" | "cpu" | "cuda" | "cuda:N". "auto" takes the first GPU when the CUDA
// backend is usable and otherwise falls back to the CPU, telling `notice` (a library prints nothing
// by itself: the CLI and train() pass their own warning channel).
import { QloraError } from "./errors.js";
import { native } from "./native.js";

export type DeviceSpec = "auto" | "cpu" | "cuda" | `cuda:${number}`;

const DEVICE_RE = /^(auto|cpu|cuda|cuda:\d{1,4})$/;

export function isDeviceSpec(s: unknown): s is DeviceSpec {
  return typeof s === "string" && DEVICE_RE.test(s);
}

/** Resolves a device spec to a concrete device name ("cpu" or "cuda:N"). */
export function resolveDevice(spec: string = "auto", notice?: (msg: string) => void): string {
  if (!isDeviceSpec(spec)) {
    throw new QloraError("E_ARG", `unknown device '${spec}': expected auto, cpu, cuda or cuda:N`);
  }
  if (spec === "cpu") return "cpu";
  const cuda = native.systemInfo(false).cuda;
  if (spec === "auto") {
    if (cuda.available) return "cuda:0";
    notice?.(`qlora-native: no usable GPU (${cuda.compiled ? cuda.reason : "CUDA backend not built"}); running on the CPU`);
    return "cpu";
  }
  const index = spec === "cuda" ? 0 : Number(spec.slice(5));
  if (!cuda.compiled) throw new QloraError("E_NO_DEVICE", `cannot use ${spec}: this build has no CUDA backend`);
  if (!cuda.available) throw new QloraError("E_NO_DEVICE", `cannot use ${spec}: ${cuda.reason}`);
  if (index >= cuda.devices.length) {
    throw new QloraError("E_NO_DEVICE", `cannot use ${spec}: this machine has ${cuda.devices.length} CUDA device(s)`);
  }
  return `cuda:${index}`;
}
