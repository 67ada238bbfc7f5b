// Forward+backward throughput of the Qwen2 model on the CPU (issue 4 benchmark), with the peer
// (transformers + PEFT on torch CPU, bench/peer_transformers.py) run on the same model folder,
// batch, length and thread count in the same run, and the ratio printed.
//
//   node bench/model-train.mjs [--preset qwen2.5-0.5b] [--dir DIR] [--batch 1] [--seq 256]
//        [--threads 2] [--steps 3] [--warmup 1] [--rounds 3] [--r 16] [--modes nf4-bf16,nf4-f32]
//        [--no-peer] [--gap-ms 1000] [--device cpu] [--ckpt]
// Needs the addon (QN_ADDON_PATH or the package build) and dist/ (npm run build:ts).
// The model folder (random bf16 weights, ~1 GB for 0.5B) is written once under the OS temp dir.
//
// Interleaved rounds: this machine is shared and its speed drifts by +-10% over minutes, so both
// sides stay loaded and take turns: each round runs --steps steps of each of our modes, then the
// peer (a child process waiting on stdin) runs --steps steps of each of its dtypes. The ratio of
// each round compares steps taken seconds apart; the table reports the median over rounds of the
// per-round ratios of median steps, and of best steps.
//
// Last measured (2026-11-29, shared 2-core AMD EPYC with avx512_bf16, Qwen2.5-0.5B shape, 1 x 256,
// NF4 + LoRA r16 on all 7 modules, bf16 compute): see the closing notes of issue 4 and bench/README.md.
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { openSession, setNumThreads } from "../dist/index.js";
import { loadModel } from "../dist/model/index.js";
import { modelFlopsPerToken } from "../dist/bench/e2e.js";
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
const rounds = Number(arg("rounds", 3));
const r = Number(arg("r", 16));
const modes = arg("modes", "nf4-bf16,nf4-f32").split(",");
const device = arg("device", "cpu");
const usePeer = !flag("no-peer");
const gapMs = Number(arg("gap-ms", 1000));
const here = path.dirname(fileURLToPath(import.meta.url));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mb = (x) => `${(x / 2 ** 20).toFixed(0)} MB`;
const tok = (s) => (B * T) / s;

