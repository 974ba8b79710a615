import type { Db, RunOptions } from "../db/db.ts";
import type { ClaimItem } from "./batch.ts";

/** Rows per statement variant: a batch is padded up to the next power of two (≤ 10 texts per table). */
const padded = (n: number) => (n <= 1 ? n : 2 ** Math.ceil(Math.log2(n)));

const values = (rows: number, first: number, row: (p: (i: number) => string) => string) =>
  Array.from({ length: rows }, (_, r) => row((i) => `$${first + r * 2 + i}::uuid`)).join(", ");

const texts = new Map<string, string>();

/**
 * Routed claims (Citus) only update rows: this creates, beforehand, what the claim statement
 * would otherwise insert itself — the pair quota rows of the batch (empty) and the replay
 * records of its keyed claims (without an answer: `short` NULL, filled in by the claim that
 * records one). Multi-row VALUES with ON CONFLICT DO NOTHING: a router statement on one shard
 * (an INSERT … SELECT would pass its rows through the coordinator with two-phase commit); the
 * last row is repeated up to the padded size, which DO NOTHING absorbs. Rows in key order, so
 * concurrent batches wait for each other in one order.
 */
export function ensureText(quotaRows: number, replayRows: number): string {
  const key = `${quotaRows}/${replayRows}`;
  let text = texts.get(key);
  if (text === undefined) {
    const quota = quotaRows > 0 && `INSERT INTO claim_quota (target, pair, hours, counts) VALUES ${values(quotaRows, 1, (p) => `(${p(0)}, ${p(1)}, '{}', '{}')`)}
ON CONFLICT (target, pair) DO NOTHING`;
    const first = quotaRows * 2 + 1;
    const replay = replayRows > 0 && `INSERT INTO claim_replay (target, ref, body) VALUES ${values(replayRows, first, (p) => `(${p(0)}, ${p(1)}, ${p(1)})`)}
ON CONFLICT (target, ref) DO NOTHING`;
    text = quota && replay ? `WITH quota AS (${quota}) ${replay}` : (quota || replay) as string;
    texts.set(key, text);
  }
  return text;
}

/** The (target, key) rows to create for `items`, sorted and padded; null when there is nothing to create. */
export function ensureParams(items: readonly ClaimItem[], withQuota: boolean): { text: string; params: string[] } | null {
  const rows = (keys: [string, string][]) => {
    const unique = [...new Map(keys.map(([t, k]) => [`${k}/${t}`, [t, k] as [string, string]])).values()].sort((a, b) =>
      a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
    while (unique.length > 0 && unique.length < padded(unique.length)) unique.push(unique.at(-1)!);
    return unique;
  };
  const quota = withQuota ? rows(items.filter((i) => i.pair !== null).map((i) => [i.target, i.pair!])) : [];
  const replay = rows(items.filter((i) => i.ref !== null).map((i) => [i.target, i.ref!]));
  if (quota.length === 0 && replay.length === 0) return null;
  return { text: ensureText(quota.length, replay.length), params: [...quota.flat(), ...replay.flat()] };
}

/** Creates the rows a routed claim of `items` updates (see ensureText). */
export async function ensureRows(db: Db, items: readonly ClaimItem[], withQuota: boolean, opts: RunOptions): Promise<void> {
  const ensure = ensureParams(items, withQuota);
  if (ensure === null) return;
  await db.run((sql) => sql.unsafe(ensure.text, ensure.params as never[], { prepare: db.prepare }), { ...opts, what: "claim rows" });
}

const REGISTER = `
WITH ins AS (INSERT INTO claim_key (ref, body) VALUES ($1::uuid, $2::uuid) ON CONFLICT (ref) DO NOTHING RETURNING body)
SELECT body::text FROM ins UNION ALL SELECT body::text FROM claim_key WHERE ref = $1::uuid`;
const REGISTERED = "SELECT body::text FROM claim_key WHERE ref = $1::uuid";

/**
 * Citus: registers a keyed claim's Idempotency-Key (claim_key, migration 015) and tells whether
 * it — under the current or the previous secret — was registered first with another body: then
 * the claim is answered 422 without being sent. (On one PostgreSQL the claim statement finds a
 * reused key itself.) One router statement on the key's shard, with one commit; a concurrent
 * first use of the same key waits for the other's commit (ON CONFLICT), so of two bodies exactly
 * one is the key's. The previous secret's key is read only while one is configured.
 */
export async function keyReused(db: Db, { ref, refPrev, body }: ClaimItem, opts: RunOptions): Promise<boolean> {
  if (ref === null) return false;
  const bodies = await db.run((sql) => sql.unsafe<{ body: string }[]>(REGISTER, [ref, body] as never[], { prepare: db.prepare }),
    { ...opts, what: "claim key" });
  if (bodies.some((r) => r.body !== body)) return true;
  if (refPrev === null) return false;
  const previous = await db.run((sql) => sql.unsafe<{ body: string }[]>(REGISTERED, [refPrev] as never[], { prepare: db.prepare }),
    { ...opts, what: "claim key" });
  return previous.some((r) => r.body !== body);
}
