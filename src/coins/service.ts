import type { Sql } from "../db/pool.ts";
import { DatabaseError, KeyConflictError, SQLSTATE, ValidationError, isConnectionError, sqlstateOf } from "../errors.ts";
import type { Coin, Inventory, Tier, UploadResult } from "./model.ts";

export interface UploadOutcome extends UploadResult {
  insertedByTier: Partial<Record<Tier, number>>;
}

/** Rows per maintenance DELETE, so no statement holds its locks for long. */
export const maintenanceBatch = 5000;

// PostgreSQL's base64 output breaks lines every 76 characters; the wire format has none.
export const coinColumns = (sql: Sql) => sql`
  c.key_id, c.coin_category,
  translate(encode(c.public_key_blob, 'base64'), E'\n', '') AS public_key_b64,
  translate(encode(c.signature_blob, 'base64'), E'\n', '') AS signature_b64`;

function toServiceError(error: unknown): unknown {
  if (isConnectionError(error)) return error; // answered 503 by the HTTP layer
  switch (sqlstateOf(error)) {
    case SQLSTATE.checkViolation:
      return new ValidationError("A value is outside its allowed set (coin_category must be GOLD, SILVER or BRONZE)",
        [{ field: "coin_category", message: "must be GOLD, SILVER or BRONZE" }]);
    case "22P02": // invalid_text_representation: a user id that is not a UUID
      return new ValidationError("A user id is not a UUID", [{ field: "user_id", message: "must be a UUID" }]);
    case "22023": // invalid_parameter_value: decode() of invalid base64
      return new ValidationError("A blob is not valid base64", [{ field: "coins", message: "blobs must be standard base64" }]);
    case "22001": // string_data_right_truncation: key_id longer than 36
      return new ValidationError("A key_id is longer than 36 characters", [{ field: "key_id", message: "at most 36 characters" }]);
    case undefined:
      return error;
    default:
      return new DatabaseError(sqlstateOf(error)!, error);
  }
}

/** Runs a statement, turning the PostgreSQL errors a caller can cause into typed errors. */
export async function mapped<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    throw toServiceError(error);
  }
}