console.log(`model bench: ${preset} (${JSON.stringify(PRESETS[preset])}), batch ${B} x ${T}, ${threads} threads, LoRA r=${r} on all 7 modules, ${rounds} rounds of ${steps} steps`);
let t0 = performance.now();
await writeRandomQwen(dir, PRESETS[preset]);
console.log(`model folder ${dir} ready (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
setNumThreads(threads);

// ---- the peer: a child process that runs a round per line on its stdin ----
let peer = null;
if (usePeer) {
  const child = spawn("python3", [path.join(here, "peer_transformers.py"), "--model", dir, "--batch", String(B), "--seq", String(T), "--threads", String(threads), "--steps", String(steps), "--warmup", String(warmup), "--r", String(r), "--rounds", String(rounds)], { stdio: ["pipe", "pipe", "pipe"] });
  const lines = [];
  let waiting = null;
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  readline.createInterface({ input: child.stdout }).on("line", (line) => {
    let j;
    try {
      j = JSON.parse(line);
    } catch {
      return;
    }
    lines.push(j);
    waiting?.();
  });
  const exited = new Promise((res) => child.on("exit", (code) => res(code)));
  exited.then(() => waiting?.());
  // resolves with the first not yet taken line matching `pred`, or null when the peer has exited
  const next = async (pred) => {
    for (;;) {
      const i = lines.findIndex(pred);
      if (i >= 0) return lines.splice(i, 1)[0];
      if (child.exitCode !== null) return null;
      await new Promise((res) => (waiting = res));
      waiting = null;
    }
  };
  peer = { child, next, exited, stderr: () => stderr };
}

// ---- ours: every mode loaded and warmed up ----
const ours = [];
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
  for (let i = 0; i < warmup; i++) await model.accumulate(batch, 1 / (B * (T - 1)));
  ours.push({ mode, session, model, batch, loadS, rounds: [] });
}

let peerReady = false;
let matmulFlops = null;  // torch's matmul FLOP/s per dtype at the model's largest linear (the peer measures it)
if (peer) {
  const ready = await peer.next((j) => j.ready);
  peerReady = ready !== null;
  matmulFlops = ready?.matmul_flops ?? null;
  if (!peerReady) console.log(`peer failed to start: ${peer.stderr().trim().split("\n").slice(-3).join(" | ")}`);
}

// ---- rounds ----
const peerRounds = { float32: [], bfloat16: [] };
for (let k = 0; k < rounds; k++) {
  // a pause after the peer's turn: its OpenMP threads spin for a while after their last parallel
  // region, and would take cores from our first steps
  if (peerReady) await new Promise((res) => setTimeout(res, gapMs));
  for (const o of ours) {
    const times = [];
    for (let i = 0; i < steps; i++) {
      const a = performance.now();
      await o.model.accumulate(o.batch, 1 / (B * (T - 1)));
      times.push((performance.now() - a) / 1000);
    }
    o.rounds.push(times);
  }
  if (peerReady) {
    await new Promise((res) => setTimeout(res, gapMs));  // the same pause before the peer's turn
    peer.child.stdin.write("go\n");
    for (const dtype of ["float32", "bfloat16"]) {
      const j = await peer.next((x) => x.round === k && x.dtype === dtype);
      if (j) peerRounds[dtype].push(j.step_s);
    }
  }
  const parts = ours.map((o) => `ours ${o.mode} ${tok(median(o.rounds[k])).toFixed(1)}`);
  for (const [dtype, rs] of Object.entries(peerRounds)) if (rs[k]) parts.push(`peer ${dtype} ${tok(median(rs[k])).toFixed(1)}`);
  console.log(`round ${k + 1}: ${parts.join(", ")} tok/s (median steps)`);
}
let peerVersions = null;
if (peer) {
  peer.child.stdin.end();
  for (;;) {
    const j = await peer.next((x) => x.tokens_per_s !== undefined);
    if (!j) break;
    peerVersions = j.versions;
  }
  await peer.exited;
}

// ---- forward-only timing and memory, then results ----
const results = {};
for (const o of ours) {
  const fwd = [];
  for (let i = 0; i < Math.max(1, steps - 1); i++) {
    const a = performance.now();
    await o.model.evalLoss(o.batch);
    fwd.push((performance.now() - a) / 1000);
  }
  const all = o.rounds.flat();
  const mr = o.model.memoryReport();
  results[o.mode] = { tokensPerS: tok(median(all)), bestTokensPerS: tok(Math.min(...all)), stepS: o.rounds, fwdS: median(fwd), loadS: o.loadS, memory: mr };
  console.log(
    `ours ${o.mode}: ${results[o.mode].tokensPerS.toFixed(1)} tok/s fwd+bwd (median step), best step ${results[o.mode].bestTokensPerS.toFixed(1)} tok/s; forward only ${median(fwd).toFixed(2)} s; ` +
      `load ${o.loadS.toFixed(1)} s; weights ${mb(mr.weights)}, adapters ${mb(mr.adapters)}, activations ${mb(mr.activations)}, peak ${mb(mr.peak)}`,
  );
  o.model.dispose();
  o.session.dispose();
}
const peerOut = {};
for (const [dtype, rs] of Object.entries(peerRounds)) {
  if (!rs.length) continue;
  const all = rs.flat();
  peerOut[dtype] = { tokens_per_s: tok(median(all)), best_tokens_per_s: tok(Math.min(...all)), step_s: rs, versions: peerVersions };
  console.log(`peer transformers+PEFT ${dtype}: ${peerOut[dtype].tokens_per_s.toFixed(1)} tok/s (median step), best step ${peerOut[dtype].best_tokens_per_s.toFixed(1)} tok/s`);
}

// Per round: ours / peer of median steps (and of best steps); the median over rounds.
const ratio = (o, dtype, stat) => {
  const rs = peerRounds[dtype];
  if (!rs.length) return null;
  const f = stat === "median" ? median : (xs) => Math.min(...xs);
  return median(o.rounds.map((t, k) => (rs[k] ? f(rs[k]) / f(t) : NaN)).filter(Number.isFinite));
};
console.log("\n| ours | stat | tok/s | vs peer fp32 (median of per-round ratios) | vs peer bf16 |\n|---|---|---|---|---|");
for (const o of ours) {
  for (const stat of ["median", "best"]) {
    const x = results[o.mode][stat === "median" ? "tokensPerS" : "bestTokensPerS"];
    const f = (v) => (v ? `${v.toFixed(2)}x` : "-");
    const r32 = ratio(o, "float32", stat), r16 = ratio(o, "bfloat16", stat);
    results[o.mode][`ratio_${stat}`] = { float32: r32, bfloat16: r16 };
    console.log(`| ${o.mode} | ${stat} | ${x.toFixed(1)} | ${f(r32)} | ${f(r16)} |`);
  }
}
// Each side's model FLOP rate (the count of bench/README.md), against torch's own matmul rate on
// this machine: how close each side runs to what its precision's GEMMs allow here.
const flops = modelFlopsPerToken(PRESETS[preset], T, r).total;
const gf = (x) => `${(x / 1e9).toFixed(0)} GFLOP/s`;
const ofMatmul = (rate, dtype) => (matmulFlops?.[dtype] ? ` = ${(rate / matmulFlops[dtype]).toFixed(2)}x torch's ${dtype} matmul` : "");
const rates = [];
for (const o of ours) {
  const rate = results[o.mode].tokensPerS * flops;
  results[o.mode].modelFlopsPerS = rate;
  rates.push(`ours ${o.mode} ${gf(rate)}${ofMatmul(rate, o.mode.endsWith("bf16") ? "bfloat16" : "float32")}`);
}
for (const [dtype, po] of Object.entries(peerOut)) {
  po.model_flops_per_s = po.tokens_per_s * flops;
  rates.push(`peer ${dtype} ${gf(po.model_flops_per_s)}${ofMatmul(po.model_flops_per_s, dtype)}`);
}
const mmNote = matmulFlops
  ? `; torch matmul [${B * T} x ${PRESETS[preset].hidden_size}] x [${PRESETS[preset].hidden_size} x ${PRESETS[preset].intermediate_size}]: ` +
    Object.entries(matmulFlops).map(([d, x]) => `${d} ${gf(x)}`).join(", ")
  : "";
console.log(`\nmodel FLOP rate (${(flops / 1e9).toFixed(3)} GFLOP/token): ${rates.join("; ")}${mmNote}`);
console.log(JSON.stringify({ bench: "model-train", preset, batch: B, seq: T, threads, r, rounds, steps, modelFlopsPerToken: flops, torchMatmulFlops: matmulFlops, ours: results, peer: peerOut }));
