import type { Sql } from "../src/db/pool.ts";
import { httpClaim, httpUpload, uploadBatchSize } from "./client.ts";
import { closedLoop, Recorder, schedule } from "./load.ts";
import { startMonitor, type ResourceUsage } from "./monitor.ts";
import { describeActive, startWaitSampler, type ActiveBackends } from "./pgwaits.ts";
import { log, stock, type Bench } from "./phases.ts";
import { markdownTable, ms, num } from "./report.ts";
import { tiers } from "./seed.ts";

interface TableStats {
  liveTuples: number;
  deadTuples: number;
  autovacuums: number;
  tableMb: number;
  indexMb: number;
}

export interface SoakWindow extends TableStats, ResourceUsage, ActiveBackends {
  minute: number;
  claimsPerS: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  errors: number;
  uploadP99: number;
  uploadErrors: number;
  /** Requests of this window still unanswered 2 s after it ended (not in its percentiles). */
  pending: number;
}

const windowS = 60;

/** The soak runs against the deployed configuration (or the one --url gave). */
const soaked = (b: Bench) => (b.stack.servers.default ?? b.stack.servers.off)!;
const graceMs = 2000;

async function tableStats(sql: Sql): Promise<TableStats> {
  const [row] = await sql<{ live: string; dead: string; autovacuums: string; total: string; indexes: string }[]>`
    SELECT n_live_tup AS live, n_dead_tup AS dead, autovacuum_count AS autovacuums,
           pg_total_relation_size(relid) AS total, pg_indexes_size(relid) AS indexes
    FROM pg_stat_user_tables WHERE relname = 'coin_inventory'`;
  const mb = (bytes: number) => Math.round(bytes / 2 ** 20);
  return {
    liveTuples: Number(row!.live), deadTuples: Number(row!.dead), autovacuums: Number(row!.autovacuums),
    tableMb: mb(Number(row!.total) - Number(row!.indexes)), indexMb: mb(Number(row!.indexes)),
  };
}

async function claimRate(b: Bench): Promise<number> {
  if (b.options.rate) return b.options.rate;
  const peak = await closedLoop(httpClaim(soaked(b).baseUrl, b.pop, tiers, 1, b.ledger), b.options.concurrency, 3);
  log(`quick peak: ${Math.round(peak.reqPerS)} claims/s; soaking at half of it`);
  return Math.max(1, Math.round(peak.reqPerS / 2));
}

export function formatSoak(windows: SoakWindow[]): string {
  const head = ["minute", "claims/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "upload p99 ms", "dead tuples", "live tuples", "table MB", "index MB", "autovacuums", "srv RSS MB", "srv CPU %", "pg CPU %", "pg active: top wait"];
  return markdownTable(head, windows.map((w) => [
    String(w.minute), num(w.claimsPerS), ms(w.p50), ms(w.p95), ms(w.p99), ms(w.max), num(w.errors + w.uploadErrors), ms(w.uploadP99),
    num(w.deadTuples), num(w.liveTuples), num(w.tableMb), num(w.indexMb), num(w.autovacuums),
    num(w.serverRssMb), num(w.serverCpuPct), num(w.pgCpuPct), describeActive(w),
  ]), 1);
}

/**
 * Steady open-loop claims (count=1) plus the 100-coin uploads that replace what they take, for
 * --soak seconds; every minute, latency and coin_inventory's dead tuples and size.
 */
export async function runSoak(b: Bench) {
  const durationS = b.options.soakS!;
  const rate = await claimRate(b);
  const uploadRate = rate / uploadBatchSize;
  await stock(b, b.pop, tiers, rate * 120); // two minutes of claims in hand; the uploads keep up from there
  const count = Math.ceil(durationS / windowS);
  const claims = Array.from({ length: count }, () => new Recorder());
  const uploads = Array.from({ length: count }, () => new Recorder());
  const windowOf = (intendedMs: number) => Math.min(count - 1, Math.floor(intendedMs / 1000 / windowS));
  const t0 = performance.now();
  const load = Promise.all([
    schedule(httpClaim(soaked(b).baseUrl, b.pop, tiers, 1, b.ledger), rate, durationS, (t, latency, o) => claims[windowOf(t)]!.record(latency, o)),
    schedule(httpUpload(soaked(b).baseUrl, b.pop), uploadRate, durationS, (t, latency, o) => uploads[windowOf(t)]!.record(latency, o)),
  ]);
  const windows: SoakWindow[] = [];
  for (let k = 0; k < count; k++) {
    const monitor = startMonitor(soaked(b).pid, b.stack.postmasterPid);
    const waits = startWaitSampler(b.sql);
    const lengthS = Math.min(windowS, durationS - k * windowS);
    await Bun.sleep(t0 + (k * windowS + lengthS) * 1000 + graceMs - performance.now());
    const c = claims[k]!.stats(lengthS);
    const u = uploads[k]!.stats(lengthS);
    windows.push({
      minute: k + 1, claimsPerS: c.reqPerS, p50: c.p50, p95: c.p95, p99: c.p99, max: c.max, errors: c.errors,
      uploadP99: u.p99, uploadErrors: u.errors, pending: Math.max(0, Math.round(rate * lengthS) - c.requests),
      ...monitor.stop(), ...(await waits.stop()), ...(await tableStats(b.sql)),
    });
    const w = windows.at(-1)!;
    log(`minute ${w.minute}: ${w.claimsPerS.toFixed(0)} claims/s, p99 ${w.p99} ms, ${w.errors + w.uploadErrors} errors, ${w.deadTuples} dead tuples, ${w.tableMb + w.indexMb} MB`);
  }
  await load;
  return { claimRate: rate, uploadRate: Math.round(uploadRate * 100) / 100, windows };
}
