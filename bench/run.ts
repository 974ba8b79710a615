// `bun run bench`: load test of the coin server; see bench/README.md.
import { join, relative } from "node:path";
import { cliOptions, parseOptions, phaseNames, usage, type Options } from "./args.ts";
import { latencyChart } from "./chart.ts";
import { closeBench, log, prepareBench, runPhases, type Bench } from "./phases.ts";
import { relaunchWithSocketLimits } from "./relaunch.ts";
import { compareToBaseline, regressionOf } from "./baseline.ts";
import { profileBySegment } from "./profile.ts";
import { formatOccupancy, occupancyOf } from "./occupancy.ts";
import { checkTargets, cpuPerUnitNote, formatCeilingRatios, formatTable, formatTargets, resultsDir, serverToCeiling, serverToSeed, stampOf, writeResults, type Row } from "./report.ts";
import { pairQuota, serverStatementsInFlight, statementsInFlight } from "./coalesced.ts";
import { formatSoak, runSoak } from "./soak.ts";
import { pin, pinPostgres } from "./pin.ts";
import { serverRuntime, startStack, stopStack, type ProfileTarget } from "./stack.ts";

function settingsOf(b: Bench) {
  const o = b.options;
  return {
    run: o.soakS ? "soak" : o.quick ? "quick" : "full",
    servers: o.url ? `${o.url} (${o.mode})`
      : "two, started by the bench (bun src/index.ts), log and cron off: default = rate limits and pair quota on (per-user buckets widened), off = AQM_RATE_LIMITS=off",
    pool: o.pool, concurrency: o.concurrency, duration_s: o.durationS, warmup_s: o.warmupS,
    open_loop_rates_pct: o.rateFractions.map((f) => f * 100), users: o.users, requesters: o.requesters, coins_per_user_tier: o.coinsPerTier,
    burst: o.burst, soak_s: o.soakS ?? null, only: o.only.length ? o.only : null, seed_random_bytes: b.randomSource, profile: o.profile,
    cpus: o.pin ? { postgres: o.pin.postgres, bench_and_servers: o.pin.rest } : "shared: PostgreSQL, the servers and the load generator on every CPU",
    server_runtime: o.url ? null : serverRuntime(),
    claim_statements_in_flight: serverStatementsInFlight(o.pool), batched_ceiling_statements_in_flight: statementsInFlight(o.pool), pair_quota: pairQuota,
  };
}

/** What an absent or null field means, kept in every result file. */
const notes = {
  absent_or_null: "not measured: serverRssMb/serverCpuPct on rows without a server process of the bench's own (seed, sql:*, sql, --url), pgCpuPct with --url, "
    + "pgActive when pg_stat_activity could not be read, claimsPerStatement when the server's /metrics could not be read, p50–max when no request succeeded",
  configs: "default / off: the servers over HTTP; seed: the seed baseline (one statement per claim, no HTTP); "
    + "sql:default / sql:off: the coalesced ceiling (the server's claim statement, B claims each, quota on / off, no HTTP); sql: the upload ceiling",
  ceiling_rows: "sql:* rows: reqPerS and coinsPerS count claims and coins, the latencies are per statement",
  cpu_per_unit: "serverCpuS / pgCpuS: CPU seconds over the segment from /proc (utime + stime at its start and end; PostgreSQL: the postmaster's whole process tree, "
    + "exited backends through cutime + cstime); serverUsPerClaim, pgUsPerClaim, serverUsPerCoin, pgUsPerCoin: those ÷ the claims served (requests − errors) or coins "
    + "claimed or uploaded; pgCpuByKindS splits pgCpuS by process (client backends, autovacuum workers, other background processes, processes that exited in the segment) and pgBackendUsPerClaim is its backends ÷ claims; absent: not measured (no pid: --url, or no server behind the row) or not applicable. pgCpuPct before 2026-12-04 09:00 sampled live backends only",
  regression: "default claims/s ÷ sql:default at B=16, ceil(pool / 2) statements at once (the batched ceiling), claim count=1: what --check compares with bench/results/baseline.json (same machine only)",
};

