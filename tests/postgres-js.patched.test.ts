import { expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import postgres from "postgres";
import { useTestDatabase } from "./helpers/db.ts";
import { closingHost, cutAt, typeReadProxy } from "./helpers/proxy.ts";
import { waitFor } from "./helpers/wait.ts";

// What patches/postgres@3.4.10.patch changes in postgres.js's connection handling, each shown
// against a real PostgreSQL (tests/postgres-js.test.ts holds the pin and the defects src/db/
// fences instead). An upgrade that drops the patch fails here first.

const db = useTestDatabase();
const onePool = () => postgres(db.directUrl, { max: 1, onnotice: () => {} });

test("patched (patches/postgres@3.4.10.patch, porsager/postgres#1208): a statement on a reserved connection whose backend died is rejected CONNECTION_CLOSED — never run on the connection opened again, outside its session — instead of crashing the process", async () => {
  const sql = postgres(db.directUrl, { max: 2, onnotice: () => {}, backoff: () => 0.5 });
  const admin = onePool();
  try {
    const conn = await sql.reserve();
    const [{ pid }] = await conn<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    const other = sql`SELECT pg_sleep(1)`; // the pool's other connection busy: the next pooled statement takes the closed one
    const running = conn`SELECT pg_sleep(5)`.then(() => "ok", (e) => e.code);
    await Bun.sleep(200);
    await admin`SELECT pg_terminate_backend(${pid})`;
    expect(["57P01", "CONNECTION_CLOSED"]).toContain(await running); // (the termination message, or the close, whichever postgres.js reads first)
    const pooled = sql`SELECT 1 AS one`.then(() => "ok", (e) => e.code);
    // unpatched, this write reaches a null socket from a setImmediate (an uncaught TypeError ends the
    // process), or, once the pool opened the connection again, runs there: a COMMIT would "succeed"
    const second = await Promise.race([conn`SELECT 1`.then(() => "ok", (e) => e.code), Bun.sleep(3000).then(() => "no answer")]);
    expect(second).toBe("CONNECTION_CLOSED");
    const afterReopen = await Promise.race([conn`SELECT 1`.then(() => "ok", (e) => e.code), Bun.sleep(3000).then(() => "no answer")]);
    expect(afterReopen).toBe("CONNECTION_CLOSED");
    expect(await pooled).toBe("ok");
    await other;
    conn.release();
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  }
});

/** A FATAL ErrorResponse as PostgreSQL sends it when it terminates a backend (pg_terminate_backend, or an immediate shutdown). */
function terminationMessage(): Buffer {
  const fields = Buffer.from("SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0RProcessInterrupts\0\0");
  const head = Buffer.alloc(5);
  head.write("E");
  head.writeUInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields]);
}

test("patched (porsager/postgres#1223): a new connection terminated while it reads its array types opens again, and the first statement is answered there — not failed with the terminated backend's 57P01", async () => {
  // the first connection's array-type read gets PostgreSQL's termination message and the socket closes; later ones pass
  const proxy = await typeReadProxy(new URL(db.directUrl), cutAt((client) => client.end(terminationMessage())));
  const sql = postgres(proxy.url, { max: 1, onnotice: () => {}, backoff: () => 0 });
  try {
    const first = await sql`SELECT 1 AS one`.then((rows) => rows[0], (e: { code?: string }) => `failed ${e.code}`);
    expect(proxy.reads()).toBe(1);
    expect(first).toEqual({ one: 1 });
  } finally {
    await sql.end({ timeout: 1 });
    proxy.close();
  }
});

