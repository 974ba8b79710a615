import { cancelAtDatabase } from "./cancel.ts";
import postgres from "postgres";
import { settings, type Config } from "../config.ts";

export type Sql = postgres.Sql;

export type PoolConfig = Pick<Config,
  "AQM_DB_POOL_MAX" | "AQM_DB_CONNECT_TIMEOUT_S" | "AQM_DB_IDLE_TIMEOUT_S" | "AQM_DB_MAX_LIFETIME_S"
  | "AQM_DB_STATEMENT_TIMEOUT_MS" | "AQM_DB_IDLE_TX_TIMEOUT_MS" | "AQM_DB_POOLER">;

const poolSettings = ["AQM_DB_POOL_MAX", "AQM_DB_CONNECT_TIMEOUT_S", "AQM_DB_IDLE_TIMEOUT_S", "AQM_DB_MAX_LIFETIME_S",
  "AQM_DB_STATEMENT_TIMEOUT_MS", "AQM_DB_IDLE_TX_TIMEOUT_MS", "AQM_DB_POOLER"] as const;

export const poolDefaults = Object.fromEntries(poolSettings.map((name) => [name, settings[name].default])) as PoolConfig;

/**
 * Seconds before the next attempt to reconnect. postgres.js backs off up to 20 s by default;
 * queries have deadlines here, so a short, flat retry brings an instance back within a second of
 * PostgreSQL's return instead of many seconds later.
 */
const reconnectDelay = (attempt: number) => Math.min(0.05 * 2 ** attempt, 0.5);

/**
 * The one shared postgres.js pool of a server process. Behind a transaction-mode pooler
 * (AQM_DB_POOLER=transaction) consecutive statements may run on different server connections,
 * and PgBouncer refuses unknown startup parameters: statements are not prepared (each is parsed,
 * bound and run before the pooler may hand the server connection on), and the timeouts come
 * from the role instead (src/db/pooler.ts checks them).
 */
export function createPool(url: string, config: Partial<PoolConfig> = {}, applicationName = "aqm-coin-server"): Sql {
  const c = { ...poolDefaults, ...config };
  const pooled = c.AQM_DB_POOLER === "transaction";
  return postgres(url, {
    max: c.AQM_DB_POOL_MAX,
    connect_timeout: c.AQM_DB_CONNECT_TIMEOUT_S,
    idle_timeout: c.AQM_DB_IDLE_TIMEOUT_S || undefined,
    max_lifetime: c.AQM_DB_MAX_LIFETIME_S || null,
    backoff: reconnectDelay,
    onnotice: () => {},
    prepare: !pooled,
    connection: pooled ? { application_name: applicationName } : {
      application_name: applicationName,
      statement_timeout: c.AQM_DB_STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: c.AQM_DB_IDLE_TX_TIMEOUT_MS,
    },
  });
}

export async function closePool(sql: Sql, timeoutSeconds = 5): Promise<void> {
  await sql.end({ timeout: timeoutSeconds });
}

/** True when PostgreSQL answers a trivial query within `timeoutMs`. Never throws. */
export async function healthCheck(sql: Sql, timeoutMs = 1000): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const query = sql`SELECT 1 AS ok`;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => {
      cancelAtDatabase(query);
      resolve(false);
    }, timeoutMs);
  });
  try {
    return await Promise.race([query.then((rows) => rows[0]?.ok === 1), timeout]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
