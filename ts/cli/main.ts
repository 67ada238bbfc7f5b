// The `qlora-native` command line: one yargs program, one file per command. Errors end the
// process with a one-line reason and a non-zero exit code (set QN_DEBUG=1 for stack traces).
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { QloraError } from "../errors.js";
import { version } from "../version.js";
import { benchCommand } from "./bench.js";
import { doctorCommand } from "./doctor.js";
import { quantizeCommand } from "./quantize.js";
import { evalCommand } from "./eval.js";
import { mergeCommand } from "./merge.js";
import { trainCommand } from "./train.js";

const FS_REASONS: Record<string, string> = {
  EROFS: "read-only file system",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  ENOTDIR: "a part of the path is a file, not a folder",
  EISDIR: "it is a folder",
  ENOENT: "no such file or folder",
  EEXIST: "it already exists",
  ENAMETOOLONG: "the name is too long",
  EMFILE: "too many open files",
  EIO: "input/output error",
};

/** A Node file-system error (code + syscall + path) as an E_IO QloraError with a plain reason. */
export function fsErrorAsQlora(e: unknown): QloraError | null {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== "string" || typeof err.syscall !== "string") return null;
  const reason = FS_REASONS[err.code] ?? err.code;
  const where = err.path ? ` ${err.path}` : "";
  return new QloraError("E_IO", `cannot ${err.syscall}${where}: ${reason}`, { cause: e });
}

export function reportError(e: unknown): number {
  if (process.env.QN_DEBUG) console.error(e);
  const fsError = e instanceof QloraError ? null : fsErrorAsQlora(e);
  if (fsError) e = fsError;
  if (e instanceof QloraError) {
    process.stderr.write(`qlora-native: ${e.message} [${e.code}]\n`);
    return 2;
  }
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`qlora-native: internal error: ${msg.split("\n")[0]} (QN_DEBUG=1 shows details)\n`);
  return 70;
}

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  const cli = yargs(argv)
    .scriptName("qlora-native")
    .version(version)
    .command(trainCommand)
    .command(evalCommand)
    .command(mergeCommand)
    .command(quantizeCommand)
    .command(benchCommand)
    .command(doctorCommand)
    .demandCommand(1, "name a command (see --help)")
    .strict()
    .recommendCommands()
    .help()
    .alias("h", "help")
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`qlora-native: ${msg}\n`);
      process.stderr.write(`Run "qlora-native --help" for usage.\n`);
      process.exit(1);
    });
  try {
    await cli.parseAsync();
  } catch (e) {
    process.exitCode = reportError(e);
  }
}
