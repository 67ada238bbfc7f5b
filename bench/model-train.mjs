// Forward+backward throughput of the Qwen2 model on the CPU (issue 4 benchmark), with the peer
// (transformers + PEFT on torch CPU, bench/peer_transformers.py) run on the same model folder,
// batch, length and thread count in the same run, and the ratio printed.
//
//   node bench/model-train.mjs [--preset qwen2.5-0.5b] [--dir DIR] [--batch 1] [--seq 256]
//        [--threads 2] [--steps 3] [--warmup 1] [--r 16] [--modes nf4-bf16,nf4-f32] [--no-peer]
//        [--device cpu] [--ckpt]
// Needs the addon (QN_ADDON_PATH or the package build) and dist/ (npm run build:ts).
// The model folder (random bf16 weights, ~1 GB for 0.5B) is written once under the OS temp dir.
//
// Last measured (2026-11-29, shared 2-core AMD EPYC with avx512_bf16, load average 2.4-4 from other
// agents' builds, so single steps range 1.8-3.6 s; compare best steps taken in the same window):
//   ours nf4-bf16, before the head-chunk / fused-dQ / grouped-K changes: best step 128.6-133.1 tok/s
//   ours nf4-bf16, after:                                                best step 141.1-141.4 tok/s
//   peer transformers+PEFT fp32: best step 53-67 tok/s (median 46-52)
//   peer transformers+PEFT bf16: best step 116-120 tok/s in the quieter windows (earlier sessions
//     recorded ~60 tok/s; that looks like a loaded window: the same script now gets 110-120)
//   => ~2.1-2.7x the fp32 peer, ~1.2x the bf16 peer (best vs best). The issue-4 target (3x) is not
//   met. Where the step goes (QN_MODEL_PROFILE=1, quiet): NF4+LoRA linears ~60% (their bf16 GEMMs
//   at ~365 GFLOP/s on 2 threads, near the 6x64 vdpbf16ps kernel's rate), LM-head GEMMs ~20%
//   (fwd ~180 ms, bwd ~220 ms), attention ~5%, the rest norms / SwiGLU / CE.
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { openSession, setNumThreads } from "../dist/index.js";
import { loadModel } from "../dist/model/index.js";
import { PRESETS, writeRandomQwen } from "./model-random.mjs";

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const flag = (name) => process.argv.includes(`--${name}`);

const preset = arg("preset", "qwen2.5-0.5b");
const dir = arg("dir", path.join(os.tmpdir(), `qn-bench-${preset}`));
const B = Number(arg("batch", 1));
const T = Number(arg("seq", 256));
const threads = Number(arg("threads", 2));
const steps = Number(arg("steps", 3));
const warmup = Number(arg("warmup", 1));
const r = Number(arg("r", 16));
const modes = arg("modes", "nf4-bf16,nf4-f32").split(",");
const device = arg("device", "cpu");
const here = path.dirname(fileURLToPath(import.meta.url));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mb = (x) => `${(x / 2 ** 20).toFixed(0)} MB`;

console.log(`model bench: ${preset} (${JSON.stringify(PRESETS[preset])}), batch ${B} x ${T}, ${threads} threads, LoRA r=${r} on all 7 modules`);
let t0 = performance.now();
await writeRandomQwen(dir, PRESETS[preset]);
console.log(`model folder ${dir} ready (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
setNumThreads(threads);

const ours = {};
for (const mode of modes) {
  const [quantization, computeDtype] = mode.split("-");
  const session = openSession(device);
  t0 = performance.now();
  const model = await loadModel(dir, {
    session,
    computeDtype,
    quantization,
    gradientCheckpointing: flag("ckpt"),
    lora: { r, alpha: 2 * r, dropout: 0, targets: "all-linear", seed: 1 },
  });
  const loadS = (performance.now() - t0) / 1000;
  const ids = new Int32Array(B * T).map((_, i) => (i * 7919 + 13) % PRESETS[preset].vocab_size);
  const batch = { inputIds: ids, attentionMask: new Int32Array(B * T).fill(1), labels: ids, batchSize: B, seqLen: T };
  const times = [];
  const fwd = [];
  for (let i = 0; i < warmup + steps; i++) {
    const a = performance.now();
    await model.accumulate(batch, 1 / (B * (T - 1)));
    const dt = (performance.now() - a) / 1000;
    if (i >= warmup) times.push(dt);
  }
  for (let i = 0; i < Math.max(1, steps - 1); i++) {
    const a = performance.now();
    await model.evalLoss(batch);
    fwd.push((performance.now() - a) / 1000);
  }
  const mr = model.memoryReport();
  ours[mode] = { tokensPerS: (B * T) / median(times), bestTokensPerS: (B * T) / Math.min(...times), stepS: times, fwdS: median(fwd), loadS, memory: mr };
  console.log(
    `ours ${mode}: ${ours[mode].tokensPerS.toFixed(1)} tok/s fwd+bwd, best step ${ours[mode].bestTokensPerS.toFixed(1)} tok/s (steps ${times.map((x) => x.toFixed(2)).join(", ")} s; forward only ${median(fwd).toFixed(2)} s; ` +
      `load ${loadS.toFixed(1)} s; weights ${mb(mr.weights)}, adapters ${mb(mr.adapters)}, activations ${mb(mr.activations)}, peak ${mb(mr.peak)})`,
  );
  model.dispose();
  session.dispose();
}

const peer = {};
if (!flag("no-peer")) {
  const res = spawnSync("python3", [path.join(here, "peer_transformers.py"), "--model", dir, "--batch", String(B), "--seq", String(T), "--threads", String(threads), "--steps", String(steps), "--warmup", String(warmup), "--r", String(r)], { encoding: "utf8", maxBuffer: 1 << 24 });
  if (res.status !== 0) {
    console.log(`peer failed (exit ${res.status}): ${(res.stderr || "").trim().split("\n").slice(-3).join(" | ")}`);
  } else {
    for (const line of res.stdout.trim().split("\n")) {
      try {
        const j = JSON.parse(line);
        peer[j.dtype] = j;
        j.best_tokens_per_s = (B * T) / Math.min(...j.step_s);
        console.log(`peer transformers+PEFT ${j.dtype}: ${j.tokens_per_s.toFixed(1)} tok/s, best step ${j.best_tokens_per_s.toFixed(1)} tok/s (steps ${j.step_s.map((x) => x.toFixed(2)).join(", ")} s)`);
      } catch {
        /* not a result line */
      }
    }
  }
}

// Median step and best step (the machine may be shared: the best step is the least disturbed one).
console.log("\n| ours | stat | tok/s | peer fp32 tok/s | ratio | peer bf16 tok/s | ratio |\n|---|---|---|---|---|---|---|");
for (const [mode, o] of Object.entries(ours)) {
  for (const [stat, ok, pk] of [["median", "tokensPerS", "tokens_per_s"], ["best", "bestTokensPerS", "best_tokens_per_s"]]) {
    const f = (p) => (p ? `${p.toFixed(1)} | ${(o[ok] / p).toFixed(2)}x` : "- | -");
    console.log(`| ${mode} | ${stat} | ${o[ok].toFixed(1)} | ${f(peer.float32?.[pk])} | ${f(peer.bfloat16?.[pk])} |`);
  }
}
console.log(JSON.stringify({ bench: "model-train", preset, batch: B, seq: T, threads, r, ours, peer }));
