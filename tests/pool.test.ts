import { afterAll, beforeAll, expect, test } from "bun:test";
import { ConnectionGate } from "../src/db/gate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { UnavailableError } from "../src/errors.ts";
import { makeCoin } from "./helpers/coins.ts";
import { call, makeApp, newUser, testConfig } from "./helpers/app.ts";
import { holdKey, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let pool: Sql;
beforeAll(() => {
  pool = createPool(db.url, { AQM_DB_POOL_MAX: 10 });
});
afterAll(() => pool.end({ timeout: 5 }));

test("the gate admits `size`, queues up to `queueMax` for at most `waitMs`, and refuses the rest at once", async () => {
  const gate = new ConnectionGate(2, 100, 1);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const running = [gate.run(() => held), gate.run(() => held)];
  const queued = gate.run(async () => "queued");
  const started = performance.now();
  await expect(gate.run(async () => "never")).rejects.toBeInstanceOf(UnavailableError); // queue full
  expect(performance.now() - started).toBeLessThan(50);
  expect(gate.stats).toEqual({ inUse: 2, waiting: 1 });
  await expect(queued).rejects.toBeInstanceOf(UnavailableError); // waited 100 ms
  release();
  await Promise.all(running);
  expect(gate.stats).toEqual({ inUse: 0, waiting: 0 });
  expect(await gate.run(async () => "free again")).toBe("free again");
});

test("a waiter gets the slot when one frees in time; a failing task releases its slot", async () => {
  const gate = new ConnectionGate(1, 1000, 10);
  await expect(gate.run(() => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
  let release!: () => void;
  const first = gate.run(() => new Promise<void>((r) => (release = r)));
  const second = gate.run(async () => "second");
  setTimeout(() => release(), 50);
  await first;
  expect(await second).toBe("second");
  expect(gate.stats).toEqual({ inUse: 0, waiting: 0 });
});

test("50 concurrent clients against a pool of 10: every request answered (200 or a clean 503), none hangs, no connection leaks", async () => {
  const env = { AQM_DB_POOL_MAX: "10", AQM_DB_POOL_WAIT_MS: "300", AQM_RATE_LIMITS: "off" };
  const app = makeApp(pool, env);
  const owner = await newUser();
  const coin = makeCoin();
  // Hold the owner's key_id in an open transaction: every upload of it blocks on the unique index
  // and keeps its connection busy, so the pool is really exhausted.
  const blocker = await holdKey(db.sql, owner.id, coin);
  const started = performance.now();
  const pending = Array.from({ length: 50 }, () => call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [coin] } }));
  await Bun.sleep(600); // longer than the wait limit: the 40 that found no connection are refused by now
  await blocker.release();
  const results = await Promise.all(pending);
  const elapsed = performance.now() - started;
  const statuses = results.map((r) => r.status).sort();
  expect(statuses.filter((s) => s === 200)).toHaveLength(10);
  expect(statuses.filter((s) => s === 503)).toHaveLength(40);
  for (const r of results.filter((r) => r.status === 503)) {
    expect(r.headers.get("retry-after")).toBe("1");
    expect(r.headers.get("content-type")).toBe("application/problem+json");
  }
  expect(elapsed).toBeLessThan(10_000);
  const metrics = await call(app, "GET", "/metrics", { token: (await newUser({ admin: true })).token });
  expect(metrics.text).toContain("aqm_db_pool_in_use 0");
  expect(metrics.text).toContain("aqm_db_pool_waiting 0");
  expect(metrics.text).toContain("aqm_db_pool_rejections_total 40");
  const [{ n }] = await db.sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${db.name} AND application_name = 'aqm-coin-server' AND state <> 'idle'` as never as [{ n: number }];
  expect(n).toBeLessThanOrEqual(1); // only this query's own connection is busy
  const [{ total }] = await db.sql`SELECT count(*)::int AS total FROM pg_stat_activity WHERE datname = ${db.name}` as never as [{ total: number }];
  expect(total).toBeLessThanOrEqual(10 + 10); // the app's pool and the test's own, nothing more
  expect(testConfig(env).AQM_DB_POOL_MAX).toBe(10);
});
