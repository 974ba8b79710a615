import { tiers as allTiers, typicalSizes as tierSizes, type Tier } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";

export const tiers: readonly Tier[] = allTiers;

/** A SQL expression yielding `n` random bytes; may refer to `s.i`, the row number of the insert. */
export type RandomBytesSql = (n: number) => string;

// Random, so incompressible: a repeated pattern would be squeezed by TOAST and make GOLD rows unrealistically small.
const withPgcrypto: RandomBytesSql = (n) => {
  const chunks: string[] = [];
  for (let left = n; left > 0; left -= 1024) chunks.push(`gen_random_bytes(${Math.min(left, 1024)})`);
  return chunks.join(" || ");
};

// The reference to s.i makes the subquery correlated, so it runs per row instead of once.
const withMd5: RandomBytesSql = (n) =>
  `substr((SELECT decode(string_agg(md5(random()::text), ''), 'hex') FROM generate_series(1, ${Math.ceil(n / 16)}) WHERE s.i > 0), 1, ${n})`;

/**
 * gen_random_bytes when pgcrypto is installed (or available and `mayInstall`, i.e. the bench's own
 * database), md5 of random() otherwise.
 */
export async function randomBytesSql(sql: Sql, mayInstall: boolean): Promise<{ expr: RandomBytesSql; source: string }> {
  const [row] = await sql<{ installed: boolean; available: boolean }[]>`
    SELECT exists(SELECT 1 FROM pg_extension WHERE extname = 'pgcrypto') AS installed,
           exists(SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto') AS available`;
  if (!row!.installed && row!.available && mayInstall) await sql`CREATE EXTENSION pgcrypto`;
  return row!.installed || (row!.available && mayInstall)
    ? { expr: withPgcrypto, source: "pgcrypto gen_random_bytes" }
    : { expr: withMd5, source: "md5(random())" };
}

/**
 * Brings every (user, tier) pair to at least `perGroup` available coins, in one INSERT … SELECT
 * generate_series. Returns the number of coins inserted.
 */
export async function topUp(sql: Sql, random: RandomBytesSql, users: string[], groupTiers: readonly Tier[], perGroup: number): Promise<number> {
  const result = await sql.unsafe(`
    WITH groups AS (
      SELECT u AS user_id, t AS coin_category,
             (SELECT count(*) FROM coin_inventory c
              WHERE c.user_id = u AND c.coin_category = t AND c.fetched_at IS NULL)::int AS have
      FROM unnest($1::uuid[]) AS u CROSS JOIN unnest($2::text[]) AS t
    )
    INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
    SELECT g.user_id, gen_random_uuid()::text, g.coin_category,
           CASE WHEN g.coin_category = 'BRONZE' THEN ${random(tierSizes.BRONZE.key)} ELSE ${random(tierSizes.GOLD.key)} END,
           CASE WHEN g.coin_category = 'GOLD' THEN ${random(tierSizes.GOLD.sig)} ELSE ${random(tierSizes.SILVER.sig)} END
    FROM groups g CROSS JOIN LATERAL generate_series(1, $3::int - g.have) AS s(i)`, [users, [...groupTiers], perGroup]);
  if (result.count > 0) await sql`ANALYZE coin_inventory`;
  return result.count;
}

/** Coins each of `groups` (user, tier) pairs needs so that `expectedCoins` claimed evenly never run one dry. */
export function perGroupFor(expectedCoins: number, groups: number): number {
  return Math.ceil((expectedCoins * 1.3) / groups) + 10;
}
