// End-to-end training throughput (`qlora-native bench e2e`): a random Qwen2-family model of a preset
// shape is written to a temp folder, loaded through the library (NF4 base + LoRA on all seven
// projections), and a few full training steps (Model.trainStep: forward, backward, grad norm,
// clipping, AdamW) are timed. Reports training tokens/s (median step) and the model-FLOP
// utilization MFU = model FLOPs per token x tokens/s / peak FLOP/s, with the peak measured by the
// caller in the same run (see modelFlopsPerToken for the count).
import os from "node:os";
import path from "node:path";
import { QloraError } from "../errors.js";
import { loadModel } from "../model/index.js";
import { openSession } from "../tensor.js";
import { MODEL_PRESETS, writeRandomQwen, type RandomModelShape } from "./random-model.js";

export const E2E_FLOP_METHOD =
  "model FLOPs per token = forward + backward + LoRA extra; forward = 2 x non-embedding linear params + causal attention " +
  "2 x L x q_dim x (T+1) (QK^T and PV over (T+1)/2 keys on average) + LM head 2 x H x V; backward of the frozen base " +
  "(input gradients only, no dW) = the forward again; LoRA extra = 6 x r x (in + out) per adapted linear (forward, dx, " +
  "dA, dB); recompute (gradient checkpointing) and the optimizer are not counted";

export interface FlopCount {
  forward: number;
  backward: number;
  lora: number;
  total: number;
}

/** Model FLOPs per trained token for a shape, sequence length and LoRA rank (all seven projections). */
export function modelFlopsPerToken(c: RandomModelShape, seqLen: number, r: number): FlopCount {
  const H = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers;
  const hd = H / c.num_attention_heads, q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  const linears: [number, number][] = [[H, q], [H, kv], [H, kv], [q, H], [H, I], [H, I], [I, H]];
  const params = L * linears.reduce((s, [i, o]) => s + i * o, 0);
  const attention = 2 * L * q * (seqLen + 1);
  const head = 2 * H * c.vocab_size;
  const forward = 2 * params + attention + head;
  const backward = forward;
  const lora = L * linears.reduce((s, [i, o]) => s + 6 * r * (i + o), 0);
  return { forward, backward, lora, total: forward + backward + lora };
}

export interface E2eOptions {
  shape: string;
  device: string;
  batch?: number;
  seq?: number;
  steps?: number;
  warmup?: number;
  r?: number;
  computeDtype?: "bf16" | "f32";
  dir?: string;
  log?: (s: string) => void;
}

export interface E2eResult {
  shape: string;
  device: string;
  batch: number;
  seq: number;
  r: number;
  computeDtype: string;
  stepSeconds: number[];
  tokensPerStep: number;
  tokensPerSecond: number;
  bestTokensPerSecond: number;
  flopsPerToken: FlopCount;
  modelFlopsPerSecond: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};

export function e2eDefaults(shape: string, device: string): { batch: number; seq: number; steps: number } {
  const gpu = device.startsWith("cuda");
  if (shape === "tiny") return { batch: 2, seq: 128, steps: 5 };
  // GPU: the sequence length of issue 4's MFU goal (T = 2048), 4096 tokens per step at the 3B shape.
  if (gpu) return { batch: shape === "qwen2.5-3b" ? 2 : 4, seq: 2048, steps: 5 };
  return { batch: 1, seq: 128, steps: 2 };
}

export async function runE2e(o: E2eOptions): Promise<E2eResult> {
  const shape = MODEL_PRESETS[o.shape];
  if (!shape) throw new QloraError("E_ARG", `unknown model shape '${o.shape}' (expected one of ${Object.keys(MODEL_PRESETS).join(", ")})`);
  const d = e2eDefaults(o.shape, o.device);
  const B = o.batch ?? d.batch, T = o.seq ?? d.seq, steps = o.steps ?? d.steps, warmup = o.warmup ?? 1, r = o.r ?? 16;
  const computeDtype = o.computeDtype ?? "bf16";
  const dir = o.dir ?? path.join(os.tmpdir(), `qn-bench-${o.shape}`);
  const log = o.log ?? (() => {});
  let t0 = performance.now();
  await writeRandomQwen(dir, shape);
  log(`e2e: random ${o.shape} model in ${dir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const session = openSession(o.device);
  try {
    t0 = performance.now();
    const model = await loadModel(dir, { session, computeDtype, quantization: "nf4", lora: { r, alpha: 2 * r, dropout: 0, targets: "all-linear", seed: 1 } });
    log(`e2e: loaded (NF4 + LoRA r=${r}, ${computeDtype}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    try {
      const ids = new Int32Array(B * T).map((_, i) => (i * 7919 + 13) % shape.vocab_size);
      const batch = { inputIds: ids, attentionMask: new Int32Array(B * T).fill(1), labels: ids, batchSize: B, seqLen: T };
      const opt = { lr: 1e-4, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, optim: "adamw_32bit" as const };
      const times: number[] = [];
      for (let i = 0; i < warmup + steps; i++) {
        const a = performance.now();
        await model.trainStep([batch], 1 / (B * (T - 1)), opt);
        if (i >= warmup) times.push((performance.now() - a) / 1000);
      }
      const flops = modelFlopsPerToken(shape, T, r);
      const tps = (B * T) / median(times);
      return {
        shape: o.shape, device: o.device, batch: B, seq: T, r, computeDtype, stepSeconds: times, tokensPerStep: B * T,
        tokensPerSecond: tps, bestTokensPerSecond: (B * T) / Math.min(...times), flopsPerToken: flops, modelFlopsPerSecond: tps * flops.total,
      };
    } finally {
      model.dispose();
    }
  } finally {
    session.dispose();
  }
}
