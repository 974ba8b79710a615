import postgres from "postgres";
import { driverConnectionCodes } from "./errors.ts";

/** The ports the server's pools connect to (createPool records them). */
const databasePorts = new Set<number>();

/** Records where a pool connects: a socket error on one of these ports is postgres.js's. */
export function recordDatabasePorts(ports: readonly (number | string)[]): void {
  for (const port of ports) databasePorts.add(Number(port));
}

/**
 * A PostgreSQL error, a postgres.js connection error, or a socket error on a database port or
 * that postgres.js rejected one of its queries with (it names the query on the error: a read's
 * ECONNRESET carries no port).
 */
function fromTheDatabase(reason: unknown): reason is { code: string; message: string } {
  if (reason instanceof postgres.PostgresError) return true;
  const { code, syscall, port, query } = (reason ?? {}) as { code?: unknown; syscall?: unknown; port?: unknown; query?: unknown };
  if (typeof code !== "string") return false;
  return driverConnectionCodes.has(code) || (typeof syscall === "string" && (databasePorts.has(Number(port)) || typeof query === "string"));
}

/**
 * postgres.js (3.4) leaves two promises of its own unhandled: the array-type read of every new
 * connection (rejected when PostgreSQL stalls just then: statement_timeout; or when the connection
 * is reset just then, as by a PostgreSQL in immediate shutdown: a read's ECONNRESET) and the cancel
 * request behind `query.cancel()` (rejected when PostgreSQL is down: ECONNREFUSED on its port).
 * An unhandled rejection ends a Bun or Deno process — each took a server down in the outage
 * tests. Such an error is logged (its code and message) and the process goes on: the statements
 * concerned get their own answers. Any other unhandled rejection — a socket error on another
 * port included — is a bug and still ends the process.
 */
export function onUnhandledRejection(reason: unknown): void {
  if (fromTheDatabase(reason)) {
    console.error(JSON.stringify({
      time: new Date().toISOString(), level: "warn", msg: "database error outside any request (postgres.js)",
      code: reason.code, error: reason.message,
    }));
    return;
  }
  console.error(reason);
  process.exit(1);
}
