// `bun run bench:citus` (bun bench/citus.ts [--save] [--duration s] [--quick] [--shards 32,8]): the
// server on one PostgreSQL vs on a Citus cluster of a coordinator and 2 workers, all on this
// machine, same binaries and settings; see bench/README.md, "Citus".
//
// One throw-away cluster (tests/citus/cluster.ts). In the coordinator's server: database `single`
// without the citus extension (plain tables: one PostgreSQL), and `aqm`, the harness's Citus
// database, whose tables the server's migrations distribute by owner (32 shards unless --shards
// says otherwise; a further shard count gets a database of its own, `aqm_<n>`, config `citus/<n>`).
// One server per database in the deployed configuration (`default` of bench/stack.ts). For each:
// uploads through the API (closed loop, 100 mixed-tier coins a request: uploaded coins/s, and the
// stock of the claims), then fetch claims (closed loop, count=1, targets and tiers round robin,
// requesters at random), with the claims per statement (the server's aqm_claim_batch_size
// histogram; on Citus one statement per shard), the two-phase commits Citus recorded, and the CPU
// of the server, the coordinator and each worker. The claims run twice per config (once with
// --quick), the configs in turn. Last, the anatomy of one claim statement (EXPLAIN ANALYZE in a
// rolled-back transaction: planning on the coordinator and on the worker; also sent straight to
// the worker holding the shard, as Citus MX allows) and whether PostgreSQL kept re-planning the
// prepared statement.
import postgres from "postgres";
import { randomBytes, randomUUID } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { signToken } from "../src/auth/jwt.ts";
import { claimQuery, type ClaimItem, deviceOne } from "../src/claims/batch.ts";
import { ensureParams } from "../src/claims/ensure.ts";
import { ShardMap } from "../src/claims/routing.ts";
import type { TierCounts } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";
import { startCitusCluster, type CitusCluster, type CitusNode } from "../tests/citus/cluster.ts";
import { postmasterPid } from "../tests/helpers/procs.ts";
import { cliOptions, parseOptions, type Options } from "./args.ts";
import { pairQuota, statementsInFlight } from "./coalesced.ts";
import { ClaimLedger, httpClaim, httpUpload, signTokens, uploadBatchSize, type Population } from "./client.ts";
import { closedLoop, percentile, type Job, type Stats } from "./load.ts";
import { startMonitor, type ResourceUsage } from "./monitor.ts";
import { describeActive, startWaitSampler, type ActiveBackends } from "./pgwaits.ts";
import { machineInfo, markdownTable, ms, num, writeResults } from "./report.ts";
import { perGroupFor, tiers } from "./seed.ts";
import { startServer, stopStack } from "./stack.ts";

// ---------------------------------------------------------------------------------------------
// options

interface CitusBenchOptions {
  base: Options;
  /** Shard counts of the Citus databases: the first is config `citus`, the others `citus/<n>`. */
  shards: number[];
}

const usage = `bun bench/citus.ts [options]     (bun run bench:citus -- [options])

  --save                 write bench/results/<stamp>-citus.json (tracked) instead of bench/results/local/
  --duration <s>         seconds per measured segment (10; quick: 3)
  --quick                smoke run: 3 s segments, 50 users, 2,000 requesters
  --shards <list>        shard counts of the Citus databases (32: Citus's default); e.g. 32,8 adds config citus/8
  --pool <n>             the servers' AQM_DB_POOL_MAX (4)
  --concurrency <n>      closed-loop connections (32)
  --users <n>            targets (200; quick: 50)
  --requesters <n>       distinct requesters (10000; quick: 2000)

Extra AQM_* variables in the environment are passed on to the servers.`;

/** Flags of bench/run.ts that mean nothing here. */
const refused = ["--url", "--secret", "--database-url", "--soak", "--rate", "--only", "--profile", "--check", "--mode", "--burst", "--rates", "--coins"];

function parse(argv: string[]): CitusBenchOptions | "help" {
  let shards = [32];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--shards" || arg.startsWith("--shards=")) {
      const raw = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : argv[++i];
      shards = (raw ?? "").split(",").map(Number);
      if (shards.length === 0 || shards.some((n) => !Number.isInteger(n) || n < 1 || n > 1024) || new Set(shards).size !== shards.length) {
        throw new Error(`--shards: distinct whole numbers from 1 to 1024, not ${JSON.stringify(raw)}`);
      }
    } else if (refused.some((flag) => arg === flag || arg.startsWith(`${flag}=`))) {
      throw new Error(`${arg.split("=")[0]} is a flag of bench/run.ts, not of bench/citus.ts`);
    } else rest.push(arg);
  }
  const base = parseOptions(rest);
  return base === "help" ? "help" : { base, shards };
}

// ---------------------------------------------------------------------------------------------
// what one configuration is

interface Target {
  /** single, citus, citus/<n> */
  config: string;
  /** The database's name on the coordinator. */
  database: string;
  url: string;
  /** Citus: its shard count; null: one PostgreSQL. */
  shards: number | null;
  server: { baseUrl: string; pid: number };
  /** The bench's own connection (application_name aqm-bench). */
  sql: Sql;
  ledger: ClaimLedger;
  upload: Job;
}

/** One connection to each node's `postgres` database: pg_stat_database of every database there. */
type NodeSql = { node: string; sql: Sql }[];

/** Blocks `database` read into shared buffers (from the OS) and found there, so far, summed over the nodes. */
async function blocks(nodes: NodeSql, database: string): Promise<{ read: number; hit: number } | null> {
  let read = 0;
  let hit = 0;
  for (const { sql } of nodes) {
    await sql`SELECT pg_stat_clear_snapshot()`.catch(() => {});
    const rows = await sql<{ r: string; h: string }[]>`SELECT blks_read::text AS r, blks_hit::text AS h FROM pg_stat_database WHERE datname = ${database}`.catch(() => null);
    if (rows === null) return null;
    read += Number(rows[0]?.r ?? 0);
    hit += Number(rows[0]?.h ?? 0);
  }
  return { read, hit };
}

