// Run as a process by entry.test.ts, under the handler the server installs, to produce the two
// rejections postgres.js leaves unhandled — then, with THEN_A_BUG, one of another kind.
// STRAY=types: a new connection whose array-type read times out (the test holds pg_type locked).
// STRAY=cancel: a cancel request that cannot connect (PostgreSQL's port stops listening).
import { createPool } from "../../src/db/pool.ts";
import { onUnhandledRejection } from "../../src/db/stray-errors.ts";

process.on("unhandledRejection", onUnhandledRejection);
const target = new URL(process.env.DATABASE_URL!);

if (process.env.STRAY === "types") {
  const sql = createPool(target.toString(), { AQM_DB_POOL_MAX: 1, AQM_DB_STATEMENT_TIMEOUT_MS: 300 });
  const first = await sql`SELECT 1 AS one`.then(() => "answered", (e: { code?: string }) => `failed ${e.code}`);
  console.log(`first statement: ${first}`);
  await sql.end({ timeout: 1 });
} else {
  // a proxy in front of PostgreSQL: the statement's connection goes through it, then the proxy
  // stops listening, so the cancel request's new connection is refused
  const proxy = Bun.listen<{ upstream?: import("bun").Socket; pending: Uint8Array[] }>({
    hostname: "127.0.0.1", port: 0,
    socket: {
      open(client) {
        client.data = { pending: [] };
        void Bun.connect({
          hostname: target.hostname, port: Number(target.port),
          socket: {
            open(upstream) {
              client.data.upstream = upstream;
              for (const chunk of client.data.pending) upstream.write(chunk);
            },
            data: (_upstream, chunk) => void client.write(chunk),
            close: () => void client.end(),
          },
        });
      },
      data(client, chunk) {
        if (client.data.upstream) client.data.upstream.write(chunk);
        else client.data.pending.push(new Uint8Array(chunk));
      },
      close: (client) => void client.data.upstream?.end(),
    },
  });
  const viaProxy = new URL(target);
  viaProxy.port = String(proxy.port);
  const sql = createPool(viaProxy.toString(), { AQM_DB_POOL_MAX: 1 });
  await sql`SELECT 1`;
  const query = sql`SELECT pg_sleep(0.5)`;
  const outcome = query.then(() => "answered", (e: { code?: string }) => `failed ${e.code}`);
  await new Promise((resolve) => setTimeout(resolve, 100)); // running at PostgreSQL
  proxy.stop(false); // no new connection gets in; the statement's own stays
  query.cancel(); // postgres.js drops the promise of its cancel request, which is refused
  console.log(`statement: ${await outcome}`);
  await sql.end({ timeout: 1 });
}
await new Promise((resolve) => setTimeout(resolve, 300));
console.log("still running");
if (process.env.THEN_A_BUG) {
  void Promise.reject(new TypeError("a bug"));
  await new Promise((resolve) => setTimeout(resolve, 1000));
}
