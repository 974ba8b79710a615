import type { Config } from "../config.ts";
import { createPool, type PoolConfig, type Sql } from "./pool.ts";

type ReservedSql = Awaited<ReturnType<Sql["reserve"]>>;

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

const fix = "set AQM_DB_POOLER=transaction and AQM_DATABASE_DIRECT_URL (a direct connection to the same database); "
  + 'docs/runbook.md, "Through a transaction-mode pooler"';

/**
 * A pooler such as PgBouncer refuses the startup parameters (the timeouts) that the pool sends
 * without AQM_DB_POOLER=transaction, on every new connection: 08P01 "unsupported startup
 * parameter: statement_timeout". The one line that says what to set, or undefined for any other error.
 */
export function startupParameterRefused(error: unknown): string | undefined {
  const { code, message } = error as { code?: string; message?: string };
  if (code !== "08P01" || !message?.startsWith("unsupported startup parameter")) return undefined;
  return `aqm: DATABASE_URL is a pooler (PgBouncer?) that refuses startup parameters (08P01: ${message}): ${fix}`;
}

/**
 * Whether DATABASE_URL, used as without AQM_DB_POOLER=transaction, is in fact a pooler: the one
 * line to end the start with, or undefined. Two cases, both seen with PgBouncer 1.18:
 * - it refuses the timeouts as startup parameters (every connection fails: 503 forever);
 * - it accepts them (`ignore_startup_parameters`) but shares server connections between clients,
 *   so prepared statements collide (42P05, reproduced) or vanish and requests hang at random.
 * The second shows as two client connections on one PostgreSQL backend, which a direct connection
 * can never be: a pooler hands the server connection the first client just released to the next.
 * Anything else (unreachable, too slow) is left to the readiness check.
 */
export async function poolerBehind(url: string, config: PoolConfig): Promise<string | undefined> {
  const probe = createPool(url, { ...config, AQM_DB_POOL_MAX: 2 }, "aqm-coin-server start check");
  const pid = async (conn: ReservedSql) => (await conn<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!.pid;
  const check = async () => {
    const first = await probe.reserve();
    const one = await pid(first);
    const second = await probe.reserve();
    const two = await pid(second);
    first.release();
    second.release();
    return one !== two ? undefined
      : `aqm: DATABASE_URL is a transaction-mode pooler (two of its connections ran on one PostgreSQL backend, pid ${one}), `
        + `where prepared statements and sessions do not hold: ${fix}`;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const deadline = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), (2 * config.AQM_DB_CONNECT_TIMEOUT_S + 1) * 1000)));
    return await Promise.race([check(), deadline]);
  } catch (error) {
    return startupParameterRefused(error);
  } finally {
    clearTimeout(timer);
    await probe.end({ timeout: 1 });
  }
}
