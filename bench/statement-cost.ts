/**
 * bun bench/statement-cost.ts [--rounds N] [--save]: what one claim statement costs PostgreSQL, split
 * into the part every statement pays and the part each claim adds (issue 21, tenth round). One
 * backend of a throw-away embedded PostgreSQL (generic plans, as the request pool sets them;
 * synchronous_commit on, as deployed) runs the server's claim statement (claimQuery; one-tier
 * claims of 1 coin, random requesters over 200 owners, every pair a new quota row) serially:
 * B = 1 asking for nothing (what a statement costs before it claims anything: parameters, the plan's
 * start and end, no commit record), B = 1 and B = 16, quota on and off, each as the lean statement
 * the server sends for such claims and as the whole one (claimQuery's `full`), rounds interleaved. The
 * tables are topped up and vacuumed before each cell. Per cell: the backend's CPU per statement and
 * per claim (/proc), wall time, and WAL bytes and full-page images per claim (pg_stat_wal).
 * With --fillfactor N, coin_inventory is set to it before it is stocked.
 * Writes bench/results[/local]/<stamp>-statement-cost[-fillfactor-N].json.
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

const option = (name: string) => {
  const at = process.argv.indexOf(name);
  return at < 0 ? undefined : Number(process.argv[at + 1]);
};
const rounds = option("--rounds") ?? 3;
/** --fillfactor N: coin_inventory's fillfactor before it is stocked (a claim's new row version then fits on its page). */
const fillfactor = option("--fillfactor");
const cells = [
  { batch: 1, want: 0, quota: false }, { batch: 1, want: 0, quota: true },
  { batch: 1, want: 1, quota: false }, { batch: 1, want: 1, quota: true },
  { batch: 16, want: 1, quota: false }, { batch: 16, want: 1, quota: true },
].flatMap((cell) => [{ ...cell, statement: "lean" as const }, { ...cell, statement: "whole" as const }]);
const statementsPer = (batch: number) => (batch === 1 ? 600 : 200);
const dataDir = mkdtempSync(join(tmpdir(), "aqm-statement-cost-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connection: { plan_cache_mode: "force_generic_plan" } });
type Row = { round: number; statement: "lean" | "whole"; batch: number; want: number; quota: boolean; statements: number; usCpuPerStatement: number; usCpuPerClaim: number | null; usWallPerStatement: number; walBytesPerClaim: number | null; fpiPerClaim: number | null };
const rows: Row[] = [];
try {
  await migrate(admin as unknown as Sql);
  if (fillfactor !== undefined) await admin.unsafe(`ALTER TABLE coin_inventory SET (fillfactor = ${Math.round(fillfactor)})`);
  const users = Array.from({ length: 200 }, () => randomUUID());
  const random = await randomBytesSql(admin as unknown as Sql, true);
  const keys = claimKeys(randomBytes(32));
  let k = 0;
  const items = (n: number, count: number, quota: boolean): ClaimItem[] => Array.from({ length: n }, () => {
    const at = k++;
    const requester = randomUUID();
    const target = users[at % users.length]!;
    const want: TierCounts = [0, 0, 0];
    want[Math.floor(at / users.length) % 3] = count;
    return { target, requester, want, fallback: false, lastResort: false, final: true, pair: quota ? keys.pair(requester, target)[0] : null, pairPrev: null, ref: null, refPrev: null, body: null, ...deviceOne };
  });
  const [{ pid }] = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
  // WAL bytes from the insert position (exact); full-page images from pg_stat_wal, which a backend
  // reports only now and then unless told to at its next idle moment (before its answer goes out)
  const wal = async () => {
    await sql`SELECT pg_stat_force_next_flush()`;
    return (await admin<[{ bytes: string; fpi: string }]>`SELECT (pg_current_wal_insert_lsn() - '0/0')::text AS bytes, wal_fpi::text AS fpi FROM pg_stat_wal`)[0];
  };
  for (let round = 0; round <= rounds; round++) {
    for (const { batch, want, quota, statement } of cells) {
      await topUp(admin as unknown as Sql, random.expr, users, tiers, 400);
      await admin`VACUUM coin_inventory, claim_quota`;
      const run = () => claimQuery(sql as unknown as Sql, items(batch, want, quota), quota ? 100 : null, true, false, statement === "whole");
      for (let w = 0; w < 3; w++) await run();
      const n = statementsPer(batch);
      const [w0, c0, t0] = [await wal(), cpuSecondsOf(pid), performance.now()];
      for (let j = 0; j < n; j++) await run();
      const [c1, t1, w1] = [cpuSecondsOf(pid), performance.now(), await wal()];
      const claims = want > 0 ? n * batch : 0;
      const per = (x: number) => (claims > 0 ? Math.round((x / claims) * 10) / 10 : null);
      const row: Row = {
        round, statement, batch, want, quota, statements: n, usCpuPerStatement: Math.round(((c1 - c0) * 1e6) / n), usCpuPerClaim: per((c1 - c0) * 1e6),
        usWallPerStatement: Math.round(((t1 - t0) * 1000) / n), walBytesPerClaim: per(Number(w1!.bytes) - Number(w0!.bytes)), fpiPerClaim: per(Number(w1!.fpi) - Number(w0!.fpi)),
      };
      if (round > 0) rows.push(row); // round 0 warms the caches and the plan
      console.log(JSON.stringify(row));
    }
  }
} finally {
  await sql.end();
  await admin.end();
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const medians = cells.map(({ batch, want, quota, statement }) => {
  const mine = rows.filter((r) => r.batch === batch && r.want === want && r.quota === quota && r.statement === statement);
  const m = (f: (r: Row) => number | null) => (mine[0] && f(mine[0]) === null ? null : median(mine.map((r) => f(r)!)));
  return { statement, batch, want, quota, usCpuPerStatement: m((r) => r.usCpuPerStatement), usCpuPerClaim: m((r) => r.usCpuPerClaim), usWallPerStatement: m((r) => r.usWallPerStatement), walBytesPerClaim: m((r) => r.walBytesPerClaim), fpiPerClaim: m((r) => r.fpiPerClaim) };
});
for (const m of medians) console.log(`median: ${JSON.stringify(m)}`);
const file = writeResult({
  what: "PostgreSQL CPU per claim statement, lean and whole: before any claim (want 0) and per claim, B = 1 and 16, quota on and off (bench/statement-cost.ts)",
  postgresql: "embedded, one backend, plan_cache_mode=force_generic_plan, synchronous_commit on", coin_inventory_fillfactor: fillfactor ?? "default (100)", rounds, rows, medians,
}, `-statement-cost${fillfactor === undefined ? "" : `-fillfactor-${fillfactor}`}`, process.argv.includes("--save"));
console.log(`written: ${file}`);
process.exit(0);
