/**
 * @module
 * A dependency-free SVG of a run's medians: one panel per workload, one horizontal bar per target
 * on a logarithmic scale (the targets span four orders of magnitude), the value printed beside it.
 */

import type { RunRecord } from "./report.ts";
import { med } from "./report.ts";
import { formatNumber } from "./stats.ts";
import { WORKLOADS } from "./workloads.ts";

const WIDTH = 760;
const LABEL_WIDTH = 130;
const BAR_HEIGHT = 16;
const PANEL_GAP = 34;
const COLORS: Record<string, string> = {
  "nbdkit-memory": "#888888",
  "raw-s3": "#5b8fd9",
  "raw-dir": "#8fb3e8",
  "lsvd-dir": "#2e9e5b",
  "lsvd-rgw": "#1b7a3e",
  "nbdkit-s3": "#d98b2b",
  "s3backer": "#c0504d",
};

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function barWidth(value: number, maxValue: number): number {
  const usable = WIDTH - LABEL_WIDTH - 90;
  // log10 scale from maxValue / 10^5 up to maxValue.
  const decades = 5;
  const position = Math.log10(value / maxValue) / decades + 1;
  return Math.max(2, Math.min(1, position) * usable);
}

export function renderSvg(run: RunRecord): string {
  const parts: string[] = [];
  let y = 10;
  for (const w of WORKLOADS) {
    const targets = [...(run.samples.get(w.name)?.keys() ?? [])];
    const values = targets.map((t) => med(run, w.name, t)).filter((v) => Number.isFinite(v) && v > 0);
    if (values.length === 0) continue;
    const maxValue = Math.max(...values);
    const better = w.higherIsBetter ? "higher is better" : "lower is better";
    parts.push(
      `<text x="4" y="${y + 12}" font-weight="bold">${
        escapeXml(`${w.name} (${w.unit}, ${better}, log scale)`)
      }</text>`,
    );
    y += 20;
    for (const t of targets) {
      const v = med(run, w.name, t);
      if (!(Number.isFinite(v) && v > 0)) continue;
      const width = barWidth(v, maxValue);
      parts.push(
        `<text x="${LABEL_WIDTH - 6}" y="${y + 12}" text-anchor="end">${escapeXml(t)}</text>`,
        `<rect x="${LABEL_WIDTH}" y="${y}" width="${width.toFixed(1)}" height="${BAR_HEIGHT - 3}" fill="${
          COLORS[t] ?? "#666"
        }"/>`,
        `<text x="${(LABEL_WIDTH + width + 5).toFixed(1)}" y="${y + 12}">${
          escapeXml(formatNumber(v))
        }</text>`,
      );
      y += BAR_HEIGHT;
    }
    y += PANEL_GAP - 20;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${
      y + 10
    }" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...parts,
    "</svg>",
    "",
  ].join("\n");
}
