// `qlora-native train [--config FILE] [--set k=v ...] [--resume latest|PATH] [--adapter DIR]
//   [--device D] [--nproc N [--hostfile F]] [--json]`.
// Without --config it runs the embedded demo on the CPU. Ctrl-C or SIGTERM saves a checkpoint and
// exits 130 / 143.
import path from "node:path";
import type { CommandModule } from "yargs";
import { train, type TrainResult } from "../api/train.js";
import { loadConfig } from "../config/load.js";
import { DEMO_OUTPUT_DIR, demoConfig } from "../demo/config.js";
import { ensureDemoModel } from "../demo/model.js";
import { spawn } from "node:child_process";
import os from "node:os";
import { launcherRanks, mpirunCommand } from "../dist.js";
import { QloraError } from "../errors.js";
import { Progress } from "./progress.js";

interface TrainArgs {
  config?: string;
  set: string[];
  resume?: string;
  adapter?: string;
  device?: string;
  json: boolean;
  nproc?: number;
  hostfile?: string;
}

/** `train --nproc N`: runs this same command under `mpirun -n N` and returns its exit code. */
async function runUnderMpirun(argv: TrainArgs): Promise<number> {
  const { command, args, env } = mpirunCommand(argv.nproc!, process.argv.slice(2), { hostfile: argv.hostfile });
  return new Promise((resolve, reject) => {
    // mpirun kills the job on SIGINT but forwards SIGUSR1 to every rank: in its own process group
    // (so a terminal's Ctrl-C reaches only us), the first Ctrl-C becomes SIGUSR1 (each rank stops
    // after the step, rank 0 saves a checkpoint), a second one SIGINT (the job ends at once)
    // SIGTERM (kill, timeout, a batch scheduler) does the same, so the job never runs on orphaned
    // and stops with a checkpoint; a second SIGTERM is passed on as is (mpirun ends the ranks).
    const child = spawn(command, args, { stdio: "inherit", env, detached: true });
    let interrupts = 0;
    let terminated = false;
    const onInt = () => child.kill(++interrupts === 1 ? "SIGUSR1" : "SIGINT");
    const onTerm = () => {
      child.kill(++interrupts === 1 ? "SIGUSR1" : "SIGTERM");
      terminated = true;
    };
    const detach = () => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
    };
    process.on("SIGINT", onInt);
    process.on("SIGTERM", onTerm);
    child.on("error", (e) => {
      detach();
      reject(new QloraError("E_NO_DEVICE", `train --nproc needs Open MPI's mpirun (${(e as Error).message}); install openmpi-bin`));
    });
    child.on("exit", (code, signal) => {
      detach();
      const status = code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1);
      // the ranks' "stopped by a signal" status is Ctrl-C's 130; after SIGTERM, 143 as without --nproc
      resolve(terminated && status === 130 ? 143 : status);
    });
  });
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: "train",
  describe: "Fine-tune a model with QLoRA (no --config: a two-minute CPU demo)",
  builder: (y) =>
    y
      .option("config", { type: "string", describe: "YAML config file (see configs/)" })
      .option("set", { type: "string", array: true, default: [], describe: "override a key: --set training.max_steps=100" })
      .option("resume", { type: "string", describe: '"latest" or a checkpoint folder' })
      .option("device", { type: "string", describe: "cpu, cuda, cuda:N or auto (same as --set advanced.device=...)" })
      .option("adapter", { type: "string", describe: "continue training from a PEFT adapter folder (ours or PEFT-made): same as --set lora.init_adapter=DIR" })
      .option("json", { type: "boolean", default: false, describe: "print a JSON summary only" })
      .option("nproc", { type: "number", describe: "data parallel: run N ranks (starts mpirun -n N for you; one GPU or an equal share of the cores each; at most 4 per core without --hostfile; Ctrl-C or SIGTERM stops with a checkpoint, exit 130 / 143)" })
      .option("hostfile", { type: "string", describe: "with --nproc: an Open MPI hostfile for a multi-node run" })
      .example("$0 train", "run the embedded demo (tiny Qwen2 model, real tokenizer, CPU)")
      .example("$0 train --config configs/qwen2.5-3b-wikitext2.yaml", "the flagship job")
      .example("$0 train --config my.yaml --set training.max_steps=50 --resume latest", "continue a run")
      .example("$0 train --config my.yaml --adapter path/to/peft-adapter", "start from a PEFT adapter's weights"),
  handler: async (argv) => {
    if (argv.nproc !== undefined && !launcherRanks()) {
      if (!Number.isInteger(argv.nproc) || argv.nproc < 1) throw new QloraError("E_ARG", `--nproc must be a positive integer, got ${argv.nproc}`);
      // one node: mpirun oversubscribes the cores; far more ranks than cores is a typo, not a job
      const maxLocal = 4 * os.availableParallelism();
      if (argv.hostfile === undefined && argv.nproc > maxLocal)
        throw new QloraError("E_ARG", `--nproc ${argv.nproc} is more than 4 ranks per core on this machine (${os.availableParallelism()} cores, at most ${maxLocal}); for several nodes pass --hostfile`);
      if (argv.nproc > 65536) throw new QloraError("E_ARG", `--nproc ${argv.nproc} is more ranks than qlora-native supports (65536)`);
      if (argv.nproc > 1) {
        process.exitCode = await runUnderMpirun(argv);
        return;
      }
    }
    // data parallel: only rank 0 talks (the others print warnings and errors only)
    const mainRank = (launcherRanks()?.rank ?? 0) === 0;
    // under mpirun a rank's stdout may be a terminal that mpirun relays into a log: plain lines there
    const progress = Progress.for(process.stdout, argv.json || !mainRank, launcherRanks() !== null);
    if (argv.adapter !== undefined) argv.set = [...argv.set, `lora.init_adapter=${path.resolve(argv.adapter)}`];
    if (argv.device !== undefined) argv.set = [...argv.set, `advanced.device=${argv.device}`];
    const isDemo = !argv.config;
    let config;
    if (isDemo) {
      progress.line("qlora-native demo: a small random Qwen2-architecture model with the Qwen2.5 tokenizer, NF4 base weights + LoRA, trained on the bundled corpus");
      const modelDir = await ensureDemoModel(path.resolve(DEMO_OUTPUT_DIR, "base-model"));
      config = await loadConfig(undefined, { base: demoConfig(modelDir), set: argv.set });
    } else {
      config = await loadConfig(argv.config, { set: argv.set });
    }
    const chatty = config.advanced.log_level === "info" || config.advanced.log_level === "debug";
    if (config.advanced.log_level === "debug") process.env.QN_DEBUG ??= "1"; // stack traces with errors
    const abort = new AbortController();
    let interrupts = 0;
    let exitCode = 130;
    // SIGINT (Ctrl-C) and SIGTERM (kill, timeout, Slurm, Kubernetes): finish the step, save a
    // checkpoint, exit 128 + signal; a second one quits at once.
    const onSignal = (sig: NodeJS.Signals) => {
      interrupts++;
      exitCode = sig === "SIGTERM" ? 143 : 130;
      if (interrupts === 1) {
        progress.line(`${sig === "SIGTERM" ? "SIGTERM" : "interrupt"}: finishing the current step, saving a checkpoint (${sig === "SIGTERM" ? "a second signal" : "Ctrl-C again"} to quit at once)`);
        abort.abort();
      } else {
        process.exit(exitCode);
      }
    };
    const onSigint = () => onSignal("SIGINT");
    const onSigterm = () => onSignal("SIGTERM");
    process.on("SIGINT", onSigint);
    process.on("SIGTERM", onSigterm);
    // under mpirun the launcher's SIGUSR1 is the interrupt (see runUnderMpirun)
    if (launcherRanks()) process.on("SIGUSR1", onSigint);
    let totalSteps = 0;
    let result: TrainResult;
    try {
      result = await train({
        config,
        resume: argv.resume,
        signal: abort.signal,
        // advanced.log_level: "warn" keeps warnings, errors and the summary; "error" drops warnings too
        onInfo: chatty ? (l) => progress.line(l) : undefined,
        onWarning: config.advanced.log_level === "error" ? undefined : (m) => (argv.json ? process.stderr.write(m + "\n") : progress.line(`warning: ${m}`)),
        onStart: (s) => {
          totalSteps = s.totalSteps;
          progress.line(`training ${s.paramCount.toLocaleString("en-US")} LoRA parameters on ${s.device}: steps ${s.startStep}..${s.totalSteps}, effective batch B x K x D = ${s.effectiveBatch}`);
        },
        onStep: chatty ? (s) => progress.step(s) : undefined,
        onLog: chatty ? (e) => progress.log(e, totalSteps) : undefined,
        onEval: chatty ? (e) => progress.log(e, totalSteps) : undefined,
        onSave: chatty ? (dir) => progress.line(`checkpoint saved: ${dir}`) : undefined,
      });
    } catch (e) {
      if (!(e instanceof QloraError && e.code === "E_ABORTED")) throw e;
      progress.clear();
      process.stderr.write(`qlora-native: ${e.message}\n`);
      process.exitCode = exitCode;
      return;
    } finally {
      process.off("SIGINT", onSigint);
      process.off("SIGTERM", onSigterm);
      process.off("SIGUSR1", onSigint);
      progress.clear();
    }
    const summary = {
      output_dir: result.outputDir,
      global_step: result.globalStep,
      total_steps: result.totalSteps,
      train_loss: result.trainLoss,
      eval_loss_before: result.initialEval?.eval_loss ?? null,
      perplexity_before: result.initialEval?.perplexity ?? null,
      eval_loss: result.finalEval?.eval_loss ?? null,
      perplexity: result.finalEval?.perplexity ?? null,
      test_loss: result.testEval?.eval_loss ?? null,
      test_perplexity: result.testEval?.perplexity ?? null,
      tokens_per_second: result.tokensPerSecond,
      peak_memory_bytes: result.peakMemoryBytes,
      stopped_by: result.stoppedBy,
      device: result.device,
    };
    if (!mainRank) {
      // summary and hints come from rank 0
    } else if (argv.json) {
      process.stdout.write(JSON.stringify(summary) + "\n");
    } else {
      if (Number.isFinite(result.trainLoss)) progress.line(`train loss ${result.trainLoss.toFixed(4)} (mean over steps 1..${result.globalStep})`);
      if (result.initialEval && result.finalEval) {
        progress.line(`eval loss ${result.initialEval.eval_loss.toFixed(4)} -> ${result.finalEval.eval_loss.toFixed(4)}, perplexity ${result.initialEval.perplexity.toFixed(1)} -> ${result.finalEval.perplexity.toFixed(1)}`);
      } else if (result.finalEval) {
        progress.line(`eval loss ${result.finalEval.eval_loss.toFixed(4)}, perplexity ${result.finalEval.perplexity.toFixed(1)}`);
      }
      if (result.testEval) progress.line(`test loss ${result.testEval.eval_loss.toFixed(4)}, perplexity ${result.testEval.perplexity.toFixed(1)}`);
      progress.line(result.stoppedBy === "abort" ? `stopped at step ${result.globalStep}; resume with --resume latest` : `adapter, trainer_state.json and training curves in ${result.outputDir}`);
      if (isDemo) progress.line("next: the real job is  npx qlora-native train --config configs/qwen2.5-3b-wikitext2.yaml  (Qwen2.5-3B on WikiText-2; needs the model in the Hugging Face cache and a GPU)");
    }
    if (result.stoppedBy === "abort") process.exitCode = exitCode;
    if (result.stoppedBy === "nonfinite") throw new QloraError("E_NONFINITE", "training stopped on non-finite values");
  },
};
