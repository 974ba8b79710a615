import type { Config } from "../config.ts";
import type { Sql } from "./pool.ts";

/** The PostgreSQL timeouts the server relies on, and the setting each must equal. */
const timeouts = [
  ["statement_timeout", "AQM_DB_STATEMENT_TIMEOUT_MS"],
  ["idle_in_transaction_session_timeout", "AQM_DB_IDLE_TX_TIMEOUT_MS"],
] as const;

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * Behind a transaction-mode pooler the pool sends no startup parameters, so the server
 * connections get their timeouts from the role or the database (`ALTER ROLE … IN DATABASE … SET`,
 * applied by PostgreSQL to every new session the pooler opens). Reads what a server connection
 * really has, through the pooler, and returns one line for each timeout that differs from its
 * setting, naming the statement that fixes it. Empty: all set.
 */
export async function timeoutsBehindPooler(sql: Sql, config: Pick<Config, (typeof timeouts)[number][1]>): Promise<string[]> {
  const rows = await sql<{ name: string; ms: number; role: string; db: string }[]>`
    SELECT name, setting::int AS ms, current_user AS role, current_database() AS db
    FROM pg_settings WHERE name IN ('statement_timeout', 'idle_in_transaction_session_timeout')`;
  return timeouts.flatMap(([name, setting]) => {
    const row = rows.find((r) => r.name === name);
    const want = config[setting];
    if (!row || row.ms === want) return [];
    return [`${name} is ${row.ms} ms through the pooler, ${setting} is ${want}: `
      + `ALTER ROLE ${quoteIdent(row.role)} IN DATABASE ${quoteIdent(row.db)} SET ${name} = ${want}`];
  });
}
