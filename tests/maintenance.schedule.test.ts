import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { coinService } from "../src/coins/service.ts";
import { loadConfig } from "../src/config.ts";
import { jobWork, runJob, type JobDeps } from "../src/maintenance/jobs.ts";
import { createPool } from "../src/db/pool.ts";
import { createMetrics } from "../src/metrics/registry.ts";
import { makeCoins } from "./helpers/coins.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { startServer } from "./helpers/server.ts";

const db = useTestDatabase();
beforeEach(async () => {
  await db.sql`TRUNCATE coin_inventory, maintenance_tick`;
});

function deps(lines: Record<string, unknown>[] = [], sql = db.sql): JobDeps {
  return { sql, config: loadConfig({}), metrics: createMetrics(), log: (l) => lines.push(l) };
}

test("a run deletes in its job's terms, logs { job, deleted, ms } and counts it", async () => {
  const owner = randomUUID();
  await coinService(db.sql).uploadCoins(owner, makeCoins(4));
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
    await conn`SELECT pg_advisory_lock(${0x41514d_11})`;
    expect(await runJob(deps(), "hard-delete", new Date(5_000_000))).toBe("skipped");
    await conn`SELECT pg_advisory_unlock(${0x41514d_11})`;
  } finally {
    conn.release();
  }
  expect(await runJob(deps(), "hard-delete", new Date(6_000_000))).toBe("ok");
});

test("a failing run is logged and counted as an error, not thrown", async () => {
  const lines: Record<string, unknown>[] = [];
  const failing = { ...jobWork, "purge-stale": () => Promise.reject(Object.assign(new Error("boom"), { code: "57014" })) };
  expect(await runJob(deps(lines), "purge-stale", new Date(7_000_000), 500, failing)).toBe("error");
  expect(lines[0]).toMatchObject({ level: "error", job: "purge-stale", code: "57014" });
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
    await coinService(db.sql).uploadCoins(randomUUID(), makeCoins(3));
    await db.sql`UPDATE coin_inventory SET uploaded_at = now() - interval '31 days'`;
    const result = await Promise.race([runJob(deps([], single), "purge-stale", new Date(9_000_000)), Bun.sleep(5_000).then(() => "hung")]);
    expect(result).toBe("ok");
    expect(await runJob(deps([], single), "hard-delete", new Date(9_000_000))).toBe("ok");
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
  await Bun.sleep(4_500);
  for (const s of servers) s.proc.kill("SIGTERM");
  expect(await Promise.all(servers.map((s) => s.exited))).toEqual([0, 0]);
  for (const job of ["purge-stale", "hard-delete"]) {
    const runs = servers.flatMap((s) => s.lines.filter((l) => l.job === job && l.deleted !== undefined).map((l) => String(l.tick)));
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(new Set(runs).size).toBe(runs.length); // no tick ran twice
    const [{ last }] = await db.sql`SELECT last_tick AS last FROM maintenance_tick WHERE job = ${job}` as never as [{ last: Date }];
    expect(runs).toContain(last.toISOString());
  }
  expect(servers.flatMap((s) => s.lines).filter((l) => l.level === "error")).toEqual([]);
}, 30000);

test("AQM_CRON=off runs no job", async () => {
  const server = await startServer({ DATABASE_URL: db.url, AQM_CRON: "off", AQM_CRON_HARD_DELETE: "* * * * * *" });
  await Bun.sleep(1_500);
  server.proc.kill("SIGTERM");
  expect(await server.exited).toBe(0);
  expect(server.lines.filter((l) => l.job)).toEqual([]);
  expect((await db.sql`SELECT count(*)::int AS n FROM maintenance_tick`)[0]!.n).toBe(0);
}, 30000);
