import type { Config } from "../config.ts";
import type { EmbeddedDatabase } from "./embedded.ts";
import { migrate } from "./migrate.ts";
import { closePool, createPool, type Sql } from "./pool.ts";

export interface Database {
  sql: Sql;
  /** true when this process started the embedded PostgreSQL. */
  embedded: boolean;
  /** Closes the pool (queries still running after `timeoutSeconds` are cancelled) and stops the embedded PostgreSQL. */
  close(timeoutSeconds?: number): Promise<void>;
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL when it is empty; migrates by default. */
export async function openDatabase(config: Config, { migrate: runMigrations = true } = {}): Promise<Database> {
  let embedded: EmbeddedDatabase | undefined;
  let url = config.DATABASE_URL;
  if (!url) {
    const { startEmbeddedPostgres } = await import("./embedded.ts"); // only loaded when used
    embedded = await startEmbeddedPostgres({ dataDir: config.AQM_DATA_DIR, port: config.AQM_EMBEDDED_PG_PORT });
    url = embedded.url;
  }
  const sql = createPool(url, config);
  try {
    if (runMigrations) await migrate(sql);
  } catch (error) {
    await closePool(sql);
    await embedded?.stop();
    throw error;
  }
  return {
    sql,
    embedded: embedded !== undefined,
    async close(timeoutSeconds = 5) {
      await closePool(sql, timeoutSeconds);
      await embedded?.stop();
    },
  };
}
