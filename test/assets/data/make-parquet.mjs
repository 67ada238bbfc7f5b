// Regenerates the parquet copies of the mini corpus in the Hugging Face layout
// (wikitext-2-raw-v1/{split}-00000-of-00001.parquet). Needs the hyparquet-writer package, which the
// project does not depend on: run `node make-parquet.mjs /path/to/node_modules/hyparquet-writer`.

import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { hfRows, MINI_SPLITS } from "./mini-corpus.mjs";

const writerPath = process.argv[2];
if (!writerPath) throw new Error("usage: node make-parquet.mjs <path to hyparquet-writer>");
const { parquetWriteFile } = await import(join(writerPath, "src", "node.js"));
const out = join(dirname(fileURLToPath(import.meta.url)), "wikitext-mini-parquet", "wikitext-2-raw-v1");
mkdirSync(out, { recursive: true });
for (const split of Object.keys(MINI_SPLITS)) {
  parquetWriteFile({ filename: join(out, `${split}-00000-of-00001.parquet`), columnData: [{ name: "text", data: hfRows(split), type: "STRING" }] });
}
console.log(`wrote ${out}`);