/** Sessions established so far to `database` on each node (pg_stat_database.sessions). */
async function sessions(nodes: NodeSql, database: string): Promise<Record<string, number | null>> {
  const out: Record<string, number | null> = {};
  for (const { node, sql } of nodes) {
    await sql`SELECT pg_stat_clear_snapshot()`.catch(() => {});
    const rows = await sql<{ n: string }[]>`SELECT sessions::text AS n FROM pg_stat_database WHERE datname = ${database}`.catch(() => []);
    out[node] = rows[0] ? Number(rows[0].n) : null;
  }
  return out;
}

/** CPU of one PostgreSQL server (its postmaster's process tree) over a segment. */
interface NodeCpu {
  node: string;
  /** % of one core */
  cpuPct?: number;
  cpuS?: number;
  /** Client backends only (the servers' pools on the coordinator, the coordinator's connections on a worker). */
  backendsS?: number;
}

interface Histogram {
  sum: number;
  count: number;
  /** Cumulative counts by upper bound ("1", "2", …, "+Inf"). */
  buckets: Record<string, number>;
}

/** One measured segment of one configuration. */
interface CitusRow extends Stats, ActiveBackends {
  config: string;
  phase: string;
  mode: string;
  duplicates?: number;
  /** Claims: the server's mean claims per statement over the segment (aqm_claim_batch_size); null: not read. */
  claimsPerStatement?: number | null;
  /** Claims: statements in the segment and their sizes (the histogram's difference over the segment). */
  batches?: Histogram | null;
  /** Claims: mean of aqm_claim_statement_seconds, ms (on Citus: the "ensure rows" statement and the claim, with the gate wait). */
  statementMs?: number | null;
  /** Citus: two-phase commits the coordinator recorded in the segment (pg_dist_transaction; automatic recovery off). */
  twoPhaseCommits?: number | null;
  /** Sessions opened to the config's database on each node during the segment (pg_stat_database.sessions); null: not read. */
  sessionsOpened?: Record<string, number | null>;
  /** The coin table (on Citus: all its shards on the workers): dead tuples at the end, autovacuum and autoanalyze runs in the segment; null: not read. */
  coinTable?: { deadTuples: number; autovacuums: number; autoanalyzes: number; mb: number | null } | null;
  /** Blocks of the config's database read into shared buffers (not found there) and found there during the segment, all nodes; null: not read. */
  blocks?: { read: number; hit: number; hitPct: number } | null;
  serverCpuPct?: number;
  serverRssMb?: number;
  serverCpuS?: number;
  /** The coordinator (single: the one PostgreSQL), then each worker. */
  nodes: NodeCpu[];
  benchCpuPct: number;
  /** The whole machine's busy CPU, % of one core (200 = both cores). */
  machineCpuPct: number;
  /** What nothing measured here used: other jobs on the machine, the other configs' idle servers. */
  otherCpuPct: number;
  /** µs of CPU per claim served (claims) or per coin stored (uploads). */
  perUnitUs: { server?: number; coordinator?: number; coordinatorBackends?: number; workers?: number; workersBackends?: number };
  /** Claims: µs of CPU per claim statement (batch). */
  perStatementUs?: { coordinator?: number; coordinatorBackends?: number; workers?: number; workersBackends?: number };
}

const log = (line: string) => console.error(line);
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
let began = performance.now();
const at = () => `${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s`;

// ---------------------------------------------------------------------------------------------
// the cluster and its databases

const dbUrl = (nodeUrl: string, database: string) => {
  const url = new URL(nodeUrl);
  url.pathname = `/${database}`;
  return url.toString();
};

async function run(url: string, statements: string[]): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    for (const text of statements) await sql.unsafe(text);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/**
 * A Citus database of its own with `shards` shards: created with the extension on every node,
 * the workers added on the coordinator's copy (pg_dist_node is per database), as
 * tests/helpers/db.ts does for the Citus test suite. `aqm` exists already (the harness's).
 */
async function citusDatabase(cluster: CitusCluster, database: string, shards: number): Promise<string> {
  const nodes: CitusNode[] = [cluster.coordinator, ...cluster.workers];
  if (database !== "aqm") {
    await Promise.all(nodes.map(async (node) => {
      await run(cluster.nodeUrl(node.name), [`CREATE DATABASE ${database}`]);
      await run(dbUrl(cluster.nodeUrl(node.name), database), ["CREATE EXTENSION citus"]);
    }));
    const coordinator = dbUrl(cluster.url, database);
    await run(coordinator, [`SELECT citus_set_coordinator_host('127.0.0.1', ${cluster.coordinator.port})`,
      ...cluster.workers.map((w) => `SELECT citus_add_node('127.0.0.1', ${w.port})`)]);
  }
  // before the server's migrations create the tables
  if (shards !== 32) await run(dbUrl(cluster.url, database), [`ALTER DATABASE ${database} SET citus.shard_count = ${shards}`]);
  return dbUrl(cluster.url, database);
}

const pidOf = (node: CitusNode) => {
  const pid = postmasterPid(node.dataDir);
  if (!pid) throw new Error(`${node.name}: no postmaster`);
  return pid;
};

// ---------------------------------------------------------------------------------------------
// measuring

/** [busy, total] jiffies of all CPUs (busy: everything but idle and iowait). */
function machineTicks(): [number, number] {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return [total - fields[3]! - fields[4]!, total];
}

const cores = Number(execFileSync("nproc", { encoding: "utf8" }).trim()) || 1;

