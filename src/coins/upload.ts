import { arrayLiteral, base64Bytes, BYTEA_ARRAY, byteaArray } from "../db/arrays.ts";
import type { Db, RunOptions } from "../db/db.ts";
import type { Sql } from "../db/pool.ts";
import { DeviceStateError, KeyConflictError, ValidationError } from "../errors.ts";
import { pinnedTransaction, routingOf } from "../claims/routing.ts";
import type { Coin } from "./model.ts";
import { notifyStock } from "./stock-events.ts";
import type { Tier } from "./tiers.ts";

export interface UploadOutcome {
  inserted: number;
  duplicates: number;
  insertedByTier: Partial<Record<Tier, number>>;
}

/** The device an upload stores coins for, and the generation of its identity keys they were verified against. */
export interface UploadDevice {
  deviceId: number;
  generation: number;
}

/** The device's keys changed (or it was removed) after the coins were verified: nothing was written (checked again, see service.ts). */
export class DeviceMovedError extends DeviceStateError {
  constructor() {
    super("The device's identity keys changed (or it was removed) during this upload; nothing was written: upload coins signed with its current keys");
  }
}

type BlobField = "public_key_b64" | "signature_b64";
const notBase64 = (i: number, field: BlobField) =>
  new ValidationError("A blob is not valid base64", [{ field: `coins[${i}].${field}`, message: "must be standard base64 with padding" }]);
const blobs = (sql: Sql, coins: Coin[], field: BlobField) =>
  sql.typed(byteaArray(coins.map((c) => c[field]), (i) => notBase64(i, field)), BYTEA_ARRAY);

/** The coins as four array parameters ($2 to $5: key ids, tiers, public keys, signatures; the blobs as bytea[], in binary). */
export const inputOf = (sql: Sql, coins: Coin[]) => [
  arrayLiteral(coins.map((c) => c.key_id)), arrayLiteral(coins.map((c) => c.coin_category)),
  blobs(sql, coins, "public_key_b64"), blobs(sql, coins, "signature_b64"),
];

/**
 * A stored key_id with other content — or another device's — is returned (inserted false); the
 * statement then raises (aqm_key_conflict). key_ids are unique per user, across its devices.
 */
const ON_CONFLICT = `ON CONFLICT (user_id, key_id) DO UPDATE SET key_id = excluded.key_id
  WHERE (t.device_id, t.coin_category, t.public_key_blob, t.signature_blob)
        IS DISTINCT FROM (excluded.device_id, excluded.coin_category, excluded.public_key_blob, excluded.signature_blob)
  RETURNING t.key_id, t.coin_category, xmax = 0 AS inserted`;
const BY_TIER = `(SELECT coalesce(json_object_agg(coin_category, n), '{}')
        FROM (SELECT coin_category, count(*)::int AS n FROM written GROUP BY 1) t) AS by_tier`;

/**
 * Upload: one statement, all or nothing. A key_id already stored with the same content (or
 * repeated identically in the batch) is a duplicate. One stored — or arriving concurrently, or
 * repeated in the batch — with other content makes aqm_key_conflict() raise, which rolls the
 * whole statement back (409): ON CONFLICT DO UPDATE waits for a concurrent insert of the key and
 * compares against what it committed. A coin already claimed and hard-deleted (claimed_key)
 * is never stored again. Stored coins notify waiting claims on every instance (channel aqm_stock).
 * The coins are stored only while the device row still has the generation of keys they were
 * verified against: the row is held FOR SHARE until the commit, so a replacement of the keys (or
 * the device's removal) waits for this upload and then deletes its coins, or went first and
 * this upload stores nothing (current false). The checks work on the key ids and positions alone;
 * the blobs are read once, from the parameters, by the insert (and by the repeat check only for a
 * key id given twice): PostgreSQL −7 to −29 % per coin in one backend against materializing every
 * coin with its blobs and sorting them twice (bench/README.md, "Issue 21, eleventh round").
 */
