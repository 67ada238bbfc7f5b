// The tokenizer of a model folder: tokenizer.json (+ tokenizer_config.json) through
// @huggingface/tokenizers, with the memoized FastEncoder for speed. Exposes encode without special
// tokens and with the post-processor's (encodeWithSpecials: a Llama BOS), decode, the EOS and pad ids (pad_token from tokenizer_config, else EOS), the vocabulary
// size and a fingerprint: the sha256 of both files' bytes, used in token-cache keys.

import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { QloraError } from "../errors.js";
import { FastEncoder } from "./fast-encode.js";

export interface TokenizerFiles {
  dir: string;
  json: Buffer;
  config: Buffer | null;
  fingerprint: string;
}

/** What the batching code needs to know about a tokenizer (cached alongside token ids). */
export interface TokenizerInfo {
  dir: string;
  fingerprint: string;
  eosId: number;
  padId: number;
  vocabSize: number;
  /** Ids the tokenizer's post-processor puts before / after a text (e.g. Llama's BOS; none for Qwen). */
  specialPrefix?: number[];
  specialSuffix?: number[];
}

interface TokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  model?: { type?: string; vocab?: Record<string, number> };
}

/** Reads tokenizer.json and tokenizer_config.json (optional) from `dir` and fingerprints them. */
export async function readTokenizerFiles(dir: string): Promise<TokenizerFiles> {
  let json: Buffer;
  try {
    json = await readFile(join(dir, "tokenizer.json"));
  } catch (err) {
    throw new QloraError("E_NOT_FOUND", `no tokenizer.json in ${dir}: the model folder must hold the Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json).`, { cause: err });
  }
  let config: Buffer | null = null;
  try {
    config = await readFile(join(dir, "tokenizer_config.json"));
  } catch {
    config = null;
  }
  const h = createHash("sha256");
  h.update("tokenizer.json\0").update(json).update("\0tokenizer_config.json\0");
  if (config) h.update(config);
  return { dir, json, config, fingerprint: h.digest("hex") };
}

function parseJson(bytes: Buffer, path: string): Record<string, unknown> {
  try {
    return JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new QloraError("E_DATA", `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** `"<|endoftext|>"` or `{ content: "<|endoftext|>" }` (both appear in tokenizer_config.json). */
function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return null;
}

export class TextTokenizer implements TokenizerInfo {
  readonly dir: string;
  readonly fingerprint: string;
  readonly eosId: number;
  readonly padId: number;
  readonly vocabSize: number;
  /** Ids of all special added tokens. */
  readonly specialIds: ReadonlySet<number>;
  /** What encode(text, add_special_tokens) adds around a text's ids (the post-processor's template). */
  readonly specialPrefix: number[];
  readonly specialSuffix: number[];
  private readonly tok: Tokenizer;
  private readonly fastEncoder: FastEncoder;

  private constructor(files: TokenizerFiles) {
    this.dir = files.dir;
    this.fingerprint = files.fingerprint;
    const json = parseJson(files.json, join(files.dir, "tokenizer.json")) as TokenizerJson;
    const config = files.config ? parseJson(files.config, join(files.dir, "tokenizer_config.json")) : {};
    try {
      this.tok = new Tokenizer(json, config);
    } catch (err) {
      throw new QloraError("E_DATA", `cannot build the tokenizer from ${join(files.dir, "tokenizer.json")}: ${(err as Error).message}`, { cause: err });
    }
    const vocab = json.model?.vocab;
    if (vocab !== undefined && (vocab === null || typeof vocab !== "object" || Object.keys(vocab).length === 0))
      throw new QloraError("E_DATA", `${join(files.dir, "tokenizer.json")}: model.vocab is empty, so every text would encode to nothing`);
    const added = json.added_tokens ?? [];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    const idOf = (content: string | null): number | undefined =>
      content === null ? undefined : (added.find((t) => t.content === content)?.id ?? this.tok.token_to_id(content));
    const eos = idOf(tokenContent(config.eos_token)) ?? idOf("<|endoftext|>") ?? idOf("</s>");
    if (eos === undefined) {
      throw new QloraError("E_DATA", `tokenizer in ${files.dir} names no EOS token: set eos_token in tokenizer_config.json`);
    }
    this.eosId = eos;
    this.padId = idOf(tokenContent(config.pad_token)) ?? eos;
    const maxAdded = added.reduce((m, t) => Math.max(m, t.id), -1);
    this.vocabSize = Math.max(this.tok.model?.vocab.length ?? 0, maxAdded + 1);
    this.fastEncoder = new FastEncoder(this.tok, json as never, config);
    // The post-processor's template, found around a probe text's plain ids.
    const probe = "Hello world";
    const plain = this.tok.encode(probe, { add_special_tokens: false }).ids;
    const full = this.tok.encode(probe, { add_special_tokens: true }).ids;
    let at = -1;
    for (let i = 0; i + plain.length <= full.length && at < 0; i++) if (plain.every((id: number, k: number) => full[i + k] === id)) at = i;
    this.specialPrefix = at < 0 ? [] : full.slice(0, at);
    this.specialSuffix = at < 0 ? [] : full.slice(at + plain.length);
  }

  static fromFiles(files: TokenizerFiles): TextTokenizer {
    return new TextTokenizer(files);
  }

  static async load(dir: string): Promise<TextTokenizer> {
    return new TextTokenizer(await readTokenizerFiles(dir));
  }

  /** True when the memoized fast path passed its self-check. */
  get fast(): boolean {
    return this.fastEncoder.fast;
  }

  /** Token ids of `text` with no special tokens added. */
  encode(text: string): number[] {
    return this.fastEncoder.encode(text);
  }

  /** Token ids of `text` with the post-processor's special tokens around it, as transformers'
   * tokenizer(text) gives them (add_special_tokens=True). */
  encodeWithSpecials(text: string): number[] {
    const ids = this.encode(text);
    return this.specialPrefix.length || this.specialSuffix.length ? [...this.specialPrefix, ...ids, ...this.specialSuffix] : ids;
  }

  /** Token ids through the library's own encode (reference for tests). */
  encodeReference(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return "";
    return this.tok.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  info(): TokenizerInfo {
    return {
      dir: this.dir, fingerprint: this.fingerprint, eosId: this.eosId, padId: this.padId, vocabSize: this.vocabSize,
      specialPrefix: this.specialPrefix, specialSuffix: this.specialSuffix,
    };
  }
}
