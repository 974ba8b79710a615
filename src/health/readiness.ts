import { cancelAtDatabase } from "../db/cancel.ts";
import type { Migration } from "../db/migrate.ts";
import type { Sql } from "../db/pool.ts";

export interface Readiness {
  db_connected: boolean;
  schema_current: boolean;
}

/**
 * Whether PostgreSQL answers within `timeoutMs` and has every given migration applied. A database
 * a later build migrated further is still current for this one (migrations stay backward
 * compatible during a rolling deploy). Never throws.
 */
export async function readiness(sql: Sql, migrations: readonly Migration[], timeoutMs: number): Promise<Readiness> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const query = sql<{ version: number }[]>`SELECT version FROM schema_version`;
  const timeout = new Promise<Readiness>((resolve) => {
    timer = setTimeout(() => {
      cancelAtDatabase(query);
      resolve({ db_connected: false, schema_current: false });
    }, timeoutMs);
  });
  const read = query.then(
    (rows) => {
      const applied = new Set(rows.map((r) => r.version));
      return { db_connected: true, schema_current: migrations.every((m) => applied.has(m.version)) };
    },
    (error: { code?: string }) => ({ db_connected: error?.code === "42P01", schema_current: false }), // 42P01: no schema_version table yet
  );
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