export function coinService(sql: Sql) {
  return {
    /**
     * Stores a batch atomically in one statement. A coin already stored with identical content
     * (or repeated in the batch) is a duplicate and skipped; a key_id already used with other
     * content fails the whole batch with KeyConflictError and nothing is written.
     */
    async uploadCoins(userId: string, coins: Coin[]): Promise<UploadOutcome> {
      if (coins.length === 0) return { inserted: 0, duplicates: 0, insertedByTier: {} };
      const [row] = await mapped(sql<{ by_tier: Partial<Record<Tier, number>>; conflicts: string[] }[]>`
        WITH input AS (
          SELECT k AS key_id, c AS coin_category, decode(p, 'base64') AS public_key_blob,
                 decode(s, 'base64') AS signature_blob, ord
          FROM unnest(${coins.map((c) => c.key_id)}::text[], ${coins.map((c) => c.coin_category)}::text[],
                      ${coins.map((c) => c.public_key_b64)}::text[], ${coins.map((c) => c.signature_b64)}::text[])
               WITH ORDINALITY AS u(k, c, p, s, ord)
        ), conflicts AS (
          SELECT i.key_id FROM input i
          JOIN coin_inventory s ON s.user_id = ${userId}::uuid AND s.key_id = i.key_id
          WHERE (s.coin_category, s.public_key_blob, s.signature_blob)
                IS DISTINCT FROM (i.coin_category, i.public_key_blob, i.signature_blob)
          UNION
          SELECT a.key_id FROM input a JOIN input b ON a.key_id = b.key_id AND a.ord < b.ord
          WHERE (a.coin_category, a.public_key_blob, a.signature_blob)
                IS DISTINCT FROM (b.coin_category, b.public_key_blob, b.signature_blob)
        ), inserted AS (
          INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
          SELECT ${userId}::uuid, key_id, coin_category, public_key_blob, signature_blob FROM input
          WHERE NOT EXISTS (SELECT 1 FROM conflicts)
            AND NOT EXISTS (SELECT 1 FROM claimed_key k WHERE k.user_id = ${userId}::uuid AND k.key_id = input.key_id)
          ORDER BY ord
          ON CONFLICT (user_id, key_id) DO NOTHING
          RETURNING coin_category
        )
        SELECT (SELECT coalesce(json_object_agg(coin_category, n), '{}')
                FROM (SELECT coin_category, count(*)::int AS n FROM inserted GROUP BY 1) t) AS by_tier,
               (SELECT coalesce(array_agg(DISTINCT key_id ORDER BY key_id), '{}') FROM conflicts) AS conflicts`);
      if (row!.conflicts.length > 0) throw new KeyConflictError(row!.conflicts);
      const inserted = Object.values(row!.by_tier).reduce((a, b) => a + b, 0);
      return { inserted, duplicates: coins.length - inserted, insertedByTier: row!.by_tier };
    },

    /** Claims up to `count` of the target's oldest available coins of one tier (see claimCoins). */
    async fetchCoins(targetUserId: string, requesterId: string, tier: Tier, count: number): Promise<Coin[]> {
      return claimCoins(sql, targetUserId, requesterId, tier, count);
    },

    async getInventoryCount(userId: string): Promise<Inventory> {
      const rows = await mapped(sql<{ coin_category: Tier; n: number }[]>`
        SELECT coin_category, count(*)::int AS n FROM coin_inventory
        WHERE user_id = ${userId}::uuid AND fetched_at IS NULL
        GROUP BY coin_category`);
      const inventory: Inventory = { gold: 0, silver: 0, bronze: 0 };
      for (const { coin_category, n } of rows) inventory[coin_category.toLowerCase() as keyof Inventory] = n;
      return inventory;
    },

    /** Deletes coins nobody claimed within `maxAgeDays`, in batches. */
    async purgeStale(maxAgeDays = 30): Promise<number> {
      return deleteInBatches(async () => (await sql`
        WITH doomed AS (
          SELECT record_id FROM coin_inventory
          WHERE fetched_at IS NULL AND uploaded_at < now() - make_interval(days => ${maxAgeDays})
          LIMIT ${maintenanceBatch}
          FOR UPDATE SKIP LOCKED
        )
        DELETE FROM coin_inventory c USING doomed WHERE c.record_id = doomed.record_id`).count);
    },

    /**
     * Deletes claimed coins, and with them who claimed them, once the grace period is over. The
     * owner's key id stays in claimed_key, so a retried upload cannot republish the coin.
     */
    async hardDeleteFetched(graceHours = 1): Promise<number> {
      return deleteInBatches(async () => (await sql<{ n: number }[]>`
        WITH doomed AS (
          SELECT record_id FROM coin_inventory
          WHERE fetched_at IS NOT NULL AND fetched_at < now() - make_interval(hours => ${graceHours})
          LIMIT ${maintenanceBatch}
          FOR UPDATE SKIP LOCKED
        ), gone AS (
          DELETE FROM coin_inventory c USING doomed WHERE c.record_id = doomed.record_id
          RETURNING c.user_id, c.key_id, c.fetched_at
        ), kept AS (
          INSERT INTO claimed_key (user_id, key_id, claimed_at) SELECT user_id, key_id, fetched_at FROM gone
          ON CONFLICT (user_id, key_id) DO NOTHING
        )
        SELECT count(*)::int AS n FROM gone`)[0]!.n);
    },

    /** Forgets the key ids of coins claimed more than `maxAgeDays` ago. */
    async purgeClaimedKeys(maxAgeDays = 30): Promise<number> {
      return deleteInBatches(async () => (await sql`
        DELETE FROM claimed_key WHERE ctid IN (
          SELECT ctid FROM claimed_key WHERE claimed_at < now() - make_interval(days => ${maxAgeDays}) LIMIT ${maintenanceBatch})`).count);
    },
  };
}

export type CoinService = ReturnType<typeof coinService>;

/**
 * Claims up to `count` of the target's oldest available coins of one tier, in one statement.
 * SKIP LOCKED lets concurrent claims take disjoint rows instead of waiting on each other;
 * the CTE is evaluated once, so the UPDATE can never touch more than `count` rows.
 * `sql` may be a transaction.
 */
export async function claimCoins(sql: Sql, targetUserId: string, requesterId: string, tier: Tier, count: number): Promise<Coin[]> {
  const rows = await mapped(sql<(Coin & { record_id: string })[]>`
    WITH picked AS (
      SELECT record_id FROM coin_inventory
      WHERE user_id = ${targetUserId}::uuid AND coin_category = ${tier} AND fetched_at IS NULL
      ORDER BY record_id
      LIMIT ${count}
      FOR UPDATE SKIP LOCKED
    )
    UPDATE coin_inventory c SET fetched_by = ${requesterId}::uuid, fetched_at = now()
    FROM picked WHERE c.record_id = picked.record_id
    RETURNING c.record_id, ${coinColumns(sql)}`);
  return rows
    .sort((a, b) => (BigInt(a.record_id) < BigInt(b.record_id) ? -1 : 1))
    .map(({ key_id, coin_category, public_key_b64, signature_b64 }) => ({ key_id, coin_category, public_key_b64, signature_b64 }));
}

async function deleteInBatches(batch: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const count = await mapped(batch());
    total += count;
    if (count < maintenanceBatch) return total;
  }
}
