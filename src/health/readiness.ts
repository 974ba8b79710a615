import type { Db } from "../db/db.ts";
import { SQLSTATE } from "../db/errors.ts";
import type { Migration } from "../db/migrate.ts";
import { InternalError } from "../errors.ts";

export interface Readiness {
  db_connected: boolean;
  schema_current: boolean;
}

/**
 * Whether PostgreSQL answers before `deadline` (through the gate, like every statement) and has
 * every given migration applied. A database a later build migrated further is still current for
 * this one (migrations stay backward compatible during a rolling deploy). Never throws.
 */
export async function readiness(db: Db, migrations: readonly Migration[], deadline: number): Promise<Readiness> {
  try {
    const rows = await db.run((sql) => sql<{ version: number }[]>`SELECT version FROM schema_version`, { deadline, what: "readiness" });
    const applied = new Set(rows.map((r) => r.version));
    return { db_connected: true, schema_current: migrations.every((m) => applied.has(m.version)) };
  } catch (error) {
    // no schema_version table yet: connected, nothing migrated
    return { db_connected: error instanceof InternalError && error.code === SQLSTATE.undefinedTable, schema_current: false };
  }
}

/** Whether PostgreSQL answers a trivial statement before `deadline`. Never throws. */
export async function reachable(db: Db, deadline: number): Promise<boolean> {
  try {
    const [row] = await db.run((sql) => sql<{ ok: number }[]>`SELECT 1 AS ok`, { deadline, what: "health" });
    return row?.ok === 1;
  } catch {
    return false;
  }
}
