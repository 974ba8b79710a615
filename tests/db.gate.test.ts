import { afterAll, beforeAll, expect, test } from "bun:test";
import { Db } from "../src/db/db.ts";
import { ConnectionGate } from "../src/db/gate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { UnavailableError } from "../src/errors.ts";
import { makeCoin } from "./helpers/coins.ts";
import { call, makeApp, newUser } from "./helpers/app.ts";
import { holdKey, lockWaiters, useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
let pool: Sql;
beforeAll(() => {
  // PostgreSQL's own statement timeout far away: only the deadline and its cancel can end a statement.
  pool = createPool(db.url, { AQM_DB_POOL_MAX: 10, AQM_DB_STATEMENT_TIMEOUT_MS: 60_000, AQM_DB_UNRESPONSIVE_S: 0 });
});
afterAll(() => pool.end({ timeout: 5 }));

const inMs = (ms: number) => performance.now() + ms;
// Wall-clock bounds below only tell "at the deadline" from "much later" (the machines are shared).
const SLACK_MS = 1000;

test("the gate admits `size`, queues up to `queueMax` until each one's deadline, and refuses the rest at once", async () => {
  const refused: number[] = [];
  const gate = new ConnectionGate(2, 1, { refused: () => refused.push(1) });
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const running = [gate.run(() => held, inMs(5000)), gate.run(() => held, inMs(5000))];
  const queued = gate.run(async () => "queued", inMs(100));
  const started = performance.now();
  await expect(gate.run(async () => "never", inMs(5000))).rejects.toBeInstanceOf(UnavailableError); // queue full
  expect(performance.now() - started).toBeLessThan(SLACK_MS); // not at its 5 s deadline
  expect(gate.stats).toEqual({ inUse: 2, waiting: 1 });
  await expect(queued).rejects.toBeInstanceOf(UnavailableError); // its deadline passed
  expect(refused).toHaveLength(2);
  release();
  await Promise.all(running);
  expect(gate.stats).toEqual({ inUse: 0, waiting: 0 });
  expect(await gate.run(async () => "free again", inMs(100))).toBe("free again");
});

test("a waiter gets the slot when one frees in time; a failing task releases its slot; an aborted waiter leaves", async () => {
  const gate = new ConnectionGate(1, 10);
  await expect(gate.run(() => Promise.reject(new Error("boom")), inMs(1000))).rejects.toThrow("boom");
  let release!: () => void;
  const first = gate.run(() => new Promise<void>((r) => (release = r)), inMs(1000));
  const second = gate.run(async () => "second", inMs(1000));
  const abort = new AbortController();
  const third = gate.run(async () => "third", inMs(1000), abort.signal);
  abort.abort();
  await expect(third).rejects.toBeInstanceOf(UnavailableError);
  expect(gate.stats).toEqual({ inUse: 1, waiting: 1 });
  release();
  await first;
  expect(await second).toBe("second");
  expect(gate.stats).toEqual({ inUse: 0, waiting: 0 });
});

test("a statement still running at its deadline is cancelled: rolled back, answered 503, its slot freed", async () => {
  const late: string[] = [];
  const dbx = new Db(pool, new ConnectionGate(2, 10), { waitMs: 200, prepare: true, late: (w) => late.push(w) });
  const started = performance.now();
  const sleeper = dbx.run((sql) => sql`INSERT INTO claimed_key (user_id, key_id, claimed_on)
    SELECT gen_random_uuid(), 'late', current_date FROM pg_sleep(10)`, { what: "sleepy insert" });
  await expect(sleeper).rejects.toBeInstanceOf(UnavailableError);
  expect(performance.now() - started).toBeLessThan(200 + 250 + SLACK_MS); // the deadline and the cancel grace, not the 10 s sleep
  expect((await db.sql`SELECT count(*)::int AS n FROM claimed_key WHERE key_id = 'late'`)[0]!.n).toBe(0);
  expect(late).toEqual([]);
  expect(dbx.gate.stats).toEqual({ inUse: 0, waiting: 0 });
});

test("50 uploads against 10 connections held by a lock: each is answered 503 at its deadline, nothing is committed, nothing leaks", async () => {
  const env = { AQM_DB_POOL_MAX: "10", AQM_DB_POOL_WAIT_MS: "300", AQM_RATE_LIMITS: "off" };
  const app = makeApp(pool, env);
  const owner = await newUser();
  const coin = makeCoin();
  // Hold the owner's key_id in an open transaction: every upload of it blocks on the unique index
  // and keeps its connection busy, so the pool is really exhausted.
  const blocker = await holdKey(db.sql, owner.id, coin);
  const started = performance.now();
  const results = await Promise.all(Array.from({ length: 50 }, () => call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [coin] } })));
  const elapsed = performance.now() - started;
  await blocker.release();
  expect(results.map((r) => r.status)).toEqual(Array(50).fill(503));
  for (const r of results) {
    expect(r.headers.get("retry-after")).toBe("1");
    expect(r.headers.get("content-type")).toBe("application/problem+json");
  }
  expect(elapsed).toBeLessThan(300 + 250 + SLACK_MS); // the deadline and the cancel grace; the lock is held until the end
  expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE user_id = ${owner.id}::uuid`)[0]!.n).toBe(0);
  const metrics = await call(app, "GET", "/metrics", { token: (await newUser({ admin: true })).token });
  expect(metrics.text).toContain("aqm_db_pool_in_use 0");
  expect(metrics.text).toContain("aqm_db_pool_waiting 0");
  // 20 (twice the pool) pass the upload-body gate; 10 of them get a connection
  expect(metrics.text).toContain("aqm_body_gate_rejections_total 30");
  expect(metrics.text).toContain("aqm_db_pool_rejections_total 10");
  await waitFor(async () => (await db.sql`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = ${db.name} AND application_name = 'aqm-coin-server' AND state <> 'idle'`)[0]!.n === 0, "the cancelled statements to end");
  const [{ total }] = await db.sql`SELECT count(*)::int AS total FROM pg_stat_activity WHERE datname = ${db.name}` as never as [{ total: number }];
  expect(total).toBeLessThanOrEqual(10 + 10); // the app's pool and the test's own, nothing more
});

test("uploads waiting for a slot get it when the lock goes before their deadline", async () => {
  const app = makeApp(pool, { AQM_DB_POOL_MAX: "10", AQM_DB_POOL_WAIT_MS: "2000", AQM_RATE_LIMITS: "off" });
  const owner = await newUser();
  const coin = makeCoin();
  const blocker = await holdKey(db.sql, owner.id, coin);
  const pending = Array.from({ length: 30 }, () => call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [coin] } }));
  await waitFor(async () => (await lockWaiters(db)) === 10, "10 uploads blocked on the lock");
  await blocker.release();
  const results = await Promise.all(pending);
  expect(results.map((r) => r.status)).toEqual(Array(30).fill(200));
  expect(results.reduce((n, r) => n + r.json.inserted, 0)).toBe(1);
});

test("a statement that fails while sending rows leaves the next one on its connection intact (postgres.js would leave leading holes)", async () => {
  const one = createPool(db.url, { AQM_DB_POOL_MAX: 1 });
  try {
    const run = new Db(one, new ConnectionGate(1, 10), { waitMs: 5000, prepare: true });
    // rows 1–3 reach the client, then row 4 divides by zero
    await expect(run.run((sql) => sql`SELECT i, 1 / (4 - i) AS boom FROM generate_series(1, 10) i`)).rejects.toThrow();
    const next = await run.run((sql) => sql<{ x: number }[]>`SELECT x FROM generate_series(1, 5) x`);
    expect(next.length).toBe(5);
    expect([...next].map((r) => r.x)).toEqual([1, 2, 3, 4, 5]);
    expect((next as unknown as { count: number }).count).toBe(5);
  } finally {
    await one.end({ timeout: 5 });
  }
});

test("a statement cancelled at its deadline while it waits behind another on its connection takes no other statement's answer", async () => {
  const one = createPool(db.url, { AQM_DB_POOL_MAX: 1 });
  try {
    // a gate wider than the pool: postgres.js pipelines the statements on its one connection
    const run = new Db(one, new ConnectionGate(3, 10), { waitMs: 5000, prepare: true });
    await run.run((sql) => sql`SELECT 1`);
    const first = run.run((sql) => sql<{ v: string }[]>`SELECT 'first' AS v, pg_sleep(0.3)::text AS slept`);
    // the second runs long enough that its cancel, sent once it is the one running, lands
    const second = run.run((sql) => sql<{ v: string }[]>`SELECT 'second' AS v, pg_sleep(0.5)::text AS slept`, { deadline: inMs(100) }).then(
      (rows) => rows[0]!.v, (e) => (e instanceof UnavailableError ? "503" : `error: ${e}`));
    const third = run.run((sql) => sql<{ v: string; n: number }[]>`SELECT 'third' AS v, 1 AS n`);
    expect((await first)[0]!.v).toBe("first");
    expect(await second).toBe("503"); // cancelled at its deadline, never handed another statement's answer
    expect((await third)[0]).toEqual({ v: "third", n: 1 });
    expect((await run.run((sql) => sql<{ v: string }[]>`SELECT 'after' AS v`))[0]!.v).toBe("after");
  } finally {
    await one.end({ timeout: 5 });
  }
});

test("a transaction whose work swallowed a failed statement is not reported committed (PostgreSQL answers its COMMIT with ROLLBACK): it fails, and nothing of it is written", async () => {
  const run = new Db(pool, new ConnectionGate(2, 10), { waitMs: 5000, prepare: true });
  await pool`CREATE TABLE IF NOT EXISTS swallowed (v int)`;
  const outcome = await run.transaction(async (tx) => {
    await tx`INSERT INTO swallowed VALUES (1)`;
    await tx`SELECT 1 / 0`.catch(() => {}); // a bug: the failure is dropped, the transaction is aborted
    return "done";
  }).then((v) => v, (e: { kind?: string; detail?: string }) => `${e.kind}: ${e.detail}`);
  expect(outcome).toStartWith("internal: the transaction ended in ROLLBACK, not COMMIT"); // a 500: a bug, not the database's state
  expect((await pool`SELECT count(*)::int AS n FROM swallowed`)[0]!.n).toBe(0);
  // and a transaction that commits is still answered
  expect(await run.transaction(async (tx) => (await tx`INSERT INTO swallowed VALUES (2) RETURNING v`)[0]!.v)).toBe(2);
  expect((await pool`SELECT count(*)::int AS n FROM swallowed`)[0]!.n).toBe(1);
});
