// Loading a config: defaults < `base` object < YAML file < `--set section.key=value` overrides,
// then validation. Override values are parsed as YAML scalars/flow values (numbers, booleans,
// null, [lists]); for string keys the raw text is kept when the YAML reading would not fit
// (so `--set model.revision=2024` stays the string "2024").

import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import { QloraError } from "../errors.js";
import type { FieldSpec } from "./fields.js";
import { ConfigError } from "./problems.js";
import { SCHEMA } from "./schema.js";
import type { ConfigProblem, ResolvedConfig } from "./types.js";
import { validateConfig } from "./validate.js";

export { validateConfig } from "./validate.js";

export interface LoadOptions {
  /** `section.key=value` overrides, applied in order after the file. */
  set?: readonly string[];
  /** Values merged under the file (for presets or programmatic callers). */
  base?: object;
}

type Obj = Record<string, unknown>;

function isMapping(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** obj[k] = v as an own data property: "__proto__" stays a key (validation reports it) and never
 * reaches a prototype. */
function setOwn(obj: Obj, k: string, v: unknown): void {
  Object.defineProperty(obj, k, { value: v, writable: true, enumerable: true, configurable: true });
}

const ownValue = (obj: Obj, k: string): unknown => (Object.hasOwn(obj, k) ? obj[k] : undefined);

/** Deep merge of mappings; lists and scalars in `over` replace those in `under`. */
export function mergeConfig(under: unknown, over: unknown): unknown {
  if (!isMapping(under) || !isMapping(over)) return over === undefined ? under : structuredClone(over);
  const out: Obj = { ...structuredClone(under) };
  for (const [k, v] of Object.entries(over)) setOwn(out, k, mergeConfig(ownValue(out, k), v));
  return out;
}

/** Parses YAML config text; syntax errors become config problems naming line and column. */
export function parseConfigText(text: string, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const problems: ConfigProblem[] = doc.errors.map((e) => {
      const pos = e.linePos?.[0];
      const where = pos ? `${source}:${pos.line}:${pos.col}` : source;
      return { path: where, expected: "valid YAML", found: e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "") };
    });
    throw new ConfigError(problems, source);
  }
  try {
    return doc.toJS();
  } catch (err) {
    // e.g. "Excessive alias count" (a YAML alias bomb)
    throw new ConfigError([{ path: source, expected: "valid YAML", found: (err as Error).message.split("\n")[0] }], source);
  }
}

function fieldAt(section: string, key: string): FieldSpec | undefined {
  const schema = SCHEMA as unknown as Record<string, Record<string, FieldSpec>>;
  const s = Object.hasOwn(schema, section) ? schema[section] : undefined;
  return s && Object.hasOwn(s, key) ? s[key] : undefined;
}

/** Parses one `--set section.key=value` argument into [section, key, value]. */
export function parseSetArg(arg: string): { path: string[]; value: unknown } | ConfigProblem {
  const eq = arg.indexOf("=");
  const path = eq > 0 ? arg.slice(0, eq).trim().split(".") : [];
  if (eq <= 0 || path.length !== 2 || path.some((p) => p === "")) {
    return { path: `--set ${arg}`, expected: "section.key=value (for example training.learning_rate=1e-4)", found: JSON.stringify(arg) };
  }
  const raw = arg.slice(eq + 1);
  const doc = parseDocument(raw);
  let value: unknown = raw;
  if (doc.errors.length === 0) {
    try {
      value = doc.toJS();
    } catch {
      value = raw; // (an alias bomb: kept as text, which validation then judges)
    }
  }
  const field = fieldAt(path[0], path[1]);
  if (field && !field.test(value) && field.test(raw)) return { path, value: raw };
  return { path, value };
}

/** Applies `--set` overrides to a plain config object (in place); returns problems for malformed ones. */
export function applyOverrides(obj: Obj, sets: readonly string[]): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const arg of sets) {
    const parsed = parseSetArg(arg);
    if (!("value" in parsed)) {
      problems.push(parsed);
      continue;
    }
    const [section, key] = parsed.path;
    const current = ownValue(obj, section);
    if (current !== undefined && current !== null && !isMapping(current)) {
      problems.push({ path: section, expected: `a mapping of ${section} keys`, found: "a value that --set cannot extend" });
      continue;
    }
    const target: Obj = isMapping(current) ? current : {};
    setOwn(target, key, parsed.value);
    setOwn(obj, section, target);
  }
  return problems;
}

/**
 * Loads and validates a config. `path` undefined means defaults only. Throws QloraError
 * E_NOT_FOUND when the file is missing, ConfigError (E_CONFIG) listing every problem otherwise.
 */
export async function loadConfig(path: string | undefined, options: LoadOptions = {}): Promise<ResolvedConfig> {
  if (options.set !== undefined && !Array.isArray(options.set))
    throw new QloraError("E_ARG", `loadConfig: set must be an array of "key=value" strings, got ${JSON.stringify(options.set)}`);
  let fromFile: unknown = {};
  const source = path ?? "(defaults)";
  if (path !== undefined) {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") throw new QloraError("E_NOT_FOUND", `config file not found: ${path}`, { cause: err });
      if (code === "EISDIR") throw new QloraError("E_CONFIG", `config path is a folder, expected a YAML file: ${path}`, { cause: err });
      throw new QloraError("E_CONFIG", `cannot read config file ${path}: ${(err as Error).message}`, { cause: err });
    }
    fromFile = parseConfigText(text, path) ?? {};
  }
  const merged = mergeConfig(options.base ?? {}, fromFile);
  if (!isMapping(merged)) return validateConfig(merged, source);
  const problems = applyOverrides(merged, options.set ?? []);
  if (problems.length > 0) {
    // Report malformed overrides together with whatever else is wrong.
    try {
      validateConfig(merged, source);
    } catch (err) {
      if (err instanceof ConfigError) throw new ConfigError([...problems, ...err.problems], source);
      throw err;
    }
    throw new ConfigError(problems, source);
  }
  return validateConfig(merged, source);
}
