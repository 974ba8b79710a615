import type { Db } from "../db/db.ts";
import type { ClaimItem, ClaimRow } from "./batch.ts";

/**
 * Coins a claim statement took for requests that were never answered with them: the statement
 * finished after its answer (a 503) was given up — a frozen PostgreSQL that resumed, a cancel
 * that came too late — or the client left while it ran. Their key bytes reached this process
 * only, so putting them back in stock keeps every coin handed out at most once; the pair quota
 * gets back what they cost. Keyed claims keep theirs: the stored answer is what a retry with the
 * same Idempotency-Key receives. Last-resort coins are never taken, so never returned.
 */
const returnStatement = `
WITH back AS MATERIALIZED (
  SELECT c.record_id, c.user_id, x.pair, floor(extract(epoch FROM c.fetched_at) / 3600)::int AS h
  -- the time travels as text: postgres.js would send a timestamptz parameter through Date, to the millisecond
  FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[]) AS x(record_id, requester, pair, at)
  JOIN coin_inventory c ON c.record_id = x.record_id
  -- still taken by that claim (not by a later one, should this run twice)
  WHERE c.fetched_by = x.requester AND c.fetched_at = x.at::timestamptz AND c.claim_ref IS NULL
  FOR UPDATE OF c
),
freed AS (
  UPDATE coin_inventory c SET fetched_by = NULL, fetched_at = NULL
  FROM back b WHERE c.record_id = b.record_id
  RETURNING c.record_id
),
refund AS (SELECT pair, h, count(*)::int AS n FROM back WHERE pair IS NOT NULL GROUP BY pair, h),
refunded AS (
  UPDATE claim_quota q SET counts = (
    SELECT array_agg(CASE WHEN b.h = r.h THEN greatest(0, b.c - r.n) ELSE b.c END ORDER BY b.o)
    FROM unnest(q.hours, q.counts) WITH ORDINALITY AS b(h, c, o))
  FROM refund r WHERE q.pair = r.pair
),
notified AS (SELECT pg_notify('aqm_stock', u.user_id::text) FROM (SELECT DISTINCT user_id FROM back) u)
-- (the UPDATEs run unread; notified, a plain SELECT, runs only when read)
SELECT (SELECT count(*) FROM freed)::int AS returned, (SELECT count(*) FROM notified)::int AS notified`;

/** The coins of `rows` taken for the requests at `unanswered` (indexes into `items`) that a return may give back. */
export function returnable(items: readonly ClaimItem[], rows: readonly ClaimRow[], unanswered: ReadonlySet<number>) {
  const coins = rows.filter((r) => r.k === "c" && !r.lr && unanswered.has(r.idx) && items[r.idx]!.ref === null);
  const meta = new Map(rows.filter((r) => r.k === "m").map((r) => [r.idx, r]));
  return coins.filter((r) => meta.get(r.idx)?.status === "ok").map((r) => ({ recordId: r.record_id!, item: items[r.idx]!, at: meta.get(r.idx)!.at! }));
}

/**
 * Puts `coins` back in stock (see above); resolves to how many were returned. It runs again
 * while PostgreSQL refuses or is away — a cancel meant for the late claim may even hit this
 * statement on the same connection — for up to `forMs`; a second run finds nothing more to return.
 */
export async function returnCoins(db: Db, coins: ReturnType<typeof returnable>, forMs = 60_000): Promise<number> {
  if (coins.length === 0) return 0;
  const params = [coins.map((c) => c.recordId), coins.map((c) => c.item.requester), coins.map((c) => c.item.pair), coins.map((c) => c.at)];
  const until = performance.now() + forMs;
  for (let pause = 100; ; pause = Math.min(pause * 2, 5000)) {
    try {
      const [row] = await db.run((sql) => sql.unsafe<{ returned: number }[]>(returnStatement, params as never[], { prepare: db.prepare }), { what: "claim return" });
      return row?.returned ?? 0;
    } catch (error) {
      if (performance.now() + pause > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
