import type { Db } from "../db/db.ts";
import type { ClaimItem, ClaimRow } from "./batch.ts";
import { notifyStock } from "../coins/stock-events.ts";
import { routingOf } from "./routing.ts";

/**
 * Coins a claim statement took for requests that were never answered with them: the statement
 * finished after its answer (a 503) was given up — a frozen PostgreSQL that resumed, a cancel
 * that came too late — the client left while it ran, or the server failed to read its result.
 * Their key bytes reached this process only, so putting them back in stock keeps every coin handed
 * out at most once, and the pair quota gets back what they cost — last-resort coins included
 * (those stay in stock anyway: only their quota is refunded, once, see migration 013). Keyed
 * claims keep theirs: the stored answer is what a retry with the same Idempotency-Key receives.
 */
const returnStatement = (routed: boolean) => `
WITH back AS MATERIALIZED (
  SELECT c.user_id, c.record_id, x.pair
  FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::uuid[]) AS x(owner, record_id, requester, pair)
  JOIN coin_inventory c ON c.user_id = x.owner AND c.record_id = x.record_id
  -- still taken by that claim (not by a later one, should this run twice); the time travels as
  -- text: postgres.js would send a timestamptz parameter through Date, to the millisecond
  WHERE c.user_id = ANY($8::uuid[]) AND c.fetched_by = x.requester AND c.fetched_at = $5::text::timestamptz AND c.claim_ref IS NULL
  FOR UPDATE OF c
),
freed AS (
  UPDATE coin_inventory c SET fetched_by = NULL, fetched_at = NULL
  FROM back b WHERE c.user_id = ANY($8::uuid[]) AND c.user_id = b.user_id AND c.record_id = b.record_id
  RETURNING c.record_id
),
${routed ? "" : `-- last-resort coins: refunded once per (pair, claim time), whatever reruns (routed: see MARK)
marked AS (
  INSERT INTO claim_refund (target, pair, at)
  SELECT DISTINCT target, pair, $5::text::timestamptz FROM unnest($6::uuid[], $7::uuid[]) AS l(target, pair)
  ON CONFLICT DO NOTHING
  RETURNING target, pair
),
`}refund AS (
  SELECT target, pair, sum(n)::int AS n FROM (
    SELECT user_id AS target, pair, 1 AS n FROM back WHERE pair IS NOT NULL
    UNION ALL SELECT l.target, l.pair, l.n FROM unnest($6::uuid[], $7::uuid[], $9::int[]) AS l(target, pair, n)${routed ? "" : `
      JOIN marked m ON m.target = l.target AND m.pair = l.pair`}
  ) x GROUP BY target, pair
),
-- the claim's hour bucket, computed once (Citus refuses a STABLE cast beside column references in an UPDATE)
refund_at AS (SELECT r.*, floor(extract(epoch FROM $5::text::timestamptz) / 3600)::int AS hour FROM refund r),
refunded AS (
  UPDATE claim_quota q SET counts = (
    SELECT array_agg(CASE WHEN b.h = r.hour THEN greatest(0, b.c - r.n) ELSE b.c END ORDER BY b.o)
    FROM unnest(q.hours, q.counts) WITH ORDINALITY AS b(h, c, o))
  FROM refund_at r WHERE q.target = ANY($8::uuid[]) AND q.target = r.target AND q.pair = r.pair
  RETURNING r.n
),
notified AS (SELECT ${routed ? "u.user_id::text AS owner" : "pg_notify('aqm_stock', u.user_id::text)"} FROM (SELECT DISTINCT user_id FROM back) u)
-- (the UPDATEs run unread; notified, a plain SELECT, runs only when read)
SELECT (SELECT count(*) FROM freed)::int AS returned, (SELECT coalesce(sum(n), 0) FROM refunded)::int AS refunded,
       ${routed ? "(SELECT coalesce(array_agg(owner), '{}') FROM notified)" : "(SELECT count(*) FROM notified)::int"} AS notified`;
