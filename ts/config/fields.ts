// Field specifications for the config schema: each one knows its default, its doc string, how to
// describe what it accepts ("an integer >= 1") and how to test a value. Small combinators keep the
// schema in schema.ts declarative.

export interface FieldSpec<T = unknown> {
  /** Value used when the key is absent. */
  readonly default: T;
  /** One-line documentation, shown in generated YAML. */
  readonly doc: string;
  /** What the key accepts, phrased to follow "expected ...". */
  readonly expected: string;
  /** True when the value is acceptable. */
  test(value: unknown): boolean;
  /** Allowed values, for enum-like fields (used for "did you mean" suggestions). */
  readonly choices?: readonly string[];
}

function spec<T>(fields: FieldSpec<T>): FieldSpec<T> {
  return fields;
}

export function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}

export function isNum(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

interface Range {
  min?: number;
  max?: number;
  /** Exclusive lower bound. */
  above?: number;
  /** Exclusive upper bound. */
  below?: number;
}

function rangeText(r: Range): string {
  const parts: string[] = [];
  if (r.min !== undefined && r.max !== undefined) return ` in [${r.min}, ${r.max}]`;
  if (r.min !== undefined && r.below !== undefined) return ` in [${r.min}, ${r.below})`;
  if (r.above !== undefined && r.max !== undefined) return ` in (${r.above}, ${r.max}]`;
  if (r.min !== undefined) parts.push(`>= ${r.min}`);
  if (r.above !== undefined) parts.push(`> ${r.above}`);
  if (r.max !== undefined) parts.push(`<= ${r.max}`);
  if (r.below !== undefined) parts.push(`< ${r.below}`);
  return parts.length ? " " + parts.join(" and ") : "";
}

function inRange(v: number, r: Range): boolean {
  if (r.min !== undefined && v < r.min) return false;
  if (r.max !== undefined && v > r.max) return false;
  if (r.above !== undefined && v <= r.above) return false;
  if (r.below !== undefined && v >= r.below) return false;
  return true;
}

export function int(def: number, doc: string, range: Range = {}): FieldSpec<number> {
  return spec({ default: def, doc, expected: `an integer${rangeText(range)}`, test: (v) => isInt(v) && inRange(v, range) });
}

export function num(def: number, doc: string, range: Range = {}): FieldSpec<number> {
  return spec({ default: def, doc, expected: `a number${rangeText(range)}`, test: (v) => isNum(v) && inRange(v, range) });
}

/** transformers' *_steps: an integer >= 1, or a fraction in (0, 1) of the run's total steps. */
export function stepsOrFraction(def: number, doc: string): FieldSpec<number> {
  return spec({ default: def, doc, expected: "an integer >= 1, or a fraction of the total steps in (0, 1)", test: (v) => isNum(v) && v > 0 && (v < 1 || isInt(v)) });
}

export function bool(def: boolean, doc: string): FieldSpec<boolean> {
  return spec({ default: def, doc, expected: "true or false", test: (v) => typeof v === "boolean" });
}

export function str(def: string, doc: string): FieldSpec<string> {
  return spec({ default: def, doc, expected: "a non-empty string", test: (v) => typeof v === "string" && v.trim() !== "" });
}

export function oneOf<T extends string>(values: readonly T[], def: T, doc: string): FieldSpec<T> {
  return spec({
    default: def,
    doc,
    expected: `one of ${values.map((x) => JSON.stringify(x)).join(", ")}`,
    test: (v) => typeof v === "string" && (values as readonly string[]).includes(v),
    choices: values,
  });
}

export function intIn(values: readonly number[], def: number, doc: string): FieldSpec<number> {
  return spec({ default: def, doc, expected: `one of ${values.join(", ")}`, test: (v) => isInt(v) && values.includes(v) });
}

/** Accepts null as well as what `inner` accepts; `def` may be null. */
export function nullable<T>(inner: FieldSpec<T>, def: T | null, doc: string): FieldSpec<T | null> {
  return spec({
    default: def,
    doc,
    expected: `${inner.expected} or null`,
    test: (v) => v === null || inner.test(v),
    choices: inner.choices,
  });
}

/** A field with a hand-written test and description. */
export function custom<T>(def: T, doc: string, expected: string, test: (v: unknown) => boolean): FieldSpec<T> {
  return spec({ default: def, doc, expected, test });
}