interface PhasesOutcome {
  /** Every target met. */
  met: boolean;
  /** No regression against bench/results/baseline.json (true when there is nothing to compare). */
  noRegression: boolean;
  rows: Row[];
}

async function phasesMode(b: Bench, startedAt: Date): Promise<PhasesOutcome> {
  const rows = await runPhases(b);
  const targets = checkTargets(rows, b.ledger.duplicates);
  const seedRatios = serverToSeed(rows);
  const ceilingRatios = serverToCeiling(rows);
  const occupancy = occupancyOf(rows, b.options.concurrency);
  const regression = regressionOf(ceilingRatios) ?? null;
  const comparison = compareToBaseline(regression ?? undefined, b.machine, b.options.profile);
  const wallTimeS = Math.round((performance.now() - b.started) / 1000);
  const { machine } = b;
  const only = b.options.only;
  // a run of some phases only never replaces latest.* (the last full run)
  const suffix = (b.options.quick ? "-quick" : "") + (only.length ? `-only-${phaseNames.filter((p) => only.includes(p)).join("-")}` : "")
    + (b.options.pin ? `-pin-${b.options.pin.postgres.replaceAll(",", "_")}` : "");
  const subtitle = `${machine.cores} cores, ${machine.cpu}; PostgreSQL ${machine.postgresql}; pool ${b.options.pool}, c=${b.options.concurrency}, ${b.options.durationS} s per segment`;
  const svg = latencyChart(`AQM coin server: throughput and latency per row (${startedAt.toISOString().slice(0, 16)}Z)`, subtitle, rows);
  const result = {
    started_at: startedAt.toISOString(), wall_time_s: wallTimeS, machine, settings: settingsOf(b),
    notes, duplicates_total: b.ledger.duplicates, server_to_seed_baseline: seedRatios, server_to_coalesced_ceiling: ceilingRatios, occupancy, regression,
    regression_vs_baseline: typeof comparison === "string" ? { checked: false, text: comparison } : { checked: true, ...comparison }, targets, rows,
  };
  const files = writeResults(result, svg, suffix, startedAt, b.options.save, only.length === 0 && !b.options.pin);
  const seedLine = Object.entries(seedRatios).map(([phase, r]) => `${phase} ${r}`).join(", ");
  const baselineLine = typeof comparison === "string" ? comparison : `${comparison.pass ? "✓" : "✗"} ${comparison.text}`;
  console.log(`\n${formatTable(rows)}\n\n${cpuPerUnitNote(rows, !!b.options.url)}\n\nServer ÷ seed baseline, claims/s (closed loops): ${seedLine}`
    + `\n\nServer ÷ coalesced ceiling of the same quota variant, claims/s (closed loops, same run):\n${formatCeilingRatios(ceilingRatios)}`
    + (occupancy.length ? `\n\nWhere a claim's time goes (Little's law: claims/s = claims inside a statement ÷ the time each spends there):\n${formatOccupancy(occupancy, b.options.concurrency)}` : "")
    + `\n\nTargets:\n${formatTargets(targets)}`
    + `\n\nRegression (vs bench/results/baseline.json):\n  ${baselineLine}\n\nwall time ${wallTimeS} s; wrote ${files.join(", ")}`);
  return { met: targets.every((t) => t.pass), noRegression: typeof comparison === "string" || comparison.pass, rows };
}

async function soakMode(b: Bench, startedAt: Date): Promise<void> {
  const soak = await runSoak(b);
  const wallTimeS = Math.round((performance.now() - b.started) / 1000);
  const { machine } = b;
  const svg = latencyChart(`AQM coin server soak: claims per minute (${startedAt.toISOString().slice(0, 16)}Z)`,
    `${soak.claimRate} claims/s + ${soak.uploadRate} uploads/s for ${b.options.soakS} s; ${machine.cores} cores, PostgreSQL ${machine.postgresql}`,
    soak.windows.map((w) => ({ config: "default" as const, phase: `minute ${w.minute}`, mode: "open", reqPerS: w.claimsPerS, p50: w.p50, p95: w.p95, p99: w.p99 })));
  const result = { started_at: startedAt.toISOString(), wall_time_s: wallTimeS, machine, settings: settingsOf(b), notes, ...soak, duplicates_total: b.ledger.duplicates };
  const files = writeResults(result, svg, "-soak", startedAt, b.options.save);
  console.log(`\n${formatSoak(soak.windows)}\n\nwall time ${wallTimeS} s; wrote ${files.join(", ")}`);
}