const returnStatements = { plain: returnStatement(false), routed: returnStatement(true) };

/**
 * Routed (Citus): an INSERT inside the return would make Citus run it in steps through the
 * coordinator, so the last-resort refunds are marked first, by a router statement of their own;
 * the return then refunds only the pairs this marking took. A return that stops between the two
 * leaves that quota spent: too strict by those coins, never refunded twice.
 */
const markText = (rows: number) => `INSERT INTO claim_refund (target, pair, at) VALUES ${
  Array.from({ length: rows }, (_, r) => `($${2 + r * 2}::uuid, $${3 + r * 2}::uuid, $1::text::timestamptz)`).join(", ")}
ON CONFLICT DO NOTHING RETURNING target::text, pair::text`;

/** What a return puts back: ordinary coins in stock, and the quota of last-resort coins. */
export interface Return {
  /** The claim statement's now(), as text (the fetched_at of every coin it took). */
  at: string | null;
  coins: { owner: string; recordId: string; requester: string; pair: string | null }[];
  /** Last-resort coins served per pair (quota on only): the pair's owner and how many. */
  lastResort: Map<string, { target: string; n: number }>;
}

/** Ordinary and last-resort coins, counted as a return counts them. */
export const returnSize = (r: Return) => r.coins.length + [...r.lastResort.values()].reduce((a, b) => a + b.n, 0);

/** What the requests at `unanswered` (indexes into `items`) took in `rows`, as a return gives it back. */
export function returnable(items: readonly ClaimItem[], rows: readonly ClaimRow[], unanswered: ReadonlySet<number>): Return {
  const at = rows.find((r) => r.k === "n")?.at ?? null;
  const coins: Return["coins"] = [];
  const lastResort: Return["lastResort"] = new Map();
  for (const row of rows) {
    const item = items[row.idx];
    if (row.k !== "c" || !unanswered.has(row.idx) || !item || item.ref !== null) continue;
    if (!row.lr) coins.push({ owner: item.target, recordId: row.record_id!, requester: item.requester, pair: item.pair });
    else if (item.pair !== null) lastResort.set(item.pair, { target: item.target, n: (lastResort.get(item.pair)?.n ?? 0) + 1 });
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
  const at = back.at;
  const owners = [...new Set([...back.coins.map((c) => c.owner), ...[...back.lastResort.values()].map((l) => l.target)])].sort();
  const until = performance.now() + forMs;
  for (let pause = 100; ; pause = Math.min(pause * 2, 5000)) {
    try {
      const routing = routingOf(db);
      const routed = await routing.routed();
      let lastResort = [...back.lastResort];
      if (routed && lastResort.length > 0) {
        const marked = await db.run((sql) => sql.unsafe<{ target: string; pair: string }[]>(markText(lastResort.length),
          [at, ...lastResort.flatMap(([pair, l]) => [l.target, pair])] as never[], { prepare: db.prepare }), { what: "claim return" });
        const taken = new Set(marked.map((m) => m.pair));
        lastResort = lastResort.filter(([pair]) => taken.has(pair));
      }
      const params = [back.coins.map((c) => c.owner), back.coins.map((c) => c.recordId), back.coins.map((c) => c.requester), back.coins.map((c) => c.pair),
        at, lastResort.map(([, l]) => l.target), lastResort.map(([pair]) => pair), owners, lastResort.map(([, l]) => l.n)];
      const text = routed ? returnStatements.routed : returnStatements.plain;
      const [row] = await db.run((sql) => sql.unsafe<{ returned: number; refunded: number; notified: number | string[] }[]>(text, params as never[], { prepare: db.prepare }), { what: "claim return" });
      if (Array.isArray(row?.notified)) await notifyStock(db, row.notified).catch(() => {});
      return { returned: row?.returned ?? 0, refunded: row?.refunded ?? 0 };
    } catch (error) {
      if (performance.now() + pause > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
