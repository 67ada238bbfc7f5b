// `qlora-native bench [KERNEL...] [--device cpu|cuda] [--json]`: runs the native kernel benchmarks
// (cuda/bench, the qn_bench runner: each kernel first checked against a reference, max error
// printed, then timed with warm-up, median of repeats, and reported as time plus GB/s and the
// fraction of the copy bandwidth, or TFLOP/s and the fraction of a bf16 GEMM rate, measured in the
// same run). `e2e` trains a random model of --model-shape for a few steps through the library and
// reports training tokens/s and MFU against the peak qn_bench measures in the same run.
// qn_bench is built with CMake into build-bench/ on first use (with CUDA when nvcc is found).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { CommandModule } from "yargs";
import { E2E_FLOP_METHOD, runE2e } from "../bench/e2e.js";
import { MODEL_PRESETS } from "../bench/random-model.js";
import { resolveDevice } from "../device.js";
import { QloraError } from "../errors.js";
import { packageRoot } from "../native.js";

interface BenchArgs {
  kernel: string[];
  device: string;
  json: boolean;
  iters?: number;
  modelShape?: string;
  seq?: number;
  batch?: number;
  steps?: number;
}

export const BENCH_KERNELS = ["nf4", "gemm", "lora_linear", "attention", "rmsnorm", "rope", "swiglu", "cross_entropy", "lm_head", "optim", "e2e"];

function benchBinary(device: string, log: (s: string) => void): string {
  if (process.env.QN_BENCH_BIN) return process.env.QN_BENCH_BIN;
  const candidates = [path.join(packageRoot, "build-bench", "qn_bench"), ...(device === "cpu" ? [path.join(packageRoot, "build-core", "qn_bench")] : [path.join(packageRoot, "build-gpu", "qn_bench")])];
  const found = candidates.find((c) => existsSync(c));
  if (found) return found;
  log("building the native benchmarks (build-bench/, one time)");
  const dir = path.join(packageRoot, "build-bench");
  const conf = spawnSync("cmake", ["-S", packageRoot, "-B", dir, "-DQN_BUILD_ADDON=OFF", "-DCMAKE_BUILD_TYPE=Release"], { stdio: "inherit" });
  const build = conf.status === 0 ? spawnSync("cmake", ["--build", dir, "-j", String(os.availableParallelism()), "--target", "qn_bench"], { stdio: "inherit" }) : conf;
  if (build.status !== 0 || !existsSync(path.join(dir, "qn_bench"))) throw new QloraError("E_IO", "building qn_bench failed (needs cmake and a C++ compiler; see the output above)");
  return path.join(dir, "qn_bench");
}

export interface BenchRow {
  kernel: string;
  table: string;
  case: string;
  /** median ms per call */
  ms: number;
  /** memory-bound tables: GB/s and the fraction of the copy bandwidth measured in the same run */
  gbs?: number;
  fractionOfCopy?: number;
  /** GEMM-rate tables: TFLOP/s and the fraction of the bf16 GEMM rate measured in the same run */
  tflops?: number;
  fractionOfGemm?: number;
  /** the gemm tables: the fraction of the in-register FMA / dot-product loop's rate (CPU) */
  fractionOfPeak?: number;
  /** max |result - reference| of the check run before timing, and that over max |reference| */
  maxError?: number;
  relError?: number;
  note?: string;
  [extra: string]: unknown;
}