test("patched (porsager/postgres#1223): after a running statement's backend is terminated, the next statement runs on the connection opened again — not failed with the old backend's 57P01", async () => {
  const sql = onePool();
  const admin = onePool();
  try {
    const [{ pid }] = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    const running = sql`SELECT pg_sleep(5)`.then(() => "ok", (e: { code?: string }) => String(e.code));
    await waitFor(async () => (await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid} AND state = 'active'`)[0]!.n === 1, "the statement running");
    await admin`SELECT pg_terminate_backend(${pid})`;
    expect(["57P01", "CONNECTION_CLOSED"]).toContain(await running);
    const next = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`.then((rows) => rows[0]!.pid, (e: { code?: string }) => `failed ${e.code}`);
    expect(typeof next).toBe("number");
    expect(next).not.toBe(pid);
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  }
});

test("patched (porsager/postgres#1223): with several hosts, a connection's first statement whose backend is terminated is rejected — not left pending — and the next statement is answered", async () => {
  const target = new URL(db.directUrl);
  const twoHosts = `postgres://${target.username}:${target.password}@${target.hostname}:${target.port},${target.hostname}:${target.port}${target.pathname}`;
  const sql = postgres(twoHosts, { max: 1, onnotice: () => {}, backoff: () => 0.05 });
  const admin = onePool();
  try {
    // the connection's first statement (postgres.js runs it while the connection still counts as connecting)
    const first = sql`SELECT 'first-of-its-connection' AS v, pg_sleep(5)::text`.then(() => "ok", (e: { code?: string }) => String(e.code));
    const pid = await waitFor(async () => (await admin<{ pid: number }[]>`SELECT pid FROM pg_stat_activity
      WHERE query LIKE '%first-of-its-connection%' AND pid <> pg_backend_pid() AND state = 'active'`)[0]?.pid, "the first statement running");
    await admin`SELECT pg_terminate_backend(${pid})`;
    expect(await Promise.race([first, Bun.sleep(3000).then(() => "pending")])).toBe("CONNECTION_CLOSED");
    const next = await Promise.race([sql`SELECT 2 AS two`.then((rows) => rows[0], (e: { code?: string }) => `failed ${e.code}`), Bun.sleep(3000).then(() => "pending")]);
    expect(next).toEqual({ two: 2 });
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  }
});

test("patched (patches/postgres@3.4.10.patch): a socket that closes while a statement's write waits to be flushed: the statement is rejected CONNECTION_CLOSED, and the connection opens again and answers the next statements (not left unable to send its startup message, each opening waiting out connect_timeout)", async () => {
  const url = new URL(db.directUrl);
  const sockets: Socket[] = [];
  // postgres.js's `socket` option (documented, missing from its types): it opens each connection
  const socket = () => new Promise<Socket>((resolve, reject) => {
    const s = connect(Number(url.port), url.hostname, () => resolve(s));
    s.once("error", reject);
    sockets.push(s);
  });
  const sql = postgres(url.toString(), { max: 1, connect_timeout: 2, onnotice: () => {}, socket } as postgres.Options<{}>);
  const answer = (q: PromiseLike<readonly unknown[]>) => q.then((r) => r[0], (e: { code?: string }) => String(e.code));
  try {
    const [{ pid }] = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    const pending = sql`SELECT 2 AS two`;
    const first = answer(pending);
    // a statement under 1 KiB is buffered until a setImmediate flushes it; the close is delivered
    // before that, as Node delivers a destroy()'s and as a peer's close read in the same poll can be
    const written = () => Boolean((pending as unknown as { state: unknown }).state);
    for (let turns = 0; turns < 100 && !written(); turns++) await Promise.resolve(); // microtasks only: no immediate runs
    expect(written()).toBe(true);
    const current = sockets.at(-1)!;
    current.destroy();
    current.emit("close", false);
    expect(await first).toBe("CONNECTION_CLOSED");
    expect(await answer(sql`SELECT pg_backend_pid() <> ${pid} AS reopened`)).toEqual({ reopened: true });
    expect(await answer(sql`SELECT 3 AS three`)).toEqual({ three: 3 });
    expect(sockets.length).toBe(2);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("patched (porsager/postgres#1193): hosts that close every opening cleanly: the first statement is rejected CONNECT_TIMEOUT within connect_timeout, each host tried in turn and each round again after the backoff — not retried at once, forever", async () => {
  const [a, b] = [await closingHost(new URL(db.directUrl), () => true), await closingHost(new URL(db.directUrl), () => true)];
  const sql = postgres(`postgres://aqm:x@127.0.0.1:${a.port},127.0.0.1:${b.port}/aqm`, { max: 1, connect_timeout: 1, backoff: () => 0.1, onnotice: () => {} });
  try {
    const outcome = await Promise.race([
      sql`SELECT 1`.then(() => "answered", (e: { code?: string }) => String(e.code)),
      Bun.sleep(4_000).then(() => "still pending after 4 s"),
    ]);
    expect(outcome).toBe("CONNECT_TIMEOUT");
    // one round of both hosts, then a round every 100 ms for 1 s: about 10 openings each (thousands before)
    expect(a.accepted()).toBeGreaterThanOrEqual(2);
    expect(a.accepted()).toBeLessThanOrEqual(12);
    expect(Math.abs(a.accepted() - b.accepted())).toBeLessThanOrEqual(1);
  } finally {
    await sql.end({ timeout: 1 });
    a.close();
    b.close();
  }
});

test("patched (porsager/postgres#1193): a host that closes its first 3 openings cleanly and then answers: the first statement waits through them and is answered on the 4th", async () => {
  const host = await closingHost(new URL(db.directUrl), (n) => n <= 3);
  const url = new URL(db.directUrl);
  url.host = `127.0.0.1:${host.port}`;
  const sql = postgres(url.toString(), { max: 1, connect_timeout: 5, backoff: () => 0.05, onnotice: () => {} });
  try {
    expect((await sql<[{ one: number }]>`SELECT 1 AS one`)[0]).toEqual({ one: 1 });
    expect(host.accepted()).toBe(4);
  } finally {
    await sql.end({ timeout: 1 });
    host.close();
  }
});

test("patched (porsager/postgres#1193): sql.end() called while an opening is tried again resolves once its statement is rejected CONNECT_TIMEOUT", async () => {
  const host = await closingHost(new URL(db.directUrl), () => true);
  const sql = postgres(`postgres://aqm:x@127.0.0.1:${host.port}/aqm`, { max: 1, connect_timeout: 1, backoff: () => 0.05, onnotice: () => {} });
  try {
    const first = sql`SELECT 1`.then(() => "answered", (e: { code?: string }) => String(e.code));
    await waitFor(() => host.accepted() >= 2, "the opening tried again");
    const ended = sql.end().then(() => "ended");
    expect(await first).toBe("CONNECT_TIMEOUT");
    expect(await Promise.race([ended, Bun.sleep(3_000).then(() => "end() still pending")])).toBe("ended");
  } finally {
    host.close();
  }
});

test("patched (porsager/postgres#1193): a reserve() that waited through openings closed cleanly leaves the pool's retry count at 0 once it has its connection (the next reopening waits no grown backoff)", async () => {
  const host = await closingHost(new URL(db.directUrl), (n) => n <= 3);
  const url = new URL(db.directUrl);
  url.host = `127.0.0.1:${host.port}`;
  const sql = postgres(url.toString(), { max: 1, connect_timeout: 5, backoff: (n: number) => 0.05 * n, onnotice: () => {} });
  try {
    const conn = await sql.reserve();
    expect(host.accepted()).toBe(4);
    expect((sql.options as unknown as { shared: { retries: number } }).shared.retries).toBe(0);
    conn.release();
  } finally {
    await sql.end({ timeout: 1 });
    host.close();
  }
});

test("patched (patches/postgres@3.4.10.patch): once the pool opened a reserved connection again after its backend died, a statement on the old reserved handle is rejected CONNECTION_CLOSED, not run on the new session", async () => {
  const sql = onePool();
  const admin = onePool();
  try {
    const conn = await sql.reserve();
    const [{ pid }] = await conn<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    await conn`BEGIN`;
    await admin`SELECT pg_terminate_backend(${pid})`;
    await waitFor(async () => (await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`)[0]!.n === 0, "the backend gone");
    expect(await conn`SELECT 1`.then(() => "ok", (e: { code?: string }) => String(e.code))).not.toBe("ok"); // the close is seen
    // the pool's only connection, opened again for a pooled statement: a new backend, no transaction
    const [{ pid: reopened }] = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    expect(reopened).not.toBe(pid);
    // the old handle's COMMIT must not reach the new session (it would "succeed" there: no transaction in progress)
    expect(await conn`COMMIT`.then(() => "committed", (e: { code?: string }) => String(e.code))).toBe("CONNECTION_CLOSED");
    conn.release();
    expect((await sql<[{ one: number }]>`SELECT 1 AS one`)[0]).toEqual({ one: 1 });
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  }
});

test("patched (patches/postgres@3.4.10.patch, porsager/postgres#1216): once the pool opened a transaction's connection again after its backend died, the transaction's next statement is rejected CONNECTION_CLOSED, not run — and committed — on the new session", async () => {
  const sql = onePool();
  const admin = onePool();
  try {
    await admin`CREATE TABLE begin_canary (v text)`;
    let next: Promise<string> | undefined;
    const outcome = sql.begin(async (tx) => {
      await tx`INSERT INTO begin_canary VALUES ('before')`;
      const [{ pid }] = await tx<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
      await admin`SELECT pg_terminate_backend(${pid})`;
      await waitFor(async () => (await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`)[0]!.n === 0, "the backend gone");
      // the pool's only connection, opened again for a pooled statement: a new backend, no transaction
      await waitFor(() => sql`SELECT pg_backend_pid() AS pid`.then(([r]) => r!.pid !== pid, () => false), "the connection opened again");
      next = tx`INSERT INTO begin_canary VALUES ('after')`.then(() => "inserted", (e: { code?: string }) => String(e.code));
      return next;
    }).then(() => "committed", (e: { code?: string }) => `rejected ${e.code}`);
    expect(await outcome).toBe("rejected CONNECTION_CLOSED"); // (as the close is seen, before the transaction's function ends)
    expect(await waitFor(() => next, "the transaction's next statement issued")).toBe("CONNECTION_CLOSED");
    expect((await admin`SELECT v FROM begin_canary`).length).toBe(0);
  } finally {
    await admin`DROP TABLE IF EXISTS begin_canary`;
    await sql.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  }
});

test("patched (patches/postgres@3.4.10.patch): statements waiting client-side behind a running one on a reserved connection, or in a transaction, are rejected when the connection's backend dies — not left pending forever", async () => {
  const sql = postgres(db.directUrl, { max: 2, onnotice: () => {} });
  const admin = onePool();
  const settled = (q: PromiseLike<unknown>) => Promise.race([
    Promise.resolve(q).then(() => "answered", (e: { code?: string }) => `rejected ${e.code}`), Bun.sleep(3_000).then(() => "pending")]);
  const kill = async (pid: number) => {
    await waitFor(async () => (await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid} AND state = 'active'`)[0]!.n === 1, "the first statement running");
    await admin`SELECT pg_terminate_backend(${pid})`;
  };
  try {
    const conn = await sql.reserve();
    const [{ pid }] = await conn<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    // a statement with a parameter, not yet prepared, is described first: the next one waits client-side
    const running = conn`SELECT pg_sleep(${5})`;
    const waiting = conn`SELECT 2 AS two`;
    void running.catch(() => {});
    await kill(pid);
    expect(await settled(running)).toStartWith("rejected");
    expect(await settled(waiting)).toBe("rejected CONNECTION_CLOSED");
    conn.release();

    let inTransaction: Promise<string> | undefined;
    const transaction = sql.begin(async (tx) => {
      const [{ pid: txPid }] = await tx<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
      const first = tx`SELECT pg_sleep(${5})`;
      inTransaction = settled(tx`SELECT 2 AS two`);
      void first.catch(() => {});
      await kill(txPid);
      return first;
    }).then(() => "committed", (e: { code?: string }) => `rejected ${e.code}`);
    expect(await transaction).toStartWith("rejected");
    expect(await waitFor(() => inTransaction, "the transaction's second statement issued")).toBe("rejected CONNECTION_CLOSED");
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  }
});