export const UPLOAD = `
WITH dev AS MATERIALIZED (
  SELECT generation FROM device WHERE user_id = $1::uuid AND device_id = $6::smallint FOR SHARE
), keys AS MATERIALIZED (
  SELECT k AS key_id, ord::int AS ord FROM unnest($2::text::text[]) WITH ORDINALITY AS u(k, ord)
), repeated AS (
  SELECT a.key_id FROM keys a JOIN keys b ON a.key_id = b.key_id AND a.ord < b.ord
  WHERE (($3::text::text[])[a.ord], ($4::bytea[])[a.ord], ($5::bytea[])[a.ord])
        IS DISTINCT FROM (($3::text::text[])[b.ord], ($4::bytea[])[b.ord], ($5::bytea[])[b.ord])
), fresh AS (
  SELECT DISTINCT ON (key_id) ord FROM keys i
  WHERE NOT EXISTS (SELECT 1 FROM claimed_key k WHERE k.user_id = $1::uuid AND k.key_id = i.key_id)
  ORDER BY key_id, ord
), written AS (
  INSERT INTO coin_inventory AS t (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
  SELECT $1::uuid, $6::smallint, u.k, u.c, u.p, u.s
  FROM unnest($2::text::text[], $3::text::text[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS u(k, c, p, s, ord)
  WHERE u.ord IN (SELECT ord FROM fresh) AND NOT EXISTS (SELECT 1 FROM repeated) AND EXISTS (SELECT 1 FROM dev WHERE generation = $7::int)
  ORDER BY u.ord
  ${ON_CONFLICT}
), conflicts AS (
  SELECT key_id FROM repeated UNION SELECT key_id FROM written WHERE NOT inserted
), notified AS (
  SELECT pg_notify('aqm_stock', $1::text) WHERE EXISTS (SELECT 1 FROM written)
)
SELECT (SELECT aqm_key_conflict(array_agg(DISTINCT key_id ORDER BY key_id))::text FROM conflicts HAVING count(*) > 0) IS NULL AS ok,
       ${BY_TIER},
       EXISTS (SELECT 1 FROM dev WHERE generation = $7::int) AS current,
       (SELECT count(*) FROM notified)::int AS notified  -- (a CTE that is not read does not run)`;

/**
 * Citus: the same upload as a router statement on the owner's shard. An INSERT … SELECT from
 * the request's arrays would be planned through the coordinator (the rows copied there, then to
 * the worker, with two-phase commit), and Citus draws identity values on the coordinator only for
 * a multi-row VALUES insert — which keeps FIFO order per owner wherever its shard lives. So: the
 * rows as VALUES (one text per row count, 1 to 100), what the plain statement does around the
 * insert done beforehand (claimed key ids read, repeats settled in the batch) and the conflict
 * check after it, in the same statement; the notification is sent once it committed.
 */
const routedTexts = new Map<number, string>();
function routedUpload(rows: number): string {
  let text = routedTexts.get(rows);
  if (text === undefined) {
    const values = Array.from({ length: rows }, (_, r) =>
      `($1::uuid, $2::smallint, $${3 + r * 4}::text, $${4 + r * 4}::text, $${5 + r * 4}::bytea, $${6 + r * 4}::bytea)`);
    text = `
WITH written AS (
  INSERT INTO coin_inventory AS t (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
  VALUES ${values.join(", ")}
  ${ON_CONFLICT}
)
SELECT (SELECT aqm_key_conflict(array_agg(key_id ORDER BY key_id))::text FROM written WHERE NOT inserted HAVING count(*) > 0) IS NULL AS ok,
       ${BY_TIER}`;
    routedTexts.set(rows, text);
  }
  return text;
}

const CLAIMED = "SELECT key_id FROM claimed_key WHERE user_id = $1::uuid AND key_id = ANY($2::text::text[])";

/** Routed: a coin with its blobs decoded (bytea parameters: Buffers are sent in binary). */
interface Decoded {
  key_id: string;
  coin_category: Tier;
  publicKey: Buffer;
  signature: Buffer;
}

function bytesOf(coin: Coin, i: number, field: BlobField): Buffer {
  const bytes = base64Bytes(coin[field]);
  if (bytes === undefined) throw notBase64(i, field);
  return bytes;
}

