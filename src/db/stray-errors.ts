import postgres from "postgres";

/**
 * postgres.js (3.4) reads the array types on every new connection in a promise nobody handles:
 * when PostgreSQL stalls just then, statement_timeout (or a cancel) rejects it, and an unhandled
 * rejection ends a Bun or Deno process — one database stall took a server down that way in the
 * outage tests. The connection goes on serving its first statement either way. So a PostgreSQL
 * error nobody handled is logged (SQLSTATE and message) and the process goes on; any other
 * unhandled rejection is a bug and still ends it.
 */
export function onUnhandledRejection(reason: unknown): void {
  if (reason instanceof postgres.PostgresError) {
    console.error(JSON.stringify({
      time: new Date().toISOString(), level: "warn", msg: "PostgreSQL error outside any request (a postgres.js connection set-up)",
      code: reason.code, error: reason.message,
    }));
    return;
  }
  console.error(reason);
  process.exit(1);
}
