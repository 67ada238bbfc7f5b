// training_curves.svg: a static, dependency-free chart of the log history: training loss and eval
// loss against the left axis, learning rate (dashed) against its own right axis, over the step.
// Axes with "nice" 1-2-5 ticks, grid, legend, title. Also the curve extraction shared with the
// HTML chart (plot-html.ts).

/** The log_history fields the plots read. */
export interface PlotLogEntry {
  step: number;
  loss?: number;
  eval_loss?: number;
  learning_rate?: number;
  [key: string]: number | undefined;
}

/** Aligned series over the union of logged steps (null where a series has no value). */
export interface Curves {
  steps: number[];
  trainLoss: (number | null)[];
  evalLoss: (number | null)[];
  lr: (number | null)[];
}

export const SERIES = [
  { key: "trainLoss", label: "training loss", color: "#1f77b4", axis: "loss" },
  { key: "evalLoss", label: "eval loss", color: "#ff7f0e", axis: "loss" },
  { key: "lr", label: "learning rate", color: "#2ca02c", axis: "lr" },
] as const;

const finite = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** Training loss (loss), eval loss (eval_loss) and learning rate (learning_rate) by step.
 * Entries at the same step merge; non-finite values are dropped (a gap). */
export function extractCurves(logHistory: readonly PlotLogEntry[]): Curves {
  const byStep = new Map<number, { loss?: number; eval?: number; lr?: number }>();
  for (const e of logHistory) {
    if (!finite(e.step)) continue;
    const row = byStep.get(e.step) ?? {};
    if (finite(e.loss)) row.loss = e.loss;
    if (finite(e.eval_loss)) row.eval = e.eval_loss;
    if (finite(e.learning_rate)) row.lr = e.learning_rate;
    if (row.loss !== undefined || row.eval !== undefined || row.lr !== undefined) byStep.set(e.step, row);
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return {
    steps,
    trainLoss: steps.map((s) => byStep.get(s)!.loss ?? null),
    evalLoss: steps.map((s) => byStep.get(s)!.eval ?? null),
    lr: steps.map((s) => byStep.get(s)!.lr ?? null),
  };
}

/** Ticks at 1, 2 or 5 x 10^k covering [lo, hi] with about `count` intervals. */
export function niceTicks(lo: number, hi: number, count = 6): { ticks: number[]; step: number; lo: number; hi: number } {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const first = Math.floor(lo / step + 1e-9) * step;
  const last = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; first + i * step <= last + step * 1e-9; i++) ticks.push(Number((first + i * step).toPrecision(12)));
  return { ticks, step, lo: first, hi: last };
}

/** Tick label: enough decimals for the tick step; exponent form for small or huge values. */
export function formatTick(v: number, step: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  // exponent form (one decimal is enough: the axes start at 0 or span a few 1-2-5 steps)
  if (a < 1e-3 || a >= 1e6) return v.toExponential(1).replace("e+", "e");
  return v.toFixed(Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9))));
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const fmt = (x: number) => (Math.round(x * 100) / 100).toString();

export interface SvgOptions {
  width?: number;
  height?: number;
  title?: string;
}

