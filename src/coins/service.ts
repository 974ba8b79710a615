import { textArray } from "../db/arrays.ts";
import type { Db, RunOptions } from "../db/db.ts";
import type { Coin, Inventory } from "./model.ts";
import { routingOf } from "../claims/routing.ts";
import { notifyStock } from "./stock-events.ts";
import { tiers, type Tier } from "./tiers.ts";

export interface UploadOutcome {
  inserted: number;
  duplicates: number;
  insertedByTier: Partial<Record<Tier, number>>;
}

const inputOf = (coins: Coin[]) => [
  textArray(coins.map((c) => c.key_id)), textArray(coins.map((c) => c.coin_category)),
  textArray(coins.map((c) => c.public_key_b64)), textArray(coins.map((c) => c.signature_b64)),
];

/**
 * Upload: one statement, all or nothing. A key_id already stored with the same content (or
 * repeated identically in the batch) is a duplicate. One stored — or arriving concurrently, or
 * repeated in the batch — with other content makes aqm_key_conflict() raise, which rolls the
 * whole statement back (409): ON CONFLICT DO UPDATE waits for a concurrent insert of the key and
 * compares against what it committed. A coin already claimed and hard-deleted (claimed_key)
 * is never stored again. Stored coins notify waiting claims on every instance (channel aqm_stock).
 */
const upload = (routed: boolean) => `
WITH input AS (
  SELECT k AS key_id, c AS coin_category, decode(p, 'base64') AS public_key_blob, decode(s, 'base64') AS signature_blob, ord
  FROM unnest($2::text::text[], $3::text::text[], $4::text::text[], $5::text::text[]) WITH ORDINALITY AS u(k, c, p, s, ord)
), repeated AS (
  SELECT a.key_id FROM input a JOIN input b ON a.key_id = b.key_id AND a.ord < b.ord
  WHERE (a.coin_category, a.public_key_blob, a.signature_blob) IS DISTINCT FROM (b.coin_category, b.public_key_blob, b.signature_blob)
), fresh AS (
  SELECT DISTINCT ON (key_id) * FROM input i
  WHERE NOT EXISTS (SELECT 1 FROM claimed_key k WHERE k.user_id = $1::uuid AND k.key_id = i.key_id)
  ORDER BY key_id, ord
), written AS (
  INSERT INTO coin_inventory AS t (user_id, key_id, coin_category, public_key_blob, signature_blob)
  SELECT $1::uuid, key_id, coin_category, public_key_blob, signature_blob FROM fresh
  WHERE NOT EXISTS (SELECT 1 FROM repeated)
  ORDER BY ord
  ON CONFLICT (user_id, key_id) DO UPDATE SET key_id = excluded.key_id
  WHERE (t.coin_category, t.public_key_blob, t.signature_blob)
        IS DISTINCT FROM (excluded.coin_category, excluded.public_key_blob, excluded.signature_blob)
  RETURNING t.key_id, t.coin_category, xmax = 0 AS inserted
), conflicts AS (
  SELECT key_id FROM repeated UNION SELECT key_id FROM written WHERE NOT inserted
), notified AS (
  SELECT ${routed ? "1" : "pg_notify('aqm_stock', $1::text)"} WHERE EXISTS (SELECT 1 FROM written)
)
SELECT (SELECT aqm_key_conflict(array_agg(DISTINCT key_id ORDER BY key_id))::text FROM conflicts HAVING count(*) > 0) IS NULL AS ok,
       (SELECT coalesce(json_object_agg(coin_category, n), '{}')
        FROM (SELECT coin_category, count(*)::int AS n FROM written GROUP BY 1) t) AS by_tier,
       (SELECT count(*) FROM notified)::int AS notified`;
// Citus: the notification is sent once the upload committed (notifyStock)
const UPLOAD = { plain: upload(false), routed: upload(true) };

const COUNT = `
SELECT t.tier,
       (SELECT count(*)::int FROM coin_inventory c WHERE c.user_id = $1::uuid AND c.coin_category = t.tier AND c.fetched_at IS NULL) AS n,
       EXISTS (SELECT 1 FROM last_resort_coin l WHERE l.user_id = $1::uuid AND l.coin_category = t.tier) AS last_resort
FROM unnest($2::text[]) AS t(tier)`;

const AVAILABLE = "SELECT coin_category AS tier, count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NULL GROUP BY 1";

const PUT_LAST_RESORT = `
INSERT INTO last_resort_coin AS l (user_id, key_id, coin_category, public_key_blob, signature_blob)
SELECT $1::uuid, k, c, decode(p, 'base64'), decode(s, 'base64')
FROM unnest($2::text::text[], $3::text::text[], $4::text::text[], $5::text::text[]) AS u(k, c, p, s)
ON CONFLICT (user_id, coin_category) DO UPDATE
SET key_id = excluded.key_id, public_key_blob = excluded.public_key_blob, signature_blob = excluded.signature_blob,
    uploaded_at = excluded.uploaded_at`; // (its default, now(); Citus refuses a function that is not IMMUTABLE in DO UPDATE SET)

/** Upload, count and last-resort coins: one statement each, through the gate and with a deadline. */
export function coinService(db: Db) {
  const run = <T extends object>(text: string, params: unknown[], opts?: RunOptions) =>
    db.run<T[]>((sql) => sql.unsafe<T[]>(text, params as never[], { prepare: db.prepare }), opts);
  return {
    async uploadCoins(userId: string, coins: Coin[], opts?: RunOptions): Promise<UploadOutcome> {
      if (coins.length === 0) return { inserted: 0, duplicates: 0, insertedByTier: {} };
      const routed = (await routingOf(db).load()) !== null;
      const [row] = await run<{ by_tier: Partial<Record<Tier, number>>; notified: number }>(routed ? UPLOAD.routed : UPLOAD.plain,
        [userId, ...inputOf(coins)], { what: "upload", ...opts });
      if (routed && row!.notified > 0) await notifyStock(db, [userId]).catch(() => {}); // a missed one costs a waiter its deadline only
      const inserted = Object.values(row!.by_tier).reduce((a, b) => a + b, 0);
      return { inserted, duplicates: coins.length - inserted, insertedByTier: row!.by_tier };
    },

    async getInventoryCount(userId: string, opts?: RunOptions): Promise<Inventory> {
      const rows = await run<{ tier: Tier; n: number; last_resort: boolean }>(COUNT, [userId, tiers], { what: "count", ...opts });
      const inventory: Inventory = { gold: 0, silver: 0, bronze: 0, last_resort: { gold: false, silver: false, bronze: false } };
      for (const { tier, n, last_resort } of rows) {
        const name = tier.toLowerCase() as "gold" | "silver" | "bronze";
        inventory[name] = n;
        inventory.last_resort[name] = last_resort;
      }
      return inventory;
    },

    /** Unclaimed coins per tier, all owners (the metrics gauge). */
    async availableByTier(opts?: RunOptions): Promise<Record<Tier, number>> {
      const rows = await run<{ tier: Tier; n: number }>(AVAILABLE, [], { what: "available", ...opts });
      return Object.fromEntries(tiers.map((tier) => [tier, rows.find((r) => r.tier === tier)?.n ?? 0])) as Record<Tier, number>;
    },

    /** Stores (or replaces) the owner's last-resort coin of each tier sent; other tiers keep theirs. */
    async putLastResort(userId: string, coins: Coin[], opts?: RunOptions): Promise<void> {
      await run(PUT_LAST_RESORT, [userId, ...inputOf(coins)], { what: "last-resort", ...opts });
    },
  };
}

export type CoinService = ReturnType<typeof coinService>;
