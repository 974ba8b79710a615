import postgres from "postgres";
import { recordDatabasePorts } from "./stray-errors.ts";
import { settings, type Config } from "../config.ts";

export type Sql = postgres.Sql;

export type PoolConfig = Pick<Config,
  "AQM_DB_POOL_MAX" | "AQM_DB_CONNECT_TIMEOUT_S" | "AQM_DB_IDLE_TIMEOUT_S" | "AQM_DB_MAX_LIFETIME_S"
  | "AQM_DB_STATEMENT_TIMEOUT_MS" | "AQM_DB_IDLE_TX_TIMEOUT_MS" | "AQM_DB_POOLER" | "AQM_DB_UNRESPONSIVE_S">;

const poolSettings = ["AQM_DB_POOL_MAX", "AQM_DB_CONNECT_TIMEOUT_S", "AQM_DB_IDLE_TIMEOUT_S", "AQM_DB_MAX_LIFETIME_S",
  "AQM_DB_STATEMENT_TIMEOUT_MS", "AQM_DB_IDLE_TX_TIMEOUT_MS", "AQM_DB_POOLER", "AQM_DB_UNRESPONSIVE_S"] as const;

export const poolDefaults = Object.fromEntries(poolSettings.map((name) => [name, settings[name].default])) as PoolConfig;

/**
 * Seconds before the next attempt to reconnect. postgres.js backs off up to 20 s by default;
 * queries have deadlines here, so a short, flat retry brings an instance back within a second of
 * PostgreSQL's return instead of many seconds later.
 */
const reconnectDelay = (attempt: number) => Math.min(0.05 * 2 ** attempt, 0.5);

/** The hosts of a URL in libpq's multi-host form (host1:port1,host2:port2), and its target_session_attrs. */
export function hostsOf(url: string): { hosts: string[]; targetSessionAttrs: string | null } {
  const authority = /^[a-z]+:\/\/(?:[^@/?]*@)?([^/?]*)/i.exec(url)?.[1] ?? "";
  const query = url.includes("?") ? new URLSearchParams(url.slice(url.indexOf("?") + 1)) : new URLSearchParams();
  return { hosts: authority.split(",").filter(Boolean), targetSessionAttrs: query.get("target_session_attrs") };
}

/** Several hosts and no target_session_attrs: connect to the writable primary only. */
const primaryOnly = (url: string) => {
  const { hosts, targetSessionAttrs } = hostsOf(url);
  return hosts.length > 1 && targetSessionAttrs === null;
};

let warningsSeen = 0;
/** How many WARNINGs PostgreSQL has sent this process (db.ts distrusts a success that came with one). */
export const warningCount = () => warningsSeen;

/**
 * PostgreSQL's warnings reach the log with their SQLSTATE — above all "canceling wait for
 * synchronous replication" (the commit is local, maybe not on the standby); plain notices do not.
 */
function logWarning(notice: postgres.Notice): void {
  if (notice.severity !== "WARNING") return;
  warningsSeen++;
  console.error(JSON.stringify({
    time: new Date().toISOString(), level: "warn", msg: "PostgreSQL warning", code: notice.code, error: notice.message,
    ...(notice.detail ? { detail: notice.detail } : {}),
  }));
}

/**
 * The one shared postgres.js pool of a server process. Behind a transaction-mode pooler
 * (AQM_DB_POOLER=transaction) consecutive statements may run on different server connections,
 * and PgBouncer refuses unknown startup parameters: statements are not prepared (each is parsed,
 * bound and run before the pooler may hand the server connection on), and the timeouts come
 * from the role instead (src/db/pooler.ts checks them).
 */
/**
 * `genericPlans`: each prepared statement is planned once per connection (plan_cache_mode
 * force_generic_plan). The claim statement's plan costs about 6 ms of PostgreSQL CPU to make and
 * about 1 ms to run; left to itself (auto) a connection often keeps planning it afresh at every
 * run, because its first custom plans look cheaper than the generic one. Every statement of the
 * request pool runs with arrays and keys whose values do not change the best plan. Not on Citus:
 * its planner cannot distribute a generic plan of them ("could not create distributed plan").
 */
export function createPool(url: string, config: Partial<PoolConfig> = {}, applicationName = "aqm-coin-server", genericPlans = false): Sql {
  const c = { ...poolDefaults, ...config };
  const pooled = c.AQM_DB_POOLER === "transaction";
  const sql = postgres(url, {
    max: c.AQM_DB_POOL_MAX,
    connect_timeout: c.AQM_DB_CONNECT_TIMEOUT_S,
    idle_timeout: c.AQM_DB_IDLE_TIMEOUT_S || undefined,
    max_lifetime: c.AQM_DB_MAX_LIFETIME_S || null,
    backoff: reconnectDelay,
    // (patches/: a connection that hears nothing for this long with statements outstanding is given up)
    ...{ unresponsive_timeout: c.AQM_DB_UNRESPONSIVE_S || null },
    onnotice: logWarning,
    target_session_attrs: primaryOnly(url) ? "primary" : undefined,
    prepare: !pooled,
    connection: pooled ? { application_name: applicationName } : {
      application_name: applicationName,
      statement_timeout: c.AQM_DB_STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: c.AQM_DB_IDLE_TX_TIMEOUT_MS,
      ...(genericPlans ? { plan_cache_mode: "force_generic_plan" } : {}),
    },
  });
  recordDatabasePorts(sql.options.port);
  return sql;
}

export async function closePool(sql: Sql, timeoutSeconds = 5): Promise<void> {
  await sql.end({ timeout: timeoutSeconds });
}

/** Connections of the session pool: a maintenance run holds one; the other serves a second job or a tick. */
export const SESSION_POOL_MAX = 2;

/**
 * The session pool beside the request pool: migrations and maintenance runs, which hold a
 * connection for several statements, never take one from the request pool (whose gate would then
 * admit more statements than it has connections). `url`: AQM_DATABASE_DIRECT_URL, or DATABASE_URL.
 */
export function createSessionPool(url: string, config: Partial<PoolConfig> = {}): Sql {
  // never given up for silence (AQM_DB_UNRESPONSIVE_S): a migration, or the wait for another
  // instance's, and a maintenance batch run silent for as long as they take; no request waits here
  // (LISTEN, on a connection of its own from these options, sets its own: notifications.ts)
  return createPool(url, { ...config, AQM_DB_POOLER: "none", AQM_DB_POOL_MAX: SESSION_POOL_MAX, AQM_DB_UNRESPONSIVE_S: 0 },
    "aqm-coin-server session");
}
