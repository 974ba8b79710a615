import postgres from "postgres";
import { randomUUID } from "node:crypto";
import type { Tier } from "../src/coins/tiers.ts";
import { createRequestPool } from "../src/db/open.ts";
import { closePool, createPool, type Sql } from "../src/db/pool.ts";
import type { Options } from "./args.ts";
import { seedClaim, sentUpload, sqlUpload, stageUploads } from "./ceiling.ts";
import { closedBatches, coalescedClaims, pairQuota, serverStatementsInFlight, startBatchProbe, statementsInFlight, type CeilingStats } from "./coalesced.ts";
import { ClaimLedger, httpClaim, httpCount, httpMultiClaim, httpUpload, signTokens, type Population } from "./client.ts";
import { burst, closedLoop, openLoop, type Job, type Stats } from "./load.ts";
import { connectionsTo, startMonitor } from "./monitor.ts";
import { startWaitSampler } from "./pgwaits.ts";
import { openFilesLimit } from "./relaunch.ts";
import { addCpuPerUnit, isServer, machineInfo, num, type Config, type MachineInfo, type Row } from "./report.ts";
import { perGroupFor, randomBytesSql, tiers, topUp, type RandomBytesSql } from "./seed.ts";
import type { Mode, Stack } from "./stack.ts";
import { devicesPhase } from "./devices.ts";
import { verifyPhase } from "./verify.ts";
import { waitPhase } from "./wait.ts";

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
/** A BESTIE contact sync: 5 GOLD, 4 SILVER, 1 BRONZE in one claim. */
const bestie = { gold: 5, silver: 4, bronze: 1 };

export const log = (message: string) => console.error(message);
const elapsed = (b: Bench) => `${((performance.now() - b.started) / 1000).toFixed(0).padStart(4)} s`;

export async function prepareBench(options: Options, stack: Stack, started: number): Promise<Bench> {
  // Not createPool: no statement timeout (a large top-up takes longer than 10 s), and its own
  // application_name, so the wait sampler counts only the servers' (and the SQL-only rows') backends.
  const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {}, connection: { application_name: "aqm-bench" } });
  const machine = await machineInfo(sql, options);
  const random = await randomBytesSql(sql, !options.url);
  const targets = Array.from({ length: options.users }, () => randomUUID());
  const requesters = Array.from({ length: options.requesters }, () => randomUUID());
  const hotUser = randomUUID();
  const ttlSeconds = 3600 * 6 + (options.soakS ?? 0);
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
  await b.sql`DROP TABLE IF EXISTS bench_staged`.catch(() => {});
  await closePool(b.sql);
}

/**
 * Tops every (target, tier) up to its share of `expectedCoins` claimed coins, with a margin, and at
 * least --coins, then vacuums the coin and quota tables. Resolves to the coins each (target, tier)
 * then has at least.
 */
