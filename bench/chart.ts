import type { Config } from "./report.ts";

/** One row of the results, as charted. */
export interface ChartRow {
  config: Config;
  phase: string;
  mode: string;
  reqPerS: number;
  coinsPerS?: number;
  p50: number;
  p95: number;
  p99: number;
}

const series = [
  { key: "p50", color: "#4e79a7" },
  { key: "p95", color: "#f28e2b" },
  { key: "p99", color: "#e15759" },
] as const;
const configColor: Record<Config, string> = {
  default: "#59a14f", off: "#9c755f", seed: "#edc948", "sql:default": "#8cd17d", "sql:off": "#d7b5a6", sql: "#bab0ac",
};

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const tickLabel = (v: number) => (v >= 1 ? v.toLocaleString("en-US") : String(Number(v.toPrecision(1))));
/** Uploads are measured in coins/s; everything else in requests/s. */
const rate = (r: ChartRow) => (r.phase === "upload" ? r.coinsPerS ?? r.reqPerS : r.reqPerS);
/** The 5 ms p99 target applies to the deployed configuration's open loops at 50 % of its peak. */
const targetApplies = (r: ChartRow) => r.config === "default" && r.mode.startsWith("open 50%");
const closedIn = (rows: ChartRow[], config: Config, phase: string) => rows.filter((c) => c.config === config && c.phase === phase && c.mode.startsWith("closed"));

/** A server's closed-loop row: the upload ceiling, or the coalesced claim ceiling of its quota variant (the one at the batch size it sent). */
function ceilingOf(rows: ChartRow[], r: ChartRow): ChartRow | undefined {
  if ((r.config !== "default" && r.config !== "off") || !r.mode.startsWith("closed")) return undefined;
  if (r.phase === "upload") return closedIn(rows, "sql", "upload")[0];
  const ceilings = closedIn(rows, `sql:${r.config}`, r.phase);
  return ceilings.find((c) => c.mode.includes("as sent")) ?? ceilings[0];
}

/**
 * Two panels per row of the results, hand-written SVG: throughput (bars, coloured by
 * configuration, with the ceiling of the same phase and quota variant drawn across as a dashed line), and
 * p50/p95/p99 on a log-scale latency axis, with the 5 ms target drawn only over the rows it
 * applies to.
 */
export function latencyChart(title: string, subtitle: string, rows: ChartRow[], targetMs = 5): string {
  const bar = 12;
  const groupWidth = bar * series.length + 14;
  const margin = { top: 70, right: 20, bottom: 210, left: 110 };
  const plotW = Math.max(400, rows.length * groupWidth);
  const rateH = 180;
  const gap = 40;
  const latH = 300;
  const width = margin.left + plotW + margin.right;
  const height = margin.top + rateH + gap + latH + margin.bottom;
  const latTop = margin.top + rateH + gap;
  const values = rows.flatMap((g) => [g.p50, g.p95, g.p99]).filter((v) => v > 0 && Number.isFinite(v));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values, targetMs)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values, targetMs) * 1.01));
  const y = (v: number) => latTop + latH - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * latH;
  const maxRate = Math.max(1, ...rows.map(rate).filter(Number.isFinite)) * 1.1;
  const yr = (v: number) => margin.top + rateH - (v / maxRate) * rateH;
  const x0 = (i: number) => margin.left + i * groupWidth + 7;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${margin.left}" y="24" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="${margin.left}" y="42" fill="#555">${escape(subtitle)}</text>`,
  ];
  // throughput panel
  for (let k = 0; k <= 4; k++) {
    const v = (maxRate / 4) * k;
    out.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${yr(v)}" y2="${yr(v)}" stroke="${k ? "#eee" : "#000"}"/>`);
    out.push(`<text x="${margin.left - 6}" y="${yr(v) + 4}" text-anchor="end" fill="#555">${Math.round(v).toLocaleString("en-US")}</text>`);
  }
  out.push(`<text transform="translate(${margin.left - 60} ${margin.top + rateH / 2}) rotate(-90)" text-anchor="middle">req/s (upload: coins/s)</text>`);
  rows.forEach((r, i) => {
    const v = rate(r);
    if (!(v > 0)) return;
    out.push(`<rect x="${x0(i)}" y="${yr(v)}" width="${bar * series.length - 1}" height="${margin.top + rateH - yr(v)}" fill="${configColor[r.config]}"><title>${escape(`${r.config} ${r.phase} ${r.mode}`)}: ${Math.round(v)}/s</title></rect>`);
    const ceiling = ceilingOf(rows, r);
    if (ceiling) {
      out.push(`<line x1="${x0(i) - 3}" x2="${x0(i) + bar * series.length + 2}" y1="${yr(rate(ceiling))}" y2="${yr(rate(ceiling))}" stroke="#000" stroke-dasharray="3 2"><title>${escape(`${ceiling.config} ${ceiling.mode}`)}: ${Math.round(rate(ceiling))}/s</title></line>`);
    }
  });
  // latency panel
  for (let decade = lo; decade <= hi * 1.001; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const v = decade * m;
      if (v > hi * 1.001) break;
      out.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="${m === 1 ? "#bbb" : "#eee"}"/>`);
      out.push(`<text x="${margin.left - 6}" y="${y(v) + 4}" text-anchor="end" fill="${m === 1 ? "#000" : "#888"}">${tickLabel(v)}</text>`);
    }
  }
  out.push(`<text transform="translate(${margin.left - 52} ${latTop + latH / 2}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>`);
  rows.forEach((g, i) => {
    const label = `${g.config} · ${g.phase} · ${g.mode}`;
    series.forEach((s, j) => {
      const v = g[s.key];
      if (!(v > 0)) return;
      const top = y(Math.max(v, lo));
      out.push(`<rect x="${x0(i) + j * bar}" y="${top}" width="${bar - 1}" height="${latTop + latH - top}" fill="${s.color}"><title>${escape(label)} ${s.key}: ${v} ms</title></rect>`);
    });
    if (targetApplies(g)) {
      out.push(`<line x1="${x0(i) - 4}" x2="${x0(i) + bar * series.length + 3}" y1="${y(targetMs)}" y2="${y(targetMs)}" stroke="#e15759" stroke-width="2" stroke-dasharray="4 2"><title>p99 target ${targetMs} ms</title></line>`);
    }
    const cx = x0(i) + (bar * series.length) / 2;
    out.push(`<text transform="translate(${cx + 4} ${latTop + latH + 8}) rotate(-55)" text-anchor="end">${escape(label)}</text>`);
  });
  out.push(`<line x1="${margin.left}" x2="${margin.left}" y1="${latTop}" y2="${latTop + latH}" stroke="#000"/>`);
  const legend = [...series.map((s) => [s.key, s.color]), ...Object.entries(configColor), ["ceiling (dashed)", "#000"], [`p99 target ${targetMs} ms`, "#e15759"]];
  legend.forEach(([name, color], j) => {
    const lx = margin.left + j * 95;
    out.push(`<rect x="${lx}" y="${margin.top - 22}" width="12" height="12" fill="${color}"/><text x="${lx + 16}" y="${margin.top - 12}">${escape(name!)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
