// NF4 (bitsandbytes 4-bit) support: the serialization (bnb.ts), the native ops (native-ops.ts) and
// checkpoint quantization (quantize.ts).
export * from "./bnb.js";
export * from "./native-ops.js";
export * from "./quantize.js";