/** The server's claim histograms (GET /metrics, admin token); undefined when they could not be read. */
async function claimMetrics(baseUrl: string, token: string): Promise<{ batch: Histogram; statement: Histogram } | undefined> {
  const text = await fetch(`${baseUrl}/metrics`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
    .then((r) => (r.ok ? r.text() : ""), () => "");
  const histogram = (name: string): Histogram | undefined => {
    const sum = text.match(new RegExp(`^${name}_sum(?:\\{\\})? (\\S+)`, "m"))?.[1];
    const count = text.match(new RegExp(`^${name}_count(?:\\{\\})? (\\S+)`, "m"))?.[1];
    if (sum === undefined || count === undefined) return undefined;
    const buckets: Record<string, number> = {};
    for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)`, "gm"))) buckets[m[1]!] = Number(m[2]);
    return { sum: Number(sum), count: Number(count), buckets };
  };
  const batch = histogram("aqm_claim_batch_size");
  const statement = histogram("aqm_claim_statement_seconds");
  return batch && statement ? { batch, statement } : undefined;
}

const minus = (a: Histogram, b: Histogram): Histogram => ({
  sum: a.sum - b.sum, count: a.count - b.count,
  buckets: Object.fromEntries(Object.entries(a.buckets).map(([le, n]) => [le, n - (b.buckets[le] ?? 0)])),
});

/** Dead tuples, autovacuum and autoanalyze runs of the coin table so far (Citus: summed over its shards on the workers). */
async function coinTable(t: Target): Promise<{ deadTuples: number; autovacuums: number; autoanalyzes: number; mb: number | null } | null> {
  const query = `SELECT coalesce(sum(n_dead_tup), 0) || ',' || coalesce(sum(autovacuum_count), 0) || ',' || coalesce(sum(autoanalyze_count), 0)
    FROM pg_stat_user_tables WHERE relname ${t.shards === null ? "= 'coin_inventory'" : "LIKE 'coin\\_inventory\\_%'"}`;
  try {
    const results = t.shards === null
      ? [(await t.sql.unsafe<{ r: string }[]>(`SELECT (${query}) AS r`))[0]!.r]
      : (await t.sql.unsafe<{ r: string }[]>(`SELECT result AS r FROM run_command_on_workers($q$${query}$q$)`)).map((x) => x.r);
    const sums = results.map((r) => r.split(",").map(Number)).reduce((a, x) => a.map((v, i) => v + x[i]!), [0, 0, 0]);
    const size = t.shards === null ? "pg_total_relation_size('coin_inventory')" : "citus_total_relation_size('coin_inventory')";
    const [bytes] = await t.sql.unsafe<{ b: string }[]>(`SELECT ${size}::text AS b`).catch(() => [undefined]);
    const mb = bytes ? Math.round(Number(bytes.b) / 2 ** 20) : null;
    return sums.some((x) => !Number.isFinite(x)) ? null : { deadTuples: sums[0]!, autovacuums: sums[1]!, autoanalyzes: sums[2]!, mb };
  } catch {
    return null;
  }
}

/** Citus: clears pg_dist_transaction of finished two-phase commits; then its count is what came since. */
async function twoPhaseMark(t: Target): Promise<void> {
  if (t.shards !== null) await t.sql`SELECT recover_prepared_transactions()`;
}
async function twoPhaseCount(t: Target): Promise<number | null> {
  if (t.shards === null) return null;
  return (await t.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_dist_transaction`)[0]!.n;
}

interface Bench {
  options: CitusBenchOptions;
  nodes: NodeSql;
  cluster: CitusCluster;
  pop: Population;
  adminToken: string;
  rows: CitusRow[];
}

/** One segment of `t`, with the CPU of the server and of every node, the waits on the coordinator, and on claims the server's batches. */
async function measure(b: Bench, t: Target, phase: string, job: () => Promise<Stats>, label = ""): Promise<CitusRow> {
  const isClaim = phase.startsWith("claim");
  const { cluster } = b;
  await twoPhaseMark(t);
  const table0 = await coinTable(t); // (on Citus it opens a connection to each worker: before the sessions are read)
  const sessions0 = await sessions(b.nodes, t.database);
  const blocks0 = await blocks(b.nodes, t.database);
  const before = isClaim ? await claimMetrics(t.server.baseUrl, b.adminToken) : undefined;
  const coordinator = startMonitor(t.server.pid, pidOf(cluster.coordinator));
  const workers = cluster.workers.map((w) => startMonitor(undefined, pidOf(w)));
  const waits = startWaitSampler(t.sql);
  const [busy0, total0] = machineTicks();
  const duplicatesBefore = t.ledger.duplicates;
  const stats = await job();
  const [busy1, total1] = machineTicks();
  const usage: ResourceUsage[] = [coordinator.stop(), ...workers.map((w) => w.stop())];
  const active = await waits.stop();
  const after = isClaim ? await claimMetrics(t.server.baseUrl, b.adminToken) : undefined;
  const twoPhase = await twoPhaseCount(t);
  const sessions1 = await sessions(b.nodes, t.database);
  const blocks1 = await blocks(b.nodes, t.database);
  const table1 = await coinTable(t);
  const names = ["coordinator", ...cluster.workers.map((w) => w.name)];
  const nodes: NodeCpu[] = usage.map((u, i) => ({ node: names[i]!, cpuPct: u.pgCpuPct, cpuS: u.pgCpuS, backendsS: u.pgCpuByKindS?.backends }));
  const machineCpuPct = round(((busy1 - busy0) / Math.max(1, total1 - total0)) * cores * 100, 1);
  const ours = (usage[0]!.serverCpuPct ?? 0) + nodes.reduce((a, n) => a + (n.cpuPct ?? 0), 0) + usage[0]!.benchCpuPct;
  const row: CitusRow = {
    config: t.config, phase, mode: `closed c=${b.options.base.concurrency}${label}`, ...stats, ...active, nodes,
    serverCpuPct: usage[0]!.serverCpuPct, serverRssMb: usage[0]!.serverRssMb, serverCpuS: usage[0]!.serverCpuS,
    benchCpuPct: usage[0]!.benchCpuPct, machineCpuPct, otherCpuPct: round(Math.max(0, machineCpuPct - ours), 1), perUnitUs: {},
    coinTable: table0 && table1
      ? { deadTuples: table1.deadTuples, autovacuums: table1.autovacuums - table0.autovacuums, autoanalyzes: table1.autoanalyzes - table0.autoanalyzes, mb: table1.mb } : null,
    blocks: blocks0 && blocks1 ? (({ read, hit }) => ({ read, hit, hitPct: round((hit / Math.max(1, read + hit)) * 100, 2) }))({ read: blocks1.read - blocks0.read, hit: blocks1.hit - blocks0.hit }) : null,
    sessionsOpened: Object.fromEntries(Object.entries(sessions1).map(([node, n]) => [node, n === null || sessions0[node] == null ? null : n - sessions0[node]!])),
  };
  const served = isClaim ? stats.requests - stats.errors : stats.coins;
  const per = (s: number | undefined, n: number) => (s === undefined || n <= 0 ? undefined : round((s * 1e6) / n, 1));
  const sum = (xs: (number | undefined)[]) => (xs.some((x) => x === undefined) ? undefined : xs.reduce((a: number, x) => a + x!, 0));
  const workerS = sum(nodes.slice(1).map((n) => n.cpuS));
  const workerBackendsS = sum(nodes.slice(1).map((n) => n.backendsS));
  row.perUnitUs = {
    server: per(row.serverCpuS, served), coordinator: per(nodes[0]!.cpuS, served), coordinatorBackends: per(nodes[0]!.backendsS, served),
    workers: per(workerS, served), workersBackends: per(workerBackendsS, served),
  };
  if (isClaim) {
    row.duplicates = t.ledger.duplicates - duplicatesBefore;
    row.batches = before && after ? minus(after.batch, before.batch) : null;
    const statements = row.batches?.count ?? 0;
    row.claimsPerStatement = row.batches && statements > 0 ? round(row.batches.sum / statements) : null;
    const statement = before && after ? minus(after.statement, before.statement) : undefined;
    row.statementMs = statement && statement.count > 0 ? round((statement.sum / statement.count) * 1000, 2) : null;
    row.twoPhaseCommits = twoPhase;
    if (statements > 0) {
      row.perStatementUs = {
        coordinator: per(nodes[0]!.cpuS, statements), coordinatorBackends: per(nodes[0]!.backendsS, statements),
        workers: per(workerS, statements), workersBackends: per(workerBackendsS, statements),
      };
    }
  } else row.twoPhaseCommits = twoPhase;
  b.rows.push(row);
  log(`${at()}  ${t.config.padEnd(9)} ${(phase + label).padEnd(17)} ${num(row.reqPerS).padStart(7)} req/s ${num(row.coinsPerS).padStart(7)} coins/s  p50 ${ms(row.p50)} p99 ${ms(row.p99)} ms  `
    + `${row.errors} errors${isClaim ? `  ${num(row.claimsPerStatement, 2)} claims/stmt` : ""}  2PC ${num(row.twoPhaseCommits)}  `
    + `coins ${num(row.coinTable?.mb)} MB, dead ${num(row.coinTable?.deadTuples)} autovac ${num(row.coinTable?.autovacuums)} autoanalyze ${num(row.coinTable?.autoanalyzes)}, buffer hits ${num(row.blocks?.hitPct, 2)} %  `
    + `sessions ${Object.entries(row.sessionsOpened ?? {}).map(([n, x]) => `${n} ${num(x)}`).join(" ")}  CPU % srv ${num(row.serverCpuPct)} ${nodes.map((n) => `${n.node} ${num(n.cpuPct)}`).join(" ")} gen ${num(row.benchCpuPct)} machine ${num(machineCpuPct)} other ${num(row.otherCpuPct)}`);
  return row;
}

