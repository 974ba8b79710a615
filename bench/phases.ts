import postgres from "postgres";
import { randomUUID } from "node:crypto";
import type { Tier } from "../src/coins/model.ts";
import { closePool, createPool, type Sql } from "../src/db/pool.ts";
import type { Options } from "./args.ts";
import { ClaimLedger, httpClaim, httpCount, httpUpload, signTokens, sqlClaim, type Population } from "./client.ts";
import { burst, closedLoop, openLoop, type Job, type Stats } from "./load.ts";
import { connectionsTo, startMonitor } from "./monitor.ts";
import { startWaitSampler } from "./pgwaits.ts";
import { openFilesLimit } from "./relaunch.ts";
import { machineInfo, type MachineInfo, type Row } from "./report.ts";
import { perGroupFor, randomBytesSql, tiers, topUp, type RandomBytesSql } from "./seed.ts";
import type { Stack } from "./stack.ts";

/** Everything a phase needs. */
export interface Bench {
  options: Options;
  stack: Stack;
  /** The bench's own connection, for seeding and table statistics. */
  sql: Sql;
  random: RandomBytesSql;
  randomSource: string;
  machine: MachineInfo;
  pop: Population;
  /** One target everybody claims from: same-user contention. */
  hot: Population;
  ledger: ClaimLedger;
  rows: Row[];
  started: number;
}

/** What a claim job drains, so the stock can be topped up before it runs. */
interface Drain {
  pop: Population;
  tiers: readonly Tier[];
  count: number;
}

const hotTiers: readonly Tier[] = ["BRONZE"];

export const log = (message: string) => console.error(message);
const elapsed = (b: Bench) => `${((performance.now() - b.started) / 1000).toFixed(0).padStart(4)} s`;

export async function prepareBench(options: Options, stack: Stack, started: number): Promise<Bench> {
  // Not createPool: no statement timeout (a large top-up takes longer than 10 s), and its own
  // application_name, so the wait sampler counts only the server's (and SQL ceiling's) backends.
  const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {}, connection: { application_name: "aqm-bench" } });
  const machine = await machineInfo(sql, options);
  const random = await randomBytesSql(sql, !options.url);
  const targets = Array.from({ length: options.users }, () => randomUUID());
  const requesters = Array.from({ length: options.users }, () => randomUUID());
  const hotUser = randomUUID();
  const ttlSeconds = 86_400 + (options.soakS ?? 0);
  const tokens = await signTokens(stack.secret, [...targets, ...requesters, hotUser], ttlSeconds);
  const b: Bench = {
    options, stack, sql, random: random.expr, randomSource: random.source, machine, started,
    pop: { targets, requesters, tokens }, hot: { targets: [hotUser], requesters, tokens },
    ledger: new ClaimLedger(), rows: [],
  };
  await stock(b, b.pop, tiers, 0);
  return b;
}

export async function closeBench(b: Bench): Promise<void> {
  await closePool(b.sql);
}

