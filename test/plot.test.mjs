// Training plots: curve extraction and ticks, the static SVG, and the self-contained HTML opened in
// headless Chromium (from file://, no network): uPlot must draw three series with the right point
// counts and the page must log no console message or error. Chromium: $QN_CHROMIUM, or chromium /
// chromium-browser / google-chrome on PATH (Debian: apt-get install -y chromium); the browser
// test is skipped, saying so, when none is installed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { test } from "node:test";
import { extractCurves, formatTick, niceTicks, renderHtml, renderSvg, writePlots } from "../dist/report/index.js";

// A 120-step run: loss logged every 5 steps (one NaN), eval every 20, linear warmup + cosine lr.
function history() {
  const h = [{ step: 0, epoch: 0, eval_loss: 3.4, eval_perplexity: 30 }];
  for (let s = 5; s <= 120; s += 5) {
    const lr = s <= 10 ? (2e-4 * s) / 10 : 1e-4 * (1 + Math.cos((Math.PI * (s - 10)) / 110));
    h.push({ step: s, epoch: s / 60, loss: s === 35 ? Number.NaN : 3.2 * Math.exp(-s / 60) + 0.9 + 0.05 * Math.sin(s), learning_rate: lr, grad_norm: 1 });
    if (s % 20 === 0) h.push({ step: s, epoch: s / 60, eval_loss: 3.0 * Math.exp(-s / 70) + 1.05, eval_perplexity: 5 });
  }
  return h;
}

test("extractCurves merges entries by step and drops non-finite values", () => {
  const c = extractCurves(history());
  assert.equal(c.steps.length, 25); // 0, 5, ..., 120
  assert.equal(c.trainLoss.filter((v) => v !== null).length, 23); // 24 logs, one NaN
  assert.equal(c.evalLoss.filter((v) => v !== null).length, 7); // steps 0, 20, ..., 120
  assert.equal(c.lr.filter((v) => v !== null).length, 24);
  assert.equal(c.trainLoss[0], null);
  assert.equal(c.evalLoss[c.steps.indexOf(20)], 3.0 * Math.exp(-20 / 70) + 1.05);
  assert.deepEqual(extractCurves([]), { steps: [], trainLoss: [], evalLoss: [], lr: [] });
});

test("nice ticks and tick labels", () => {
  assert.deepEqual(niceTicks(0, 120, 8).ticks, [0, 20, 40, 60, 80, 100, 120]);
  assert.deepEqual(niceTicks(0.93, 3.47, 6).ticks, [0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
  assert.deepEqual(niceTicks(0, 2e-4, 6).ticks.map((t) => formatTick(t, 5e-5)), ["0", "5.0e-5", "1.0e-4", "1.5e-4", "2.0e-4"]);
  assert.equal(formatTick(2.5, 0.5), "2.5");
  assert.equal(formatTick(100, 20), "100");
  assert.equal(niceTicks(5, 5).ticks.length > 1, true); // a single value still gets an axis
});

test("SVG: axes, legend, three series with their point counts", () => {
  const svg = renderSvg(history());
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.ok(svg.trim().endsWith("</svg>"));
  const points = Object.fromEntries([...svg.matchAll(/data-series="([^"]+)" data-points="(\d+)"/g)].map((m) => [m[1], Number(m[2])]));
  assert.deepEqual(points, { "training loss": 23, "eval loss": 7, "learning rate": 24 });
  assert.equal((svg.match(/<polyline/g) ?? []).length, 3);
  assert.equal((svg.match(/<circle/g) ?? []).length, 7 + 1); // eval markers + the legend's
  for (const label of ["step", "loss", "learning rate", "training loss", "eval loss", "Training curves"]) assert.ok(svg.includes(`>${label}<`), label);
  assert.ok(svg.includes(">1.0e-4<"), "lr axis labels in exponent form");
  assert.ok(!svg.includes("NaN") && !svg.includes("undefined"));
  // Degenerate inputs still give a valid document.
  for (const h of [[], [{ step: 1, loss: 2 }], [{ step: 3, eval_loss: 1.5 }]]) {
    const s = renderSvg(h);
    assert.ok(s.endsWith("</svg>\n") && !s.includes("NaN") && !s.includes("Infinity"));
  }
});

function findChromium() {
  const candidates = [process.env.QN_CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"];
  return candidates.find((p) => p && existsSync(p)) ?? null;
}

function chromium(bin, profile, args) {
  const r = spawnSync(
    bin,
    ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
      `--user-data-dir=${profile}`, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", ...args],
    { encoding: "utf8", timeout: 30_000, maxBuffer: 64 << 20 },
  );
  if (r.error) throw r.error;
  return r;
}

const chrome = findChromium();

test("HTML: self-contained, and headless Chromium draws three series without console errors", { skip: chrome ? false : "no Chromium found (set QN_CHROMIUM, or apt-get install -y chromium)", timeout: 60_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "qn-plot-"));
  try {
    const { html, svg } = await writePlots(dir, history());
    assert.deepEqual(readdirSync(dir).sort(), ["training_curves.html", "training_curves.svg"]); // no temp files left
    const text = readFileSync(html, "utf8");
    assert.ok(!/<script[^>]+src=|<link[^>]+href=|@import|url\(http/i.test(text), "nothing is fetched");
    assert.ok(text.includes("uPlot") && text.includes(".uplot"), "uPlot JS and CSS inlined");

    const profile = mkdtempSync(path.join(tmpdir(), "qn-chrome-"));
    try {
      const r = chromium(chrome, profile, ["--window-size=1280,720", "--dump-dom", pathToFileURL(html).href]);
      const m = /<div id="qn-plot-status"([^>]*)>/.exec(r.stdout);
      assert.ok(m, `status element in the DOM (chromium exit ${r.status}; stderr: ${r.stderr.slice(-400)})`);
      const attr = (name) => new RegExp(`${name}="([^"]*)"`).exec(m[1])?.[1];
      assert.equal(attr("data-ready"), "1", "uPlot drew");
      assert.equal(attr("data-series"), "3");
      assert.equal(attr("data-points"), "23,7,24");
      assert.equal(attr("data-errors"), "0");
      assert.match(r.stdout, /<canvas/);
      const consoleLines = r.stderr.split("\n").filter((l) => /CONSOLE|Uncaught/.test(l));
      assert.deepEqual(consoleLines, [], "no console messages");
      // A screenshot for people (and for a look while developing); also render the SVG.
      const shots = process.env.QN_PLOT_SCREENSHOTS ?? dir;
      chromium(chrome, profile, ["--window-size=1280,640", "--hide-scrollbars", `--screenshot=${path.join(shots, "html.png")}`, pathToFileURL(html).href]);
      chromium(chrome, profile, ["--window-size=960,540", "--hide-scrollbars", `--screenshot=${path.join(shots, "svg.png")}`, pathToFileURL(svg).href]);
      assert.ok(existsSync(path.join(shots, "html.png")) && existsSync(path.join(shots, "svg.png")));
    } finally {
      rmSync(profile, { recursive: true, force: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("HTML: a finished run whose steps were never logged says so and gives the run's train loss", () => {
  const html = renderHtml([{ step: 0, epoch: 0, eval_loss: 3.5 }, { step: 3, epoch: 1, train_loss: 2.25, train_runtime: 1.5 }]);
  assert.match(html, /no training step was logged \(training\.logging_steps is larger than the run\); train loss over the run 2\.2500/);
  // one logged point per series still shows (uPlot draws no line through a single point)
  assert.match(html, /var lone = function/);
});
