// `qlora-native bench [KERNEL...] [--device cpu|cuda] [--json]`: runs the native kernel benchmarks
// (cuda/bench, the qn_bench runner: each kernel timed with warm-up and reported as time, GB/s and
// the fraction of the copy bandwidth measured in the same run). qn_bench is built with CMake into
// build-bench/ on first use (with the CUDA backend when nvcc is found).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import type { CommandModule } from "yargs";
import { QloraError } from "../errors.js";
import { packageRoot } from "../native.js";

interface BenchArgs {
  kernel: string[];
  device: string;
  json: boolean;
  iters?: number;
}

export const BENCH_KERNELS = ["nf4", "gemm", "lora_linear", "attention", "rmsnorm", "rope", "swiglu", "cross_entropy", "optim"];

function benchBinary(device: string, log: (s: string) => void): string {
  const candidates = [path.join(packageRoot, "build-bench", "qn_bench"), ...(device === "cpu" ? [path.join(packageRoot, "build-core", "qn_bench")] : [path.join(packageRoot, "build-gpu", "qn_bench")])];
  const found = candidates.find((c) => existsSync(c));
  if (found) return found;
  log("building the native benchmarks (build-bench/, one time)");
  const dir = path.join(packageRoot, "build-bench");
  const conf = spawnSync("cmake", ["-S", packageRoot, "-B", dir, "-DQN_BUILD_ADDON=OFF", "-DCMAKE_BUILD_TYPE=Release"], { stdio: "inherit" });
  const build = conf.status === 0 ? spawnSync("cmake", ["--build", dir, "-j", "--target", "qn_bench"], { stdio: "inherit" }) : conf;
  if (build.status !== 0 || !existsSync(path.join(dir, "qn_bench"))) throw new QloraError("E_IO", "building qn_bench failed (needs cmake and a C++ compiler; see the output above)");
  return path.join(dir, "qn_bench");
}

export interface BenchRow {
  kernel: string;
  table: string;
  case: string;
  ms: number;
  gbs: number;
  fractionOfCopy: number;
}

/** Parses the tables qn_bench prints (title line, header with ms/call, then rows). */
export function parseBenchOutput(kernel: string, text: string): BenchRow[] {
  const rows: BenchRow[] = [];
  let table = "";
  let prev = "";
  for (const line of text.split("\n")) {
    if (/ms\/call/.test(line)) table = prev.trim();
    const m = /^\s{2}(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)%/.exec(line);
    if (m && table) rows.push({ kernel, table, case: m[1].trim(), ms: Number(m[2]), gbs: Number(m[3]), fractionOfCopy: Number(m[4]) / 100 });
    if (line.trim()) prev = line;
  }
  return rows;
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: "bench [kernel..]",
  describe: `Benchmark the kernels against this machine's copy bandwidth (${BENCH_KERNELS.join(", ")})`,
  builder: (y) =>
    y
      .positional("kernel", { type: "string", array: true, default: [] as string[], describe: "kernels to run (default: all)" })
      .option("device", { type: "string", default: "cpu", describe: "cpu, cuda or cuda:N" })
      .option("iters", { type: "number", describe: "timed calls per case" })
      .option("json", { type: "boolean", default: false, describe: "print one JSON array of rows" })
      .example("$0 bench nf4 attention", "two kernels on the CPU")
      .example("$0 bench --device cuda --json", "everything on the GPU, machine-readable"),
  handler: (argv) => {
    const kernels = argv.kernel.length ? argv.kernel : BENCH_KERNELS;
    for (const k of kernels) if (!BENCH_KERNELS.includes(k)) throw new QloraError("E_ARG", `unknown kernel '${k}' (expected one of ${BENCH_KERNELS.join(", ")})`);
    const log = (s: string) => (argv.json ? process.stderr.write(s + "\n") : console.log(s));
    const exe = benchBinary(argv.device, log);
    const all: BenchRow[] = [];
    let failed = 0;
    for (const k of kernels) {
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
