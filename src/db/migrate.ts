import { migrations as embedded, type Migration } from "./migrations.ts";
import type { Sql } from "./pool.ts";
import { distribute } from "./distribution.ts";

export type { Migration };

/** Any constant works; it only has to be the same in every process that migrates this database. */
const MIGRATION_LOCK = 0x41514d_01;
/** From this migration on, every owner-keyed table can be distributed by owner (distribution.ts). */
const OWNER_KEYED = 14;

/** Every migration this program carries, in version order. */
export function listMigrations(): readonly Migration[] {
  return embedded;
}

async function lockAndReadVersions(tx: Sql): Promise<Set<number>> {
  // A migration (an index rebuilt, rows copied into Citus shards) and the wait for another
  // runner's may take longer than the pool's AQM_DB_STATEMENT_TIMEOUT_MS: not here.
  await tx`SET LOCAL statement_timeout = 0`;
  // Transaction-scoped, so a crashed runner can never leave the lock behind.
  await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`;
  await tx`
    CREATE TABLE IF NOT EXISTS schema_version (
      version     integer PRIMARY KEY,
      description text        NOT NULL,
      applied_at  timestamptz NOT NULL DEFAULT now()
    )`;
  const rows = await tx<{ version: number }[]>`SELECT version FROM schema_version`;
  return new Set(rows.map((r) => r.version));
}

/**
 * Applies pending migrations in order, each in its own transaction together with its
 * schema_version row. Every transaction first takes an advisory lock and re-reads the applied
 * versions, so concurrent runners (several instances starting at once) apply each file once.
 */
export async function migrate(sql: Sql, all: readonly Migration[] = embedded): Promise<Migration[]> {
  const applied: Migration[] = [];
  for (const migration of all) {
    const ran = await sql.begin(async (tx) => {
      const done = await lockAndReadVersions(tx as unknown as Sql);
      if (done.has(migration.version)) return false;
      await tx.unsafe(migration.up);
      await tx`INSERT INTO schema_version (version, description) VALUES (${migration.version}, ${migration.description})`;
      return true;
    });
    if (ran) applied.push(migration);
  }
  // on a Citus coordinator: the owner-keyed tables distributed (a no-op once they are)
  await sql.begin(async (tx) => {
    if ((await lockAndReadVersions(tx as unknown as Sql)).has(OWNER_KEYED)) await distribute(tx as unknown as Sql);
  });
  return applied;
}

/** Reverts the newest applied migration; returns it, or null when none is applied. */
export async function rollbackLatest(sql: Sql, all: readonly Migration[] = embedded): Promise<Migration | null> {
  return sql.begin(async (tx) => {
    const done = await lockAndReadVersions(tx as unknown as Sql);
    const latest = all.filter((m) => done.has(m.version)).at(-1);
    if (!latest) return null;
    await tx.unsafe(latest.down);
    await tx`DELETE FROM schema_version WHERE version = ${latest.version}`;
    return latest;
  });
}