/** `n` requests of `job` on `concurrency` workers, unmeasured (the stock of the claims); throws on a failed one. */
async function runTimes(job: Job, n: number, concurrency: number): Promise<void> {
  let next = 0;
  const failures: string[] = [];
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n && failures.length === 0) {
      next++;
      const outcome = await job();
      if (!outcome.ok) failures.push(outcome.error ?? "unknown");
    }
  }));
  if (failures.length) throw new Error(`an upload of the stock failed: ${failures[0]}`);
}

/** The fewest available coins of any (target, tier): 0 when a pair has none. */
async function minStock(t: Target, targets: string[]): Promise<number> {
  const rows = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM coin_inventory WHERE user_id = ANY(${targets}::uuid[]) AND fetched_at IS NULL GROUP BY user_id, coin_category`;
  return rows.length < targets.length * tiers.length ? 0 : Math.min(...rows.map((r) => r.n));
}

/** Uploads through the API (unmeasured) until every (target, tier) has `perGroup` coins: one 100-coin upload holds 33–34 of each tier. */
async function stock(b: Bench, t: Target, perGroup: number): Promise<void> {
  const { targets } = b.pop;
  for (let have = await minStock(t, targets); have < perGroup; have = await minStock(t, targets)) {
    const perUser = Math.ceil((perGroup - have) / Math.floor(uploadBatchSize / tiers.length));
    const started = performance.now();
    await runTimes(t.upload, perUser * targets.length, b.options.base.concurrency);
    log(`${at()}  ${t.config.padEnd(9)} stocked: ${perUser * targets.length} uploads of ${uploadBatchSize} (from ${have} to ≥ ${perGroup} per target and tier) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
}

async function uploads(b: Bench, t: Target): Promise<void> {
  const { concurrency, warmupS, durationS } = b.options.base;
  await closedLoop(t.upload, concurrency, warmupS);
  await measure(b, t, "upload", () => closedLoop(t.upload, concurrency, durationS));
}

async function claims(b: Bench, t: Target, label: string): Promise<void> {
  const { concurrency, warmupS, durationS } = b.options.base;
  const job = httpClaim(t.server.baseUrl, b.pop, tiers, 1, t.ledger);
  const groups = b.pop.targets.length * tiers.length;
  await stock(b, t, 20);
  const warm = await closedLoop(job, concurrency, warmupS);
  // as bench/phases.ts: twice the warm-up's rate, plus 30 %
  await stock(b, t, perGroupFor(warm.reqPerS * 2 * durationS, groups));
  const row = await measure(b, t, "claim count=1", () => closedLoop(job, concurrency, durationS), label);
  if (row.short > 0) log(`        ${t.config}: ${row.short} claims got no coin (the stock ran dry): the rate is not a measure`);
}

// ---------------------------------------------------------------------------------------------
// the anatomy of one claim statement

interface Timing {
  /** Median ms over the samples. */
  planningMs: number | null;
  executionMs: number | null;
  /** Citus: the worker's part of the one task (the statement as the coordinator sent it). */
  workerPlanningMs: number | null;
  workerExecutionMs: number | null;
}

