import { expect, test } from "bun:test";
import postgres from "postgres";
import { useTestDatabase } from "./helpers/db.ts";
import { freePort } from "../src/db/embedded.ts";
import { cutsEveryTypeRead, silentHost, tcpProxy, typeReadProxy } from "./helpers/proxy.ts";

// What patches/postgres@3.4.10.patch adds for a host that goes silent: `unresponsive_timeout`
// (src/db/pool.ts sets it from AQM_DB_UNRESPONSIVE_S).

const db = useTestDatabase();
const settle = (q: Promise<{ v: string }[]>) => q.then((r) => r[0]?.v, (e: { code?: string }) => `error ${e.code}`);
const within = <T>(q: Promise<T>, ms: number) => Promise.race([q, Bun.sleep(ms).then(() => "pending" as const)]);

/** A pool of one connection on [a host that can go silent, the database], opened on the first. */
async function onSilentHost(options: postgres.Options<Record<string, postgres.PostgresType>>) {
  const direct = new URL(db.directUrl);
  const host = await silentHost(direct);
  const url = `postgres://${direct.username}:${direct.password}@127.0.0.1:${host.port},127.0.0.1:${direct.port}${direct.pathname}`;
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 1, ...options });
  await sql`SELECT 1`;
  expect(host.accepted()).toBe(1);
  return { sql, host, done: async () => { await sql.end({ timeout: 0 }); host.close(); } };
}

test("patched: a connection whose server goes silent with statements outstanding is given up after unresponsive_timeout — each statement rejected CONNECTION_UNRESPONSIVE — and the next statement is answered by the next host", async () => {
  const { sql, host, done } = await onSilentHost({ unresponsive_timeout: 1 } as never);
  try {
    host.silence();
    const started = performance.now();
    const outstanding = [settle(sql`SELECT 'a' AS v`), settle(sql`SELECT 'b' AS v`), settle(sql`SELECT 'c' AS v`)];
    expect(await within(Promise.all(outstanding), 5000)).toEqual(Array(3).fill("error CONNECTION_UNRESPONSIVE"));
    expect(performance.now() - started).toBeGreaterThanOrEqual(1000);
    expect(await within(settle(sql`SELECT 'next' AS v`), 5000)).toBe("next");
    expect(host.accepted()).toBe(1); // opened on the next host, not on the silent one
  } finally {
    await done();
  }
});

test("patched: a new connection whose type read goes unanswered is given up after unresponsive_timeout, and the opening goes on to the next host — its first statement answered there, nothing left unhandled", async () => {
  const direct = new URL(db.directUrl);
  const held = await typeReadProxy(direct, () => {}); // the read is never forwarded, never answered
  const url = `postgres://${direct.username}:${direct.password}@127.0.0.1:${new URL(held.url).port},127.0.0.1:${direct.port}${direct.pathname}`;
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5, unresponsive_timeout: 1 } as never);
  try {
    const started = performance.now();
    expect(await within(settle(sql`SELECT 'first' AS v`), 5000)).toBe("first");
    expect(held.reads()).toBe(1);
    expect(performance.now() - started).toBeGreaterThanOrEqual(1000);
  } finally {
    await sql.end({ timeout: 0 });
    held.close();
  }
});

test("patched: statements each answered within unresponsive_timeout are untouched, though the connection stays busy longer than it", async () => {
  const { sql, done } = await onSilentHost({ unresponsive_timeout: 1.5 } as never);
  try {
    const slow = ["a", "b", "c", "d"].map((v) => settle(sql`SELECT ${v}::text AS v, pg_sleep(0.5)::text AS slept`));
    expect(await Promise.all(slow)).toEqual(["a", "b", "c", "d"]); // 2 s busy, never 1.5 s silent
  } finally {
    await done();
  }
});

