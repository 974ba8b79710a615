import { closeSync, fdatasyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { availableParallelism, cpus, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import type { Sql } from "../src/db/pool.ts";
import type { Options } from "./args.ts";
import { percentile, type Stats } from "./load.ts";
import type { ResourceUsage } from "./monitor.ts";
import { describeActive, type ActiveBackends } from "./pgwaits.ts";

/**
 * What serves a row. Over HTTP: `default` (rate limits and pair quota on, as deployed) and `off`
 * (AQM_RATE_LIMITS=off, benchmarks only). PostgreSQL alone, no HTTP: `seed` (the seed baseline,
 * one statement per claim), `sql:default` / `sql:off` (the coalesced ceiling: the server's claim
 * statement, B claims each, quota on / off) and `sql` (the upload ceiling).
 */
export type Config = "default" | "off" | "seed" | "sql:default" | "sql:off" | "sql";
export const isServer = (config: Config): config is "default" | "off" => config === "default" || config === "off";

/** One measured segment: a configuration (what serves), a phase (what is requested) and a mode (how it is offered). */
export interface Row extends Stats, ResourceUsage, ActiveBackends {
  config: Config;
  phase: string;
  mode: string;
  /** Wait phase: database connections the server held while every claim waited. */
  dbConnections?: number;
  /** wait rows: the servers' database connections before the waiters came (dbConnections: while they all waited). */
  dbConnectionsBefore?: number;
  /** Open loop: the arrival rate asked for, req/s. */
  offeredRate?: number;
  /** Open loop: how late the generator sent requests, ms (already inside the latencies). */
  sendLagP50?: number;
  sendLagP99?: number;
  /** Claims: coins handed out twice during this segment. */
  duplicates?: number;
  /** Burst: most connections to the server open at once. */
  peakConnections?: number;
  /**
   * Claims per claim statement: a server's mean over the segment (its aqm_claim_batch_size
   * histogram; null when /metrics could not be read), the coalesced ceiling's B, 1 for the seed baseline.
   */
  claimsPerStatement?: number | null;
  /** Coalesced ceiling: statements per second (reqPerS counts claims). */
  statementsPerS?: number;
  /**
   * Claim statements running at once on average (their summed time ÷ the segment's), and the claims
   * inside them (a server's: that × its mean batch; the ceiling's: each claim's statement time summed
   * ÷ the segment's); their mean time, ms; a server's mean queue wait per claim, ms (null: not read).
   */
  statementsInFlight?: number;
  claimsInStatements?: number;
  statementMs?: number;
  queueMs?: number | null;
  /**
   * CPU per unit of work over the segment, µs: serverCpuS or pgCpuS ÷ the claims it completed
   * (claim rows: successful requests; sql:* rows: claims served) or ÷ the coins it claimed or
   * uploaded. Absent: not measured (no CPU figure, or nothing completed), or not applicable
   * (per claim on upload and count rows, per coin on count rows).
   */
  serverUsPerClaim?: number;
  pgUsPerClaim?: number;
  /** pgCpuByKindS.backends ÷ claims: PostgreSQL's client backends only (no autovacuum, no background processes). */
  pgBackendUsPerClaim?: number;
  serverUsPerCoin?: number;
  pgUsPerCoin?: number;
  /** When the segment ran (epoch ms): to cut a CPU profile of the server to it. */
  window?: [number, number];
}

const isClaimPhase = (phase: string) => phase.includes("claim") || phase.startsWith("burst") || phase.startsWith("wait");

/** Fills a row's µs/claim and µs/coin from its CPU seconds; a figure that cannot be measured stays absent (n/a), never 0. */
export function addCpuPerUnit(row: Row): void {
  const per = (cpuS: number | undefined, units: number) => (cpuS === undefined || units <= 0 ? undefined : Math.round((cpuS * 1e6 / units) * 10) / 10);
  if (isClaimPhase(row.phase)) {
    const claims = row.requests - row.errors;
    row.serverUsPerClaim = per(row.serverCpuS, claims);
    row.pgUsPerClaim = per(row.pgCpuS, claims);
    row.pgBackendUsPerClaim = per(row.pgCpuByKindS?.backends, claims);
  }
  if (isClaimPhase(row.phase) || row.phase.startsWith("upload")) {
    row.serverUsPerCoin = per(row.serverCpuS, row.coins);
    row.pgUsPerCoin = per(row.pgCpuS, row.coins);
  }
}

export interface Target {
  target: string;
  measured: string;
  pass: boolean;
}

/** "n/a": not measured in this segment, or not applicable (no server behind a PostgreSQL-only row). */
export const num = (x: number | null | undefined, digits = 0) =>
  x === undefined || x === null || Number.isNaN(x) ? "n/a" : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
export const ms = (x: number) => num(x, x < 10 ? 2 : 1);

/** A Markdown table; the first `leftColumns` columns are left-aligned, the rest right-aligned. */
export function markdownTable(head: string[], body: string[][], leftColumns = 2): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i < leftColumns ? `:${"-".repeat(w + 1)}` : `${"-".repeat(w + 1)}:`)).join("|")}|`;
  return [line(head), rule, ...body.map(line)].join("\n");
}

export function formatTable(rows: Row[]): string {
  const head = ["config", "phase", "mode", "req/s", "coins/s", "claims/stmt", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "dups", "srv RSS MB", "srv CPU %", "pg CPU %",
    "srv µs/claim", "pg µs/claim", "pg bk µs/claim", "srv µs/coin", "pg µs/coin", "gen CPU %", "pg active: top wait"];
  return markdownTable(head, rows.map((r) => [
    r.config, r.phase, r.mode, num(r.reqPerS), r.coins > 0 ? num(r.coinsPerS) : "n/a", num(r.claimsPerStatement, 1), ms(r.p50), ms(r.p95), ms(r.p99), ms(r.max),
    num(r.errors), num(r.duplicates),
    num(r.serverRssMb), num(r.serverCpuPct), num(r.pgCpuPct),
    num(r.serverUsPerClaim), num(r.pgUsPerClaim), num(r.pgBackendUsPerClaim), num(r.serverUsPerCoin, 1), num(r.pgUsPerCoin, 1), num(r.benchCpuPct), describeActive(r),
  ]), 3);
}

/** Printed under the table: why a CPU-per-unit cell says n/a. */
export function cpuPerUnitNote(rows: Row[], urlMode: boolean): string {
  const lines = ["srv/pg µs per claim or coin: the process's CPU time over the segment (utime + stime, /proc, read at its start and end; PostgreSQL: the postmaster's whole process tree, exited backends included) ÷ the claims served or coins claimed/uploaded in it. pg bk: PostgreSQL's client backends alone (no autovacuum, no background process, none that exited)."];
  lines.push("  n/a: srv on rows PostgreSQL serves alone (seed, sql:*, sql); per claim on upload and count rows, per coin on count rows;"
    + (urlMode ? " every srv and pg figure with --url (the bench has neither the server's nor PostgreSQL's pid)." : " any row whose process exited during the segment or that completed nothing."));
  if (rows.some((r) => r.window && r.serverCpuS === undefined && isServer(r.config) && !urlMode)) lines.push("  (a server row has no CPU figure: its process was gone at the end of the segment)");
  return lines.join("\n");
}

const closedRows = (rows: Row[], config: Config, phase: string) => rows.filter((r) => r.config === config && r.phase === phase && r.mode.startsWith("closed"));
const closedRow = (rows: Row[], config: Config, phase: string) => closedRows(rows, config, phase)[0];
const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
/** Coins/s over several segments: their coins ÷ their time. */
const coinsPerS = (segments: Row[]) => segments.reduce((n, r) => n + r.coins, 0) / segments.reduce((t, r) => t + r.elapsedS, 0);

/** Closed-loop server claims/s over the seed baseline's, per claim phase and configuration ("claim count=1 default": 1.02). */
export function serverToSeed(rows: Row[]): Record<string, number> {
  const ratios: Record<string, number> = {};
  for (const seed of rows.filter((r) => r.config === "seed" && r.mode.startsWith("closed"))) {
    for (const config of ["default", "off"] as const) {
      const server = closedRow(rows, config, seed.phase);
      if (server) ratios[`${seed.phase} ${config}`] = ratio(server.reqPerS, seed.reqPerS);
    }
  }
  return ratios;
}

export interface CeilingRatio {
  phase: string;
  config: "default" | "off";
  serverClaimsPerS: number;
  /** The server's mean claims per statement in that segment; null: not measured. */
  serverClaimsPerStatement: number | null;
  ceilings: { batch: number; asSent: boolean; claimsPerS: number; ratio: number }[];
}

/** Closed-loop server claims/s over the coalesced ceiling of its own quota variant (sql:default, sql:off), same phase, same run. */
export function serverToCeiling(rows: Row[]): CeilingRatio[] {
  const out: CeilingRatio[] = [];
  for (const server of rows.filter((r) => isServer(r.config) && r.phase.startsWith("claim count=") && r.mode.startsWith("closed"))) {
    const config = server.config as "default" | "off";
    const ceilings = closedRows(rows, `sql:${config}`, server.phase).map((c) => ({
      batch: c.claimsPerStatement!, asSent: c.mode.includes("as sent"), claimsPerS: c.reqPerS, ratio: ratio(server.reqPerS, c.reqPerS),
    }));
    if (ceilings.length) out.push({ phase: server.phase, config, serverClaimsPerS: server.reqPerS, serverClaimsPerStatement: server.claimsPerStatement ?? null, ceilings });
  }
  return out;
}

export function formatCeilingRatios(ratios: CeilingRatio[]): string {
  return ratios.map((r) => {
    const quota = r.config === "default" ? "quota on" : "quota off";
    const each = r.ceilings.map((c) => `${num(c.claimsPerS)} at B=${c.batch}${c.asSent ? " (as sent)" : ""} → ${c.ratio.toFixed(2)}×`).join("; ");
    return `  ${r.phase} ${r.config}: ${num(r.serverClaimsPerS)} claims/s, ${num(r.serverClaimsPerStatement, 1)} claims/stmt; sql:${r.config} (${quota}) ${each}`;
  }).join("\n");
}

/** The targets (issue 8, and issue 10's rows), checked against this run; `duplicatesTotal` covers warm-ups too. */
export function checkTargets(rows: Row[], duplicatesTotal: number): Target[] {
  const out: Target[] = [];
  for (const phase of ["claim count=1", "claim count=5"]) {
    const deployed = closedRow(rows, "default", phase);
    const seed = closedRow(rows, "seed", phase);
    const off = closedRow(rows, "off", phase);
    if (deployed && seed) {
      out.push({ target: `${phase}: default ≥ 1.0× the seed baseline (issue 8's "SQL ceiling")`, measured: `${num(deployed.reqPerS)} vs ${num(seed.reqPerS)} req/s (${ratio(deployed.reqPerS, seed.reqPerS).toFixed(2)}×)`, pass: deployed.reqPerS >= seed.reqPerS });
    }
    if (deployed && off) {
      out.push({ target: `${phase}: default ≥ 0.9× off`, measured: `${num(deployed.reqPerS)} vs ${num(off.reqPerS)} req/s (${ratio(deployed.reqPerS, off.reqPerS).toFixed(2)}×)`, pass: deployed.reqPerS >= 0.9 * off.reqPerS });
    }
  }
  const deployed1 = closedRow(rows, "default", "claim count=1");
  const batched = closedRows(rows, "sql:default", "claim count=1").find((r) => r.claimsPerStatement === 16 && !r.mode.includes("as sent"));
  if (deployed1 && batched) {
    out.push({ target: "claim count=1: default ≥ 0.9× the batched ceiling (sql:default, B=16; issue 21)", measured: `${num(deployed1.reqPerS)} vs ${num(batched.reqPerS)} claims/s (${ratio(deployed1.reqPerS, batched.reqPerS).toFixed(2)}×, ${batched.mode})`, pass: deployed1.reqPerS >= 0.9 * batched.reqPerS });
  }
  if (deployed1?.serverUsPerClaim !== undefined) {
    out.push({ target: "claim count=1: server CPU ≤ 60 µs per claim (default, closed; issue 21)", measured: `${num(deployed1.serverUsPerClaim)} µs (PostgreSQL ${num(deployed1.pgUsPerClaim)} µs) at ${num(deployed1.reqPerS)} claims/s`, pass: deployed1.serverUsPerClaim <= 60 });
  }
  const off1 = closedRow(rows, "off", "claim count=1");
  if (deployed1 && off1) {
    out.push({ target: "claim count=1: off ≤ 1.1× default (the quota costs little; issue 21)", measured: `${num(off1.reqPerS)} vs ${num(deployed1.reqPerS)} claims/s (${ratio(off1.reqPerS, deployed1.reqPerS).toFixed(2)}×)`, pass: off1.reqPerS <= 1.1 * deployed1.reqPerS });
  }
  for (const row of rows.filter((r) => r.config === "default" && r.mode.startsWith("open 50%"))) {
    const seed = rows.find((r) => r.config === "seed" && r.phase === row.phase && r.mode.startsWith("open 50%"));
    const beside = seed ? `; the seed baseline alone at ${num(seed.offeredRate)}/s: p99 ${ms(seed.p99)} ms` : "";
    out.push({ target: `p99 ≤ 5 ms at 50 % of peak, default: ${row.phase}`, measured: `${ms(row.p99)} ms at ${num(row.offeredRate)}/s${beside}`, pass: row.p99 <= 5 });
  }
  const upload = closedRow(rows, "default", "upload");
  const ceiling = closedRow(rows, "sql", "upload");
  if (upload && ceiling) {
    // beside it, the ceiling with the bytes sent (not a target: what the transfer alone leaves)
    const sent = closedRow(rows, "sql", "upload sent");
    const beside = sent ? `; ${ratio(upload.coinsPerS, sent.coinsPerS).toFixed(2)}× the ceiling with the bytes sent (${num(sent.coinsPerS)})` : "";
    out.push({ target: "upload ≥ 0.7× the upload ceiling", measured: `${num(upload.coinsPerS)} vs ${num(ceiling.coinsPerS)} coins/s (${ratio(upload.coinsPerS, ceiling.coinsPerS).toFixed(2)}×)${beside}`, pass: upload.coinsPerS >= 0.7 * ceiling.coinsPerS });
  }
  const served = rows.filter((r) => isServer(r.config) && r.serverRssMb !== undefined);
  if (served.length) {
    const worst = served.reduce((a, b) => (b.serverRssMb! > a.serverRssMb! ? b : a));
    out.push({ target: "server RSS ≤ 150 MB in every phase", measured: `max ${num(worst.serverRssMb)} MB (${worst.config} ${worst.phase}, ${worst.mode})`, pass: worst.serverRssMb! <= 150 });
  }
  for (const burst of rows.filter((r) => r.phase.startsWith("burst"))) {
    out.push({
      target: `${burst.phase} (${burst.config}): 0 errors, 0 duplicates`,
      measured: `${burst.errors} errors, ${burst.duplicates} duplicates of ${burst.requests} (${burst.peakConnections} connections at once, all answered within ${num(burst.max / 1000, 1)} s)`,
      pass: burst.errors === 0 && burst.duplicates === 0,
    });
  }
  const wait = rows.find((r) => r.phase.startsWith("wait"));
  if (wait) {
    // (the servers open their pools at start and keep them: the waiters must not add connections)
    const added = (wait.dbConnections ?? 99) - (wait.dbConnectionsBefore ?? 0);
    out.push({ target: `${wait.phase} waiting claims: all released, holding no database connection`, measured: `${wait.coins} released, upload→answer p99 ${ms(wait.p99)} ms, ${wait.dbConnections} database connections while they waited, ${wait.dbConnectionsBefore ?? "?"} before`, pass: wait.errors === 0 && wait.coins === wait.requests && added <= 1 });
  }
  for (const tier of ["SILVER", "BRONZE"]) {
    const verified = closedRows(rows, "default", `upload ${tier} verified`);
    const unverified = closedRows(rows, "default", `upload ${tier} unverified`);
    if (verified.length && unverified.length) {
      const [v, u] = [coinsPerS(verified), coinsPerS(unverified)];
      out.push({
        target: `upload ${tier}: verified ≥ 0.5× unverified (issue 20; default, ${verified.length} + ${unverified.length} interleaved segments)`,
        measured: `${num(v)} vs ${num(u)} coins/s (${ratio(v, u).toFixed(2)}×)`, pass: v >= 0.5 * u,
      });
    }
  }
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
    // null: not measured (the database is not on this machine)
    fdatasync_8k_idle_ms: options.url ? null : fsyncProbe(tmpdir()),
  };
}

