/**
 * bun bench/plan-cache.ts [--save]: PostgreSQL's CPU per claim statement under each plan_cache_mode
 * (issue 21). One backend of a throw-away embedded PostgreSQL runs the server's claim statement
 * (claimQuery, quota on, one-tier claims of 1 coin) serially at B = 1, 8, 16 and 32 claims per
 * statement: `auto` (PostgreSQL's default) on a fresh connection, then `force_generic_plan` (what
 * the request pool sets, src/db/pool.ts), then `force_custom_plan`. The tables are topped up and
 * vacuumed before each measurement; synchronous_commit is off so that the figure is the backend's
 * CPU (/proc/<pid>/stat), not the fsync wait. Writes bench/results[/local]/<stamp>-plan-cache.json.
 */
import postgres from "postgres";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { claimQuery, deviceOne, type ClaimItem } from "../src/claims/batch.ts";
import { claimKeys } from "../src/claims/keys.ts";
import type { TierCounts } from "../src/coins/tiers.ts";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import { migrate } from "../src/db/migrate.ts";
import type { Sql } from "../src/db/pool.ts";
import { cpuSecondsOf } from "./monitor.ts";
import { writeResult } from "./report.ts";
import { randomBytesSql, tiers, topUp } from "./seed.ts";

const modes = ["auto", "force_generic_plan", "force_custom_plan"] as const;
const batches = [1, 8, 16, 32];
const claimsPerRun = 800;
const dataDir = mkdtempSync(join(tmpdir(), "aqm-plan-cache-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
const results: { mode: string; batch: number; statements: number; msCpuPerStatement: number; usCpuPerClaim: number; msWallPerStatement: number }[] = [];
try {
  await migrate(admin as unknown as Sql);
  const users = Array.from({ length: 200 }, () => randomUUID());
  const random = await randomBytesSql(admin as unknown as Sql, true);
  const keys = claimKeys(randomBytes(32));
  let k = 0;
  const items = (n: number): ClaimItem[] => Array.from({ length: n }, () => {
    const i = k++;
    const requester = randomUUID();
    const target = users[i % users.length]!;
    const want: TierCounts = [0, 0, 0];
    want[Math.floor(i / users.length) % 3] = 1;
    return { target, requester, want, fallback: false, lastResort: false, final: true, pair: keys.pair(requester, target)[0], pairPrev: null, ref: null, refPrev: null, body: null, ...deviceOne };
  });
  for (const mode of modes) {
    // a connection of its own per mode: the plan cache (and auto's choice) is per connection
    const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connection: { plan_cache_mode: mode, synchronous_commit: "off" } });
    const [{ pid }] = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    const cpuMs = () => cpuSecondsOf(pid) * 1000;
    for (const batch of batches) {
      await topUp(admin as unknown as Sql, random.expr, users, tiers, 300);
      await admin`VACUUM coin_inventory, claim_quota`;
      for (let w = 0; w < 6; w++) await claimQuery(sql as unknown as Sql, items(batch), 100, true); // past auto's five custom plans
      const statements = Math.max(40, Math.round(claimsPerRun / batch));
      const [c0, t0] = [cpuMs(), performance.now()];
      for (let j = 0; j < statements; j++) await claimQuery(sql as unknown as Sql, items(batch), 100, true);
      const [c1, t1] = [cpuMs(), performance.now()];
      const row = {
        mode, batch, statements, msCpuPerStatement: Math.round(((c1 - c0) / statements) * 100) / 100,
        usCpuPerClaim: Math.round(((c1 - c0) * 1000) / statements / batch), msWallPerStatement: Math.round(((t1 - t0) / statements) * 100) / 100,
      };
      results.push(row);
      console.log(`${mode.padEnd(19)} B=${String(batch).padEnd(3)} ${row.msCpuPerStatement.toFixed(2).padStart(6)} ms CPU per statement, ${String(row.usCpuPerClaim).padStart(5)} µs per claim (wall ${row.msWallPerStatement} ms)`);
    }
    await sql.end();
  }
} finally {
  await admin.end();
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const file = writeResult({ what: "PostgreSQL CPU per claim statement by plan_cache_mode (bench/plan-cache.ts)", postgresql: "embedded", claimsPerRun, results },
  "-plan-cache", process.argv.includes("--save"));
console.log(`written: ${file}`);