interface Anatomy {
  config: string;
  claims: number;
  samples: number;
  /** Citus: the "ensure rows" statement sent before each claim (quota rows of the batch's pairs). */
  ensure: Timing | null;
  claim: Timing;
  /** The server's statements are prepared: did PostgreSQL (on Citus: the coordinator) plan each execution again? */
  preparedPlans?: { generic: number; custom: number } | null;
  /** Sessions opened to the database on each node per sample (one transaction: ensure rows, claim, rollback). */
  sessionsPerSample?: Record<string, number | null>;
}

const median = (xs: number[]) => (xs.length === 0 ? null : round(percentile(Float64Array.from(xs).sort(), 50), 3));

/** Top-level and task-level "Planning Time" / "Execution Time" of an EXPLAIN ANALYZE (text format). */
function timesOf(lines: string[]): { plan?: number; exec?: number; taskPlan?: number; taskExec?: number } {
  const out: { plan?: number; exec?: number; taskPlan?: number; taskExec?: number } = {};
  for (const line of lines) {
    const m = /^(\s*)(Planning|Execution) Time: ([\d.]+) ms/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (m[1] === "") out[m[2] === "Planning" ? "plan" : "exec"] = value;
    else out[m[2] === "Planning" ? "taskPlan" : "taskExec"] = value;
  }
  return out;
}

/** Captures the text and parameters claimQuery would send, instead of sending them. */
const capture = { unsafe: (text: string, params: unknown[]) => ({ text, params }) } as unknown as Sql;

const bronzeOne: TierCounts = [0, 0, 1];
/** `n` fetch-style claims (1 BRONZE, quota on, fresh pairs) over `targets`, in turn. */
const claimItems = (targets: string[], n: number): ClaimItem[] => Array.from({ length: n }, (_, i) => ({
  target: targets[i % targets.length]!, requester: randomUUID(), want: bronzeOne, fallback: false, lastResort: false, final: true,
  pair: randomUUID(), pairPrev: null, ref: null, refPrev: null, body: null, ...deviceOne,
}));

/** Where a statement is sent: a config's database on the coordinator, or (MX) on a worker. */
interface Via {
  /** "single", "citus", "citus via worker1 (MX)", … */
  label: string;
  /** The database's name (the same on every node). */
  database: string;
  url: string;
  sql: Sql;
  routed: boolean;
}

async function anatomy(b: Bench, via: Via, targets: string[], batch: number): Promise<Anatomy> {
  const samples = b.options.base.quick ? 10 : 30;
  const warm = 3;
  const { routed } = via;
  const ensureT: { plan: number[]; exec: number[]; taskPlan: number[]; taskExec: number[] } = { plan: [], exec: [], taskPlan: [], taskExec: [] };
  const claimT: typeof ensureT = { plan: [], exec: [], taskPlan: [], taskExec: [] };
  const add = (into: typeof ensureT, rows: { "QUERY PLAN": string }[]) => {
    const x = timesOf(rows.map((r) => r["QUERY PLAN"]));
    if (x.plan !== undefined) into.plan.push(x.plan);
    if (x.exec !== undefined) into.exec.push(x.exec);
    if (x.taskPlan !== undefined) into.taskPlan.push(x.taskPlan);
    if (x.taskExec !== undefined) into.taskExec.push(x.taskExec);
  };
  const explain = "EXPLAIN (ANALYZE, SUMMARY, COSTS OFF, TIMING OFF) ";
  for (let i = 0; i < warm + samples; i++) {
    const items = claimItems(targets, batch);
    const claim = claimQuery(capture, items, pairQuota, true, routed) as unknown as { text: string; params: unknown[] };
    const ensure = routed ? ensureParams(items, true) : null;
    await via.sql.begin(async (tx) => {
      const keep = i >= warm;
      if (ensure) {
        const rows = await tx.unsafe<{ "QUERY PLAN": string }[]>(explain + ensure.text, ensure.params as never[]);
        if (keep) add(ensureT, rows);
      }
      const rows = await tx.unsafe<{ "QUERY PLAN": string }[]>(explain + claim.text, claim.params as never[]);
      if (keep) add(claimT, rows);
      throw new RollBack();
    }).catch((error) => {
      if (!(error instanceof RollBack)) throw error;
    });
  }
  const timing = (x: typeof ensureT): Timing => ({
    planningMs: median(x.plan), executionMs: median(x.exec), workerPlanningMs: median(x.taskPlan), workerExecutionMs: median(x.taskExec),
  });
  return { config: via.label, claims: batch, samples, ensure: routed ? timing(ensureT) : null, claim: timing(claimT) };
}

class RollBack extends Error {}

/** Claims per statement of the prepared-plan check: a mix like the servers' (mostly small batches, some large). */
const planMix = [1, 1, 1, 2, 4, 8, 1, 2, 1, 4, 8, 1];

/**
 * The server's claims are prepared statements: 24 executions of the prepared claim on one
 * connection (real claims, committed), batch sizes as in planMix, then pg_prepared_statements
 * says how often PostgreSQL (on Citus: the coordinator, or the worker with MX) used its generic
 * plan and how often it planned the statement again (custom plan; the first 5 always are).
 */
async function preparedPlans(via: Via, targets: string[]): Promise<{ generic: number; custom: number } | null> {
  const one = postgres(via.url, { max: 1, onnotice: () => {} }) as unknown as Sql;
  const { routed } = via;
  try {
    for (let i = 0; i < 24; i++) {
      const items = claimItems(targets, planMix[i % planMix.length]!);
      if (routed) {
        const ensure = ensureParams(items, true)!;
        await one.unsafe(ensure.text, ensure.params as never[], { prepare: true });
      }
      await claimQuery(one, items, pairQuota, true, routed);
    }
    const rows = await one<{ generic: number; custom: number }[]>`
      SELECT generic_plans::int AS generic, custom_plans::int AS custom FROM pg_prepared_statements
      WHERE statement LIKE '%grant_ AS%' ORDER BY generic_plans + custom_plans DESC LIMIT 1`;
    return rows[0] ?? null;
  } finally {
    await one.end({ timeout: 1 });
  }
}

