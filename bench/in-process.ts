/**
 * bun bench/in-process.ts [--save] [--rounds N] [--seconds S] [--requesters N (3000)]: the app's own CPU per claim, without
 * Bun's HTTP server, a socket or a load generator in the process's account (issue 21). The real
 * app (createApp on openDatabase, the deployed configuration: rate limits and pair quota on, pool
 * 4) on a throw-away embedded PostgreSQL; 32 concurrent loops hand `app.handle()` a GET
 * /v1/coins/fetch (count=1, random owner and tier) and read the answer. CPU from
 * process.cpuUsage() over each round (it includes building the Request objects); the stock is
 * topped up and vacuumed before each round; the first round warms the JIT and is reported apart.
 * Runtime variables that change the process (MIMALLOC_*, BUN_JSC_*) are set by the caller and
 * recorded. Writes bench/results[/local]/<stamp>-in-process.json.
 */
import postgres from "postgres";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../src/app.ts";
import { signToken } from "../src/auth/jwt.ts";
import { loadConfig } from "../src/config.ts";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import { openDatabase } from "../src/db/open.ts";
import type { Sql } from "../src/db/pool.ts";
import { deployedEnv, driveClaims, fetchRequests } from "./app-claims.ts";
import { writeResult } from "./report.ts";
import { randomBytesSql, tiers, topUp } from "./seed.ts";

const option = (name: string, fallback: number) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const rounds = option("--rounds", 4);
const seconds = option("--seconds", 6);
const requesters = option("--requesters", 3000);
const loops = 32;
const runtime = Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(MIMALLOC_|BUN_JSC_)/.test(k)));

const dataDir = mkdtempSync(join(tmpdir(), "aqm-in-process-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const config = loadConfig(deployedEnv(pg.url));
const db = await openDatabase(config);
const secret = randomBytes(40);
const app = createApp({ sql: db.sql, session: db.session, config, keys: { secret, source: "AQM_JWT_SECRET" }, hashSecrets: { current: secret } });
const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
const rows: { round: number; warmUp: boolean; claims: number; claimsPerS: number; usCpuPerClaim: number; usSysPerClaim: number; rssMb: number; non200: number }[] = [];
try {
  const owners = Array.from({ length: 200 }, () => randomUUID());
  const tokens = await Promise.all(Array.from({ length: requesters }, () => signToken(secret, randomUUID(), { ttlSeconds: 3600 })));
  const random = await randomBytesSql(admin as unknown as Sql, true);
  const next = fetchRequests(owners, tiers, tokens);
  for (let round = 0; round < rounds; round++) {
    await topUp(admin as unknown as Sql, random.expr, owners, tiers, 300);
    await admin`VACUUM coin_inventory, claim_quota`;
    const measured = await driveClaims((request) => app.handle(request), next, seconds, loops);
    const row = { round, warmUp: round === 0, ...measured, rssMb: Math.round(process.memoryUsage().rss / 1048576) };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  await admin.end();
  await app.decorator.aqm.close();
  await db.close();
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const file = writeResult({
  what: "the app's CPU per claim through app.handle(), no HTTP server or socket (bench/in-process.ts)",
  configuration: "deployed (AQM_RATE_LIMITS=on, pair quota on), pool 4, GET /v1/coins/fetch count=1", loops, seconds, requesters, runtime, rows,
}, "-in-process", process.argv.includes("--save"));
console.log(`written: ${file}`);
process.exit(0);
