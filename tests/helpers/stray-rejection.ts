// Run as a process by entry.test.ts: a new postgres.js connection whose array-type read times out
// (pg_type is locked by the test) — the rejection postgres.js leaves unhandled — under the handler
// the server installs; then an unhandled rejection of another kind.
import { createPool } from "../../src/db/pool.ts";
import { onUnhandledRejection } from "../../src/db/stray-errors.ts";

process.on("unhandledRejection", onUnhandledRejection);
const sql = createPool(process.env.DATABASE_URL!, { AQM_DB_POOL_MAX: 1, AQM_DB_STATEMENT_TIMEOUT_MS: 300 });
const first = await sql`SELECT 1 AS one`.then(() => "answered", (e: { code?: string }) => `failed ${e.code}`);
console.log(`first statement: ${first}`);
await new Promise((resolve) => setTimeout(resolve, 200));
console.log("still running");
await sql.end({ timeout: 1 });
if (process.env.THEN_A_BUG) {
  void Promise.reject(new TypeError("a bug"));
  await new Promise((resolve) => setTimeout(resolve, 1000));
}
