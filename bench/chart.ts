/** One cluster of bars: a row of the results. */
export interface BarGroup {
  label: string;
  p50: number;
  p95: number;
  p99: number;
}

const series = [
  { key: "p50", color: "#4e79a7" },
  { key: "p95", color: "#f28e2b" },
  { key: "p99", color: "#e15759" },
] as const;

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const tickLabel = (v: number) => (v >= 1 ? v.toLocaleString("en-US") : String(Number(v.toPrecision(1))));

/**
 * Grouped bars of p50/p95/p99 per row on a log-scale latency axis (ms), with a dashed line at
 * `targetMs`. Hand-written SVG, no dependencies.
 */
export function latencyChart(title: string, subtitle: string, groups: BarGroup[], targetMs = 5): string {
  const values = groups.flatMap((g) => [g.p50, g.p95, g.p99]).filter((v) => v > 0 && Number.isFinite(v));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values, targetMs)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values, targetMs) * 1.01));
  const bar = 12;
  const groupWidth = bar * series.length + 14;
  const margin = { top: 70, right: 20, bottom: 190, left: 110 };
  const plotW = Math.max(400, groups.length * groupWidth);
  const plotH = 360;
  const width = margin.left + plotW + margin.right;
  const height = margin.top + plotH + margin.bottom;
  const y = (v: number) => margin.top + plotH - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotH;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${margin.left}" y="24" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="${margin.left}" y="42" fill="#555">${escape(subtitle)}</text>`,
  ];
  for (let decade = lo; decade <= hi * 1.001; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const v = decade * m;
      if (v > hi * 1.001) break;
      const major = m === 1;
      out.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="${major ? "#bbb" : "#eee"}"/>`);
      out.push(`<text x="${margin.left - 6}" y="${y(v) + 4}" text-anchor="end" fill="${major ? "#000" : "#888"}">${tickLabel(v)}</text>`);
    }
  }
  out.push(`<text transform="translate(${margin.left - 52} ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>`);
  groups.forEach((g, i) => {
    const x0 = margin.left + i * groupWidth + 7;
    series.forEach((s, j) => {
      const v = g[s.key];
      if (!(v > 0)) return;
      const top = y(Math.max(v, lo));
      out.push(`<rect x="${x0 + j * bar}" y="${top}" width="${bar - 1}" height="${margin.top + plotH - top}" fill="${s.color}"><title>${escape(g.label)} ${s.key}: ${v} ms</title></rect>`);
    });
    const cx = x0 + (bar * series.length) / 2;
    out.push(`<text transform="translate(${cx + 4} ${margin.top + plotH + 8}) rotate(-55)" text-anchor="end">${escape(g.label)}</text>`);
  });
  out.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(targetMs)}" y2="${y(targetMs)}" stroke="#e15759" stroke-dasharray="6 4"/>`);
  out.push(`<text x="${margin.left + 4}" y="${y(targetMs) - 4}" fill="#e15759" stroke="#fff" stroke-width="3" paint-order="stroke">p99 target ${targetMs} ms</text>`);
  out.push(`<line x1="${margin.left}" x2="${margin.left}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#000"/>`);
  series.forEach((s, j) => {
    const lx = width - margin.right - (series.length - j) * 60;
    out.push(`<rect x="${lx}" y="${margin.top - 22}" width="12" height="12" fill="${s.color}"/><text x="${lx + 16}" y="${margin.top - 12}">${s.key}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