/** Parses the tables qn_bench prints (title line, header with ms/call, then rows). */
export function parseBenchOutput(kernel: string, text: string): BenchRow[] {
  const rows: BenchRow[] = [];
  let table = "";
  let flops = false;
  let ofPeak = false;
  let prev = "";
  for (const line of text.split("\n")) {
    if (/ms\/call/.test(line)) {
      table = prev.trim();
      flops = /TFLOP\/s/.test(line);
      ofPeak = /of peak/.test(line);
      prev = line;
      continue;
    }
    const m = /^\s{2}(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s*(.*)$/.exec(line);
    if (m && table) {
      const row: BenchRow = { kernel, table, case: m[1].trim(), ms: Number(m[2]) };
      if (flops) Object.assign(row, { tflops: Number(m[3]), [ofPeak ? "fractionOfPeak" : "fractionOfGemm"]: Number(m[4]) / 100 });
      else Object.assign(row, { gbs: Number(m[3]), fractionOfCopy: Number(m[4]) / 100 });
      const e = /max abs err ([\d.eE+-]+|inf|nan) \(rel ([\d.eE+-]+|inf|nan)\)/.exec(m[5]);
      if (e) Object.assign(row, { maxError: Number(e[1]), relError: Number(e[2]) });
      if (m[5].trim()) row.note = m[5].trim();
      rows.push(row);
    }
    if (line.trim()) prev = line;
  }
  return rows;
}

/** The peak FLOP/s line of `qn_bench --filter peak`. */
export function parsePeak(text: string): { f32: number; bf16: number; gemm: number; datasheet?: number; gpu?: string } | undefined {
  const m = /f32 ([\d.]+) GFLOP\/s, bf16 ([\d.]+) GFLOP\/s \(in-register loop\), gemm bf16 ([\d.]+) GFLOP\/s/.exec(text);
  if (!m) return undefined;
  const sheet = /datasheet bf16 ([\d.]+) GFLOP\/s \(([^)]*)\)/.exec(text);
  return {
    f32: Number(m[1]) * 1e9, bf16: Number(m[2]) * 1e9, gemm: Number(m[3]) * 1e9,
    ...(sheet ? { datasheet: Number(sheet[1]) * 1e9, gpu: sheet[2] } : {}),
  };
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: "bench [kernel..]",
  describe: `Benchmark the kernels (checked against a reference first) against this machine's copy bandwidth or GEMM rate, and end-to-end training (${BENCH_KERNELS.join(", ")})`,
  builder: (y) =>
    y
      .positional("kernel", { type: "string", array: true, default: [] as string[], describe: "kernels to run (default: all)" })
      .option("device", { type: "string", default: "cpu", describe: "cpu, cuda, cuda:N or auto" })
      .option("iters", { type: "number", describe: "timed calls per case" })
      .option("json", { type: "boolean", default: false, describe: "print one JSON array of rows" })
      .option("model-shape", { type: "string", choices: Object.keys(MODEL_PRESETS), describe: "e2e: model shape (default tiny on the CPU, qwen2.5-3b on CUDA)" })
      .option("seq", { type: "number", describe: "e2e: sequence length" })
      .option("batch", { type: "number", describe: "e2e: sequences per step" })
      .option("steps", { type: "number", describe: "e2e: timed training steps (after one warm-up step)" })
      .example("$0 bench e2e --model-shape qwen2.5-0.5b", "training tokens/s and MFU of a 0.5B-shaped model")
      .example("$0 bench nf4 attention", "two kernels on the CPU")
      .example("$0 bench --device cuda --json", "everything on the GPU, machine-readable"),
  handler: async (argv) => {
    const kernels = argv.kernel.length ? argv.kernel : BENCH_KERNELS;
    for (const k of kernels) if (!BENCH_KERNELS.includes(k)) throw new QloraError("E_ARG", `unknown kernel '${k}' (expected one of ${BENCH_KERNELS.join(", ")})`);
    const log = (s: string) => (argv.json ? process.stderr.write(s + "\n") : console.log(s));
    if (argv.iters !== undefined && (!Number.isInteger(argv.iters) || argv.iters < 1)) throw new QloraError("E_ARG", `--iters must be a positive integer, got ${argv.iters}`);
    // the device first: building the runner with CUDA takes minutes, and "auto" names one device
    argv.device = resolveDevice(argv.device, log);
    const exe = benchBinary(argv.device, log);
    const all: BenchRow[] = [];
    let failed = 0;
    for (const k of kernels) {
      if (k === "e2e") {
        all.push(await e2eRow(exe, argv, log));
        continue;
      }
      const args = ["--device", argv.device, "--filter", k, ...(argv.iters ? ["--iters", String(argv.iters)] : [])];
      const r = spawnSync(exe, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 << 20 });
      if (r.status !== 0) failed++;
      if (argv.json) all.push(...parseBenchOutput(k, r.stdout ?? ""));
      else process.stdout.write(r.stdout ?? "");
    }
    if (argv.json) process.stdout.write(JSON.stringify(all) + "\n");
    if (failed) throw new QloraError("E_INTERNAL", `${failed} benchmark run(s) failed`);
  },
};

