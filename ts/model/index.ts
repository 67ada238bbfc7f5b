// The Qwen2 / Llama model: HF folder loading and the native model handle.
export { loadModel, nativeModelOptions, type LoadModelOptions } from "./load.js";
export { QwenModel } from "./qwen-model.js";
export { readHfConfig, parseHfConfig, type ModelArch } from "./hf-config.js";
export * from "./native-model.js";