test("patched: a reserve() waiting for the connection that is given up for silence gets the one opened next (unpatched, handed to the opening as its first statement, it was dropped and never settled)", async () => {
  const { sql, host, done } = await onSilentHost({ unresponsive_timeout: 1 } as never);
  try {
    host.silence();
    const stuck = settle(sql`SELECT 'a' AS v`);
    await Bun.sleep(50); // sent: the connection is busy, the reserve() waits for it
    const reserving = sql.reserve();
    expect(await within(stuck, 5000)).toBe("error CONNECTION_UNRESPONSIVE");
    const reserved = await within(reserving, 5000);
    expect(reserved).not.toBe("pending");
    const conn = reserved as postgres.ReservedSql;
    expect(await settle(conn`SELECT 'on it' AS v`)).toBe("on it");
    conn.release();
    expect(await within(settle(sql`SELECT 'pool' AS v`), 5000)).toBe("pool");
  } finally {
    await done();
  }
});

test("patched: a reserve() whose opening failed is never handed a connection later — the connection serves the statements queued behind it once the database answers", async () => {
  const port = await freePort(); // nothing listens yet
  const direct = new URL(db.directUrl);
  const sql = postgres(`postgres://${direct.username}:${direct.password}@127.0.0.1:${port}${direct.pathname}`,
    { max: 1, onnotice: () => {}, connect_timeout: 1, backoff: () => 0.05 });
  let proxy: ReturnType<typeof tcpProxy> | undefined;
  try {
    const reserving = sql.reserve().then(() => "reserved", (e: { code?: string }) => `error ${e.code}`);
    expect(await within(reserving, 5000)).toBe("error ECONNREFUSED");
    const next = settle(sql`SELECT 'next' AS v`); // queued while the connection opens again for the dead reserve
    proxy = tcpProxy(direct, port);
    expect(await within(next, 5000)).toBe("next");
    expect(await within(settle(sql`SELECT 'after' AS v`), 5000)).toBe("after");
  } finally {
    await sql.end({ timeout: 0 });
    proxy?.stop(true);
  }
});

test("patched: a reserve() and a statement behind it, on a pool whose every opening closes at its type read, are both rejected CONNECT_TIMEOUT — the pool does not reopen for the reserve for good", async () => {
  const proxy = await cutsEveryTypeRead(new URL(db.directUrl));
  const direct = new URL(db.directUrl);
  const sql = postgres(`postgres://${direct.username}:${direct.password}@127.0.0.1:${proxy.port}${direct.pathname}`,
    { max: 1, onnotice: () => {}, connect_timeout: 1, backoff: () => 0.05 });
  try {
    const reserving = sql.reserve().then(() => "reserved", (e: { code?: string }) => `error ${e.code}`);
    const behind = settle(sql`SELECT 'behind' AS v`);
    expect(await within(reserving, 4000)).toBe("error CONNECT_TIMEOUT");
    expect(await within(behind, 4000)).toBe("error CONNECT_TIMEOUT");
    const openings = proxy.accepted();
    await Bun.sleep(500);
    expect(proxy.accepted()).toBe(openings); // nothing waits: no more openings
  } finally {
    await sql.end({ timeout: 0 });
    proxy.close();
  }
});

test("patched: a reserve() on a pool without the type read (fetch_types: false) gets its connection (it was left opening for good)", async () => {
  const sql = postgres(db.directUrl, { max: 1, onnotice: () => {}, fetch_types: false });
  try {
    const reserved = await within(sql.reserve(), 3000);
    expect(reserved).not.toBe("pending");
    expect(await settle((reserved as postgres.ReservedSql)`SELECT 'on it' AS v`)).toBe("on it");
    (reserved as postgres.ReservedSql).release();
    expect(await within(settle(sql`SELECT 'pool' AS v`), 3000)).toBe("pool");
  } finally {
    await sql.end({ timeout: 0 });
  }
});

test("without unresponsive_timeout (as postgres.js is published: the option unset) nothing gives up a statement on a connection whose server went silent: still pending 2.5 s later", async () => {
  const { sql, host, done } = await onSilentHost({});
  try {
    host.silence();
    expect(await within(settle(sql`SELECT 'a' AS v`), 2500)).toBe("pending");
  } finally {
    await done();
  }
});