async function e2eRow(exe: string, argv: BenchArgs, log: (s: string) => void): Promise<BenchRow> {
  const cuda = argv.device.startsWith("cuda");
  const shape = argv.modelShape ?? (cuda ? "qwen2.5-3b" : "tiny");
  const p = spawnSync(exe, ["--device", argv.device, "--filter", "peak"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const peak = parsePeak(p.stdout ?? "");
  if (p.status !== 0 || !peak) throw new QloraError("E_INTERNAL", "qn_bench --filter peak failed");
  // The CPU: the in-register bf16 dot-product loop on every thread; CUDA: the GPU's datasheet dense
  // bf16 rate when qn_bench knows the GPU, else our bf16 GEMM at 8192^3 measured in this run.
  const peakFlops = cuda ? peak.datasheet ?? peak.gemm : peak.bf16;
  const peakSource = cuda
    ? peak.datasheet ? `datasheet dense bf16 of the ${peak.gpu}` : "bf16 GEMM 8192^3 measured in this run (GPU not in the datasheet table)"
    : "bf16 in-register dot-product loop, all threads, measured in this run";
  const r = await runE2e({ shape, device: argv.device, seq: argv.seq, batch: argv.batch, steps: argv.steps, log });
  const mfu = r.modelFlopsPerSecond / peakFlops;
  const ms = (r.tokensPerStep / r.tokensPerSecond) * 1e3;
  const row: BenchRow = {
    kernel: "e2e", table: "e2e training step", case: `${shape} B${r.batch} T${r.seq} r${r.r} ${r.computeDtype}`, ms,
    tokens_per_second: r.tokensPerSecond, best_tokens_per_second: r.bestTokensPerSecond, mfu, mfu_vs_gemm: r.modelFlopsPerSecond / peak.gemm,
    model_flops_per_token: r.flopsPerToken.total, flops_per_token: r.flopsPerToken, peak_flops: peakFlops, peak_source: peakSource,
    gemm_flops: peak.gemm, step_seconds: r.stepSeconds, flop_method: E2E_FLOP_METHOD,
  };
  if (!argv.json) {
    console.log(`\ne2e training on ${argv.device}: ${shape}, batch ${r.batch} x ${r.seq} tokens, NF4 + LoRA r=${r.r} (all 7 projections), ${r.computeDtype}`);
    console.log(`  ${r.tokensPerSecond.toFixed(1)} tokens/s (median of ${r.stepSeconds.length} steps; best ${r.bestTokensPerSecond.toFixed(1)}), ${ms.toFixed(1)} ms/step`);
    console.log(`  ${(r.flopsPerToken.total / 1e9).toFixed(3)} GFLOP/token -> ${(r.modelFlopsPerSecond / 1e9).toFixed(2)} GFLOP/s; MFU ${(100 * mfu).toFixed(1)}% of ${(peakFlops / 1e9).toFixed(1)} GFLOP/s (${peakSource}); ${(100 * r.modelFlopsPerSecond / peak.gemm).toFixed(1)}% of our bf16 GEMM rate (${(peak.gemm / 1e9).toFixed(1)} GFLOP/s)`);
    console.log(`  FLOP count: ${E2E_FLOP_METHOD}`);
  }
  return row;
}
