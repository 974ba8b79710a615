import { randomBytes } from "node:crypto";
import { typicalSizes as size } from "../src/coins/tiers.ts";
import { arrayLiteral, BYTEA_ARRAY } from "../src/db/arrays.ts";
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

/** One upload's worth of the staged coins as a client holds them: tiers, and both blobs as binary bytea[] parameters. */
interface SentBatch { tiers: string; keys: Buffer; signatures: Buffer }

/** PostgreSQL's binary one-dimensional bytea[] (what src/db/arrays.ts byteaArray builds from base64). */
function binaryByteaArray(blobs: Buffer[]): Buffer {
  const head = Buffer.alloc(20);
  head.writeInt32BE(1, 0); // dimensions
  head.writeInt32BE(0, 4); // no nulls
  head.writeInt32BE(17, 8); // bytea
  head.writeInt32BE(blobs.length, 12);
  head.writeInt32BE(1, 16); // lower bound
  const parts: Buffer[] = [head];
  for (const blob of blobs) {
    const len = Buffer.alloc(4);
    len.writeInt32BE(blob.length, 0);
    parts.push(len, blob);
  }
  return Buffer.concat(parts);
}

/**
 * The upload ceiling with the bytes sent: the staged coins, read once into the client, sent 100
 * per statement (one commit each) as the server sends them — blobs as binary bytea[], the rest as
 * array literals — into a plain `INSERT … SELECT FROM unnest(…)` under fresh key ids. What
 * PostgreSQL allows once it must receive every coin's bytes over its socket, as any upload path
 * must; still without HTTP, parsing or the upload's checks. `sqlUpload` is the ceiling without the
 * transfer (the reference).
 */
export async function sentUpload(sql: Sql, owners: string[], batch = 100): Promise<Job> {
  const rows = await sql<{ coin_category: string; public_key_blob: Buffer; signature_blob: Buffer }[]>`
    SELECT coin_category, public_key_blob, signature_blob FROM bench_staged ORDER BY i`;
  const batches: SentBatch[] = [];
  for (let at = 0; at + batch <= rows.length; at += batch) {
    const slice = rows.slice(at, at + batch);
    batches.push({
      tiers: arrayLiteral(slice.map((r) => r.coin_category)),
      keys: binaryByteaArray(slice.map((r) => r.public_key_blob)),
      signatures: binaryByteaArray(slice.map((r) => r.signature_blob)),
    });
  }
  const prefix = randomBytes(4).toString("hex");
  let k = 0;
  return async () => {
    const n = k++;
    const b = batches[n % batches.length]!;
    const result = await sql.unsafe(`
      INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
      SELECT $1::uuid, $2 || c.i, c.tier, c.pk, c.sig
      FROM unnest($3::text[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS c(tier, pk, sig, i)`,
    [owners[n % owners.length]!, `${prefix}-${n}-`, b.tiers, sql.typed(b.keys, BYTEA_ARRAY), sql.typed(b.signatures, BYTEA_ARRAY)], { prepare: true });
    return { ok: true, coins: result.count };
  };
}
