/**
 * bun bench/ab.ts [--rounds N] [--seconds S] [--concurrency C] [--requesters N] [--save] <variant> <variant> [...]: settings compared
 * over HTTP in the deployed configuration (rate limits and pair quota on, the `default` server of
 * bench/stack.ts), one server per variant on one throw-away embedded PostgreSQL, **rounds
 * interleaved**: a round measures every variant once, one after the other, so the machine's noise
 * (the same configuration ran 2,200–3,800 claims/s within an hour on this VM) falls on all of
 * them alike, and the medians over rounds are compared. A variant is `NAME=VALUE[,NAME=VALUE…]`
 * of environment settings for its server (`-`: none), except `LOADGEN=wrk`, which drives that
 * variant's server with wrk (bench/wrk.ts) instead of the bench's own client: `- LOADGEN=wrk`
 * compares the load generators on two identical servers. Load: GET /v1/coins/fetch count=1, random
 * owner and tier, from 3,000 requesters (--requesters; the full bench's claim phases use 10,000), closed loop of
 * 32 connections (--concurrency; the bench's own client), the stock topped up and
 * vacuumed before each segment. Per segment: claims/s, p50/p99, the server's and PostgreSQL's CPU
 * per claim (/proc), claims per statement (/metrics). Writes bench/results[/local]/<stamp>-ab.json.
 *
 *   bun bench/ab.ts AQM_CLAIM_OVERLAP_MS=0 AQM_CLAIM_OVERLAP_MS=50 --rounds 6 --save
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import type { Sql } from "../src/db/pool.ts";
import { ClaimLedger, httpClaim, signTokens, type Population } from "./client.ts";
import { startBatchProbe } from "./coalesced.ts";
import { closedLoop, lowerMedian } from "./load.ts";
import { startMonitor } from "./monitor.ts";
import { writeResult } from "./report.ts";
import { randomBytesSql, tiers, topUp } from "./seed.ts";
import { startServer, stopStack } from "./stack.ts";
import { wrkClaims, wrkPath } from "./wrk.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(args.splice(i, 2)[1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} needs a positive number`);
  return value;
};
const rounds = option("--rounds", 4);
const seconds = option("--seconds", 8);
const concurrency = option("--concurrency", 32);
const requesterCount = option("--requesters", 3000);
const save = args.includes("--save");
const variants = args.filter((a) => a !== "--save");
if (variants.length < 2) {
  console.error("usage: bun bench/ab.ts [--rounds N] [--seconds S] [--concurrency C] [--requesters N] [--save] <NAME=VALUE[,…]|-> <NAME=VALUE[,…]|-> [...]");
  process.exit(2);
}
const settingsOf = (variant: string): Record<string, string> => variant === "-" ? {} : Object.fromEntries(variant.split(",").map((kv) => {
  const at = kv.indexOf("=");
  if (at < 1) throw new Error(`not NAME=VALUE: ${kv}`);
  return [kv.slice(0, at), kv.slice(at + 1)];
}));
/** The server's environment: the variant's settings but LOADGEN, which picks the load generator. */
const envOf = (variant: string) => Object.fromEntries(Object.entries(settingsOf(variant)).filter(([name]) => name !== "LOADGEN"));
const wrk = wrkPath();
const loadgenOf = (variant: string) => {
  const chosen = settingsOf(variant).LOADGEN ?? "bun";
  if (chosen !== "bun" && chosen !== "wrk") throw new Error(`LOADGEN must be bun or wrk, got ${chosen}`);
  if (chosen === "wrk" && !wrk) throw new Error("LOADGEN=wrk: wrk is not installed (apt-get install wrk)");
  return chosen;
};
for (const variant of variants) loadgenOf(variant);
const pool = 4;

