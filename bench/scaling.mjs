#!/usr/bin/env node
// Data-parallel scaling on paper (issue 8), from measured pieces:
//   gradient bytes per step  = LoRA parameters (Qwen2.5-3B, all linear layers) x 4 bytes (f32,
//                              one contiguous buffer -> one all-reduce per optimizer step);
//   all-reduce time          = ring all-reduce: 2 (N-1)/N x bytes / bus bandwidth + 2 (N-1) x latency,
//                              at stated NVLink and network bandwidths (NCCL bus bandwidths as
//                              nccl-tests reports them); with --measure under mpirun, also the
//                              MPI_Allreduce of that buffer measured on this machine (host memory);
//   step compute time        = --step-ms (measure yours with `qlora-native bench` or a training
//                              run's tokens/s); the default is a stated assumption, not a measurement.
// Efficiency = compute / (compute + exposed all-reduce). The reduce runs after the whole backward
// today (no overlap with earlier layers' backward), so all of it is exposed: the table is the
// lower bound that overlap would improve.
//
//   node bench/scaling.mjs [--step-ms 250]
//   mpirun -n 2 node bench/scaling.mjs --measure      (QN_ADDON_PATH as for the tests)

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const stepMs = opt("step-ms", 250);

// Qwen2.5-3B (config.json): hidden 2048, intermediate 11008, 36 layers, 16 heads, 2 KV heads, head dim 128
const H = 2048, I = 11008, L = 36, KV = 2 * 128;
const modules = { q_proj: [H, H], k_proj: [H, KV], v_proj: [H, KV], o_proj: [H, H], gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H] };
const perRank = Object.values(modules).reduce((s, [i, o]) => s + i + o, 0) * L; // x r

// Bus bandwidths per GPU (GB/s) and per-hop latency (microseconds). Stated, typical nccl-tests figures.
const links = [
  { name: "NVLink 4 (H100/H200 NVSwitch, one node)", busGBs: 360, latUs: 8, maxN: 8 },
  { name: "InfiniBand NDR 400 Gb/s per GPU", busGBs: 45, latUs: 15 },
  { name: "Ethernet 100 Gb/s per node (8 GPUs share it)", busGBs: 12.5 / 8, latUs: 30 },
];

const ringMs = (bytes, n, busGBs, latUs) => (n <= 1 ? 0 : ((2 * (n - 1)) / n) * (bytes / (busGBs * 1e9)) * 1e3 + (2 * (n - 1) * latUs) / 1e3);

if (args.includes("--measure")) {
  const { native } = await import("../dist/native.js");
  const { initWorld } = await import("../dist/dist.js");
  const world = initWorld();
  for (const r of [16, 64]) {
    const n = perRank * r;
    const buf = new Float32Array(n).fill(1);
    world.barrier("warm-up");
    native.dist.allreduceSum(buf, "warm-up");
    const reps = 5;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) native.dist.allreduceSum(buf, "bench");
    const ms = (performance.now() - t0) / reps;
    if (world.isMain) console.log(`measured MPI_Allreduce (host, ${world.worldSize} ranks): r=${r} ${(n * 4 / 1e6).toFixed(1)} MB in ${ms.toFixed(2)} ms = ${((2 * (world.worldSize - 1)) / world.worldSize * n * 4 / ms / 1e6).toFixed(2)} GB/s bus bandwidth`);
  }
  process.exit(0);
}

console.log(`Qwen2.5-3B, LoRA on all linear layers: ${perRank.toLocaleString("en-US")} x r parameters; step compute ${stepMs} ms (assumed; --step-ms)`);
console.log("");
console.log("| r | grad MB/step | link | GPUs | all-reduce ms | efficiency |");
console.log("|---|---|---|---|---|---|");
for (const r of [16, 64]) {
  const bytes = perRank * r * 4;
  for (const link of links) {
    for (const n of [2, 8, 64]) {
      if (link.maxN && n > link.maxN) continue;
      const ar = ringMs(bytes, n, link.busGBs, link.latUs);
      const eff = stepMs / (stepMs + ar);
      console.log(`| ${r} | ${(bytes / 1e6).toFixed(1)} | ${link.name} | ${n} | ${ar.toFixed(2)} | ${(eff * 100).toFixed(1)}% |`);
    }
  }
}
console.log("");
console.log("Goal: >= 95% at 8 GPUs of one node. Break-even step time for 95% = 19 x all-reduce time.");
