import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { loadConfig } from "../src/config.ts";
import { jobs } from "../src/maintenance/jobs.ts";
import { runTick, type JobDeps } from "../src/maintenance/run.ts";
import { createPool } from "../src/db/pool.ts";
import { createMetrics } from "../src/metrics/registry.ts";
import { call, makeApp, newUser } from "./helpers/app.ts";
import { testClaims, testDb, testCoins } from "./helpers/claims.ts";
import { makeCoins } from "./helpers/coins.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { startServer } from "./helpers/server.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
beforeEach(async () => {
  await db.sql`TRUNCATE coin_inventory, maintenance_tick, claimed_key`;
});

/** A session gate as wide as its pool, as the app gives the maintenance runs. */
function deps(lines: Record<string, unknown>[] = [], sql = db.session, table?: JobDeps["table"], size = 2): JobDeps {
  return { db: testDb(sql, { size }), config: loadConfig({}), metrics: createMetrics(), log: (l) => lines.push(l), table };
}
const upload = (owner: string, coins: ReturnType<typeof makeCoins>) => testCoins(testDb(db.sql)).uploadCoins(owner, 1, coins);
const runJob = (d: JobDeps, job: keyof typeof jobs, tick: Date, minGapMs = 500) => runTick(d, job, tick, minGapMs);

test("a run deletes in its job's terms, logs { job, deleted, ms } and counts it", async () => {
  const owner = randomUUID();
  await upload(owner, makeCoins(4));
  await db.sql`UPDATE coin_inventory SET uploaded_at = now() - interval '31 days'`;
  const lines: Record<string, unknown>[] = [];
  const d = deps(lines);
  expect(await runJob(d, "purge-stale", new Date(1_000_000))).toBe("ok");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatchObject({ job: "purge-stale", deleted: 4, ms: expect.any(Number) });
  const text = await d.metrics!.registry.metrics();
  expect(text).toContain('aqm_maintenance_deleted_total{job="purge-stale"} 4');
  expect(text).toContain('aqm_maintenance_runs_total{job="purge-stale",result="ok"} 1');
});

test("a tick runs once: the same or an older tick is skipped", async () => {
  const d = deps();
  expect(await runJob(d, "hard-delete", new Date(2_000_000))).toBe("ok");
  expect(await runJob(d, "hard-delete", new Date(2_000_000))).toBe("skipped");
  expect(await runJob(d, "hard-delete", new Date(1_000_000))).toBe("skipped");
  expect(await runJob(d, "hard-delete", new Date(3_000_000))).toBe("ok");
  expect(await runJob(d, "purge-stale", new Date(2_000_000))).toBe("ok"); // jobs are independent
});

test("a run never overlaps one still holding the job's advisory lock", async () => {
  const conn = await db.sql.reserve();
  try {
    await conn`SELECT pg_advisory_lock(${jobs["hard-delete"].lockKey})`;
    expect(await runJob(deps(), "hard-delete", new Date(5_000_000))).toBe("skipped");
    await conn`SELECT pg_advisory_unlock(${jobs["hard-delete"].lockKey})`;
  } finally {
    conn.release();
  }
  expect(await runJob(deps(), "hard-delete", new Date(6_000_000))).toBe("ok");
});

test("a failing run is logged and counted as an error, not thrown", async () => {
  const lines: Record<string, unknown>[] = [];
  const failing = { ...jobs, "purge-stale": { ...jobs["purge-stale"], run: () => Promise.reject(Object.assign(new Error("relation \"x\" does not exist"), { code: "42P01" })) } };
  expect(await runJob(deps(lines, db.sql, failing), "purge-stale", new Date(7_000_000))).toBe("error");
  expect(lines[0]).toMatchObject({ level: "error", job: "purge-stale", code: "42P01", error: 'relation "x" does not exist' });
  expect(await runJob(deps(lines), "purge-stale", new Date(8_000_000))).toBe("ok"); // the lock was released
});

test("a late trigger is not taken for the next tick: ticks closer than half the period are skipped", async () => {
  const hour = 3600_000;
  expect(await runJob(deps(), "hard-delete", new Date(100 * hour), hour / 2)).toBe("ok");
  expect(await runJob(deps(), "hard-delete", new Date(100 * hour + 3_000), hour / 2)).toBe("skipped"); // 3 s late
  expect(await runJob(deps(), "hard-delete", new Date(101 * hour), hour / 2)).toBe("ok");
});

