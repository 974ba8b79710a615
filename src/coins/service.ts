import type { Db, RunOptions } from "../db/db.ts";
import type { Coin, Inventory } from "./model.ts";
import { inputOf, uploadCoins, type UploadOutcome } from "./upload.ts";
import { tiers, type Tier } from "./tiers.ts";

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
      return uploadCoins(db, userId, coins, opts);
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
