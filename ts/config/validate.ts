// Validation of a plain config object against the schema: collects every problem (unknown keys with
// suggestions, wrong types, out-of-range values, cross-field conflicts) before failing, then returns
// the complete config with defaults filled in, deeply frozen.

import type { FieldSpec } from "./fields.js";
import { ConfigError, closest, describeValue } from "./problems.js";
import { SCHEMA, SECTIONS, defaultConfig } from "./schema.js";
import type { ConfigProblem, QloraConfig, ResolvedConfig, SectionName } from "./types.js";

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fieldsOf(section: SectionName): Record<string, FieldSpec> {
  return SCHEMA[section] as unknown as Record<string, FieldSpec>;
}

/** The section that owns `key`, if any (for "you put it in the wrong section" suggestions). */
function owningSection(key: string): SectionName | undefined {
  return SECTIONS.find((s) => Object.hasOwn(fieldsOf(s), key));
}

function unknownKey(path: string, key: string, where: string, suggestion?: string): ConfigProblem {
  const p: ConfigProblem = { path, expected: `a key of ${where}`, found: `unknown key ${JSON.stringify(key)}` };
  if (suggestion) p.suggestion = suggestion;
  return p;
}

function checkSection(section: SectionName, value: unknown, out: Record<string, unknown>, problems: ConfigProblem[]): void {
  if (value === null || value === undefined) return; // `model:` with nothing under it
  if (!isMapping(value)) {
    problems.push({ path: section, expected: `a mapping of ${section} keys`, found: describeValue(value) });
    return;
  }
  const fields = fieldsOf(section);
  const names = Object.keys(fields);
  for (const [key, v] of Object.entries(value)) {
    const path = `${section}.${key}`;
    const field = fields[key];
    if (!Object.hasOwn(fields, key)) {
      const near = closest(key, names);
      const elsewhere = owningSection(key);
      const suggestion = near ? `${section}.${near}` : elsewhere ? `${elsewhere}.${key}` : undefined;
      problems.push(unknownKey(path, key, section, suggestion));
      continue;
    }
    if (!field.test(v)) {
      const p: ConfigProblem = { path, expected: field.expected, found: describeValue(v) };
      const near = field.choices && typeof v === "string" ? closest(v, field.choices) : undefined;
      if (near) p.suggestion = JSON.stringify(near);
      problems.push(p);
      continue;
    }
    out[key] = Array.isArray(v) ? [...v] : v;
  }
}

/** Conflicts between keys that are each valid on their own. */
function crossChecks(c: QloraConfig, problems: ConfigProblem[]): void {
  const add = (path: string, expected: string, found: unknown) => problems.push({ path, expected, found: describeValue(found) });
  if (c.training.bf16 && c.model.compute_dtype !== "bfloat16") {
    add("training.bf16", `false when model.compute_dtype is ${JSON.stringify(c.model.compute_dtype)} (or set compute_dtype to "bfloat16")`, true);
  }
  if (c.training.eval_strategy !== "no" && c.data.eval_split === null) {
    add("training.eval_strategy", `"no" when data.eval_split is null`, c.training.eval_strategy);
  }
  if (c.advanced.num_devices > 1 && c.advanced.device === "cpu") {
    add("advanced.num_devices", `1 when advanced.device is "cpu"`, c.advanced.num_devices);
  }
  if (c.advanced.num_devices > 1 && c.advanced.device.startsWith("cuda:")) {
    add("advanced.num_devices", `1 when advanced.device names a single device (${c.advanced.device}); use "cuda" or "auto" for several`, c.advanced.num_devices);
  }
  if (c.training.max_steps > 0 && c.training.warmup_steps > c.training.max_steps) {
    add("training.warmup_steps", `at most training.max_steps (${c.training.max_steps})`, c.training.warmup_steps);
  }
  if (c.training.metric_for_best_model !== null && c.training.eval_strategy === "no") {
    add("training.metric_for_best_model", `null when training.eval_strategy is "no" (the best model is picked among evaluations)`, c.training.metric_for_best_model);
  }
  if (c.data.eval_split !== null && c.data.eval_split === c.data.train_split && c.training.eval_strategy !== "no") {
    add("data.eval_split", `a split other than data.train_split (${JSON.stringify(c.data.train_split)})`, c.data.eval_split);
  }
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null) {
    for (const inner of Object.values(v)) deepFreeze(inner);
    Object.freeze(v);
  }
  return v;
}

/**
 * Validates a plain object (as parsed from YAML, overrides applied) and returns the complete,
 * frozen config. Throws ConfigError (code E_CONFIG) listing every problem found.
 */
export function validateConfig(obj: unknown, source?: string): ResolvedConfig {
  const problems: ConfigProblem[] = [];
  const config = defaultConfig();
  if (obj !== null && obj !== undefined && !isMapping(obj)) {
    throw new ConfigError([{ path: "(top level)", expected: "a mapping of sections (model, data, lora, training, output, advanced)", found: describeValue(obj) }], source);
  }
  for (const [key, value] of Object.entries(obj ?? {})) {
    if ((SECTIONS as string[]).includes(key)) {
      checkSection(key as SectionName, value, config[key as SectionName] as unknown as Record<string, unknown>, problems);
      continue;
    }
    const near = closest(key, SECTIONS);
    const owner = owningSection(key);
    problems.push(unknownKey(key, key, "the top level (model, data, lora, training, output, advanced)", near ?? (owner ? `${owner}.${key}` : undefined)));
  }
  // Cross-field checks run on the merged config (invalid keys keep their defaults); a key that
  // already has a problem is not reported twice.
  const cross: ConfigProblem[] = [];
  crossChecks(config, cross);
  for (const p of cross) if (!problems.some((q) => q.path === p.path)) problems.push(p);
  if (problems.length > 0) throw new ConfigError(problems, source);
  return deepFreeze(config);
}
