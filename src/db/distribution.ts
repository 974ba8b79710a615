import type { Sql } from "./pool.ts";

/**
 * On Citus, every owner-keyed table is distributed by its owner column and co-located with the
 * coins, so that one owner's coins, last-resort coins, claimed key ids, stock watch, quota rows,
 * replay records and refunds live in one shard group and a claim batch of one shard's owners is
 * one router statement (docs/runbook.md, "Citus"). claim_key is distributed by the key's hash,
 * apart ("none": a group of its own). The rest (schema_version, maintenance_tick) stays on the
 * coordinator. A table created by a later migration is added here.
 */
export const distributed = [
  ["coin_inventory", "user_id", "default"],
  ["last_resort_coin", "user_id", "coin_inventory"],
  ["device", "user_id", "coin_inventory"],
  ["claimed_key", "user_id", "coin_inventory"],
  ["stock_watch", "user_id", "coin_inventory"],
  ["claim_quota", "target", "coin_inventory"],
  ["claim_replay", "target", "coin_inventory"],
  ["claim_refund", "target", "coin_inventory"],
  ["claim_key", "ref", "none"],
] as const;

/** The table whose shards name the shard groups (the others are co-located with it). */
export const anchorTable = distributed[0][0];

const exists = async (tx: Sql, table: string) =>
  (await tx<{ t: string | null }[]>`SELECT to_regclass(${table})::text AS t`)[0]!.t !== null;

/** Whether the database has the citus extension (then the server runs as on a coordinator): one row, `citus`. */
export const citusInstalled = (sql: Sql) =>
  sql<{ citus: boolean }[]>`SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus`;

/**
 * Distributes the tables above that are not distributed yet: all of them on a fresh coordinator,
 * and the existing rows of a database restored from one PostgreSQL (create_distributed_table
 * copies them into the shards; writes wait meanwhile). Runs after the migrations, under their
 * lock; does nothing without Citus. Returns the tables it distributed.
 */
export async function distribute(tx: Sql): Promise<string[]> {
  if (!(await citusInstalled(tx))[0]!.citus) return [];
  const rows = await tx<{ table: string }[]>`SELECT logicalrelid::text AS table FROM pg_dist_partition`;
  const done = new Set(rows.map((r) => r.table));
  const added: string[] = [];
  for (const [table, column, colocateWith] of distributed) {
    if (done.has(table) || !(await exists(tx, table))) continue;
    await tx`SELECT create_distributed_table(${table}::regclass, ${column}, colocate_with => ${colocateWith})`;
    added.push(table);
  }
  return added;
}
