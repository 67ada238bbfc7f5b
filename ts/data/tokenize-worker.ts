// Worker thread for TokenizePool: loads the tokenizer once, then encodes chunks of rows. A chunk
// arrives as one concatenated string plus row lengths (cheaper to pass than many small strings)
// and goes back as Int32 ids plus per-row token counts, both transferred without copying.

import { parentPort, workerData } from "node:worker_threads";
import { TextTokenizer } from "./tokenizer.js";

export interface ChunkRequest {
  id: number;
  text: string;
  lengths: Uint32Array;
}

export type ChunkReply =
  | { id: number; ids: Int32Array; counts: Uint32Array }
  | { id: number; error: string };

/** Encodes rows given as one string + lengths; returns concatenated ids and counts per row. With
 * `specials` each row gets the post-processor's special tokens (e.g. a BOS), as transformers adds. */
export function encodeChunk(tok: TextTokenizer, text: string, lengths: Uint32Array, specials = false): { ids: Int32Array; counts: Uint32Array } {
  const counts = new Uint32Array(lengths.length);
  const parts: number[][] = [];
  let total = 0;
  let pos = 0;
  for (let i = 0; i < lengths.length; i++) {
    const row = text.slice(pos, pos + lengths[i]);
    const ids = specials ? tok.encodeWithSpecials(row) : tok.encode(row);
    pos += lengths[i];
    counts[i] = ids.length;
    total += ids.length;
    parts.push(ids);
  }
  const out = new Int32Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return { ids: out, counts };
}

if (parentPort && workerData?.tokenizerDir) {
  const port = parentPort;
  const tok = await TextTokenizer.load(workerData.tokenizerDir as string);
  port.on("message", (msg: ChunkRequest) => {
    try {
      const { ids, counts } = encodeChunk(tok, msg.text, msg.lengths, workerData.addSpecialTokens === true);
      port.postMessage({ id: msg.id, ids, counts } satisfies ChunkReply, [ids.buffer as ArrayBuffer, counts.buffer as ArrayBuffer]);
    } catch (err) {
      port.postMessage({ id: msg.id, error: (err as Error).message } satisfies ChunkReply);
    }
  });
  port.postMessage({ ready: true, info: tok.info() });
}
