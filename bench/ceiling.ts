import { randomBytes } from "node:crypto";
import { typicalSizes as size } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";
import { claimedBy, randomOf, rotation, type ClaimLedger, type Population } from "./client.ts";
import type { Job } from "./load.ts";
import { tiers, type RandomBytesSql } from "./seed.ts";

/**
 * The seed baseline: the seed's design, one statement and one commit per claim (a CTE with
 * `LIMIT n FOR UPDATE SKIP LOCKED` joined to the UPDATE), prepared, through postgres.js, with no
 * HTTP, no coalescing and no quota. A baseline, not a ceiling: the server beats it by sending
 * many claims in one statement (coalesced.ts measures the ceiling of that design). Written for
 * today's schema: coins are keyed by owner (migration 014: primary key (user_id, record_id)) and
 * kept per device (016: available coins indexed by user, device, tier; the bench seeds device 1).
 * Without the owner in the UPDATE's join the update scanned the whole primary key for each claim
 * (about 5 ms of PostgreSQL CPU per claim, 346 claims/s, in the runs of 2026-12-04 18:26 UTC).
 */
const CLAIM = `
WITH picked AS (
  SELECT record_id FROM coin_inventory
  WHERE user_id = $1::uuid AND device_id = 1 AND coin_category = $2 AND fetched_at IS NULL
  ORDER BY record_id LIMIT $3 FOR UPDATE SKIP LOCKED
)
UPDATE coin_inventory c SET fetched_by = $4::uuid, fetched_at = now()
FROM picked WHERE c.user_id = $1::uuid AND c.record_id = picked.record_id
RETURNING c.key_id, c.coin_category,
  replace(encode(c.public_key_blob, 'base64'), E'\\n', '') AS public_key_b64,
  replace(encode(c.signature_blob, 'base64'), E'\\n', '') AS signature_b64`;

export function seedClaim(sql: Sql, pop: Population, count: number, ledger: ClaimLedger): Job {
  const next = rotation(pop.targets, tiers);
  return async () => {
    const { target, tier } = next();
    const coins = await sql.unsafe<{ key_id: string }[]>(CLAIM, [target, tier, count, randomOf(pop.requesters)], { prepare: true });
    return claimedBy(target, coins, count, ledger);
  };
}

const stagedCoins = 3000;

/** Coins to insert server-side: one third each tier, real sizes, random bytes, in an unlogged table. */
export async function stageUploads(sql: Sql, random: RandomBytesSql): Promise<void> {
  await sql.unsafe(`
    DROP TABLE IF EXISTS bench_staged;
    CREATE UNLOGGED TABLE bench_staged AS
    SELECT s.i, t.tier AS coin_category,
           CASE WHEN t.tier = 'BRONZE' THEN ${random(size.BRONZE.key)} ELSE ${random(size.GOLD.key)} END AS public_key_blob,
           CASE WHEN t.tier = 'GOLD' THEN ${random(size.GOLD.sig)} ELSE ${random(size.SILVER.sig)} END AS signature_blob
    FROM generate_series(1, ${stagedCoins}) AS s(i)
    CROSS JOIN LATERAL (SELECT (ARRAY['GOLD', 'SILVER', 'BRONZE'])[1 + s.i % 3] AS tier) t;
    CREATE INDEX ON bench_staged (i);
    ANALYZE bench_staged;`);
}

/**
 * The upload ceiling: the staged coins inserted into coin_inventory server-side, 100 per
 * statement (one upload's worth, one commit each) under fresh key ids: what the disk and
 * PostgreSQL allow, without parsing, transfer or the upload's checks.
 */
export function sqlUpload(sql: Sql, owners: string[], batch = 100): Job {
  const prefix = randomBytes(4).toString("hex");
  let k = 0;
  return async () => {
    const n = k++;
    const offset = (n * batch) % stagedCoins;
    const result = await sql.unsafe(`
      INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
      SELECT $1::uuid, $2 || s.i, s.coin_category, s.public_key_blob, s.signature_blob
      FROM bench_staged s WHERE s.i > $3 AND s.i <= $3 + $4 ORDER BY s.i`, [owners[n % owners.length]!, `${prefix}-${n}-`, offset, batch], { prepare: true });
    return { ok: true, coins: result.count };
  };
}