/** The file-name stamp of a run: its start, to the second, without colons. */
export const stampOf = (startedAt: Date) => startedAt.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");

/** bench/results/ (tracked) with `save`, else bench/results/local/ (untracked); absolute. */
export function resultsDir(save: boolean): string {
  return join(import.meta.dir, "results", ...(save ? [] : ["local"]));
}

/** Writes one result, <stamp><suffix>.json (the stamp of now), as resultsDir(save) says; returns its path. */
export function writeResult(result: object, suffix: string, save: boolean): string {
  const dir = resultsDir(save);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${stampOf(new Date())}${suffix}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
  return file;
}

/**
 * Writes <stamp><suffix>.json, and with `latest` also latest<suffix>.json and latest<suffix>.svg,
 * under bench/results/local/ (untracked), or under bench/results/ (tracked) with `save`. A run of
 * some phases only (--only) passes latest = false: latest.* stays the last full run.
 */
export function writeResults(result: object, svg: string, suffix: string, startedAt: Date, save: boolean, latest = true): string[] {
  const dir = resultsDir(save);
  mkdirSync(dir, { recursive: true });
  const stamp = stampOf(startedAt);
  const json = JSON.stringify(result, null, 2) + "\n";
  const files: [string, string][] = [[`${stamp}${suffix}.json`, json]];
  if (latest) files.push([`latest${suffix}.json`, json], [`latest${suffix}.svg`, svg]);
  for (const [name, text] of files) {
    writeFileSync(join(dir, `${name}.tmp`), text);
    renameSync(join(dir, `${name}.tmp`), join(dir, name));
  }
  return files.map(([name]) => join("bench", "results", ...(save ? [] : ["local"]), name));
}
