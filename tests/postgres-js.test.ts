import { expect, test } from "bun:test";
import postgres from "postgres";
import { cancelAtDatabase } from "../src/db/cancel.ts";
import { freePort } from "../src/db/embedded.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { tcpProxy } from "./helpers/proxy.ts";
import { waitFor } from "./helpers/wait.ts";

// Canaries for the postgres.js behaviour src/db/ fences. cancel.ts reads private fields of a
// query and db.ts drops leading holes; both answer defects of postgres.js 3.4.10, pinned exactly in
// package.json. When an upgrade changes the fields, or fixes a defect, a test here fails: then
// revisit the fence (cancel.ts, db.ts dropLeadingHoles, stray-errors.ts) before moving the pin.
// What the project's patch changes is shown in tests/postgres-js.patched.test.ts and, for a server
// that goes silent and the pool's reserve() queue, tests/postgres-js.unresponsive.test.ts.

const db = useTestDatabase();
const onePool = () => postgres(db.directUrl, { max: 1, onnotice: () => {} });

test("postgres.js is the pinned 3.4.10, and package.json pins it exactly", async () => {
  const installed = await Bun.file(new URL("../node_modules/postgres/package.json", import.meta.url)).json();
  expect(installed.version).toBe("3.4.10");
  const ours = await Bun.file(new URL("../package.json", import.meta.url)).json();
  expect(ours.dependencies.postgres).toBe("3.4.10");
});

