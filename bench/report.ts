import { closeSync, fdatasyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { availableParallelism, cpus, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import type { Sql } from "../src/db/pool.ts";
import type { Options } from "./args.ts";
import { percentile, type Stats } from "./load.ts";
import type { ResourceUsage } from "./monitor.ts";
import { describeActive, type ActiveBackends } from "./pgwaits.ts";

/** One measured segment: a phase (what is requested) in a mode (how it is offered). */
export interface Row extends Stats, ResourceUsage, ActiveBackends {
  phase: string;
  mode: string;
  /** Open loop: the arrival rate asked for, req/s. */
  offeredRate?: number;
  /** Open loop: how late the generator sent requests, ms (already inside the latencies). */
  sendLagP50?: number;
  sendLagP99?: number;
  /** Claims: coins handed out twice during this segment. */
  duplicates?: number;
  /** Burst: most connections to the server open at once. */
  peakConnections?: number;
}

export interface Target {
  target: string;
  measured: string;
  pass: boolean;
}

export const num = (x: number | undefined, digits = 0) =>
  x === undefined || Number.isNaN(x) ? "-" : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
export const ms = (x: number) => num(x, x < 10 ? 2 : 1);

/** A Markdown table; the first `leftColumns` columns are left-aligned, the rest right-aligned. */
export function markdownTable(head: string[], body: string[][], leftColumns = 2): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i < leftColumns ? `:${"-".repeat(w + 1)}` : `${"-".repeat(w + 1)}:`)).join("|")}|`;
  return [line(head), rule, ...body.map(line)].join("\n");
}

export function formatTable(rows: Row[]): string {
  const head = ["phase", "mode", "req/s", "coins/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "dups", "srv RSS MB", "srv CPU %", "pg CPU %", "gen CPU %", "pg active: top wait"];
  return markdownTable(head, rows.map((r) => [
    r.phase, r.mode, num(r.reqPerS), r.coins > 0 ? num(r.coinsPerS) : "-", ms(r.p50), ms(r.p95), ms(r.p99), ms(r.max),
    num(r.errors), r.duplicates === undefined ? "-" : num(r.duplicates),
    num(r.serverRssMb), num(r.serverCpuPct), num(r.pgCpuPct), num(r.benchCpuPct), describeActive(r),
  ]));
}

const closedRow = (rows: Row[], phase: string) => rows.find((r) => r.phase === phase && r.mode.startsWith("closed"));

/** Closed-loop HTTP claim req/s over the SQL ceiling's, per claim phase ("claim count=1": 0.83). */
export function httpToSql(rows: Row[]): Record<string, number> {
  const ratios: Record<string, number> = {};
  for (const sql of rows.filter((r) => r.phase.startsWith("SQL "))) {
    const http = closedRow(rows, sql.phase.slice(4));
    if (http) ratios[http.phase] = Math.round((http.reqPerS / sql.reqPerS) * 100) / 100;
  }
  return ratios;
}

/** The issue's targets, checked against this run; `duplicatesTotal` covers warm-ups too. */
export function checkTargets(rows: Row[], duplicatesTotal: number): Target[] {
  const out: Target[] = [];
  const http = closedRow(rows, "claim count=1");
  const sql = rows.find((r) => r.phase === "SQL claim count=1");
  if (http && sql) {
    out.push({ target: "claim req/s ≥ SQL ceiling (count=1)", measured: `${num(http.reqPerS)} vs ${num(sql.reqPerS)} (HTTP/SQL ${(http.reqPerS / sql.reqPerS).toFixed(2)})`, pass: http.reqPerS >= sql.reqPerS });
  }
  for (const row of rows.filter((r) => r.mode.startsWith("open 50%"))) {
    out.push({ target: `p99 ≤ 5 ms at 50 % of peak: ${row.phase}`, measured: `${ms(row.p99)} ms at ${num(row.offeredRate)}/s`, pass: row.p99 <= 5 });
  }
  const burst = rows.find((r) => r.phase.startsWith("burst"));
  if (burst) {
    out.push({ target: `${burst.phase}: 0 errors, 0 duplicates`, measured: `${burst.errors} errors, ${burst.duplicates} duplicates of ${burst.requests} (${burst.peakConnections} connections at once)`, pass: burst.errors === 0 && burst.duplicates === 0 });
  }
  const upload = closedRow(rows, "upload");
  if (upload) out.push({ target: "upload ≥ 50,000 coins/s", measured: `${num(upload.coinsPerS)} coins/s`, pass: upload.coinsPerS >= 50_000 });
  const rss = Math.max(...rows.map((r) => r.serverRssMb ?? NaN));
  if (!Number.isNaN(rss)) out.push({ target: "server RSS ≤ 120 MB", measured: `max ${num(rss)} MB`, pass: rss <= 120 });
  out.push({ target: "no coin handed out twice (every claim of the run)", measured: `${duplicatesTotal} duplicates`, pass: duplicatesTotal === 0 });
  return out;
}

export function formatTargets(targets: Target[]): string {
  return targets.map((t) => `  ${t.pass ? "✓" : "✗"} ${t.target}: ${t.measured}`).join("\n");
}

/**
 * fdatasync latency of 8 KB writes in `dir` on the idle machine, ms: with synchronous_commit on,
 * every claim and upload waits for one (shared by group commit).
 */
function fsyncProbe(dir: string, n = 500) {
  const file = join(dir, `aqm-bench-fsync-${process.pid}`);
  const fd = openSync(file, "w");
  const block = Buffer.alloc(8192, 1);
  const latencies = new Float64Array(n);
  try {
    for (let i = 0; i < n; i++) {
      const start = performance.now();
      writeSync(fd, block, 0, block.length, (i % 128) * block.length);
      fdatasyncSync(fd);
      latencies[i] = performance.now() - start;
    }
  } finally {
    closeSync(fd);
    unlinkSync(file);
  }
  latencies.sort();
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return { p50: round(percentile(latencies, 50)), p99: round(percentile(latencies, 99)), max: round(latencies[n - 1]!) };
}

export type MachineInfo = Awaited<ReturnType<typeof machineInfo>>;

/** Taken before the load starts; the fsync probe only when PostgreSQL runs here (its data is under tmpdir). */
export async function machineInfo(sql: Sql, options: Options) {
  const [pg] = await sql<{ version: string; sync: string }[]>`
    SELECT current_setting('server_version') AS version, current_setting('synchronous_commit') AS sync`;
  return {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: availableParallelism(),
    memory_gb: Math.round(totalmem() / 2 ** 30 * 10) / 10,
    kernel: release(),
    bun: Bun.version,
    postgresql: pg!.version,
    synchronous_commit: pg!.sync,
    database: options.url ? "external (--url)" : "embedded, same machine",
    fdatasync_8k_idle_ms: options.url ? undefined : fsyncProbe(tmpdir()),
  };
}

/** Writes <stamp><suffix>.json, latest<suffix>.json and latest<suffix>.svg under bench/results/. */
export function writeResults(result: object, svg: string, suffix: string, startedAt: Date): string[] {
  const dir = join(import.meta.dir, "results");
  mkdirSync(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");
  const json = JSON.stringify(result, null, 2) + "\n";
  const files: [string, string][] = [[`${stamp}${suffix}.json`, json], [`latest${suffix}.json`, json], [`latest${suffix}.svg`, svg]];
  for (const [name, text] of files) {
    writeFileSync(join(dir, `${name}.tmp`), text);
    renameSync(join(dir, `${name}.tmp`), join(dir, name));
  }
  return files.map(([name]) => join("bench", "results", name));
}