/** The whole SVG document. */
export function renderSvg(logHistory: readonly PlotLogEntry[], opts: SvgOptions = {}): string {
  const c = extractCurves(logHistory);
  const W = opts.width ?? 960, H = opts.height ?? 540;
  const m = { left: 72, right: 86, top: 60, bottom: 58 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const title = opts.title ?? "Training curves";

  const losses = [...c.trainLoss, ...c.evalLoss].filter(finite);
  const lrs = c.lr.filter(finite);
  const xs = niceTicks(c.steps.length ? c.steps[0] : 0, c.steps.length ? c.steps[c.steps.length - 1] : 1, 8);
  let yl = niceTicks(losses.length ? Math.min(...losses) : 0, losses.length ? Math.max(...losses) : 1, 6);
  if (losses.length) {
    const lo = Math.min(...losses), hi = Math.max(...losses), pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
    yl = niceTicks(lo - pad, hi + pad, 6);
  }
  const yr = niceTicks(0, lrs.length ? Math.max(...lrs) : 1, 6);
  const X = (v: number) => m.left + ((v - xs.lo) / (xs.hi - xs.lo)) * pw;
  const YL = (v: number) => m.top + ph - ((v - yl.lo) / (yl.hi - yl.lo)) * ph;
  const YR = (v: number) => m.top + ph - ((v - yr.lo) / (yr.hi - yr.lo)) * ph;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<title>${esc(title)}</title>`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold" fill="#222">${esc(title)}</text>`);
  // grid and ticks
  out.push(`<g class="grid" stroke="#e5e5e5" stroke-width="1">`);
  for (const t of xs.ticks) out.push(`<line x1="${fmt(X(t))}" y1="${m.top}" x2="${fmt(X(t))}" y2="${m.top + ph}"/>`);
  for (const t of yl.ticks) out.push(`<line x1="${m.left}" y1="${fmt(YL(t))}" x2="${m.left + pw}" y2="${fmt(YL(t))}"/>`);
  out.push(`</g>`);
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  out.push(`<g class="x-axis" fill="#333" text-anchor="middle">`);
  for (const t of xs.ticks) {
    out.push(`<line x1="${fmt(X(t))}" y1="${m.top + ph}" x2="${fmt(X(t))}" y2="${m.top + ph + 5}" stroke="#888"/>`);
    out.push(`<text x="${fmt(X(t))}" y="${m.top + ph + 19}">${formatTick(t, xs.step)}</text>`);
  }
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" font-size="13">step</text></g>`);
  out.push(`<g class="y-axis-loss" fill="#333" text-anchor="end">`);
  for (const t of yl.ticks) {
    out.push(`<line x1="${m.left - 5}" y1="${fmt(YL(t))}" x2="${m.left}" y2="${fmt(YL(t))}" stroke="#888"/>`);
    out.push(`<text x="${m.left - 8}" y="${fmt(YL(t) + 4)}">${formatTick(t, yl.step)}</text>`);
  }
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="13">loss</text></g>`);
  out.push(`<g class="y-axis-lr" fill="${SERIES[2].color}" text-anchor="start">`);
  for (const t of yr.ticks) {
    out.push(`<line x1="${m.left + pw}" y1="${fmt(YR(t))}" x2="${m.left + pw + 5}" y2="${fmt(YR(t))}" stroke="#888"/>`);
    out.push(`<text x="${m.left + pw + 8}" y="${fmt(YR(t) + 4)}">${formatTick(t, yr.step)}</text>`);
  }
  out.push(`<text transform="translate(${W - 14} ${m.top + ph / 2}) rotate(90)" text-anchor="middle" font-size="13">learning rate</text></g>`);
  // series
  const clipId = "plot-area";
  out.push(`<clipPath id="${clipId}"><rect x="${m.left - 5}" y="${m.top - 5}" width="${pw + 10}" height="${ph + 10}"/></clipPath>`);
  for (const s of SERIES) {
    const ys = c[s.key];
    const Y = s.axis === "lr" ? YR : YL;
    const pts = c.steps.map((x, i) => [x, ys[i]] as const).filter(([, y]) => finite(y)).map(([x, y]) => `${fmt(X(x))},${fmt(Y(y as number))}`);
    out.push(`<g class="series" data-series="${s.label}" data-points="${pts.length}" clip-path="url(#${clipId})">`);
    if (pts.length > 1) {
      const dash = s.key === "lr" ? ` stroke-dasharray="6 4"` : "";
      out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="${s.key === "lr" ? 1.5 : 2}"${dash} stroke-linejoin="round" points="${pts.join(" ")}"/>`);
    }
    if (s.key === "evalLoss" || pts.length === 1) {
      for (const p of pts) {
        const [x, y] = p.split(",");
        out.push(`<circle cx="${x}" cy="${y}" r="3.5" fill="${s.color}"/>`);
      }
    }
    out.push(`</g>`);
  }
  // legend: one row between the title and the plot
  const itemW = [130, 100, 130];
  let lx = m.left + (pw - itemW.reduce((a, b) => a + b, 0)) / 2;
  const ly = 42;
  out.push(`<g class="legend">`);
  SERIES.forEach((s, i) => {
    const dash = s.key === "lr" ? ` stroke-dasharray="6 4"` : "";
    out.push(`<line x1="${fmt(lx)}" y1="${ly}" x2="${fmt(lx + 24)}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    if (s.key === "evalLoss") out.push(`<circle cx="${fmt(lx + 12)}" cy="${ly}" r="3.5" fill="${s.color}"/>`);
    out.push(`<text x="${fmt(lx + 30)}" y="${ly + 4}" fill="#222">${s.label}</text>`);
    lx += itemW[i];
  });
  out.push(`</g>`);
  if (!c.steps.length) out.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no logged values yet</text>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
