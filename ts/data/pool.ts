// Tokenizing many rows on worker threads: rows are cut into chunks of about CHUNK_CHARS
// characters, handed to whichever worker is free, and reassembled in order into one Int32 id
// array plus row offsets. Small inputs (or threads = 1) are encoded on the calling thread.

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { QloraError } from "../errors.js";
import { TextTokenizer, type TokenizerInfo } from "./tokenizer.js";
import { encodeChunk, type ChunkReply, type ChunkRequest } from "./tokenize-worker.js";

export interface TokenizedRows {
  /** All ids, row after row. */
  ids: Int32Array;
  /** Row i is ids[offsets[i] .. offsets[i+1]); length rows + 1. */
  offsets: Uint32Array;
}

const CHUNK_CHARS = 128 * 1024;
/** Text per extra worker: a worker spends ~0.5 s loading the tokenizer, the time it takes to encode ~3 MB. */
const CHARS_PER_WORKER = 3_000_000;

/** Workers to use for `textBytes` of text; `threads` 0 means all cores. */
export function workerCount(textBytes: number, threads: number): number {
  const cap = threads > 0 ? threads : availableParallelism();
  return Math.max(1, Math.min(cap, Math.ceil(textBytes / CHARS_PER_WORKER), 32));
}

interface Chunk {
  text: string;
  lengths: Uint32Array;
  rows: [number, number];
}

function makeChunks(rows: readonly string[]): Chunk[] {
  const chunks: Chunk[] = [];
  let start = 0;
  while (start < rows.length) {
    let end = start;
    let chars = 0;
    while (end < rows.length && (chars < CHUNK_CHARS || end === start)) chars += rows[end++].length;
    const slice = rows.slice(start, end);
    chunks.push({ text: slice.join(""), lengths: Uint32Array.from(slice, (r) => r.length), rows: [start, end] });
    start = end;
  }
  return chunks;
}

function assemble(rowCount: number, chunks: Chunk[], results: { ids: Int32Array; counts: Uint32Array }[]): TokenizedRows {
  const offsets = new Uint32Array(rowCount + 1);
  let total = 0;
  results.forEach((r, c) => {
    const [start] = chunks[c].rows;
    for (let i = 0; i < r.counts.length; i++) {
      offsets[start + i] = total;
      total += r.counts[i];
      if (total > 0xffffffff) throw new QloraError("E_DATA", "split too large: more than 4G tokens");
    }
  });
  offsets[rowCount] = total;
  const ids = new Int32Array(total);
  results.forEach((r, c) => ids.set(r.ids, offsets[chunks[c].rows[0]]));
  return { ids, offsets };
}

/** A set of tokenizer workers (or the calling thread when `workers` is 1). */
export class TokenizePool {
  private constructor(
    private readonly workers: Worker[],
    private readonly local: TextTokenizer | null,
    private readonly addSpecialTokens: boolean,
    /** EOS/pad ids, vocabulary size and fingerprint of the loaded tokenizer. */
    readonly info: TokenizerInfo,
  ) {}

  /** Starts `workers` threads, each loading the tokenizer of `tokenizerDir`. With
   * `addSpecialTokens`, rows get the post-processor's special tokens (e.g. Llama's BOS). */
  static async open(tokenizerDir: string, workers: number, addSpecialTokens = false): Promise<TokenizePool> {
    if (workers <= 1) {
      const tok = await TextTokenizer.load(tokenizerDir);
      return new TokenizePool([], tok, addSpecialTokens, tok.info());
    }
    const url = new URL("./tokenize-worker.js", import.meta.url);
    const started = Array.from({ length: workers }, () => new Worker(url, { workerData: { tokenizerDir, addSpecialTokens } }));
    // every worker is waited for (ready or failed) before any is terminated: terminating one
    // still loading its modules leaks their file descriptors
    const settled = await Promise.allSettled(started.map((w) => new Promise<TokenizerInfo>((ok, fail) => {
      const onExit = (code: number) => fail(new Error(`exited with code ${code} while loading`));
      w.once("message", (m: { ready?: boolean; info: TokenizerInfo }) => {
        w.off("error", fail);
        w.off("exit", onExit);
        ok(m.info);
      });
      w.once("error", fail);
      w.once("exit", onExit);
    })));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      await Promise.all(started.map((w) => w.terminate()));
      const err = failed.reason;
      throw err instanceof QloraError ? err : new QloraError("E_DATA", `tokenizer worker failed to start: ${(err as Error).message}`, { cause: err });
    }
    return new TokenizePool(started, null, addSpecialTokens, (settled[0] as PromiseFulfilledResult<TokenizerInfo>).value);
  }

  get size(): number {
    return Math.max(1, this.workers.length);
  }

  /** Token ids of every row (special tokens as opened), with row offsets. */
  async encode(rows: readonly string[]): Promise<TokenizedRows> {
    const chunks = makeChunks(rows);
    if (this.local) {
      return assemble(rows.length, chunks, chunks.map((c) => encodeChunk(this.local!, c.text, c.lengths, this.addSpecialTokens)));
    }
    const results: { ids: Int32Array; counts: Uint32Array }[] = new Array(chunks.length);
    let next = 0;
    const runWorker = (w: Worker) =>
      new Promise<void>((ok, fail) => {
        const send = () => {
          if (next >= chunks.length) {
            w.off("message", onMessage);
            w.off("error", fail);
            ok();
            return;
          }
          const id = next++;
          const req: ChunkRequest = { id, text: chunks[id].text, lengths: chunks[id].lengths };
          w.postMessage(req);
        };
        const onMessage = (reply: ChunkReply) => {
          if ("error" in reply) {
            w.off("message", onMessage);
            fail(new QloraError("E_DATA", `tokenization failed: ${reply.error}`));
            return;
          }
          results[reply.id] = reply;
          send();
        };
        w.on("message", onMessage);
        w.once("error", fail);
        send();
      });
    await Promise.all(this.workers.map(runWorker));
    return assemble(rows.length, chunks, results);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
