/**
 * bun bench/ab-code.ts <checkout A> <checkout B> [--rounds N] [--seconds S] [--save]: two versions
 * of the code compared in one process, against one throw-away PostgreSQL, rounds interleaved
 * (A B, B A, …). On this shared 2-core VM two runs a few minutes apart differ by up to 2× (the
 * host's load, not the code: bench/README.md, eighth round); separate processes, even alternated,
 * could not tell a 10 % change. Each checkout's own app (its src/, its node_modules) is built by
 * its createApp on its own pools, the deployed configuration (rate limits and pair quota on, pool
 * 4); 32 loops hand `app.handle()` GET /v1/coins/fetch (count=1, random owner and tier) for S
 * seconds, and the process's CPU over the round (process.cpuUsage(), both apps' threads; the idle
 * one does nothing) is divided by the claims. Before each round the stock is topped up, the quota
 * rows emptied (every claim's pair is then a new row, as with the full bench's 10,000 requesters)
 * and the tables vacuumed. Round 0 warms both JITs and is not counted. A checkout is a directory
 * with `bun install` done, e.g. `git worktree add /tmp/old <rev> && (cd /tmp/old && bun install)`.
 * No HTTP server or socket: bench/in-process.ts says what that leaves out.
 */
import postgres from "postgres";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { execFileSync } from "node:child_process";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import type { Sql } from "../src/db/pool.ts";
import { deployedEnv, driveClaims, fetchRequests } from "./app-claims.ts";
import { writeResult } from "./report.ts";
import { randomBytesSql, tiers, topUp } from "./seed.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const roots = args.filter((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--")).map((r) => resolve(r));
if (roots.length !== 2) {
  console.error("usage: bun bench/ab-code.ts <checkout A> <checkout B> [--rounds N] [--seconds S] [--save]");
  process.exit(2);
}
const rounds = option("--rounds", 12);
const seconds = option("--seconds", 5);
const loops = 32;
const commitOf = (root: string) => {
  try {
    const dirty = execFileSync("git", ["-C", root, "status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" }).trim() !== "";
    return execFileSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim() + (dirty ? "+changes" : "");
  } catch {
    return "unknown";
  }
};

const dataDir = mkdtempSync(join(tmpdir(), "aqm-ab-code-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const env = deployedEnv(pg.url);
const secret = randomBytes(40);
// Each checkout's modules by absolute path: two module graphs, nothing shared but PostgreSQL.
async function build(root: string) {
  const { createApp } = await import(join(root, "src/app.ts"));
  const { loadConfig } = await import(join(root, "src/config.ts"));
  const { openDatabase } = await import(join(root, "src/db/open.ts"));
  const config = loadConfig(env);
  const db = await openDatabase(config);
  const app = createApp({ sql: db.sql, session: db.session, config, keys: { secret, source: "AQM_JWT_SECRET" }, hashSecrets: { current: secret } });
  return { root, commit: commitOf(root), db, app };
}
const sides = [await build(roots[0]!), await build(roots[1]!)] as const;
const { signToken } = await import(join(roots[1]!, "src/auth/jwt.ts"));
const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
const rows: { round: number; side: "A" | "B"; claimsPerS: number; usCpuPerClaim: number }[] = [];
try {
  const owners = Array.from({ length: 200 }, () => randomUUID());
  const tokens: string[] = await Promise.all(Array.from({ length: 3000 }, () => signToken(secret, randomUUID(), { ttlSeconds: 3600 })));
  const random = await randomBytesSql(admin as unknown as Sql, true);
  const next = fetchRequests(owners, tiers, tokens);
  for (let round = 0; round <= rounds; round++) {
    for (const index of round % 2 === 0 ? [0, 1] : [1, 0]) {
      const { app } = sides[index]!;
      await topUp(admin as unknown as Sql, random.expr, owners, tiers, 250);
      await admin`TRUNCATE claim_quota`;
      await admin`VACUUM coin_inventory, claim_quota`;
      const { non200, claimsPerS, usCpuPerClaim } = await driveClaims((request) => app.handle(request), next, seconds, loops);
      if (non200 > 0) throw new Error(`${non200} answers other than 200 from checkout ${"AB"[index]}`);
      const row = { round, side: index === 0 ? "A" as const : "B" as const, claimsPerS, usCpuPerClaim };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
} finally {
  await admin.end();
  for (const { app, db } of sides) {
    await app.decorator.aqm.close();
    await db.close();
  }
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const counted = (side: "A" | "B") => rows.filter((r) => r.round > 0 && r.side === side).map((r) => r.usCpuPerClaim);
const median = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)]!;
const [a, b] = [counted("A"), counted("B")];
const summary = {
  medianUsCpuPerClaim: { A: median(a), B: median(b) },
  roundsWhereBBelowA: a.filter((x, i) => b[i]! < x).length, rounds: a.length,
};
console.log(`A ${sides[0].commit}: median ${summary.medianUsCpuPerClaim.A} µs/claim; B ${sides[1].commit}: median ${summary.medianUsCpuPerClaim.B} µs/claim; `
  + `B below A in ${summary.roundsWhereBBelowA} of ${summary.rounds} rounds`);
const file = writeResult({
  what: "two checkouts' apps in one process, rounds interleaved: CPU per claim through app.handle() (bench/ab-code.ts)",
  configuration: "deployed (AQM_RATE_LIMITS=on, pair quota on, quota rows emptied before each round), pool 4, GET /v1/coins/fetch count=1",
  A: { root: sides[0].root, commit: sides[0].commit }, B: { root: sides[1].root, commit: sides[1].commit }, loops, seconds, summary, rows,
}, "-ab-code", args.includes("--save"));
console.log(`written: ${file}`);
process.exit(0);
