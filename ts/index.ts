// Public API of qlora-native.
export { QloraError, isQloraError, type ErrorCode } from "./errors.js";
export { native, addonInfo, type DType, type HostArray, type MemoryStats, type SystemInfo } from "./native.js";
export { openSession, tensorFrom, memoryStats, setNumThreads, type Session, type Tensor } from "./tensor.js";
export { resolveDevice, isDeviceSpec, type DeviceSpec } from "./device.js";
export { doctor, formatDoctor, type DoctorReport } from "./api/doctor.js";
export { version } from "./version.js";
