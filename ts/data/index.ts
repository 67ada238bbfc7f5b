// The data package: split files -> rows -> token ids (cached) -> examples -> batches.

export { prepareDataset, tokenizerDirFor, type PreparedDataset, type PrepareOptions, type TokenSet, type SplitRole } from "./prepare.js";
export { buildExampleSets, TrainLoader, evalBatches, type ExampleSets, type LoaderOptions, type LoadedBatch } from "./loader.js";
export { ExampleSet, collate, emptyBatch, IGNORE_INDEX, type Batch, type TokenRows, type ExampleOptions, type CollateOptions } from "./batches.js";
export { BatchSampler, epochPermutation, Xoshiro128, type SamplerOptions, type SamplerState, type SampledBatch } from "./sampler.js";
export { TextTokenizer, readTokenizerFiles, type TokenizerInfo, type TokenizerFiles } from "./tokenizer.js";
export { TokenizePool, workerCount, type TokenizedRows } from "./pool.js";
export { resolveSplits, findSplit, datasetRoot, splitAliases, formatOf, type SplitSource, type SourceFormat } from "./sources.js";
export { readSplitRows, setLineBlockBytes, type SplitRows } from "./read.js";
export { defaultTokenCacheDir, readTokenCache, writeTokenCache, tokenCacheKey, hashFile, TOKEN_CACHE_VERSION, type TokenCacheMeta, type CachedTokens } from "./cache.js";