const dataDir = mkdtempSync(join(tmpdir(), "aqm-ab-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const postmasterPid = Number(readFileSync(join(dataDir, "pg", "postmaster.pid"), "utf8").split("\n")[0]);
const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
interface Segment { variant: string; round: number; claimsPerS: number; p50: number; p99: number; errors: number; claimsPerStatement: number | null; statementsInFlight: number | null; queueMs: number | null; srvUsPerClaim: number | null; pgUsPerClaim: number | null; rssMb: number | null }
const segments: Segment[] = [];
let duplicates = 0;
try {
  const secret = randomBytes(36).toString("base64url");
  const servers: { variant: string; baseUrl: string; pid: number }[] = [];
  for (const variant of variants) {
    servers.push({ variant, ...(await startServer(pg.url, secret, pool, "default", undefined, envOf(variant))) }); // the first one migrates
  }
  const requesters = Array.from({ length: requesterCount }, () => randomUUID());
  const pop: Population = { targets: Array.from({ length: 200 }, () => randomUUID()), requesters, tokens: await signTokens(secret, requesters, 86_400) };
  const random = await randomBytesSql(admin as unknown as Sql, true);
  const ledger = new ClaimLedger();
  for (let round = 0; round < rounds; round++) {
    for (const server of servers) {
      await topUp(admin as unknown as Sql, random.expr, pop.targets, tiers, 200);
      await admin`VACUUM coin_inventory, claim_quota`;
      const job = httpClaim(server.baseUrl, pop, tiers, 1, ledger);
      await closedLoop(job, concurrency, 1); // warm
      const probe = await startBatchProbe(server.baseUrl, secret);
      const monitor = startMonitor(server.pid, postmasterPid);
      const stats = loadgenOf(server.variant) === "wrk"
        ? await wrkClaims(wrk!, server.baseUrl, pop, tiers, 1, ledger, concurrency, seconds)
        : await closedLoop(job, concurrency, seconds);
      const usage = monitor.stop();
      const statements = await probe.stop();
      const served = stats.requests - stats.errors;
      const perClaim = (s: number | undefined) => (s === undefined || served === 0 ? null : Math.round((s * 1e6) / served));
      const segment: Segment = {
        variant: server.variant, round, claimsPerS: Math.round(stats.reqPerS), p50: stats.p50, p99: stats.p99, errors: stats.errors,
        claimsPerStatement: statements?.claimsPerStatement ?? null, statementsInFlight: statements?.statementsInFlight ?? null, queueMs: statements?.queueMs ?? null,
        srvUsPerClaim: perClaim(usage.serverCpuS), pgUsPerClaim: perClaim(usage.pgCpuS), rssMb: usage.serverRssMb ?? null,
      };
      segments.push(segment);
      console.log(JSON.stringify(segment));
    }
  }
  duplicates = ledger.duplicates;
} finally {
  await admin.end();
  await stopStack();
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const medians = variants.map((variant) => {
  const mine = segments.filter((s) => s.variant === variant && (s.round > 0 || rounds === 1));
  const of = (key: keyof Segment) => lowerMedian(mine.map((s) => s[key]).filter((x): x is number => typeof x === "number"));
  return { variant, claimsPerS: of("claimsPerS"), p50: of("p50"), p99: of("p99"), claimsPerStatement: of("claimsPerStatement"), statementsInFlight: of("statementsInFlight"), queueMs: of("queueMs"), srvUsPerClaim: of("srvUsPerClaim"), pgUsPerClaim: of("pgUsPerClaim"), rssMb: of("rssMb") };
});
for (const m of medians) console.log(`median of ${rounds > 1 ? `rounds 1–${rounds - 1}` : "round 0"}: ${JSON.stringify(m)}`);
console.log(`duplicates: ${duplicates}`);
const file = writeResult({
  what: "settings compared over HTTP, rounds interleaved (bench/ab.ts)",
  configuration: `deployed (rate limits and pair quota on, per-user buckets widened), pool ${pool}, GET /v1/coins/fetch count=1, closed loop c=${concurrency} `
    + `(the bench's own client; wrk, one thread, for LOADGEN=wrk), ${seconds} s a segment; round 0 warms up and is left out of the medians`,
  variants, rounds, requesters: requesterCount, medians, segments, duplicates,
}, "-ab", save);
console.log(`written: ${file}`);
process.exit(duplicates === 0 ? 0 : 1);