/** Tops every (target, tier) up to its share of `expectedCoins` claimed coins, with a margin, and at least --coins. */
export async function stock(b: Bench, pop: Population, drainTiers: readonly Tier[], expectedCoins: number): Promise<void> {
  const perGroup = Math.max(b.options.coinsPerTier, perGroupFor(expectedCoins, pop.targets.length * drainTiers.length));
  const t = performance.now();
  const inserted = await topUp(b.sql, b.random, pop.targets, drainTiers, perGroup);
  if (inserted > 0) log(`${elapsed(b)}  seeded ${inserted.toLocaleString("en-US")} coins (${perGroup} per user and tier) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

/** Runs one segment with the resource monitor on, and records it as a row. */
async function measure(b: Bench, phase: string, mode: string, run: () => Promise<Stats & Partial<Row>>): Promise<Row> {
  const duplicatesBefore = b.ledger.duplicates;
  const monitor = startMonitor(b.stack.serverPid, b.stack.postmasterPid);
  const waits = startWaitSampler(b.sql);
  const stats = await run();
  const row: Row = { phase, mode, ...stats, ...monitor.stop(), ...(await waits.stop()) };
  if (phase.includes("claim") || phase.startsWith("burst")) row.duplicates = b.ledger.duplicates - duplicatesBefore;
  b.rows.push(row);
  const shortNote = row.short > 0 ? `, ${row.short} short claims (stock ran dry)` : "";
  log(`${elapsed(b)}  ${phase.padEnd(18)} ${mode.padEnd(20)} ${row.reqPerS.toFixed(0).padStart(6)} req/s  p99 ${row.p99} ms  ${row.errors} errors${shortNote}`);
  return row;
}

async function closed(b: Bench, phase: string, mode: string, job: Job, drain?: Drain): Promise<Row> {
  const { concurrency, warmupS, durationS } = b.options;
  if (drain) await stock(b, drain.pop, drain.tiers, 0);
  const warm = await closedLoop(job, concurrency, warmupS);
  // A warm-up that ran short of coins overestimates the rate: that errs on the side of more stock.
  if (drain) await stock(b, drain.pop, drain.tiers, warm.reqPerS * 2 * durationS * drain.count);
  return measure(b, phase, mode, () => closedLoop(job, concurrency, durationS));
}

async function openRates(b: Bench, phase: string, job: Job, peak: number, drain?: Drain): Promise<void> {
  for (const fraction of b.options.rateFractions) {
    const rate = Math.max(1, Math.round(peak * fraction));
    if (drain) await stock(b, drain.pop, drain.tiers, rate * b.options.durationS * drain.count);
    const mode = `open ${Math.round(fraction * 100)}% ${rate}/s`;
    await measure(b, phase, mode, async () => ({ ...(await openLoop(job, rate, b.options.durationS)), offeredRate: rate }));
  }
}

/** The claim statement without HTTP (SQL ceiling), then through HTTP closed and open. */
async function claimPhase(b: Bench, count: number): Promise<void> {
  const { stack, options, pop, ledger } = b;
  const drain = { pop, tiers, count };
  const pool = createPool(stack.databaseUrl, { AQM_DB_POOL_MAX: options.pool });
  try {
    await closed(b, `SQL claim count=${count}`, `sql c=${options.concurrency}`, sqlClaim(pool, pop, count, ledger), drain);
  } finally {
    await closePool(pool);
  }
  const job = httpClaim(stack.baseUrl, pop, tiers, count, ledger);
  const peak = await closed(b, `claim count=${count}`, `closed c=${options.concurrency}`, job, drain);
  await openRates(b, `claim count=${count}`, job, peak.reqPerS, drain);
}

async function hotPhase(b: Bench): Promise<void> {
  const job = httpClaim(b.stack.baseUrl, b.hot, hotTiers, 1, b.ledger);
  await closed(b, "claim hot user", `closed c=${b.options.concurrency}`, job, { pop: b.hot, tiers: hotTiers, count: 1 });
}

async function burstPhase(b: Bench): Promise<void> {
  const n = b.options.burst;
  const files = await openFilesLimit();
  if (files < n + 1000) log(`warning: open files limit ${files} is below ${n + 1000}; the burst will fail to connect (raise ulimit -n)`);
  await stock(b, b.pop, tiers, n);
  const job = httpClaim(b.stack.baseUrl, b.pop, tiers, 1, b.ledger);
  const port = Number(new URL(b.stack.baseUrl).port || 80);
  await measure(b, `burst ${n.toLocaleString("en-US")}`, "claim count=1", async () => {
    let peakConnections = 0;
    const timer = setInterval(() => (peakConnections = Math.max(peakConnections, connectionsTo(port))), 100);
    try {
      return { ...(await burst(job, n)), peakConnections };
    } finally {
      clearInterval(timer);
    }
  });
}

async function throughputPhase(b: Bench, phase: string, job: Job): Promise<void> {
  const peak = await closed(b, phase, `closed c=${b.options.concurrency}`, job);
  await openRates(b, phase, job, peak.reqPerS);
}

/**
 * Every phase in order. The burst goes last: it leaves thousands of idle keep-alive connections
 * (and the server memory behind them) that would otherwise count against the phases after it.
 */
export async function runPhases(b: Bench): Promise<Row[]> {
  await claimPhase(b, 1);
  await claimPhase(b, 5);
  await hotPhase(b);
  await throughputPhase(b, "upload", httpUpload(b.stack.baseUrl, b.pop));
  await throughputPhase(b, "count", httpCount(b.stack.baseUrl, b.pop));
  await burstPhase(b);
  return b.rows;
}
