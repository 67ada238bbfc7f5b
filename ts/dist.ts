// Data parallel across processes: one process per rank, started by Open MPI's mpirun (or by
// `train --nproc N`, which runs mpirun for you). Ranks are found from mpirun's environment
// (OMPI_COMM_WORLD_SIZE / _RANK / _LOCAL_RANK); libmpi is loaded at run time by the addon
// (Open MPI's ABI only), so single-process use never needs MPI.
//
// What data parallel changes (ts/train/loop.ts, ts/api/train.ts):
//   - rank r reads the positions congruent to r modulo N of every epoch's seeded permutation
//     (ts/data/sampler.ts), so N ranks with batch B see exactly what one rank with batch N*B sees,
//     every example once per epoch; all ranks take the same number of steps, and at an epoch's
//     end a rank's micro-batch may be short or empty (it still joins the step's all-reduce);
//   - before each optimizer step the window's target and token counts are summed across ranks
//     (gradScale = 1 / targets of ALL ranks), and inside the native trainStep the one contiguous
//     gradient buffer plus the loss sum are all-reduced before the grad norm and the update;
//   - evaluation batches are dealt round-robin to the ranks and the loss sums reduced;
//   - only rank 0 writes logs, plots, checkpoints and adapters; every rank resumes from them;
//   - every collective runs under a watchdog (QN_DIST_TIMEOUT_S, default 300 s): a rank that dies
//     or hangs ends the job with a message instead of a silent hang.
import os from "node:os";
import { QloraError } from "./errors.js";
import { native } from "./native.js";

export interface World {
  rank: number;
  worldSize: number;
  localRank: number;
  /** rank 0: the one that writes outputs */
  isMain: boolean;
  /** in-place sum across ranks (identity when worldSize == 1) */
  allreduce(values: number[], what: string): number[];
  barrier(what: string): void;
}

export const SINGLE: World = { rank: 0, worldSize: 1, localRank: 0, isMain: true, allreduce: (v) => v, barrier: () => {} };

/** Rank variables set by Open MPI's launcher, or null outside mpirun. */
export function launcherRanks(env: NodeJS.ProcessEnv = process.env): { rank: number; worldSize: number; localRank: number; localSize: number } | null {
  const size = Number(env.OMPI_COMM_WORLD_SIZE ?? "");
  if (!Number.isInteger(size) || size < 1) return null;
  const rank = Number(env.OMPI_COMM_WORLD_RANK ?? "0");
  const localRank = Number(env.OMPI_COMM_WORLD_LOCAL_RANK ?? String(rank));
  const localSize = Number(env.OMPI_COMM_WORLD_LOCAL_SIZE ?? String(size));
  return { rank, worldSize: size, localRank, localSize };
}

let world: World | null = null;

/** Joins the MPI job when launched by mpirun with more than one rank; otherwise a single rank. */
export function initWorld(env: NodeJS.ProcessEnv = process.env): World {
  if (world) return world;
  const l = launcherRanks(env);
  if (!l || l.worldSize === 1) return (world = SINGLE);
  if (!native.dist) throw new QloraError("E_NO_ADDON", "the native addon was built without data-parallel support; rebuild it (npm run build:native)");
  const info = native.dist.init();
  if (info.rank !== l.rank || info.worldSize !== l.worldSize) {
    throw new QloraError("E_INTERNAL", `MPI says rank ${info.rank} of ${info.worldSize}, the launcher said ${l.rank} of ${l.worldSize}`);
  }
  // a clean exit (0, or 130 after a stop all ranks agreed on) finalizes MPI; any other exit of this
  // rank aborts the job at once, naming the rank, so the others never wait for it
  process.once("exit", (code) => {
    if (code === 0 || code === 130) native.dist.finalize();
    else native.dist.abort(`qlora-native: rank ${info.rank} of ${info.worldSize} failed (exit code ${code}); stopping every rank`, typeof code === "number" && code > 0 ? code : 1);
  });
  world = {
    rank: info.rank,
    worldSize: info.worldSize,
    localRank: l.localRank,
    isMain: info.rank === 0,
    allreduce(values, what) {
      return Array.from(native.dist.allreduceSum(Float64Array.from(values), what));
    },
    barrier(what) {
      native.dist.barrier(what);
    },
  };
  return world;
}

/** CPU threads for one rank: an equal share of the cores of this node (at least 1). */
export function threadsPerRank(localSize: number, cores = os.availableParallelism()): number {
  return Math.max(1, Math.floor(cores / Math.max(1, localSize)));
}

/** The device of a rank: cuda:<local rank> when the config asks for a GPU, else the CPU. */
export function rankDevice(device: string, localRank: number): string {
  return device.startsWith("cuda") ? `cuda:${localRank}` : device;
}

/** Removes `--name N` / `--name=N` from an argument list. */
function dropOption(args: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) {
      i++;
      continue;
    }
    if (args[i].startsWith(`--${name}=`)) continue;
    out.push(args[i]);
  }
  return out;
}

/** The mpirun command line `train --nproc N` runs: the same CLI invocation on N ranks. */
export function mpirunCommand(nproc: number, cliArgs: string[], opts: { hostfile?: string; node?: string; script?: string } = {}): { command: string; args: string[]; env: NodeJS.ProcessEnv } {
  const args = ["-n", String(nproc), "--bind-to", "none"];
  if (opts.hostfile) args.push("--hostfile", opts.hostfile);
  else args.push("--oversubscribe");
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (process.getuid?.() === 0) {
    env.OMPI_ALLOW_RUN_AS_ROOT = "1";
    env.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = "1";
  }
  // forward the variables qlora-native reads to every rank (remote nodes included)
  for (const k of Object.keys(process.env)) if (/^(QN_|NCCL_|XDG_CACHE_HOME$|HF_HOME$|HF_HUB_CACHE$)/.test(k)) args.push("-x", k);
  const rest = dropOption(dropOption(cliArgs, "nproc"), "hostfile");
  args.push(opts.node ?? process.execPath, opts.script ?? process.argv[1], ...rest);
  return { command: process.env.QN_MPIRUN ?? "mpirun", args, env };
}