// 3.4.9 pushed a statement into the connection's pipeline before building its message: when the
// build threw, the statement running on the connection was rejected with that error (while it ran
// on, and committed), and every later statement of the connection was handed the answer of the
// one sent after it. 3.4.10 builds first; this keeps the fix from coming back with a later pin.
test("a statement whose message cannot be built, sent while another runs on the connection, is rejected alone: the running one and those behind it get their own answers (3.4.9 handed each the next one's), and so is one sent on an idle connection", async () => {
  const sql = onePool();
  try {
    await sql`SELECT 1`;
    const settle = (q: Promise<{ v: string }[]>) => q.then((r) => r[0]?.v, (e: { code?: string }) => `error ${e.code}`);
    const running = settle(sql`SELECT 'running' AS v, pg_sleep(1)::text AS slept`);
    await Bun.sleep(50);
    const unbuildable = settle(sql`SELECT ${undefined as unknown as string} AS v`);
    const behind = [settle(sql`SELECT 'third' AS v`), settle(sql`SELECT 'fourth' AS v`)];
    const answered = (q: Promise<string | undefined>) => Promise.race([q, Bun.sleep(3000).then(() => "pending")]);
    expect(await answered(running)).toBe("running");
    expect(await answered(unbuildable)).toBe("error UNDEFINED_VALUE");
    expect(await Promise.all(behind.map(answered))).toEqual(["third", "fourth"]);
    // and on an idle connection: rejected, the next one answered
    expect(await answered(settle(sql`SELECT ${undefined as unknown as string} AS v`))).toBe("error UNDEFINED_VALUE");
    expect(await answered(settle(sql`SELECT 'next' AS v`))).toBe("next");
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("the private fields cancel.ts reads: `state` is set once a query is sent, `active` only while it is the one running", async () => {
  const sql = onePool();
  try {
    await sql`SELECT 1`;
    const first = sql`SELECT pg_sleep(0.3)`;
    const second = sql`SELECT 2 AS two`;
    const fields = (q: unknown) => q as { state: unknown; active: boolean };
    expect(fields(first).state).toBeNull(); // built, not yet sent
    first.execute();
    second.execute();
    // both are sent on the one connection: the first runs, the second waits pipelined behind it
    await waitFor(() => fields(first).state && fields(second).state, "both statements sent");
    expect(fields(first).active).toBe(true);
    expect(fields(second).active).toBe(false);
    await first;
    await waitFor(() => !fields(second).active, "the second settled");
    expect((await second)[0]).toEqual({ two: 2 });
  } finally {
    await sql.end({ timeout: 5 });
  }
});

test("defect still there: a query cancelled while it waits pipelined is dropped unanswered, and its answer goes to the next query (cancel.ts fences it)", async () => {
  const sql = onePool();
  try {
    await sql`SELECT 1`;
    const first = sql`SELECT 'first' AS v, pg_sleep(0.2)::text AS slept`;
    const second = sql`SELECT 'second' AS v, pg_sleep(0.5)::text AS slept`;
    first.execute();
    second.execute();
    await waitFor(() => (second as unknown as { state: unknown }).state, "the second sent behind the first");
    const gotSecond = second.then((r) => r[0]?.v, (e: { code?: string }) => `error ${e.code}`);
    void second.cancel(); // raw postgres.js, no fence: the cancel goes out when the second starts running
    const third = sql`SELECT 'third' AS v`.then((r) => r[0]?.v, (e: { code?: string }) => `error ${e.code}`);
    expect((await first)[0]!.v).toBe("first");
    // the second's answer (cancelled: 57014) is handed to the third …
    expect(await third).toBe("error 57014");
    // … and the second itself is never answered (a second after the third's answer, still pending)
    expect(await Promise.race([gotSecond, Bun.sleep(1000).then(() => "never answered")])).toBe("never answered");
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("defect still there: after a statement fails mid-stream, the next one on the connection resolves with leading holes (db.ts drops them)", async () => {
  const sql = onePool();
  try {
    // rows 1–3 reach the client, then row 4 divides by zero
    await expect(sql`SELECT i, 1 / (4 - i) AS boom FROM generate_series(1, 10) i`).rejects.toThrow();
    const next = await sql<{ x: number }[]>`SELECT x FROM generate_series(1, 5) x`;
    expect(0 in next).toBe(false);
    expect(next.filter(Boolean).map((r) => r.x)).toEqual([1, 2, 3, 4, 5]);
  } finally {
    await sql.end({ timeout: 5 });
  }
});

/**
 * A pool of one connection on two hosts where nothing listens yet (as a multi-host URL while no
 * node is the primary: postgres.js keeps trying the hosts in turn with the query in hand), a query
 * cancelled while it connects, then the database.
 */
async function cancelWhileConnecting(cancel: (query: postgres.PendingQuery<postgres.Row[]>) => void) {
  const [dead, port] = [await freePort(), await freePort()];
  const { username, password, pathname } = new URL(db.directUrl);
  const url = `postgres://${username}:${password}@127.0.0.1:${dead},127.0.0.1:${port}${pathname}`;
  const sql = postgres(url, { max: 1, onnotice: () => {}, backoff: () => 0.05, connect_timeout: 2 });
  // it runs a while: PostgreSQL's cancel names a backend, not a statement, so a cancel request
  // that arrives after a short statement finished would stop the next one on the connection
  const first = sql`SELECT 'first' AS v, pg_sleep(0.5)::text AS slept`;
  const firstSettled = first.then(() => "answered", (e: { code?: string }) => `error ${e.code}`);
  await Bun.sleep(100); // refused, and tried again: the query is the connecting connection's first
  cancel(first);
  // the database comes back on both hosts: postgres.js sends a cancel request to the first host
  // (a refused one is an unhandled rejection, which bun test charges to the running test; the
  // server absorbs it, src/db/stray-errors.ts)
  const proxies = [tcpProxy(new URL(db.directUrl), port), tcpProxy(new URL(db.directUrl), dead)];
  try {
    const next = sql`SELECT 'next' AS v`.then((r) => r[0]?.v as string, (e: { code?: string }) => `error ${e.code}`);
    return { first: await Promise.race([firstSettled, Bun.sleep(2000).then(() => "pending")]), next: await Promise.race([next, Bun.sleep(2000).then(() => "stuck")]) };
  } finally {
    await sql.end({ timeout: 0 });
    for (const proxy of proxies) proxy.stop(true);
  }
}

test("defect still there: a query cancelled before it is sent, while its connection is being opened, leaves the pool stuck (cancel.ts fences it)", async () => {
  const seen = await cancelWhileConnecting((query) => void query.cancel());
  expect(seen).toEqual({ first: "error 57014", next: "stuck" });
});

test("the fence: cancelAtDatabase waits until the query runs, so the pool comes back once the database does", async () => {
  const seen = await cancelWhileConnecting((query) => cancelAtDatabase(query));
  expect(seen.next).toBe("next");
  expect(["answered", "error 57014"]).toContain(seen.first); // it ran (then was cancelled, or had already finished)
});