test("a job runs with a pool of one connection (its deletes use the connection holding the lock)", async () => {
  const single = createPool(db.url, { AQM_DB_POOL_MAX: 1 });
  try {
    await upload(randomUUID(), makeCoins(3));
    await db.sql`UPDATE coin_inventory SET uploaded_at = now() - interval '31 days'`;
    const result = await Promise.race([runJob(deps([], single, undefined, 1), "purge-stale", new Date(9_000_000)), new Promise((r) => setTimeout(r, 5_000, "hung"))]);
    expect(result).toBe("ok");
    expect(await runJob(deps([], single, undefined, 1), "hard-delete", new Date(9_000_000))).toBe("ok");
  } finally {
    await single.end({ timeout: 1 });
  }
}, 15_000);

test("two server processes on one database run each job exactly once per tick", async () => {
  const env = {
    DATABASE_URL: db.url,
    AQM_CRON_PURGE_STALE: "* * * * * *",
    AQM_CRON_HARD_DELETE: "* * * * * *",
  };
  const servers = await Promise.all([startServer(env), startServer(env)]);
  const ran = (job: string) => servers.flatMap((s) => s.lines.filter((l) => l.job === job && l.deleted !== undefined));
  await waitFor(() => ran("purge-stale").length >= 3 && ran("hard-delete").length >= 3, "three ticks of each job", 15_000);
  for (const s of servers) s.proc.kill("SIGTERM");
  expect(await Promise.all(servers.map((s) => s.exited))).toEqual([0, 0]);
  await Promise.all(servers.map((s) => s.output)); // their last lines read
  for (const job of ["purge-stale", "hard-delete"]) {
    const runs = servers.flatMap((s) => s.lines.filter((l) => l.job === job && l.deleted !== undefined).map((l) => String(l.tick)));
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(new Set(runs).size).toBe(runs.length); // no tick ran twice
    const [{ last }] = await db.sql`SELECT last_tick AS last FROM maintenance_tick WHERE job = ${job}` as never as [{ last: Date }];
    expect(runs).toContain(last.toISOString());
  }
  expect(servers.flatMap((s) => s.lines).filter((l) => l.level === "error")).toEqual([]);
}, 30000);

test("AQM_CRON=off runs no job (while an instance with it on runs ticks beside it)", async () => {
  const every = { DATABASE_URL: db.url, AQM_CRON_HARD_DELETE: "* * * * * *", AQM_CRON_PURGE_STALE: "* * * * * *" };
  const off = await startServer({ ...every, AQM_CRON: "off" });
  const on = await startServer(every);
  await waitFor(() => on.lines.filter((l) => l.job === "hard-delete" && l.deleted !== undefined).length >= 2, "two ticks on the other instance", 15_000);
  for (const s of [off, on]) s.proc.kill("SIGTERM");
  expect(await Promise.all([off.exited, on.exited])).toEqual([0, 0]);
  expect(off.lines.filter((l) => l.job)).toEqual([]);
}, 30000);

test("the admin routes run the cron's jobs with the configured defaults, under the same lock", async () => {
  const app = makeApp(db.sql, { AQM_PURGE_MAX_AGE_DAYS: "10", AQM_HARD_DELETE_GRACE_HOURS: "3" });
  const admin = await newUser({ admin: true });
  const owner = randomUUID();
  await upload(owner, makeCoins(4));
  await db.sql`UPDATE coin_inventory SET uploaded_at = now() - interval '11 days'`;
  const claims = testClaims(db.sql);
  await claims.fetch(owner, randomUUID(), "BRONZE", 2);
  await db.sql`UPDATE coin_inventory SET fetched_at = now() - interval '2 hours' WHERE fetched_at IS NOT NULL`;
  expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token })).json).toEqual({ deleted: 0 }); // grace 3 h
  await db.sql`UPDATE coin_inventory SET fetched_at = now() - interval '4 hours' WHERE fetched_at IS NOT NULL`;
  expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token })).json).toEqual({ deleted: 2 });
  await db.sql`UPDATE claimed_key SET claimed_on = claimed_on - 11`;
  expect((await call(app, "POST", "/v1/admin/purge-stale", { token: admin.token })).json).toEqual({ deleted: 2 }); // 10 days
  expect((await db.sql`SELECT count(*)::int AS n FROM claimed_key`)[0]!.n).toBe(0); // the purge forgets old key ids, as the cron's does
  const conn = await db.sql.reserve();
  try {
    await conn`SELECT pg_advisory_lock(${jobs["hard-delete"].lockKey})`;
    const busy = await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token });
    expect(busy.status).toBe(503);
    expect(busy.headers.get("retry-after")).toBe("5");
    await conn`SELECT pg_advisory_unlock(${jobs["hard-delete"].lockKey})`;
  } finally {
    conn.release();
  }
});
