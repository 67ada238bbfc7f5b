// training_curves.html: a self-contained interactive chart (uPlot's JS and CSS inlined from
// node_modules/uplot/dist, the data inlined as JSON), so it works offline from file://. Three
// series: training loss and eval loss on the left axis, learning rate on its own right axis.
// After uPlot draws, the page records what it drew in #qn-plot-status (data-series,
// data-points, data-errors) for tests and tools.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { QloraError } from "../errors.js";
import { extractCurves, SERIES, type PlotLogEntry } from "./plot-svg.js";

let uplotAssets: { js: string; css: string } | undefined;

/** uPlot's IIFE build and stylesheet (read once). */
export function uplotSources(): { js: string; css: string } {
  if (uplotAssets) return uplotAssets;
  const require = createRequire(import.meta.url);
  try {
    uplotAssets = {
      js: readFileSync(require.resolve("uplot/dist/uPlot.iife.min.js"), "utf8"),
      css: readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8"),
    };
  } catch (e) {
    throw new QloraError("E_IO", `cannot read uPlot from node_modules/uplot/dist (${(e as Error).message}); reinstall the package`, { cause: e });
  }
  return uplotAssets;
}

/** Text safe inside <script> / <style>: no "</" sequences. */
const inlineSafe = (s: string) => s.replace(/<\/(script|style)/gi, "<\\/$1");
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function summary(logHistory: readonly PlotLogEntry[]): string {
  const c = extractCurves(logHistory);
  const parts: string[] = [];
  if (c.steps.length) parts.push(`steps ${c.steps[0]}–${c.steps[c.steps.length - 1]}`);
  const lastLoss = [...c.trainLoss].reverse().find((v) => v !== null);
  if (lastLoss != null) parts.push(`last training loss ${lastLoss.toFixed(4)}`);
  let best: [number, number] | null = null;
  c.evalLoss.forEach((v, i) => {
    if (v !== null && (best === null || v < best[1])) best = [c.steps[i], v];
  });
  if (best) parts.push(`best eval loss ${(best as [number, number])[1].toFixed(4)} at step ${(best as [number, number])[0]}`);
  // a finished run whose steps were never logged (logging_steps above the run's length)
  const run = logHistory.find((e) => typeof e.train_loss === "number" && Number.isFinite(e.train_loss));
  if (lastLoss == null && run) parts.push(`no training step was logged (training.logging_steps is larger than the run); train loss over the run ${(run.train_loss as number).toFixed(4)}`);
  return parts.join(" · ") || "no logged values yet";
}

// The page script (plain ES5-compatible JS, no template substitutions inside).
const PAGE_SCRIPT = `
(function () {
  var status = document.getElementById("qn-plot-status");
  function note() { status.setAttribute("data-errors", String(window.__qnErrors.length)); }
  try {
    var d = JSON.parse(document.getElementById("qn-data").textContent);
    var el = document.getElementById("qn-chart");
    var width = function () { return Math.max(480, Math.min(1200, (el.clientWidth || window.innerWidth) - 8)); };
    var expo = function (v) { return v == null ? "–" : v === 0 ? "0" : v.toExponential(2); };
    var num = function (v) { return v == null ? "–" : v.toFixed(4); };
    // a series of one point has no line to draw: show its points then
    var lone = function (a) { return a.filter(function (v) { return v != null; }).length <= 1; };
    var opts = {
      width: width(),
      height: 460,
      scales: { x: { time: false }, loss: { auto: true }, lr: { auto: true, range: function (u, min, max) { return [0, max > 0 ? max * 1.05 : 1]; } } },
      series: [
        { label: "step" },
        { label: d.labels[0], scale: "loss", stroke: d.colors[0], width: 2, spanGaps: true, points: { show: lone(d.trainLoss), size: 7, fill: d.colors[0] }, value: function (u, v) { return num(v); } },
        { label: d.labels[1], scale: "loss", stroke: d.colors[1], width: 2, spanGaps: true, points: { show: true, size: 7, fill: d.colors[1] }, value: function (u, v) { return num(v); } },
        { label: d.labels[2], scale: "lr", stroke: d.colors[2], width: 1.5, dash: [6, 4], spanGaps: true, points: { show: lone(d.lr), size: 6, fill: d.colors[2] }, value: function (u, v) { return expo(v); } }
      ],
      axes: [
        { label: "step", incrs: [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 25000, 50000, 100000] },
        { scale: "loss", label: "loss", size: 60 },
        { scale: "lr", side: 1, label: "learning rate", size: 80, stroke: d.colors[2], grid: { show: false },
          values: function (u, vals) { return vals.map(function (v) { return v === 0 ? "0" : v.toExponential(1); }); } }
      ],
      hooks: {
        draw: [function (u) {
          var counts = u.data.slice(1).map(function (a) { return a.filter(function (v) { return v != null; }).length; });
          status.setAttribute("data-series", String(u.series.length - 1));
          status.setAttribute("data-points", counts.join(","));
          status.setAttribute("data-ready", "1");
          note();
        }]
      }
    };
    var u = new uPlot(opts, [d.steps, d.trainLoss, d.evalLoss, d.lr], el);
    window.addEventListener("resize", function () { u.setSize({ width: width(), height: 460 }); });
  } catch (e) {
    window.__qnErrors.push(String(e && e.stack || e));
    note();
    throw e;
  }
})();
`;

/** The whole HTML document. */
export function renderHtml(logHistory: readonly PlotLogEntry[], opts: { title?: string } = {}): string {
  const { js, css } = uplotSources();
  const c = extractCurves(logHistory);
  const title = opts.title ?? "Training curves";
  const data = { ...c, labels: SERIES.map((s) => s.label), colors: SERIES.map((s) => s.color) };
  const json = JSON.stringify(data).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${inlineSafe(css)}</style>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 20px 28px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
#qn-summary { color: #555; margin: 0 0 14px; font-size: 14px; }
#qn-chart { max-width: 1210px; }
</style>
<script>window.__qnErrors = []; window.addEventListener("error", function (e) { window.__qnErrors.push(String(e.message)); });</script>
</head>
<body>
<h1>${esc(title)}</h1>
<p id="qn-summary">${esc(summary(logHistory))}</p>
<div id="qn-chart"></div>
<div id="qn-plot-status" data-ready="0" hidden></div>
<script id="qn-data" type="application/json">${json}</script>
<script>${inlineSafe(js)}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}