/** The most targets that share one shard of `t`'s coin table. */
async function sameShard(t: Target, targets: string[]): Promise<string[]> {
  const rows = await t.sql<{ id: string; min: number; max: number }[]>`
    SELECT shardid::text AS id, shardminvalue::int AS min, shardmaxvalue::int AS max FROM pg_dist_shard
    WHERE logicalrelid = 'coin_inventory'::regclass ORDER BY shardminvalue::int`;
  const map = new ShardMap(rows);
  const byShard = new Map<string, string[]>();
  for (const target of targets) byShard.set(map.of(target), [...(byShard.get(map.of(target)) ?? []), target]);
  return [...byShard.values()].sort((x, y) => y.length - x.length)[0]!;
}

// ---------------------------------------------------------------------------------------------
// report

function formatRows(rows: CitusRow[]): string {
  const head = ["config", "phase", "mode", "req/s", "coins/s", "claims/stmt", "stmt ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "dups", "2PC",
    "srv CPU %", "coord CPU %", "workers CPU %", "gen CPU %", "machine CPU %", "other CPU %",
    "srv µs/unit", "coord µs/unit", "workers µs/unit", "coord µs/stmt", "workers µs/stmt", "coord active: top wait"];
  return markdownTable(head, rows.map((r) => [
    r.config, r.phase, r.mode, num(r.reqPerS), num(r.coinsPerS), num(r.claimsPerStatement, 2), num(r.statementMs, 2), ms(r.p50), ms(r.p95), ms(r.p99), ms(r.max),
    num(r.errors), num(r.duplicates), num(r.twoPhaseCommits),
    num(r.serverCpuPct), num(r.nodes[0]?.cpuPct), num(r.nodes.slice(1).reduce((a, n) => a + (n.cpuPct ?? 0), 0)), num(r.benchCpuPct), num(r.machineCpuPct), num(r.otherCpuPct),
    num(r.perUnitUs.server), num(r.perUnitUs.coordinator), num(r.perUnitUs.workers), num(r.perStatementUs?.coordinator), num(r.perStatementUs?.workers), describeActive(r),
  ]), 3);
}

/** "1: 61 %, 2: 27 %, …": the share of statements of each size (between the histogram's bounds). */
function formatBatches(h: Histogram | null | undefined): string {
  if (!h || h.count === 0) return "n/a";
  const bounds = Object.keys(h.buckets).filter((le) => le !== "+Inf").map(Number).sort((a, b) => a - b);
  const parts: string[] = [];
  let below = 0;
  let lower = 0;
  for (const le of bounds) {
    const n = h.buckets[String(le)]! - below;
    below = h.buckets[String(le)]!;
    if (n > 0) parts.push(`${lower + 1 === le ? le : `${lower + 1}–${le}`}: ${round((n / h.count) * 100, 1)} %`);
    lower = le;
  }
  return parts.join(", ");
}

function formatAnatomy(list: Anatomy[]): string {
  const head = ["config", "claims/stmt", "samples", "ensure: coord plan ms", "ensure: coord exec ms", "ensure: worker plan ms", "ensure: worker exec ms",
    "claim: coord plan ms", "claim: coord exec ms", "claim: worker plan ms", "claim: worker exec ms", "prepared: generic/custom plans", "sessions opened per sample"];
  const cell = (x: number | null | undefined) => (x === null || x === undefined ? "n/a" : num(x, 3));
  return markdownTable(head, list.map((a) => [
    a.config, String(a.claims), String(a.samples), cell(a.ensure?.planningMs), cell(a.ensure?.executionMs), cell(a.ensure?.workerPlanningMs), cell(a.ensure?.workerExecutionMs),
    cell(a.claim.planningMs), cell(a.claim.executionMs), cell(a.claim.workerPlanningMs), cell(a.claim.workerExecutionMs),
    a.preparedPlans ? `${a.preparedPlans.generic}/${a.preparedPlans.custom}` : "n/a",
    Object.entries(a.sessionsPerSample ?? {}).map(([node, n]) => `${node} ${num(n, 2)}`).join(", ") || "n/a",
  ]), 1);
}

