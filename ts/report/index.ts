// Training plots: training_curves.html (interactive, uPlot inlined, works offline) and
// training_curves.svg (static) from trainer_state.json's log_history, both written atomically.
import path from "node:path";
import { writeFileAtomic } from "../config/atomic-write.js";
import { renderHtml } from "./plot-html.js";
import { renderSvg, type PlotLogEntry } from "./plot-svg.js";

export { renderHtml, uplotSources } from "./plot-html.js";
export { extractCurves, niceTicks, formatTick, renderSvg, type Curves, type PlotLogEntry } from "./plot-svg.js";

export const PLOT_HTML_FILE = "training_curves.html";
export const PLOT_SVG_FILE = "training_curves.svg";

/** Writes outputDir/training_curves.html and outputDir/training_curves.svg. */
export async function writePlots(
  outputDir: string,
  logHistory: readonly PlotLogEntry[],
  opts: { title?: string } = {},
): Promise<{ html: string; svg: string }> {
  const html = path.join(outputDir, PLOT_HTML_FILE);
  const svg = path.join(outputDir, PLOT_SVG_FILE);
  await writeFileAtomic(html, renderHtml(logHistory, opts));
  await writeFileAtomic(svg, renderSvg(logHistory, opts));
  return { html, svg };
}