const decoded = (coin: Coin, i: number): Decoded => ({
  key_id: coin.key_id, coin_category: coin.coin_category,
  publicKey: bytesOf(coin, i, "public_key_b64"), signature: bytesOf(coin, i, "signature_b64"),
});

const sameContent = (a: Decoded, b: Decoded) => a.coin_category === b.coin_category && a.publicKey.equals(b.publicKey) && a.signature.equals(b.signature);

const HOLD_DEVICE = "SELECT generation FROM device WHERE user_id = $1::uuid AND device_id = $2::smallint FOR SHARE";

/**
 * In a transaction (db.transaction): holds the device row FOR SHARE until the commit, as UPLOAD's
 * dev does; DeviceMovedError when it no longer has the generation the coins were verified against.
 */
export async function holdDevice(tx: Sql, prepare: boolean, userId: string, device: UploadDevice): Promise<void> {
  const held = await tx.unsafe<{ generation: number }[]>(HOLD_DEVICE, [userId, device.deviceId] as never[], { prepare });
  if (held[0]?.generation !== device.generation) throw new DeviceMovedError();
}

/** Routed: the claimed key ids read, then, in one transaction, the placement pinned, the device row held (as UPLOAD's dev) and the coins inserted. */
async function uploadRouted(db: Db, userId: string, device: UploadDevice, coins: Coin[], opts?: RunOptions): Promise<Partial<Record<Tier, number>>> {
  const first = new Map<string, Decoded>();
  const repeated = new Set<string>();
  for (const coin of coins.map(decoded)) {
    const seen = first.get(coin.key_id);
    if (seen === undefined) first.set(coin.key_id, coin);
    else if (!sameContent(seen, coin)) repeated.add(coin.key_id);
  }
  if (repeated.size > 0) throw new KeyConflictError([...repeated].sort()); // nothing written
  const claimed = await db.run((sql) => sql.unsafe<{ key_id: string }[]>(CLAIMED, [userId, arrayLiteral([...first.keys()])] as never[],
    { prepare: db.prepare }), { what: "upload", ...opts });
  for (const { key_id } of claimed) first.delete(key_id);
  if (first.size === 0) return {};
  const fresh = [...first.values()];
  const params = [userId, device.deviceId,
    ...fresh.flatMap((c) => [c.key_id, c.coin_category, c.publicKey, c.signature])];
  const byTier = await pinnedTransaction(db, userId, async (tx) => {
    await holdDevice(tx, db.prepare, userId, device);
    const [row] = await tx.unsafe<{ by_tier: Partial<Record<Tier, number>> }[]>(routedUpload(fresh.length), params as never[], { prepare: db.prepare });
    return row!.by_tier;
  }, opts);
  if (Object.keys(byTier).length > 0) await notifyStock(db, [userId]).catch(() => {}); // a missed one costs a waiter its deadline only
  return byTier;
}

/**
 * Stores `coins` for `userId`'s device (see the statements above); counts what was new and what
 * was a duplicate. DeviceMovedError: the device's generation is no longer `device.generation`.
 */
export async function uploadCoins(db: Db, userId: string, device: UploadDevice, coins: Coin[], opts?: RunOptions): Promise<UploadOutcome> {
  if (coins.length === 0) return { inserted: 0, duplicates: 0, insertedByTier: {} };
  const routing = routingOf(db);
  const routed = await routing.routed();
  let byTier: Partial<Record<Tier, number>>;
  if (routed) byTier = await uploadRouted(db, userId, device, coins, opts);
  else {
    const params = [userId, ...inputOf(db.sql, coins), device.deviceId, device.generation];
    const [row] = await db.run((sql) => sql.unsafe<{ by_tier: Partial<Record<Tier, number>>; current: boolean }[]>(UPLOAD,
      params as never[], { prepare: db.prepare }), { what: "upload", ...opts });
    if (!row!.current) throw new DeviceMovedError();
    byTier = row!.by_tier;
  }
  const inserted = Object.values(byTier).reduce((a, b) => a + b, 0);
  return { inserted, duplicates: coins.length - inserted, insertedByTier: byTier };
}
