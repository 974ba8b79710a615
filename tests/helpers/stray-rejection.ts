// Run as a process by entry.test.ts, under the handler the server installs, to produce the two
// rejections postgres.js leaves unhandled — then, with THEN_A_BUG, one of another kind.
// STRAY=types: a new connection whose array-type read times out (pg_type locked just before it).
// STRAY=cancel: a cancel request that cannot connect (PostgreSQL's port stops listening).
// STRAY=reset: a new connection reset (TCP RST) while its array-type read runs: a read error,
// ECONNRESET without a port, as when PostgreSQL crashes just then (tests/outage.test.ts).
import postgres from "postgres";
import { createPool } from "../../src/db/pool.ts";
import { onUnhandledRejection } from "../../src/db/stray-errors.ts";
import { cutAt, tcpProxy, typeReadProxy } from "./proxy.ts";
import { waitFor } from "./wait.ts";

process.on("unhandledRejection", onUnhandledRejection);
// Listeners run in order: this one only sees a rejection after the server's handler let the
// process go on (one that ends the process ends it first), and tells the script it happened.
const handled: unknown[] = [];
process.on("unhandledRejection", (reason) => void handled.push(reason));
const target = new URL(process.env.DATABASE_URL!);

if (process.env.STRAY === "reset") {
  // the first connection's array-type read is answered with a TCP reset
  const proxy = await typeReadProxy(target, cutAt((client) => client.resetAndDestroy()));
  const sql = createPool(proxy.url, { AQM_DB_POOL_MAX: 1 });
  const first = await sql`SELECT 1 AS one`.then(() => "answered", (e: { code?: string }) => `failed ${e.code}`);
  console.log(`first statement: ${first}; connections reset: ${proxy.reads()}`);
  await sql.end({ timeout: 1 });
  proxy.close();
} else if (process.env.STRAY === "types") {
  // pg_type is locked once the connection is open, just before its type read reaches PostgreSQL:
  // locked earlier, it could stall the opening itself (a backend that rebuilds its relation cache
  // at start reads pg_type), and the first statement would fail CONNECT_TIMEOUT instead
  const holder = postgres(target.toString(), { max: 1, onnotice: () => {} });
  const lock = await holder.reserve();
  await lock`BEGIN`;
  const proxy = await typeReadProxy(target, (_client, _upstream, forward) =>
    void lock`LOCK TABLE pg_catalog.pg_type IN ACCESS EXCLUSIVE MODE`.then(forward));
  const sql = createPool(proxy.url, { AQM_DB_POOL_MAX: 1, AQM_DB_STATEMENT_TIMEOUT_MS: 300 });
  const first = await sql`SELECT 1 AS one`.then(() => "answered", (e: { code?: string }) => `failed ${e.code}`);
  console.log(`first statement: ${first}`);
  await lock`ROLLBACK`;
  lock.release();
  await Promise.all([sql.end({ timeout: 1 }), holder.end({ timeout: 1 })]);
  proxy.close();
} else {
  // a proxy in front of PostgreSQL: the statement's connection goes through it, then the proxy
  // stops listening, so the cancel request's new connection is refused
  const proxy = tcpProxy(target);
  const viaProxy = new URL(target);
  viaProxy.port = String(proxy.port);
  const sql = createPool(viaProxy.toString(), { AQM_DB_POOL_MAX: 1 });
  const watcher = postgres(target.toString(), { max: 1, onnotice: () => {} }); // direct, to see the statement run
  await sql`SELECT 1`;
  const query = sql`SELECT pg_sleep(1)`;
  const outcome = query.then(() => "answered", (e: { code?: string }) => `failed ${e.code}`);
  await waitFor(async () => (await watcher`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND state = 'active' AND query = 'SELECT pg_sleep(1)'`)[0]!.n === 1, "the statement running at PostgreSQL", 5000);
  await watcher.end();
  proxy.stop(false); // no new connection gets in; the statement's own stays
  query.cancel(); // postgres.js drops the promise of its cancel request, which is refused
  console.log(`statement: ${await outcome}`);
  await sql.end({ timeout: 1 });
}
// the stray rejection reached the server's handler, which returned: the process goes on
await waitFor(() => handled.length >= 1, "postgres.js's unhandled rejection", 20_000); // (seconds on a busy machine)
console.log("still running");
if (process.env.THEN_A_BUG) {
  void Promise.reject(new TypeError("a bug"));
  // the handler ends the process (exit 1) before this sees the rejection; if it let it pass, this
  // sees it and the script says so and ends with 0, which entry.test.ts refuses
  await waitFor(() => handled.length >= 2, "the bug's rejection", 5000);
  console.log("the bug did not end the process");
}
