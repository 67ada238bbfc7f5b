// QloraError: every failure the library reports on purpose carries a stable `code`.
// Native errors arrive as QloraError too (the addon is given this class at load time).

/** Error codes used across qlora-native. */
export type ErrorCode =
  | "E_ARG" // a bad argument value or type
  | "E_SHAPE" // shapes do not fit together
  | "E_DTYPE" // wrong element type
  | "E_DISPOSED" // the tensor or session was disposed
  | "E_DEVICE" // tensors from different devices or sessions were mixed
  | "E_OOM" // out of device or host memory
  | "E_NO_DEVICE" // the requested device does not exist or its backend is unusable
  | "E_CUDA" // a CUDA runtime or cuBLASLt error
  | "E_IO" // reading or writing a file failed
  | "E_FORMAT" // a corrupt or unsupported file
  | "E_NONFINITE" // NaN or Inf where a finite value is required
  | "E_CONFIG" // an invalid configuration
  | "E_NOT_FOUND" // a model, data set or file is missing
  | "E_DATA" // bad training or evaluation data
  | "E_NO_ADDON" // the native addon could not be loaded
  | "E_ABORTED" // the operation was cancelled
  | "E_INTERNAL"; // a bug

export class QloraError extends Error {
  readonly code: string;
  constructor(code: ErrorCode | string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "QloraError";
    this.code = code;
  }
}

export function isQloraError(e: unknown): e is QloraError {
  return e instanceof QloraError;
}