const notes = {
  configs: "single: database `single` on the coordinator's PostgreSQL, without the citus extension (one PostgreSQL: plain tables); "
    + "citus: the cluster's database `aqm` (citus, 2 workers), the tables distributed by owner by the server's migrations (32 shards: Citus's default); "
    + "citus/<n>: a Citus database of its own with n shards. All on this machine, one PostgreSQL 15 per node, the harness's settings (tests/citus/cluster.ts: fsync and "
    + "full_page_writes off, synchronous_commit on since 2026-12-05, off before), sharing the 2 cores with the servers and the load generator",
  servers: "one per config, bun src/index.ts, the deployed configuration (bench/stack.ts `default`: AQM_RATE_LIMITS=on, the pair quota on, only the per-user token buckets widened), AQM_LOG=off, AQM_CRON=off",
  upload: "POST /v1/coins/upload, 100 coins per request, tiers mixed (34 GOLD, 33 SILVER, 33 BRONZE), fresh key ids, each target uploads its own; coins/s counts the coins inserted",
  claims: "GET /v1/coins/fetch count=1, targets round robin over the users and the 3 tiers, requesters at random, each with its own token",
  claimsPerStatement: "the server's aqm_claim_batch_size histogram over the segment (sum ÷ count); on Citus a statement holds one shard's owners; batches: its difference over the segment, cumulative counts by upper bound",
  statementMs: "mean of aqm_claim_statement_seconds over the segment: on Citus the ensure-rows statement and the claim statement (and the gate wait before them)",
  twoPhaseCommits: "Citus only: rows of pg_dist_transaction after the segment, recover_prepared_transactions() run before it; citus.recover_2pc_interval = -1 on the coordinator so the maintenance daemon does not clear them meanwhile",
  coinTable: "pg_stat_user_tables of coin_inventory (Citus: summed over its shards on the workers, through run_command_on_workers): n_dead_tup at the end of the segment, autovacuum_count and autoanalyze_count in it; mb: its total size with indexes and TOAST at the end (Citus: citus_total_relation_size, all shards)",
  blocks: "pg_stat_database blks_read (read into shared buffers, from the OS page cache or the disk) and blks_hit of the config's database, all nodes, difference over the segment; shared_buffers is 128 MB on every node (the harness leaves PostgreSQL's default)",
  sessionsOpened: "pg_stat_database.sessions of the config's database on each node, difference over the segment (0: no connection opened; Citus reused its cached connections to the workers)",
  cpu: "from /proc over the segment: the server process; each node's postmaster and its whole process tree (single: the coordinator's PostgreSQL serves database single); backends: client backends only; "
    + "machine: all busy CPU of the machine; other: machine minus everything measured (other jobs on the shared machine, the other configs' idle servers). % of one core (200 = both cores)",
  perUnitUs: "CPU µs per claim served (claim rows) or per coin inserted (upload rows); per statement: ÷ the claim batches of the segment (on Citus each batch is 2 statements through the coordinator: ensure rows + claim)",
  anatomy: "EXPLAIN (ANALYZE, SUMMARY, TIMING OFF) of the ensure-rows statement and of the server's claim statement (claimQuery, quota on, routed on Citus) for n claims of 1 BRONZE coin over targets of one shard, "
    + "in a transaction rolled back; medians. coord: the top level (on single: the one PostgreSQL; via <worker> (MX): that worker, which plans the distributed statement itself); worker: the task Citus sent (via the worker holding the shard: executed locally). On Citus, coord exec is not the production path's time: an EXPLAIN ANALYZE'd task runs on the worker through worker_save_query_explain_analyze() and its plan is fetched in a further round trip; the planning times are the production path's. Sessions opened per sample: new connections to that database on each node (0: Citus reused its cached connections). Unprepared (EXPLAIN plans every time); preparedPlans: 24 executions of the prepared claim on one connection (1 to 8 claims each, mostly small, as the servers send them; committed), "
    + "pg_prepared_statements' generic_plans/custom_plans (custom = planned again at that execution; PostgreSQL always plans the first 5)",
};

// ---------------------------------------------------------------------------------------------
// main

