// Rendering a config as commented YAML (each key preceded by its schema doc string) and saving the
// resolved config as `config.resolved.yaml` in the output folder, atomically.

import { join } from "node:path";
import { Document, type Pair, type Scalar, type YAMLMap } from "yaml";
import { writeFileAtomic } from "./atomic-write.js";
import type { FieldSpec } from "./fields.js";
import { SCHEMA, SECTION_DOCS } from "./schema.js";
import type { QloraConfig, ResolvedConfig, SectionName } from "./types.js";

export const RESOLVED_CONFIG_NAME = "config.resolved.yaml";

export interface RenderOptions {
  /** Put each key's doc string above it (default true). */
  comments?: boolean;
  /** Comment lines for the top of the file. */
  header?: string[];
}

/** The config as YAML text; loading the text back gives the same config. */
export function renderConfigYaml(config: QloraConfig | ResolvedConfig, options: RenderOptions = {}): string {
  const comments = options.comments ?? true;
  const doc = new Document(structuredClone(config));
  if (options.header?.length) doc.commentBefore = options.header.map((l) => " " + l).join("\n");
  const sections = (doc.contents as YAMLMap<Scalar<string>, YAMLMap<Scalar<string>, unknown>>).items;
  sections.forEach((sectionPair, i) => {
    const name = sectionPair.key.value as SectionName;
    if (i > 0) sectionPair.key.spaceBefore = true;
    if (comments) sectionPair.key.commentBefore = " " + SECTION_DOCS[name];
    for (const pair of (sectionPair.value?.items ?? []) as Pair<Scalar<string>, { flow?: boolean; items?: unknown }>[]) {
      const field = (SCHEMA[name] as unknown as Record<string, FieldSpec>)[pair.key.value];
      if (comments && field) pair.key.commentBefore = " " + field.doc;
      if (pair.value && Array.isArray(pair.value.items)) pair.value.flow = true;
    }
  });
  return doc.toString({ lineWidth: 0 });
}

/** Writes `<dir>/config.resolved.yaml` atomically and returns its path. */
export async function saveResolvedConfig(config: QloraConfig | ResolvedConfig, dir: string): Promise<string> {
  const path = join(dir, RESOLVED_CONFIG_NAME);
  const header = [`Resolved qlora-native configuration, written ${new Date().toISOString()}.`, "Every key is listed with the value the run used; load it with --config to repeat the run."];
  await writeFileAtomic(path, renderConfigYaml(config, { header }));
  return path;
}