export async function stock(b: Bench, pop: Population, drainTiers: readonly Tier[], expectedCoins: number): Promise<number> {
  const perGroup = Math.max(b.options.coinsPerTier, perGroupFor(expectedCoins, pop.targets.length * drainTiers.length));
  const t = performance.now();
  const inserted = await topUp(b.sql, b.random, pop.targets, drainTiers, perGroup);
  // Each segment starts without the dead index entries of the claims before it: a claim takes the
  // oldest coins, so its scan steps over every entry claimed since the last vacuum, and the
  // ceilings measured late in a phase came out at half the rate of the same ceiling measured early
  // (2,060 vs 4,310 claims/s at B=16, two runs of 2026-12-04 18:40 UTC) — not comparable otherwise.
  await b.sql`VACUUM coin_inventory, claim_quota`;
  log(`${elapsed(b)}  seeded ${inserted.toLocaleString("en-US")} coins (${perGroup} per user and tier), vacuumed, in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  return perGroup;
}

const claims = (phase: string) => phase.includes("claim") || phase.startsWith("burst");

/**
 * Runs one segment with the resource monitor on (watching `config`'s server, if it is one), and
 * records it as a row; a server's claim segments also read how many claims it sent per statement.
 */
export async function measure(b: Bench, config: Config, phase: string, mode: string, run: () => Promise<Stats & Partial<Row>>): Promise<Row> {
  const duplicatesBefore = b.ledger.duplicates;
  const server = isServer(config) ? b.stack.servers[config] : undefined;
  const probe = server && claims(phase) ? await startBatchProbe(server.baseUrl, b.stack.secret) : undefined;
  const monitor = startMonitor(server?.pid, b.stack.postmasterPid);
  const waits = startWaitSampler(b.sql);
  const from = Date.now();
  const stats = await run();
  const to = Date.now();
  const row: Row = { config, phase, mode, ...stats, ...monitor.stop(), ...(await waits.stop()), window: [from, to] };
  addCpuPerUnit(row);
  if (probe) {
    const statements = await probe.stop();
    row.claimsPerStatement = statements?.claimsPerStatement ?? null;
    if (statements) {
      const { statementsInFlight, statementMs, queueMs } = statements;
      Object.assign(row, { statementsInFlight, statementMs, queueMs, claimsInStatements: Math.round(statementsInFlight * statements.claimsPerStatement * 100) / 100 });
    }
  }
  if (config === "seed") row.claimsPerStatement = 1;
  if (claims(phase)) row.duplicates = b.ledger.duplicates - duplicatesBefore;
  b.rows.push(row);
  const shortNote = row.short > 0 ? `, ${row.short} short claims (stock ran dry)` : "";
  const perUnit = row.phase.startsWith("upload") ? `srv ${num(row.serverUsPerCoin, 1)} / pg ${num(row.pgUsPerCoin, 1)} µs/coin`
    : row.serverUsPerClaim !== undefined || row.pgUsPerClaim !== undefined ? `srv ${num(row.serverUsPerClaim)} / pg ${num(row.pgUsPerClaim)} (backends ${num(row.pgBackendUsPerClaim)}) µs/claim` : "";
  log(`${elapsed(b)}  ${config.padEnd(11)} ${phase.padEnd(18)} ${mode.padEnd(20)} ${row.reqPerS.toFixed(0).padStart(6)} req/s  p99 ${row.p99} ms  ${row.errors} errors  ${perUnit}${shortNote}`);
  return row;
}

async function closed(b: Bench, config: Config, phase: string, job: Job, drain?: Drain, concurrency = b.options.concurrency): Promise<Row> {
  const { warmupS, durationS } = b.options;
  if (drain) await stock(b, drain.pop, drain.tiers, 0);
  const warm = await closedLoop(job, concurrency, warmupS);
  // A warm-up that ran short of coins overestimates the rate: that errs on the side of more stock.
  if (drain) await stock(b, drain.pop, drain.tiers, warm.reqPerS * 2 * durationS * drain.count);
  return measure(b, config, phase, `closed c=${concurrency}`, () => closedLoop(job, concurrency, durationS));
}

async function open(b: Bench, config: Config, phase: string, job: Job, rate: number, fraction: number, drain?: Drain): Promise<Row> {
  if (drain) await stock(b, drain.pop, drain.tiers, rate * b.options.durationS * drain.count);
  const mode = `open ${Math.round(fraction * 100)}% ${rate}/s`;
  return measure(b, config, phase, mode, async () => ({ ...(await openLoop(job, rate, b.options.durationS)), offeredRate: rate }));
}

/** Open loops at each --rates fraction of `peak`. */
async function openRates(b: Bench, config: Config, phase: string, job: Job, peak: number, drain?: Drain): Promise<void> {
  for (const fraction of b.options.rateFractions) await open(b, config, phase, job, Math.max(1, Math.round(peak * fraction)), fraction, drain);
}

const modes = (b: Bench): Mode[] => (["default", "off"] as const).filter((m) => b.stack.servers[m]);
const baseUrl = (b: Bench, mode: Mode) => b.stack.servers[mode]!.baseUrl;

/**
 * The coalesced ceiling of one quota variant (sql:default, quota on; sql:off, quota off): the
 * server's claim statement with B claims each, on `--pool` connections: ceil(pool / 2) statements
 * at once at B = 16 (the batched ceiling issue 21's targets and the regression check compare
 * with), and as the server sent them (its statements at once, its mean batch in the segment just
 * measured, rounded) when that differs. The batched ceiling alone when its /metrics could not be read.
 */
async function coalescedCeilings(b: Bench, sql: Sql, mode: Mode, count: number, sent: number | null | undefined): Promise<void> {
  const { warmupS, durationS, pool } = b.options;
  const quota = mode === "default" ? pairQuota : null;
  const asSent = sent ? Math.max(1, Math.round(sent)) : undefined;
  const batched = { workers: statementsInFlight(pool), batch: 16, sent: false };
  const server = { workers: serverStatementsInFlight(pool), batch: asSent ?? 16, sent: true };
  const runs = asSent === undefined || (server.workers === batched.workers && asSent === 16) ? [batched] : [batched, server];
  // A ceiling running dry would count cheap empty claims: it stops at 90 % of the claims the stock can serve in full.
  const fullClaims = (perGroup: number) => Math.floor((perGroup * b.pop.targets.length * tiers.length * 0.9) / count);
  for (const { workers, batch, sent: isSent } of runs) {
    const run = coalescedClaims(sql, b.pop, count, quota, batch, b.ledger);
    const warm = await closedBatches(run, workers, warmupS, fullClaims(await stock(b, b.pop, tiers, 0)));
    const cap = fullClaims(await stock(b, b.pop, tiers, warm.reqPerS * 2 * durationS * count));
    const label = `closed ${workers}×B=${batch}${isSent ? " (as sent)" : ""}`;
    const row = await measure(b, `sql:${mode}`, `claim count=${count}`, label, (): Promise<CeilingStats> => closedBatches(run, workers, durationS, cap));
    if (row.elapsedS < durationS * 0.95) log(`        (stopped after ${row.elapsedS} s: the ${cap.toLocaleString("en-US")} claims the stock could serve in full)`);
  }
}

/**
 * One claim size: the seed baseline (closed), the deployed configuration (closed, then open loops,
 * with the seed baseline open at the same 50 % rate beside it), then the benchmark-only mode
 * (closed); after each server's loops, the coalesced ceiling of its quota variant.
 */
async function claimPhase(b: Bench, count: number): Promise<void> {
  const { stack, options, pop, ledger } = b;
  const drain = { pop, tiers, count };
  const phase = `claim count=${count}`;
  const pool = await createRequestPool(stack.databaseUrl, { AQM_DB_POOL_MAX: options.pool }, b.sql); // as the servers'
  try {
    const seed = seedClaim(pool, pop, count, ledger);
    await closed(b, "seed", phase, seed, drain);
    for (const mode of modes(b)) {
      const job = httpClaim(baseUrl(b, mode), pop, tiers, count, ledger);
      const peak = await closed(b, mode, phase, job, drain);
      if (mode === "default") {
        await openRates(b, mode, phase, job, peak.reqPerS, drain);
        const half = b.options.rateFractions.includes(0.5) ? 0.5 : b.options.rateFractions[0]!;
        await open(b, "seed", phase, seed, Math.max(1, Math.round(peak.reqPerS * half)), half, drain);
      }
      await coalescedCeilings(b, pool, mode, count, peak.claimsPerStatement);
    }
  } finally {
    await closePool(pool);
  }
}

async function hotPhase(b: Bench): Promise<void> {
  for (const mode of modes(b)) {
    const job = httpClaim(baseUrl(b, mode), b.hot, hotTiers, 1, b.ledger);
    await closed(b, mode, "claim hot user", job, { pop: b.hot, tiers: hotTiers, count: 1 });
  }
}

/** POST /v1/coins/claim with want 5/4/1 (a BESTIE sync), deployed configuration: coins/s beside the fetch rows. */
async function multiTierPhase(b: Bench): Promise<void> {
  if (!b.stack.servers.default) return;
  const job = httpMultiClaim(baseUrl(b, "default"), b.pop, bestie, b.ledger);
  const drain = { pop: b.pop, tiers, count: 4 }; // 10 coins a claim over 3 tiers: ~4 per tier
  const peak = await closed(b, "default", "claim 5/4/1", job, drain);
  await open(b, "default", "claim 5/4/1", job, Math.max(1, Math.round(peak.reqPerS / 2)), 0.5, drain);
}

async function uploadPhase(b: Bench): Promise<void> {
  await stageUploads(b.sql, b.random);
  const pool = createPool(b.stack.databaseUrl, { AQM_DB_POOL_MAX: 2 });
  try {
    await closed(b, "sql", "upload", sqlUpload(pool, b.pop.targets), undefined, 2);
    await closed(b, "sql", "upload sent", await sentUpload(pool, b.pop.targets), undefined, 2);
  } finally {
    await closePool(pool);
  }
  if (b.stack.servers.default) await throughput(b, "upload", httpUpload(baseUrl(b, "default"), b.pop));
}

async function burstPhase(b: Bench): Promise<void> {
  const n = b.options.burst;
  const files = await openFilesLimit();
  if (files < n + 1000) log(`warning: open files limit ${files} is below ${n + 1000}; the burst will fail to connect (raise ulimit -n)`);
  for (const mode of modes(b)) {
    await stock(b, b.pop, tiers, n);
    const job = httpClaim(baseUrl(b, mode), b.pop, tiers, 1, b.ledger);
    const port = Number(new URL(baseUrl(b, mode)).port || 80);
    await measure(b, mode, `burst ${n.toLocaleString("en-US")}`, "claim count=1", async () => {
      let peakConnections = 0;
      const timer = setInterval(() => (peakConnections = Math.max(peakConnections, connectionsTo(port))), 100);
      try {
        return { ...(await burst(job, n)), peakConnections };
      } finally {
        clearInterval(timer);
      }
    });
  }
}

async function throughput(b: Bench, phase: string, job: Job): Promise<void> {
  const peak = await closed(b, "default", phase, job);
  await openRates(b, "default", phase, job, peak.reqPerS);
}

/**
 * Every phase in order. The burst goes last: it leaves thousands of idle keep-alive connections
 * (and the server memory behind them) that would otherwise count against the phases after it.
 */
export async function runPhases(b: Bench): Promise<Row[]> {
  const on = (name: string) => b.options.only.length === 0 || b.options.only.includes(name);
  if (on("claim")) {
    await claimPhase(b, 1);
    await claimPhase(b, 5);
  }
  if (on("hot")) await hotPhase(b);
  if (on("multi")) await multiTierPhase(b);
  if (on("devices")) await devicesPhase(b);
  if (on("wait") && b.stack.servers.default) await waitPhase(b, (row) => b.rows.push(row));
  if (on("upload")) await uploadPhase(b);
  if (on("verify")) await verifyPhase(b);
  if (on("count") && b.stack.servers.default) await throughput(b, "count", httpCount(baseUrl(b, "default"), b.pop));
  if (on("burst")) await burstPhase(b);
  return b.rows;
}
