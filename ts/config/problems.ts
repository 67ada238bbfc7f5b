// Config problems and the error that carries them: describing found values, "did you mean"
// suggestions by edit distance, and one message that lists every problem on its own line.

import { QloraError } from "../errors.js";
import type { ConfigProblem } from "./types.js";

/** Levenshtein edit distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min(sub, prev[j] + 1, cur[j - 1] + 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The closest candidate to `word`, if it is close enough to be a plausible misspelling: at most
 * a third of the longer word's length in edits (and at least 1, at most 3), compared case-insensitively.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  if (best === undefined) return undefined;
  const limit = Math.min(3, Math.max(1, Math.floor(Math.max(w.length, best.length) / 3)));
  return bestD <= limit ? best : undefined;
}

/** A short, unambiguous rendering of a YAML value for "found ..." texts. */
export function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (typeof v === "string") return `${JSON.stringify(v)} (a string)`;
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : `${v} (not a finite number)`;
  if (typeof v === "boolean") return String(v);
  if (Array.isArray(v)) {
    const text = JSON.stringify(v);
    return `${text.length > 80 ? text.slice(0, 77) + "..." : text} (a list)`;
  }
  if (typeof v === "object") return "a mapping";
  return String(v);
}

/** One line per problem: `path: expected X, found Y (did you mean Z?)`. */
export function formatProblem(p: ConfigProblem): string {
  const hint = p.suggestion ? ` (did you mean ${p.suggestion}?)` : "";
  return `${p.path}: expected ${p.expected}, found ${p.found}${hint}`;
}

export function formatProblems(problems: readonly ConfigProblem[], source?: string): string {
  const where = source ? ` in ${source}` : "";
  const head = `Invalid configuration${where}: ${problems.length} problem${problems.length === 1 ? "" : "s"}`;
  return [head, ...problems.map((p) => "  - " + formatProblem(p))].join("\n");
}

/** A configuration that failed validation (code E_CONFIG); `problems` lists every problem found. */
export class ConfigError extends QloraError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[], source?: string) {
    super("E_CONFIG", formatProblems(problems, source));
    this.name = "ConfigError";
    this.problems = problems;
  }
}
