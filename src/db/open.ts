import type { Config } from "../config.ts";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "./embedded.ts";
import { migrate } from "./migrate.ts";
import { closePool, createPool, type Sql } from "./pool.ts";

export interface Database {
  sql: Sql;
  /** true when this process started the embedded PostgreSQL. */
  embedded: boolean;
  close(): Promise<void>;
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL when it is empty; migrates by default. */
export async function openDatabase(config: Config, { migrate: runMigrations = true } = {}): Promise<Database> {
  let embedded: EmbeddedDatabase | undefined;
  let url = config.DATABASE_URL;
  if (!url) {
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
    async close() {
      await closePool(sql);
      await embedded?.stop();
    },
  };
}
