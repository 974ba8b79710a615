import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Sql } from "../src/db/pool.ts";
import { call, makeApp, metricValue, newUser, type TestApp, type User } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

// Waiting instead of polling: claims wait for the owner's upload, owners for their stock to run low.
// Two "instances": two apps, each with its own pool and its own notification listener.
const db = useTestDatabase();
let pools: Sql[];
let one: TestApp;
let two: TestApp;
beforeAll(() => {
  pools = [db.pool({ AQM_DB_POOL_MAX: 4 }), db.pool({ AQM_DB_POOL_MAX: 4 })];
  [one, two] = pools.map((p) => makeApp(p)) as [TestApp, TestApp];
});
afterAll(() => Promise.all(pools.map((p) => p.end({ timeout: 5 }))));

const claim = (app: TestApp, user: User, target: string, want: Record<string, number>, extra: Record<string, unknown> = {}) =>
  call(app, "POST", "/v1/coins/claim", { token: user.token, body: { target_user_id: target, want, ...extra } });
const upload = (app: TestApp, owner: User, n: number) => call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(n) } });

test("a claim that finds nothing waits; an upload to another instance releases it at once", async () => {
  const [owner, bob, admin] = await Promise.all([newUser(), newUser(), newUser({ admin: true })]);
  const metric = (name: string) => metricValue(one, admin.token, name);
  const looks = await metric("aqm_claim_batch_size_count");
  let answered = false;
  const waiting = claim(one, bob, owner.id, { bronze: 2 }, { wait_ms: 20_000 }).finally(() => (answered = true));
  // it looked (a claim statement was sent), found nothing, and waits (the gauge) instead of answering
  await waitFor(async () => (await metric("aqm_claim_batch_size_count")) > looks && (await metric("aqm_claim_waiting")) === 1, "the claim to look, then wait");
  expect(answered).toBe(false);
  const uploaded = performance.now();
  expect((await upload(two, owner, 3)).status).toBe(200);
  const res = await waiting;
  expect(res.status).toBe(200);
  expect(res.json.coins).toHaveLength(2);
  expect(res.json.short).toEqual({ gold: 0, silver: 0, bronze: 0 });
  expect(performance.now() - uploaded).toBeLessThan(2000); // released by the upload, not at its 20 s deadline
});

test("at the deadline it answers 200 with what there is", async () => {
  const [owner, bob] = await Promise.all([newUser(), newUser()]);
  const started = performance.now();
  const res = await claim(one, bob, owner.id, { gold: 1 }, { wait_ms: 400 });
  expect(res.status).toBe(200);
  expect(res.json).toEqual({ coins: [], short: { gold: 1, silver: 0, bronze: 0 } });
  expect(performance.now() - started).toBeGreaterThanOrEqual(390);
});

test("1,000 waiting claims hold no database connection; uploads release every one of them, no coin twice", async () => {
  const owner = await newUser();
  const requesters = await Promise.all(Array.from({ length: 1000 }, () => newUser()));
  const admin = await newUser({ admin: true });
  const metric = async (name: string) => (await metricValue(one, admin.token, name)) + (await metricValue(two, admin.token, name));
  const looked = await metric("aqm_claim_batch_size_sum");
  const waiting = requesters.map((r, i) => claim(i % 2 ? one : two, r, owner.id, { bronze: 1 }, { wait_ms: 25_000 }));
  // every claim waits (counted from its subscription), has looked (its claim statement ran) and no statement runs
  await waitFor(async () => (await metric("aqm_claim_waiting")) === 1000 && (await metric("aqm_claim_batch_size_sum")) - looked >= 1000
    && (await metric("aqm_db_pool_in_use")) === 0, "1,000 claims waiting", 20_000);
  // the two instances' connections: a listener each at most; the request pools' (4 each) idle,
  // whatever the waiters (through PgBouncer: its server connections, 8 at most, idle too)
  const open = await db.sql<{ app: string; state: string }[]>`SELECT application_name AS app, state FROM pg_stat_activity
    WHERE datname = ${db.name} AND application_name LIKE 'aqm-coin-server%'`;
  const listeners = open.filter((c) => c.app === "aqm-coin-server listen");
  const others = open.filter((c) => c.app !== "aqm-coin-server listen");
  expect(listeners.length).toBeLessThanOrEqual(2);
  expect(others.filter((c) => c.state !== "idle")).toEqual([]); // no statement or transaction held for a waiter
  expect(others.length).toBeLessThanOrEqual(8);
  for (let i = 0; i < 10; i++) expect((await upload(i % 2 ? one : two, owner, 100)).status).toBe(200);
  const answers = await Promise.all(waiting);
  const keys = answers.flatMap((a) => a.json.coins.map((c: { key_id: string }) => c.key_id));
  expect(answers.every((a) => a.status === 200)).toBe(true);
  expect(keys).toHaveLength(1000);
  expect(new Set(keys).size).toBe(1000);
}, 60_000);

test("a shutdown answers waiting claims at once", async () => {
  const pool = db.pool({ AQM_DB_POOL_MAX: 2 });
  try {
    const app = makeApp(pool);
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    const waiting = claim(app, bob, owner.id, { bronze: 1 }, { wait_ms: 20_000 });
    const admin = await newUser({ admin: true });
    await waitFor(async () => (await call(app, "GET", "/metrics", { token: admin.token })).text.includes("aqm_claim_waiting 1"), "the claim to wait");
    const closed = performance.now();
    await app.decorator.aqm.close();
    const res = await waiting;
    expect(res.status).toBe(200);
    expect(res.json.coins).toEqual([]);
    expect(performance.now() - closed).toBeLessThan(5000); // answered by the shutdown, not at its 20 s deadline
  } finally {
    await pool.end({ timeout: 1 });
  }
});

test("the owner's long-poll answers when a claim on another instance takes its stock below N; only for oneself", async () => {
  const [owner, bob] = await Promise.all([newUser(), newUser()]);
  const all = [...makeCoins(5, "GOLD"), ...makeCoins(5, "SILVER"), ...makeCoins(5, "BRONZE")];
  expect((await call(one, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: all } })).status).toBe(200);
  const poll = call(one, "GET", "/v1/coins/count", { token: owner.token, query: { below: 4, wait_ms: 20_000 } });
  await waitFor(async () => (await db.sql`SELECT count(*)::int AS n FROM stock_watch WHERE user_id = ${owner.id}::uuid`)[0]!.n === 1, "the owner watched");
  const taken = performance.now();
  expect((await call(two, "GET", "/v1/coins/fetch", { token: bob.token, query: { target_user_id: owner.id, coin_category: "BRONZE", count: 2 } })).json.coins).toHaveLength(2);
  const res = await poll;
  expect(res.status).toBe(200);
  expect(res.json.bronze).toBe(3);
  expect(performance.now() - taken).toBeLessThan(1500); // notified, not found by the one re-read after the claim bound (2.25 s)
  const forbidden = await call(one, "GET", "/v1/coins/count", { token: bob.token, query: { user_id: owner.id, below: 2, wait_ms: 1000 } });
  expect(forbidden.status).toBe(403);
  const started = performance.now();
  const deadline = await call(one, "GET", "/v1/coins/count", { token: owner.token, query: { below: 1, wait_ms: 400 } });
  expect(deadline.json.bronze).toBe(3);
  expect(performance.now() - started).toBeGreaterThanOrEqual(390);
  const now = await call(one, "GET", "/v1/coins/count", { token: owner.token, query: { below: 10, wait_ms: 5000 } });
  expect(now.json.bronze).toBe(3); // already below: at once
});