/** The profile the `default` server writes when it stops (--profile): next to the result file. */
function profileTarget(options: Options, startedAt: Date): ProfileTarget | undefined {
  if (!options.profile) return undefined;
  return { dir: resultsDir(options.save), name: `${stampOf(startedAt)}-default-cpu-profile` };
}

/** The phases' outcome (undefined in soak mode). */
async function main(options: Options, startedAt: Date): Promise<PhasesOutcome | undefined> {
  const started = performance.now();
  if (options.pin) pin(process.pid, options.pin.rest); // the servers and PostgreSQL inherit it; PostgreSQL is moved below
  const stack = await startStack(options, profileTarget(options, startedAt));
  if (options.pin) {
    pinPostgres(stack.postmasterPid!, options.pin.postgres);
    log(`pinned: PostgreSQL on CPU ${options.pin.postgres}, the bench and its servers on CPU ${options.pin.rest}`);
  }
  for (const [mode, server] of Object.entries(stack.servers)) log(`${options.url ? "target" : "started server"} ${mode}: ${server.baseUrl}`);
  const bench = await prepareBench(options, stack, started);
  try {
    if (options.soakS) {
      await soakMode(bench, startedAt);
      return undefined;
    }
    return await phasesMode(bench, startedAt);
  } finally {
    await closeBench(bench);
  }
}

await relaunchWithSocketLimits();
const options: Options = cliOptions(parseOptions, usage);
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    // Ctrl-C reaches this process twice: from the terminal and forwarded by the relaunching parent.
    if (interrupted) return;
    interrupted = true;
    log(`\n${signal}: stopping the server and PostgreSQL`);
    void stopStack().finally(() => process.exit(130));
  });
}
let status = 0;
const startedAt = new Date();
let outcome: PhasesOutcome | undefined;
try {
  outcome = await main(options, startedAt);
  if (outcome && !outcome.met && options.check) {
    console.error("bench: a target was missed (--check)");
    status = 3;
  }
  if (outcome && !outcome.noRegression && options.check) {
    console.error("bench: default ÷ its coalesced ceiling fell more than 15 % below bench/results/baseline.json (--check)");
    status = 3;
  }
} catch (error) {
  console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  status = 1;
} finally {
  await stopStack();
}
const profile = profileTarget(options, startedAt);
if (profile) {
  // the server wrote its profile as it stopped
  const base = relative(process.cwd(), join(profile.dir, profile.name));
  try {
    const cut = profileBySegment(base, outcome?.rows ?? []);
    if (!cut) console.error(`bench: the default server left no profile at ${base}.cpuprofile`);
    else {
      console.log(`\nCPU profile: ${base}.cpuprofile, ${base}.md (Bun's, the server's whole life), ${cut.file} (by segment)`);
      for (const seg of cut.segments.slice(0, 1)) {
        console.log(`  top of ${seg.segment} (${seg.samples} samples ≈ ${seg.sampledS} s of JavaScript; server CPU ${seg.serverCpuS ?? "n/a"} s):`);
        seg.top.forEach((e, i) => console.log(`  ${String(i + 1).padStart(2)}. ${e.selfPct.toFixed(1).padStart(5)} % self, ${e.totalPct.toFixed(1).padStart(5)} % total  ${e.function}  ${e.location}${e.calledFrom ? `  ← ${e.calledFrom}` : ""}`));
      }
    }
  } catch (error) {
    console.error(`bench: cannot read the CPU profile: ${String(error)}`);
  }
}
process.exit(status);
