import type { Db } from "../db/db.ts";
import type { ClaimItem, ClaimRow } from "./batch.ts";

/**
 * Coins a claim statement took for requests that were never answered with them: the statement
 * finished after its answer (a 503) was given up — a frozen PostgreSQL that resumed, a cancel
 * that came too late — the client left while it ran, or the server failed to read its result.
 * Their key bytes reached this process only, so putting them back in stock keeps every coin handed
 * out at most once, and the pair quota gets back what they cost — last-resort coins included
 * (those stay in stock anyway: only their quota is refunded, once, see migration 013). Keyed
 * claims keep theirs: the stored answer is what a retry with the same Idempotency-Key receives.
 */
const returnStatement = `
WITH back AS MATERIALIZED (
  SELECT c.record_id, c.user_id, x.pair
  FROM unnest($1::bigint[], $2::uuid[], $3::uuid[]) AS x(record_id, requester, pair)
  JOIN coin_inventory c ON c.record_id = x.record_id
  -- still taken by that claim (not by a later one, should this run twice); the time travels as
  -- text: postgres.js would send a timestamptz parameter through Date, to the millisecond
  WHERE c.fetched_by = x.requester AND c.fetched_at = $4::text::timestamptz AND c.claim_ref IS NULL
  FOR UPDATE OF c
),
freed AS (
  UPDATE coin_inventory c SET fetched_by = NULL, fetched_at = NULL
  FROM back b WHERE c.record_id = b.record_id
  RETURNING c.record_id
),
-- last-resort coins: refunded once per (pair, claim time), whatever reruns
marked AS (
  INSERT INTO claim_refund (pair, at)
  SELECT DISTINCT pair, $4::text::timestamptz FROM unnest($5::uuid[]) AS l(pair)
  ON CONFLICT DO NOTHING
  RETURNING pair
),
refund AS (
  SELECT pair, sum(n)::int AS n FROM (
    SELECT pair, 1 AS n FROM back WHERE pair IS NOT NULL
    UNION ALL SELECT l.pair, l.n FROM unnest($5::uuid[], $6::int[]) AS l(pair, n) JOIN marked m ON m.pair = l.pair
  ) x GROUP BY pair
),
refunded AS (
  UPDATE claim_quota q SET counts = (
    SELECT array_agg(CASE WHEN b.h = floor(extract(epoch FROM $4::text::timestamptz) / 3600)::int THEN greatest(0, b.c - r.n) ELSE b.c END ORDER BY b.o)
    FROM unnest(q.hours, q.counts) WITH ORDINALITY AS b(h, c, o))
  FROM refund r WHERE q.pair = r.pair
  RETURNING r.n
),
notified AS (SELECT pg_notify('aqm_stock', u.user_id::text) FROM (SELECT DISTINCT user_id FROM back) u)
-- (the UPDATEs run unread; notified, a plain SELECT, runs only when read)
SELECT (SELECT count(*) FROM freed)::int AS returned, (SELECT coalesce(sum(n), 0) FROM refunded)::int AS refunded,
       (SELECT count(*) FROM notified)::int AS notified`;

/** What a return puts back: ordinary coins in stock, and the quota of last-resort coins. */
export interface Return {
  /** The claim statement's now(), as text (the fetched_at of every coin it took). */
  at: string | null;
  coins: { recordId: string; requester: string; pair: string | null }[];
  /** Last-resort coins served per pair (quota on only). */
  lastResort: Map<string, number>;
}

/** Ordinary and last-resort coins, counted as a return counts them. */
export const returnSize = (r: Return) => r.coins.length + [...r.lastResort.values()].reduce((a, b) => a + b, 0);

/** What the requests at `unanswered` (indexes into `items`) took in `rows`, as a return gives it back. */
export function returnable(items: readonly ClaimItem[], rows: readonly ClaimRow[], unanswered: ReadonlySet<number>): Return {
  const at = rows.find((r) => r.k === "n")?.at ?? null;
  const coins: Return["coins"] = [];
  const lastResort = new Map<string, number>();
  for (const row of rows) {
    const item = items[row.idx];
    if (row.k !== "c" || !unanswered.has(row.idx) || !item || item.ref !== null) continue;
    if (!row.lr) coins.push({ recordId: row.record_id!, requester: item.requester, pair: item.pair });
    else if (item.pair !== null) lastResort.set(item.pair, (lastResort.get(item.pair) ?? 0) + 1);
  }
  return { at, coins, lastResort };
}

/**
 * Puts `back` in stock and refunds its quota (see above); resolves to the coins returned and the
 * quota refunded. It runs again while PostgreSQL refuses or is away — a cancel meant for the late
 * claim may even hit this statement on the same connection — for up to `forMs`; a second run
 * finds nothing more to return or refund.
 */
export async function returnCoins(db: Db, back: Return, forMs = 60_000): Promise<{ returned: number; refunded: number }> {
  if (returnSize(back) === 0) return { returned: 0, refunded: 0 };
  // without the statement's time nothing can tell this claim's coins from a later claim's: keep them
  if (back.at === null) throw new Error("the claim statement's time is missing from its result");
  const params = [back.coins.map((c) => c.recordId), back.coins.map((c) => c.requester), back.coins.map((c) => c.pair), back.at,
    [...back.lastResort.keys()], [...back.lastResort.values()]];
  const until = performance.now() + forMs;
  for (let pause = 100; ; pause = Math.min(pause * 2, 5000)) {
    try {
      const [row] = await db.run((sql) => sql.unsafe<{ returned: number; refunded: number }[]>(returnStatement, params as never[], { prepare: db.prepare }), { what: "claim return" });
      return { returned: row?.returned ?? 0, refunded: row?.refunded ?? 0 };
    } catch (error) {
      if (performance.now() + pause > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
