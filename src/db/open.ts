import { ConfigError, type Config } from "../config.ts";
import type { EmbeddedDatabase } from "./embedded.ts";
import { migrate } from "./migrate.ts";
import { citusInstalled } from "./distribution.ts";
import { refuseLosableCommits } from "./durability.ts";
import { closePool, createPool, createSessionPool, hostsOf, type PoolConfig, type Sql } from "./pool.ts";

export interface Database {
  /** The request pool: through the pooler when there is one. */
  sql: Sql;
  /**
   * Session connections to the same database, for what needs one: migrations, the maintenance
   * lock, LISTEN. A pool of its own, on AQM_DATABASE_DIRECT_URL when set, else on DATABASE_URL.
   */
  session: Sql;
  /** true when this process started the embedded PostgreSQL. */
  embedded: boolean;
  /** Closes the pools (queries still running after `timeoutSeconds` are cancelled) and stops the embedded PostgreSQL. */
  close(timeoutSeconds?: number): Promise<void>;
}

/**
 * Which PostgreSQL to use: "embedded", or DATABASE_URL (with the direct URL for sessions).
 * Combinations that cannot work stop the start with a ConfigError naming the settings.
 */
export function chooseDatabase(config: Config): "embedded" | { url: string; direct: string | undefined } {
  const { DATABASE_URL: url, AQM_DATABASE_DIRECT_URL: direct, AQM_DB_POOLER: pooler, AQM_EMBEDDED: embedded } = config;
  if (!url) {
    if (direct || pooler !== "none") throw new ConfigError("AQM_DATABASE_DIRECT_URL and AQM_DB_POOLER need DATABASE_URL");
    if (embedded === "off") throw new ConfigError("AQM_EMBEDDED=off needs DATABASE_URL");
    if (config.NODE_ENV === "production" && embedded !== "on") {
      throw new ConfigError("NODE_ENV=production needs DATABASE_URL (the embedded PostgreSQL is for development; AQM_EMBEDDED=on runs it anyway)");
    }
    return "embedded";
  }
  for (const [name, value] of [["DATABASE_URL", url], ["AQM_DATABASE_DIRECT_URL", direct]] as const) {
    const { hosts, targetSessionAttrs } = value ? hostsOf(value) : { hosts: [], targetSessionAttrs: null };
    if (hosts.length > 1 && targetSessionAttrs !== null && targetSessionAttrs !== "primary") {
      throw new ConfigError(`${name} names several hosts with target_session_attrs=${targetSessionAttrs}: use target_session_attrs=primary `
        + "(or leave it out): read-write only checks default_transaction_read_only, which a PostgreSQL 14+ standby reports as off");
    }
  }
  if (pooler === "transaction" && !direct) {
    throw new ConfigError("AQM_DB_POOLER=transaction needs AQM_DATABASE_DIRECT_URL: migrations, the maintenance lock and LISTEN "
      + "need a session, which a transaction-mode pooler does not keep");
  }
  return { url, direct: direct || undefined };
}

/** The request pool on `url`: generic plans on one PostgreSQL, not on Citus (createPool), asked through `session`. */
export async function createRequestPool(url: string, config: Partial<PoolConfig>, session: Sql): Promise<Sql> {
  const [engine] = await citusInstalled(session);
  return createPool(url, config, undefined, !engine!.citus);
}

/**
 * Opens `n` connections of `sql` now (as many statements at once: postgres.js opens a connection
 * for each while it has fewer than its maximum), so that the first burst of requests finds them
 * open. Opened lazily under that burst instead, while the process also takes thousands of
 * requests, a connection's start-up waited on a busy event loop past the claims' deadlines: 10,000
 * claims at once lost whole batches (503) in about one start in five (bench/README.md, "Issue 21,
 * seventh round"). Waits `withinMs` at most; a failure is left to the requests (they answer 503
 * and connect again).
 */
export async function openConnections(sql: Sql, n: number, withinMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(Array.from({ length: n }, () => sql`SELECT 1`)).catch(() => {}),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, withinMs))),
  ]);
  clearTimeout(timer);
}

/**
 * Connects to DATABASE_URL, or starts the embedded PostgreSQL when it is empty (and allowed);
 * by default refuses a database whose commits a claim cannot rely on (LosableCommits), then
 * migrates over a session connection.
 */
export async function openDatabase(config: Config, { migrate: runMigrations = true } = {}): Promise<Database> {
  const choice = chooseDatabase(config);
  let embedded: EmbeddedDatabase | undefined;
  let url: string;
  let direct: string | undefined;
  if (choice === "embedded") {
    const { startEmbeddedPostgres } = await import("./embedded.ts"); // only loaded when used
    embedded = await startEmbeddedPostgres({ dataDir: config.AQM_DATA_DIR, port: config.AQM_EMBEDDED_PG_PORT });
    url = embedded.url;
  } else {
    ({ url, direct } = choice);
  }
  // A small pool: a maintenance run holds one connection, LISTEN opens its own from these options.
  const session = createSessionPool(direct ?? url, config);
  let sql: Sql | undefined;
  const close = async (timeoutSeconds = 5) => {
    await Promise.all([sql && closePool(sql, timeoutSeconds), closePool(session, timeoutSeconds)]);
    await embedded?.stop();
  };
  try {
    if (runMigrations) {
      await refuseLosableCommits(url, config); // before anything is written
      await migrate(session);
    }
    sql = await createRequestPool(url, config, session);
  } catch (error) {
    await close();
    throw error;
  }
  return { sql, session, embedded: embedded !== undefined, close };
}
