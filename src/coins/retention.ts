import { dropLeadingHoles as intact } from "../db/db.ts";
import type { Sql } from "../db/pool.ts";
import { quotaUsed, WINDOW_HOURS } from "../claims/statement.ts";

/** Rows per maintenance DELETE, so no statement holds its locks for long. */
export const maintenanceBatch = 5000;

async function inBatches(batch: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const count = await batch();
    total += count;
    if (count < maintenanceBatch) return total;
  }
}

/**
 * What the server keeps, and for how long (README, "What is kept"). Every function deletes in
 * batches (rows picked without locks, then deleted when they still qualify: the same statements
 * run on Citus, where a multi-shard FOR UPDATE is refused); `sql` is the maintenance connection
 * holding the job's lock.
 */
export function retention(sql: Sql) {
  return {
    /** Unclaimed coins older than `maxAgeDays`. */
    purgeStale: (maxAgeDays: number) => inBatches(async () => (await sql`
      WITH doomed AS (
        SELECT user_id, record_id FROM coin_inventory
        WHERE fetched_at IS NULL AND uploaded_at < now() - make_interval(days => ${maxAgeDays})
        LIMIT ${maintenanceBatch}
      )
      DELETE FROM coin_inventory c USING doomed
      WHERE c.user_id = doomed.user_id AND c.record_id = doomed.record_id
        -- again here: a coin claimed since it was picked is checked anew (and kept)
        AND c.fetched_at IS NULL AND c.uploaded_at < now() - make_interval(days => ${maxAgeDays})`).count),

    /**
     * Claimed coins older than the grace, and with them who claimed them. The owner's key id stays
     * in claimed_key, with the day only, so a retried upload cannot republish the coin.
     */
    hardDeleteClaimed: (graceHours: number) => inBatches(async () => intact(await sql<{ n: number }[]>`
      WITH doomed AS (
        SELECT user_id, record_id FROM coin_inventory
        WHERE fetched_at IS NOT NULL AND fetched_at < now() - make_interval(hours => ${graceHours})
        LIMIT ${maintenanceBatch}
      ), gone AS (
        DELETE FROM coin_inventory c USING doomed
        WHERE c.user_id = doomed.user_id AND c.record_id = doomed.record_id
          -- again here: a coin given back since it was picked is checked anew (and kept)
          AND c.fetched_at IS NOT NULL AND c.fetched_at < now() - make_interval(hours => ${graceHours})
        RETURNING c.user_id, c.key_id, c.fetched_at
      ), kept AS (
        INSERT INTO claimed_key (user_id, key_id, claimed_on)
        SELECT user_id, key_id, (fetched_at AT TIME ZONE 'UTC')::date FROM gone
        ON CONFLICT (user_id, key_id) DO NOTHING
      )
      SELECT count(*)::int AS n FROM gone`)[0]!.n),

    /** Idempotent-claim records as old as the claimed coins they replay. */
    purgeReplays: (graceHours: number) => inBatches(async () => (await sql`
      WITH doomed AS (
        SELECT target, ref FROM claim_replay WHERE created_at < now() - make_interval(hours => ${graceHours}) LIMIT ${maintenanceBatch})
      DELETE FROM claim_replay p USING doomed
      WHERE p.target = doomed.target AND p.ref = doomed.ref AND p.created_at < now() - make_interval(hours => ${graceHours})`).count),

    /** Registered Idempotency-Keys (claim_key, Citus only) as old as the replay records. */
    purgeKeys: (graceHours: number) => inBatches(async () => (await sql`
      WITH doomed AS (
        SELECT ref FROM claim_key WHERE created_at < now() - make_interval(hours => ${graceHours}) LIMIT ${maintenanceBatch})
      DELETE FROM claim_key k USING doomed WHERE k.ref = doomed.ref`).count),

    /** Key ids of claimed coins, after the purge age (an upload that old would be purged anyway). */
    purgeClaimedKeys: (maxAgeDays: number) => inBatches(async () => (await sql`
      WITH doomed AS (
        SELECT user_id, key_id FROM claimed_key WHERE claimed_on < (now() AT TIME ZONE 'UTC')::date - ${maxAgeDays}::int LIMIT ${maintenanceBatch})
      DELETE FROM claimed_key k USING doomed WHERE k.user_id = doomed.user_id AND k.key_id = doomed.key_id`).count),

    /** Pair-quota rows with no bucket left that counts; a pass over the table in key order. */
    async purgeQuota(): Promise<number> {
      let total = 0;
      for (let after = "00000000-0000-0000-0000-000000000000"; ;) {
        const [row] = intact(await sql.unsafe<{ last: string | null; n: number }[]>(`
          WITH chunk AS (SELECT target, pair FROM claim_quota WHERE pair > $1::uuid ORDER BY pair LIMIT $2),
          gone AS (
            DELETE FROM claim_quota q USING chunk
            WHERE q.target = chunk.target AND q.pair = chunk.pair AND ${quotaUsed("q.hours", "q.counts")} = 0
            RETURNING 1)
          SELECT (SELECT max(pair::text) FROM chunk) AS last, (SELECT count(*) FROM gone)::int AS n`, [after, maintenanceBatch]));
        total += row!.n;
        if (!row!.last) return total;
        after = row!.last;
      }
    },

    /** Last-resort quota refunds (claim_refund) past the quota window. */
    purgeRefunds: () => inBatches(async () => (await sql`
      WITH doomed AS (
        SELECT target, pair, at FROM claim_refund WHERE at < now() - make_interval(hours => ${WINDOW_HOURS}) LIMIT ${maintenanceBatch})
      DELETE FROM claim_refund r USING doomed WHERE r.target = doomed.target AND r.pair = doomed.pair AND r.at = doomed.at`).count),

    /** Count long-polls that are over. */
    purgeWatches: async () => (await sql`DELETE FROM stock_watch WHERE until < now()`).count,
  };
}
