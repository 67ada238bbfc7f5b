// Public API of qlora-native.
export { QloraError, isQloraError, type ErrorCode } from "./errors.js";
export { native, addonInfo, type DType, type HostArray, type MemoryStats, type SystemInfo } from "./native.js";
export { openSession, tensorFrom, memoryStats, setNumThreads, type Session, type Tensor } from "./tensor.js";
export { resolveDevice, isDeviceSpec, type DeviceSpec } from "./device.js";
export { doctor, formatDoctor, type DoctorReport } from "./api/doctor.js";
export { version } from "./version.js";
export { loadConfig, validateConfig, type LoadOptions } from "./config/load.js";
export type { QloraConfig, ResolvedConfig } from "./config/types.js";
export { train, type TrainOptions, type TrainResult } from "./api/train.js";
export { evaluate, type EvaluateOptions } from "./api/evaluate.js";
export { merge, type MergeOptions, type MergeResult } from "./api/merge.js";
export { quantizeCheckpoint, type QuantizeOptions, type QuantizeResult, type QuantizeProgress } from "./nf4/quantize.js";
export { loadModel, QwenModel, type LoadModelOptions } from "./model/index.js";
export type {
  LoraTarget, ModelBatch, NativeOptimOptions, OptimizerName, LossResult, OptimizerStepResult, TrainStepResult, LoraTensorData,
  OptimizerStateBlob, MemoryReport,
} from "./model/native-model.js";
export type { EvalResult } from "./train/evaluate.js";
export { readAdapter, writeAdapter } from "./train/adapter.js";
export type { LogEntry, TrainEvents } from "./train/types.js";
export { ensureDemoModel } from "./demo/model.js";
export { demoConfig, DEMO_OUTPUT_DIR } from "./demo/config.js";
