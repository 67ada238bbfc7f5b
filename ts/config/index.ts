// The config package: schema, loading with overrides, validation, saving, model resolution.

export type * from "./types.js";
export { SCHEMA, SECTIONS, SECTION_DOCS, LORA_MODULES, defaultConfig } from "./schema.js";
export { loadConfig, validateConfig, parseConfigText, parseSetArg, applyOverrides, mergeConfig, type LoadOptions } from "./load.js";
export { ConfigError, formatProblem, formatProblems, closest, editDistance } from "./problems.js";
export { renderConfigYaml, saveResolvedConfig, RESOLVED_CONFIG_NAME } from "./save.js";
export { resolveModelPath, type ResolveModelOptions } from "./resolve-model.js";
export { hubCacheDir, findSnapshot, repoFolderName, expandHome } from "./hf-cache.js";
export { writeFileAtomic } from "./atomic-write.js";
