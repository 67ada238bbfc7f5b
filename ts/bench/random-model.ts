// Random Qwen2-family model folders (config.json + model.safetensors, bf16) of a given shape, for
// benchmarks: nothing big is committed. Values: linear weights U(-a, a) with std 0.02
// (transformers' initializer_range), embeddings likewise, norms 1, biases 0. Deterministic.
// Used by `qlora-native bench e2e` and bench/model-random.mjs, bench/model-train.mjs.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { SafetensorsWriter } from "../io/safetensors.js";

export interface RandomModelShape {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  vocab_size: number;
  tie_word_embeddings: boolean;
  rope_theta: number;
  rms_norm_eps: number;
}

export const MODEL_PRESETS: Record<string, RandomModelShape> = {
  // hidden 896, 24 layers, 14/2 heads, head_dim 64, FFN 4864, vocab 151936, tied
  "qwen2.5-0.5b": { hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, rope_theta: 1000000.0, rms_norm_eps: 1e-6 },
  // hidden 2048, 36 layers, 16/2 heads, head_dim 128, FFN 11008, vocab 151936, tied
  "qwen2.5-3b": { hidden_size: 2048, intermediate_size: 11008, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, rope_theta: 1000000.0, rms_norm_eps: 1e-6 },
  tiny: { hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 256, tie_word_embeddings: true, rope_theta: 10000.0, rms_norm_eps: 1e-6 },
};

export function qwenConfig(shape: RandomModelShape): Record<string, unknown> {
  return {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_act: "silu",
    max_position_embeddings: 32768,
    torch_dtype: "bfloat16",
    use_sliding_window: false,
    attention_dropout: 0.0,
    initializer_range: 0.02,
    ...shape,
  };
}

interface TensorSpec {
  name: string;
  shape: number[];
  kind: "w" | "one" | "zero";
}

function tensorList(c: RandomModelShape): TensorSpec[] {
  const H = c.hidden_size, I = c.intermediate_size, hd = H / c.num_attention_heads;
  const q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  const out: TensorSpec[] = [{ name: "model.embed_tokens.weight", shape: [c.vocab_size, H], kind: "w" }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: p + "input_layernorm.weight", shape: [H], kind: "one" });
    out.push({ name: p + "self_attn.q_proj.weight", shape: [q, H], kind: "w" });
    out.push({ name: p + "self_attn.q_proj.bias", shape: [q], kind: "zero" });
    out.push({ name: p + "self_attn.k_proj.weight", shape: [kv, H], kind: "w" });
    out.push({ name: p + "self_attn.k_proj.bias", shape: [kv], kind: "zero" });
    out.push({ name: p + "self_attn.v_proj.weight", shape: [kv, H], kind: "w" });
    out.push({ name: p + "self_attn.v_proj.bias", shape: [kv], kind: "zero" });
    out.push({ name: p + "self_attn.o_proj.weight", shape: [H, q], kind: "w" });
    out.push({ name: p + "post_attention_layernorm.weight", shape: [H], kind: "one" });
    out.push({ name: p + "mlp.gate_proj.weight", shape: [I, H], kind: "w" });
    out.push({ name: p + "mlp.up_proj.weight", shape: [I, H], kind: "w" });
    out.push({ name: p + "mlp.down_proj.weight", shape: [H, I], kind: "w" });
  }
  out.push({ name: "model.norm.weight", shape: [H], kind: "one" });
  if (!c.tie_word_embeddings) out.push({ name: "lm_head.weight", shape: [c.vocab_size, H], kind: "w" });
  return out;
}

// bf16 bits of U(-a, a), a = 0.02 * sqrt(3) (std 0.02), from a xorshift32 stream.
function fillRandomBf16(out: Uint16Array, state: number): number {
  const a = 0.02 * Math.sqrt(3);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  let s = state >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    f[0] = (s / 4294967296) * 2 * a - a;
    out[i] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16;
  }
  return s;
}

/** Writes the folder unless it already holds the same config. Returns the folder. */
export async function writeRandomQwen(dir: string, shape: RandomModelShape): Promise<string> {
  const config = qwenConfig(shape);
  const cfgFile = path.join(dir, "config.json");
  const stFile = path.join(dir, "model.safetensors");
  if (existsSync(cfgFile) && existsSync(stFile) && readFileSync(cfgFile, "utf8") === JSON.stringify(config, null, 2)) return dir;
  mkdirSync(dir, { recursive: true });
  const list = tensorList(shape);
  const w = await SafetensorsWriter.create(stFile, list.map((t) => ({ name: t.name, dtype: "BF16" as const, shape: t.shape })));
  let state = 12345;
  try {
    for (const t of list) {
      const n = t.shape.reduce((x, y) => x * y, 1);
      const bits = new Uint16Array(n);
      if (t.kind === "w") state = fillRandomBf16(bits, state);
      else if (t.kind === "one") bits.fill(0x3f80);
      await w.write(t.name, new Uint8Array(bits.buffer));
    }
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  return dir;
}