async function main(options: CitusBenchOptions, startedAt: Date, setCluster: (c: CitusCluster) => void): Promise<void> {
  const { base } = options;
  const cluster = await startCitusCluster({ workers: 2, log: (line) => log(`${at()}  cluster: ${line}`) });
  setCluster(cluster);
  // pg_dist_transaction keeps every two-phase commit until recovered: the counts per segment stay exact
  await run(cluster.url, ["ALTER SYSTEM SET citus.recover_2pc_interval = -1", "SELECT pg_reload_conf()"]);
  await run(cluster.url, ["CREATE DATABASE single"]);
  const databases: { config: string; database: string; url: string; shards: number | null }[] = [
    { config: "single", database: "single", url: dbUrl(cluster.url, "single"), shards: null },
  ];
  for (const [i, shards] of options.shards.entries()) {
    const database = i === 0 ? "aqm" : `aqm_${shards}`;
    databases.push({ config: i === 0 ? "citus" : `citus/${shards}`, database, url: await citusDatabase(cluster, database, shards), shards });
  }
  const secret = randomBytes(36).toString("base64url"); // 48 characters, as bench/stack.ts
  const servers = await Promise.all(databases.map((d) => startServer(d.url, secret, base.pool, "default")));
  log(`${at()}  servers up (migrated): ${databases.map((d, i) => `${d.config} ${servers[i]!.baseUrl}`).join(", ")}`);

  const targets = Array.from({ length: base.users }, () => randomUUID());
  const requesters = Array.from({ length: base.requesters }, () => randomUUID());
  const pop: Population = { targets, requesters, tokens: await signTokens(secret, [...targets, ...requesters], 6 * 3600) };
  const adminToken = await signToken(new TextEncoder().encode(secret), randomUUID(), { admin: true, ttlSeconds: 6 * 3600 });
  const nodes: NodeSql = [cluster.coordinator, ...cluster.workers].map((node) => ({
    node: node.name, sql: postgres(dbUrl(cluster.nodeUrl(node.name), "postgres"), { max: 1, onnotice: () => {}, connection: { application_name: "aqm-bench" } }) as unknown as Sql,
  }));
  const b: Bench = { options, nodes, cluster, pop, adminToken, rows: [] };
  const list: Target[] = databases.map((d, i) => ({
    ...d, server: servers[i]!, ledger: new ClaimLedger(), upload: httpUpload(servers[i]!.baseUrl, pop),
    sql: postgres(d.url, { max: 2, onnotice: () => {}, connection: { application_name: "aqm-bench" } }) as unknown as Sql,
  }));
  const extra: Sql[] = [];
  const loadAtStart = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number);
  try {
    const machine = { ...(await machineInfo(list[0]!.sql, base)), database: "a Citus test cluster (tests/citus/cluster.ts) on this machine" };
    const placements: Record<string, Record<string, number>> = {};
    for (const t of list.filter((x) => x.shards !== null)) {
      const rows = await t.sql<{ node: string; n: number }[]>`
        SELECT nodename || ':' || nodeport AS node, count(*)::int AS n FROM citus_shards WHERE table_name = 'coin_inventory'::regclass GROUP BY 1 ORDER BY 1`;
      placements[t.config] = Object.fromEntries(rows.map((r) => [r.node, r.n]));
    }
    const [citusVersion] = await list[1]!.sql<{ v: string }[]>`SELECT extversion AS v FROM pg_extension WHERE extname = 'citus'`;

    // configurations in turn, and the claims twice (once with --quick): a shared machine's load moves between segments
    for (const t of list) await uploads(b, t);
    const rounds = base.quick ? 1 : 2;
    for (let n = 1; n <= rounds; n++) for (const t of list) await claims(b, t, rounds > 1 ? ` #${n}` : "");

    // the anatomy: at 1 claim and at 8 claims per statement, over the targets of one shard (single:
    // those of the first Citus database); for the first Citus database also sent to the worker that
    // holds that shard (Citus MX: the worker plans the distributed statement and executes it locally)
    const first = list.find((t) => t.shards !== null)!;
    const anatomies: Anatomy[] = [];
    const vias: { via: Via; targets: string[] }[] = [];
    for (const t of list) {
      const own = await sameShard(t.shards === null ? first : t, targets);
      vias.push({ via: { label: t.config, database: t.database, url: t.url, sql: t.sql, routed: t.shards !== null }, targets: own });
      if (t === first) {
        const [holder] = await t.sql<{ port: number }[]>`
          SELECT nodeport AS port FROM citus_shards WHERE shardid = get_shard_id_for_distribution_column('coin_inventory', ${own[0]!}::uuid)`;
        const worker = cluster.workers.find((w) => w.port === holder!.port)!;
        const url = dbUrl(cluster.nodeUrl(worker.name), t.database);
        const sql = postgres(url, { max: 2, onnotice: () => {}, connection: { application_name: "aqm-bench" } }) as unknown as Sql;
        extra.push(sql);
        vias.push({ via: { label: `${t.config} via ${worker.name} (MX)`, database: t.database, url, sql, routed: true }, targets: own });
      }
    }
    for (const { via, targets: own } of vias) {
      for (const batch of [1, 8]) {
        const before = await sessions(b.nodes, via.database);
        const a = await anatomy(b, via, own, batch);
        const after = await sessions(b.nodes, via.database);
        a.sessionsPerSample = Object.fromEntries(Object.entries(after).map(([node, n]) =>
          [node, n === null || before[node] == null ? null : round((n - before[node]!) / (a.samples + 3), 2)]));
        if (batch === 1) a.preparedPlans = await preparedPlans(via, own);
        anatomies.push(a);
        log(`${at()}  ${via.label}: anatomy, ${batch} claim(s): claim plan ${num(a.claim.planningMs, 3)} exec ${num(a.claim.executionMs, 3)} ms`
          + `; sessions/sample ${Object.entries(a.sessionsPerSample ?? {}).map(([node, n]) => `${node} ${num(n, 2)}`).join(" ")}`
          + (a.ensure ? `; task plan ${num(a.claim.workerPlanningMs, 3)} exec ${num(a.claim.workerExecutionMs, 3)} ms; ensure plan ${num(a.ensure.planningMs, 3)} exec ${num(a.ensure.executionMs, 3)} ms` : ""));
      }
    }

    const wallTimeS = Math.round((performance.now() - began) / 1000);
    const git = (args: string[]) => {
      try {
        return execFileSync("git", args, { cwd: import.meta.dir, encoding: "utf8" }).trim();
      } catch {
        return null;
      }
    };
    const result = {
      started_at: startedAt.toISOString(), wall_time_s: wallTimeS,
      machine: { ...machine, citus_extversion: citusVersion?.v ?? null, load_average_at_start: loadAtStart },
      code: { commit: git(["rev-parse", "HEAD"]), uncommitted_in_src: git(["status", "--porcelain", "--", "../src"])?.split("\n").filter(Boolean) ?? null },
      settings: {
        run: base.quick ? "quick" : "full", pool: base.pool, concurrency: base.concurrency, duration_s: base.durationS, warmup_s: base.warmupS,
        users: base.users, requesters: base.requesters, pair_quota: pairQuota, claim_statements_in_flight: statementsInFlight(base.pool),
        shards: options.shards, workers: cluster.workers.length, shard_placements: placements,
      },
      notes, rows: b.rows, anatomy: anatomies,
    };
    const files = writeResults(result, "", "-citus", startedAt, options.base.save, false);
    const batchLines = b.rows.filter((r) => r.phase.startsWith("claim")).map((r) =>
      `  ${r.config} claim count=1, ${r.mode}: ${num(r.batches?.count)} statements, ${num(r.claimsPerStatement, 2)} claims each on average; by size: ${formatBatches(r.batches)}`);
    console.log(`\n${formatRows(b.rows)}\n\nClaims per statement (the server's aqm_claim_batch_size over the segment; on Citus one shard's owners per statement):\n${batchLines.join("\n")}`
      + `\n\nOne claim statement (EXPLAIN ANALYZE, rolled back; medians; ms):\n${formatAnatomy(anatomies)}`
      + `\n\nsingle: database single on the coordinator's PostgreSQL (no citus); citus: database aqm, ${cluster.workers.length} workers, ${options.shards[0]} shards${options.shards.length > 1 ? `; citus/<n>: n shards` : ""}. `
      + `Same machine (${cores} cores), same PostgreSQL ${machine.postgresql} binaries and settings (fsync and full_page_writes off, synchronous_commit on).`
      + `\n2PC: two-phase commits the coordinator recorded in the segment (n/a: not Citus). µs/unit: per claim (claim rows) or per coin (upload rows). µs/stmt: per claim batch.`
      + `\n\nwall time ${wallTimeS} s; wrote ${files.join(", ")}`);
  } finally {
    await Promise.all([...list.map((t) => t.sql), ...extra, ...nodes.map((n) => n.sql)].map((sql) => sql.end({ timeout: 1 }).catch(() => {})));
  }
}

const options: CitusBenchOptions = cliOptions(parse, usage);

let cluster: CitusCluster | undefined;
let stopping: Promise<void> | undefined;
/** Servers first (they hold connections), then the cluster; once, whoever asks. */
const stopAll = () => (stopping ??= (async () => {
  await stopStack();
  await cluster?.stop().catch((error) => log(`stopping the cluster: ${String(error)}`));
})());
// Handlers of our own: the cluster harness then leaves SIGINT/SIGTERM to us (its exit hook still
// kills the postmasters should this process end otherwise).
let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`\n${sig}: stopping the servers and the cluster`);
    void stopAll().finally(() => process.exit(130));
  });
}
began = performance.now();
let status = 0;
try {
  await main(options, new Date(), (c) => (cluster = c));
} catch (error) {
  console.error(`bench:citus failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  if (cluster) console.error(cluster.logTail(15));
  status = 1;
} finally {
  await stopAll();
}
process.exit(status);
