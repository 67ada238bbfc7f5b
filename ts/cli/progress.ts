// Progress output for `train`: a one-line bar redrawn in place on a TTY (step/total, loss, lr,
// tokens/s, ETA, memory), plain log lines otherwise, nothing with --json (summary only).
import type { LogEntry } from "../train/types.js";

const fmtBytes = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(0)} MiB`);
const fmtTime = (s: number) => {
  if (!Number.isFinite(s)) return "--:--";
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  return h ? `${h}h${String(m % 60).padStart(2, "0")}m` : `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
};

export class Progress {
  private lastDraw = 0;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly mode: "tty" | "plain" | "quiet",
  ) {}

  static for(stream: NodeJS.WriteStream, json: boolean, plain = false): Progress {
    return new Progress(stream, json ? "quiet" : stream.isTTY && !plain ? "tty" : "plain");
  }

  line(text: string): void {
    if (this.mode === "quiet") return;
    this.clear();
    this.stream.write(text + "\n");
  }

  step(p: { step: number; totalSteps: number; loss: number; lr: number; tokensPerSecond: number; elapsedSeconds: number; memoryBytes: number }): void {
    if (this.mode !== "tty") return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && p.step !== p.totalSteps) return;
    this.lastDraw = now;
    const width = 24;
    const done = Math.round((p.step / p.totalSteps) * width);
    const eta = ((p.totalSteps - p.step) * p.elapsedSeconds) / Math.max(1, p.step);
    const bar = `[${"#".repeat(done)}${"-".repeat(width - done)}]`;
    const text = `${bar} ${p.step}/${p.totalSteps} loss ${Number.isFinite(p.loss) ? p.loss.toFixed(4) : "nan"} lr ${p.lr.toExponential(2)} ${p.tokensPerSecond.toFixed(0)} tok/s ETA ${fmtTime(eta)} mem ${fmtBytes(p.memoryBytes)}`;
    this.stream.write(`\r\x1b[2K${text.slice(0, (this.stream.columns || 120) - 1)}`);
    this.drawn = true;
  }

  log(e: LogEntry, totalSteps: number): void {
    if (e.eval_loss !== undefined) {
      this.line(`eval  step ${e.step}: eval_loss ${e.eval_loss.toFixed(4)}, perplexity ${e.eval_perplexity?.toFixed(2)}`);
    } else if (e.test_loss !== undefined) {
      this.line(`test  step ${e.step}: test_loss ${e.test_loss.toFixed(4)}, perplexity ${e.test_perplexity?.toFixed(2)}`);
    } else {
      const parts = [`step ${e.step}/${totalSteps}`, `epoch ${e.epoch.toFixed(2)}`];
      if (e.loss !== undefined) parts.push(`loss ${e.loss.toFixed(4)}`);
      if (e.learning_rate !== undefined) parts.push(`lr ${e.learning_rate.toExponential(3)}`);
      if (e.grad_norm !== undefined) parts.push(`grad_norm ${e.grad_norm.toFixed(3)}`);
      if (e.tokens_per_second !== undefined) parts.push(`${e.tokens_per_second.toFixed(0)} tok/s`);
      if (e.peak_memory_bytes !== undefined) parts.push(`peak ${fmtBytes(e.peak_memory_bytes)}`);
      this.line(parts.join(", "));
    }
  }

  clear(): void {
    if (this.drawn) {
      this.stream.write("\r\x1b[2K");
      this.drawn = false;
    }
  }
}
