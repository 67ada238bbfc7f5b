// One training run per output folder: a lock file (`.qlora-native.lock`, the owner's pid and host)
// created exclusively when a run starts and removed when it ends. Two runs writing checkpoints,
// trainer_state.json and the adapter into one folder would overwrite each other's files. A lock
// whose process is gone (same host, pid not alive) is stale and taken over.
import { hostname } from "node:os";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { QloraError } from "../errors.js";

export const LOCK_FILE = ".qlora-native.lock";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/** Takes the folder's lock (the folder must exist); returns the release function. */
export function lockOutputDir(dir: string): () => void {
  const file = path.join(dir, LOCK_FILE);
  const me = JSON.stringify({ pid: process.pid, host: hostname() });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, me, { flag: "wx" });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          if (readFileSync(file, "utf8") === me) rmSync(file, { force: true });
        } catch {
          // gone already
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let owner: { pid?: number; host?: string } = {};
    try {
      owner = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      // unreadable or half-written: treated as stale below
    }
    const sameHost = owner.host === hostname();
    if (typeof owner.pid === "number" && (!sameHost || alive(owner.pid))) {
      throw new QloraError(
        "E_ARG",
        `${dir} is in use by another training run (pid ${owner.pid} on ${owner.host ?? "?"}); wait for it, use another output.dir, or delete ${file} if that run is gone`,
      );
    }
    rmSync(file, { force: true }); // stale: its process is gone
  }
  throw new QloraError("E_IO", `cannot take the lock ${file}`);
}
