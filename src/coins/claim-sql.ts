/**
 * The claim statement: one statement and one commit serve a whole batch of claims — any mix of
 * requesters, targets and tiers — with downward fallback, last-resort coins, idempotent replays
 * and, when it is on, the pair quota checked and spent exactly. Built once per variant (quota on
 * or off) from the pieces below; only the parameters change between runs, so it stays one
 * prepared statement.
 *
 * Why it is safe:
 * - Coins are picked with `FOR UPDATE SKIP LOCKED`, so concurrent statements take disjoint rows.
 *   Every (target, tier) is scanned once per phase for the whole batch and the rows are split
 *   between requests by window arithmetic: SKIP LOCKED does not skip rows this statement itself
 *   locked, so two scans of one (target, tier) could return the same row. The fallback scans
 *   start past the rows the first phase picked for the same reason.
 * - The quota rows of the batch's pairs are locked first, in key order (no deadlocks), with
 *   `FOR UPDATE`, which returns their newest committed version even when the statement had to
 *   wait for them; they are then written once. A pair with no row yet is inserted; if a
 *   concurrent statement inserted it first, the insert becomes an update that is refused when it
 *   would overspend, and the coins of that request are not claimed (it runs again).
 * - Everything is grouped or joined by request index, never looked up per request by a
 *   subquery: a batch of 512 claims must cost about 512 times one, not 512².
 * - An idempotency key is recorded (claim_replay) in the same statement that claims its coins;
 *   a concurrent retry that finds it taken claims nothing and runs again, then replays.
 * - Gates feed the final UPDATE through RETURNING, so nothing is claimed for a request whose
 *   replay record or quota spend did not happen.
 * The quota arithmetic is written inline (not as SQL functions, which PostgreSQL would plan again
 * on every execution) through the helpers below, which the maintenance purge shares.
 */

/** Per-request parameters, in order: one array per field, one element per request. */
export const claimColumns = [
  "idx int", "target uuid", "requester uuid", "pair uuid", "pair_prev uuid", "wg int", "ws int", "wb int",
  "fb bool", "lr bool", "final bool", "ref uuid", "ref_prev uuid", "body uuid",
] as const;

/** The current hour as a bucket number (now() is fixed for a statement). */
export const HOUR = "floor(extract(epoch FROM now()) / 3600)::int";
/** Coins spent in the buckets that still count: a bucket counts until its hour ended 24 h ago. */
export const quotaUsed = (hours: string, counts: string) =>
  `(SELECT coalesce(sum(b.c), 0)::int FROM unnest(${hours}, ${counts}) AS b(h, c) WHERE b.h > ${HOUR} - 25)`;

// postgres.js types a JS boolean[] parameter as bool: booleans travel as "t"/"f" text and are cast here.
const paramType = (type: string) => (type === "bool" ? "text[]::bool[]" : `${type}[]`);

const tierRows = (g: string, s: string, b: string) => `(VALUES (1, 'GOLD', ${g}), (2, 'SILVER', ${s}), (3, 'BRONZE', ${b}))`;

/**
 * The pick rule, the same for every phase: per group (target [, tier]) the oldest `total`
 * available coins of `tier` with record_id above `after`, numbered in FIFO order.
 */
const pick = (groups: string, tier: string, after: string) => `
  SELECT p.record_id, g.target, p.tier, row_number() OVER (PARTITION BY g.target, p.tier ORDER BY p.record_id) AS rn
  FROM ${groups} g CROSS JOIN LATERAL (
    SELECT c.record_id, c.coin_category AS tier FROM coin_inventory c
    WHERE c.user_id = g.target AND c.coin_category = ${tier} AND c.fetched_at IS NULL AND c.record_id > ${after}
    ORDER BY c.record_id LIMIT g.total
    FOR UPDATE SKIP LOCKED) p`;

/** The highest record_id that phase 1 picked for this target and tier (0: none). */
const pastPhase1 = (tier: string) => `coalesce((SELECT max(x.record_id) FROM p1 x WHERE x.target = g.target AND x.tier = ${tier}), 0)`;

/** Parameter numbers after the per-request arrays. */
const extra = (withQuota: boolean) => {
  const n = claimColumns.length;
  return withQuota ? { refs: `$${n + 1}::uuid[]`, quota: `$${n + 2}::int`, pairs: `$${n + 3}::uuid[]` } : { refs: `$${n + 1}::uuid[]` };
};

const input = (refs: string) => `
req AS (
  SELECT r.*, (r.pair IS NOT NULL AND row_number() OVER (PARTITION BY r.pair ORDER BY r.idx) > 1)
              OR (r.ref IS NOT NULL AND row_number() OVER (PARTITION BY r.ref ORDER BY r.idx) > 1) AS dup
  FROM unnest(${claimColumns.map((c, i) => `$${i + 1}::${paramType(c.split(" ")[1]!)}`).join(", ")})
    AS r(${claimColumns.map((c) => c.split(" ")[0]).join(", ")})
),
-- one request per pair and per idempotency key in a statement (the claimer sends no more); a
-- further one (dup) runs again in a later statement
seen AS MATERIALIZED (
  SELECT r.idx, p.ref, p.body = r.body AS same, p.short, p.last_resort
  FROM claim_replay p JOIN req r ON p.ref = r.ref OR p.ref = r.ref_prev
  WHERE p.ref = ANY(${refs})
),`;

/** Quota on: lock the batch's pair rows (newest versions, key order); a request's allowance is what is left. */
const quotaGrant = (quota: string, pairs: string) => `
-- (nothing but the locked rows here: after a wait, FOR UPDATE returns the newest row, but a
-- LATERAL beside it would still have been computed from the old one)
locked AS MATERIALIZED (
  SELECT q.pair, q.hours, q.counts FROM claim_quota q
  WHERE q.pair = ANY(${pairs})
  ORDER BY q.pair
  FOR UPDATE
),
qlock AS (
  SELECT l.pair, u.used, u.oldest FROM locked l CROSS JOIN LATERAL (
    SELECT coalesce(sum(b.c), 0)::int AS used, min(b.h) AS oldest FROM unnest(l.hours, l.counts) AS b(h, c) WHERE b.h > ${HOUR} - 25) u
),
grant_ AS (
  SELECT r.*, a.pair IS NOT NULL AS existed, least(a.oldest, b.oldest) AS oldest, x.blocked,
         CASE WHEN x.blocked THEN 0 ELSE greatest(0, ${quota} - coalesce(a.used, 0) - coalesce(b.used, 0)) END AS allowance
  FROM req r LEFT JOIN qlock a ON a.pair = r.pair LEFT JOIN qlock b ON b.pair = r.pair_prev
  -- a keyed claim of a pair without a row first creates the row, then runs again: its replay
  -- record must never outlive a refused quota write (see qw)
  CROSS JOIN LATERAL (SELECT r.dup OR (r.ref IS NOT NULL AND a.pair IS NULL) AS blocked) x
  WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.idx = r.idx)
),`;

const openGrant = `
grant_ AS (
  SELECT r.*, true AS existed, NULL::int AS oldest, r.dup AS blocked, CASE WHEN r.dup THEN 0 ELSE r.wg + r.ws + r.wb END AS allowance
  FROM req r WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.idx = r.idx)
),`;

/** Demand per tier, cut to the allowance in tier order; then the three phases of picking. */
const phases = `
dem AS (
  SELECT g.*, x.dg, y.ds, least(g.wb, g.allowance - x.dg - y.ds) AS db
  FROM grant_ g
  CROSS JOIN LATERAL (SELECT least(g.wg, g.allowance) AS dg) x
  CROSS JOIN LATERAL (SELECT least(g.ws, g.allowance - x.dg) AS ds) y
),
d1 AS (
  SELECT d.idx, d.target, v.tier, v.n, sum(v.n) OVER (PARTITION BY d.target, v.tier ORDER BY d.idx) - v.n AS lo
  FROM dem d CROSS JOIN LATERAL ${tierRows("d.dg", "d.ds", "d.db")} v(rank, tier, n)
  WHERE v.n > 0
),
p1 AS MATERIALIZED (${pick("(SELECT target, tier, sum(n) AS total FROM d1 GROUP BY 1, 2)", "g.tier", "0")}
),
a1 AS (
  SELECT p.record_id, d.idx, d.tier AS for_tier FROM p1 p
  JOIN d1 d ON d.target = p.target AND d.tier = p.tier AND p.rn > d.lo AND p.rn <= d.lo + d.n
),
s1 AS (
  SELECT d.idx, d.target,
         d.dg - count(a.record_id) FILTER (WHERE a.for_tier = 'GOLD') AS sg,
         d.ds - count(a.record_id) FILTER (WHERE a.for_tier = 'SILVER') AS ss
  FROM dem d LEFT JOIN a1 a ON a.idx = d.idx
  WHERE d.fb
  GROUP BY d.idx, d.target, d.dg, d.ds
),
-- fallback, GOLD's shortfall first: from SILVER …
d2 AS (
  SELECT idx, target, sg AS n, sum(sg) OVER (PARTITION BY target ORDER BY idx) - sg AS lo FROM s1 WHERE sg > 0
),
p2 AS MATERIALIZED (${pick("(SELECT target, sum(n) AS total FROM d2 GROUP BY 1)", "'SILVER'", pastPhase1("'SILVER'"))}
),
a2 AS (
  SELECT p.record_id, d.idx FROM p2 p JOIN d2 d ON d.target = p.target AND p.rn > d.lo AND p.rn <= d.lo + d.n
),
-- … then from BRONZE, before SILVER's shortfall (from BRONZE too)
d3 AS (
  SELECT s.idx, s.target, v.part, v.n, sum(v.n) OVER (PARTITION BY s.target ORDER BY s.idx, v.part) - v.n AS lo
  FROM s1 s LEFT JOIN (SELECT idx, count(*) AS n FROM a2 GROUP BY idx) g2 ON g2.idx = s.idx
  CROSS JOIN LATERAL (VALUES (1, s.sg - coalesce(g2.n, 0)), (2, s.ss)) v(part, n)
  WHERE v.n > 0
),
p3 AS MATERIALIZED (${pick("(SELECT target, sum(n) AS total FROM d3 GROUP BY 1)", "'BRONZE'", pastPhase1("'BRONZE'"))}
),
a3 AS (
  SELECT p.record_id, d.idx, d.part FROM p3 p JOIN d3 d ON d.target = p.target AND p.rn > d.lo AND p.rn <= d.lo + d.n
),
assigned AS (
  SELECT record_id, idx, for_tier FROM a1
  UNION ALL SELECT record_id, idx, 'GOLD' FROM a2
  UNION ALL SELECT record_id, idx, CASE part WHEN 1 THEN 'GOLD' ELSE 'SILVER' END FROM a3
),
-- per request, the coins it got for each tier asked (grouped once: no per-request subqueries,
-- which would make a batch of n requests cost n²)
got AS (
  SELECT idx, count(*) FILTER (WHERE for_tier = 'GOLD') AS g, count(*) FILTER (WHERE for_tier = 'SILVER') AS s,
         count(*) FILTER (WHERE for_tier = 'BRONZE') AS b
  FROM assigned GROUP BY idx
),
-- a tier still short after fallback gets its last-resort coin, when the request allows it
lrc AS (
  SELECT d.idx, v.rank, l.coin_category, l.key_id, l.public_key_blob, l.signature_blob
  FROM dem d LEFT JOIN got o ON o.idx = d.idx
  CROSS JOIN LATERAL ${tierRows("d.dg", "d.ds", "d.db")} v(rank, tier, n)
  JOIN last_resort_coin l ON l.user_id = d.target AND l.coin_category = v.tier
  WHERE d.lr AND v.n > CASE v.rank WHEN 1 THEN coalesce(o.g, 0) WHEN 2 THEN coalesce(o.s, 0) ELSE coalesce(o.b, 0) END
),
tally AS (
  SELECT d.idx, d.pair, d.ref, d.body, d.final, d.existed, d.allowance,
         ARRAY[
           CASE WHEN l.g THEN 0 ELSE d.wg - coalesce(o.g, 0) END,
           CASE WHEN l.s THEN 0 ELSE d.ws - coalesce(o.s, 0) END,
           CASE WHEN l.b THEN 0 ELSE d.wb - coalesce(o.b, 0) END]::int[] AS short,
         (coalesce(o.g + o.s + o.b, 0) + coalesce(l.n, 0))::int AS served
  FROM dem d LEFT JOIN got o ON o.idx = d.idx
  LEFT JOIN (SELECT idx, count(*) AS n, bool_or(rank = 1) AS g, bool_or(rank = 2) AS s, bool_or(rank = 3) AS b
             FROM lrc GROUP BY idx) l ON l.idx = d.idx
),
-- an idempotent request records its answer (unless a concurrent retry did) before it may claim;
-- a waiting request that found nothing records nothing until its last attempt
rw AS (
  INSERT INTO claim_replay (ref, body, short, last_resort)
  SELECT t.ref, t.body, t.short, coalesce(j.coins, '[]')
  FROM tally t LEFT JOIN (
    SELECT l.idx, jsonb_agg(jsonb_build_object('key_id', l.key_id, 'coin_category', l.coin_category,
             'public_key_b64', translate(encode(l.public_key_blob, 'base64'), E'\\n', ''),
             'signature_b64', translate(encode(l.signature_blob, 'base64'), E'\\n', '')) ORDER BY l.rank) AS coins
    FROM lrc l GROUP BY l.idx) j ON j.idx = t.idx
  WHERE t.ref IS NOT NULL AND t.allowance > 0 AND (t.served > 0 OR t.final)
  ORDER BY t.ref
  ON CONFLICT (ref) DO NOTHING
  RETURNING ref
),
go AS (
  SELECT t.* FROM tally t WHERE t.served > 0 AND (t.ref IS NULL OR t.ref IN (SELECT ref FROM rw))
),`;

/** Quota on: spend what was served; refused only for a pair another statement created meanwhile, past the quota. */
const quotaSpend = (quota: string) => `
-- rows locked above: the update cannot be refused
qu AS (
  UPDATE claim_quota q SET (hours, counts) = (
    SELECT array_agg(m.h ORDER BY m.h), array_agg(m.c ORDER BY m.h)
    FROM (SELECT l.h, sum(l.c)::int AS c
          FROM (SELECT b.h, b.c FROM unnest(q.hours, q.counts) AS b(h, c) WHERE b.h > ${HOUR} - 25
                UNION ALL SELECT ${HOUR}, go.served) l
          GROUP BY l.h) m)
  FROM go WHERE q.pair = go.pair AND go.existed
  RETURNING q.pair
),
-- pairs with no row in this statement's snapshot: a concurrent statement may have inserted one
-- meanwhile, and then the newest count decides
qi AS (
  INSERT INTO claim_quota AS q (pair, hours, counts)
  SELECT pair, ARRAY[${HOUR}], ARRAY[served] FROM go WHERE NOT existed ORDER BY pair
  ON CONFLICT (pair) DO UPDATE SET (hours, counts) = (
    SELECT array_agg(m.h ORDER BY m.h), array_agg(m.c ORDER BY m.h)
    FROM (SELECT l.h, sum(l.c)::int AS c
          FROM (SELECT b.h, b.c FROM unnest(q.hours, q.counts) AS b(h, c) WHERE b.h > ${HOUR} - 25
                UNION ALL SELECT ${HOUR}, excluded.counts[1]) l
          GROUP BY l.h) m)
  WHERE ${quotaUsed("q.hours", "q.counts")} + excluded.counts[1]
        + coalesce((SELECT b.used FROM req r JOIN qlock b ON b.pair = r.pair_prev WHERE r.pair = q.pair LIMIT 1), 0) <= ${quota}
  RETURNING pair
),
qw AS (SELECT pair FROM qu UNION ALL SELECT pair FROM qi),
won AS (SELECT idx, ref FROM go WHERE pair IN (SELECT pair FROM qw)),
newrows AS (
  INSERT INTO claim_quota (pair, hours, counts)
  SELECT DISTINCT pair, '{}'::int[], '{}'::int[] FROM grant_ WHERE blocked AND NOT existed ORDER BY pair
  ON CONFLICT (pair) DO NOTHING
),`;

const openSpend = `
won AS (SELECT idx, ref FROM go),`;

const coinOut = (c: string) =>
  `${c}.key_id, ${c}.coin_category, translate(encode(${c}.public_key_blob, 'base64'), E'\\n', '') AS public_key_b64, `
  + `translate(encode(${c}.signature_blob, 'base64'), E'\\n', '') AS signature_b64`;

/** The claim itself, then one result set: coin rows ('c'), one status row per request ('m'), and 'n'. */
const output = `
upd AS (
  UPDATE coin_inventory c SET fetched_by = r.requester, fetched_at = now(), claim_ref = w.ref
  FROM assigned a JOIN won w ON w.idx = a.idx JOIN req r ON r.idx = a.idx
  WHERE c.record_id = a.record_id
  RETURNING a.idx, c.record_id, ${coinOut("c")}
),
-- owners long-polling their count hear of every claim that takes their coins
notified AS (
  SELECT pg_notify('aqm_stock', w.user_id::text) FROM stock_watch w
  WHERE w.until > now() AND w.user_id IN (SELECT r.target FROM won JOIN req r ON r.idx = won.idx)
)
SELECT 'c' AS k, u.idx, u.record_id, u.key_id, u.coin_category, u.public_key_b64, u.signature_b64, false AS lr,
       NULL AS status, NULL::int[] AS short, NULL::int AS remaining, NULL::int AS retry_after
FROM upd u
UNION ALL
SELECT 'c', l.idx, l.rank, ${coinOut("l")}, true, NULL, NULL, NULL, NULL FROM lrc l JOIN won w ON w.idx = l.idx
UNION ALL
SELECT 'c', s.idx, c.record_id, ${coinOut("c")}, false, NULL, NULL, NULL, NULL
FROM seen s JOIN coin_inventory c ON c.claim_ref = s.ref WHERE s.same
UNION ALL
SELECT 'c', s.idx, e.ord, e.j->>'key_id', e.j->>'coin_category', e.j->>'public_key_b64', e.j->>'signature_b64', true,
       NULL, NULL, NULL, NULL
FROM seen s CROSS JOIN LATERAL jsonb_array_elements(s.last_resort) WITH ORDINALITY AS e(j, ord) WHERE s.same
UNION ALL
SELECT 'm', r.idx, NULL, NULL, NULL, NULL, NULL, NULL,
       CASE WHEN s.idx IS NOT NULL THEN CASE WHEN s.same THEN 'replay' ELSE 'mismatch' END
            WHEN g.blocked THEN 'retry'
            WHEN g.allowance = 0 THEN 'quota'
            WHEN t.served > 0 AND w.idx IS NULL THEN 'retry'
            WHEN t.ref IS NOT NULL AND t.final AND t.served = 0 AND t.ref NOT IN (SELECT ref FROM rw) THEN 'retry'
            ELSE 'ok' END,
       coalesce(s.short, t.short),
       g.allowance - t.served,
       CASE WHEN g.oldest IS NOT NULL THEN greatest(1, ceil((g.oldest + 25) * 3600 - extract(epoch FROM now())))::int END
FROM req r LEFT JOIN seen s ON s.idx = r.idx LEFT JOIN grant_ g ON g.idx = r.idx LEFT JOIN tally t ON t.idx = r.idx
LEFT JOIN won w ON w.idx = r.idx
UNION ALL
SELECT 'n', (SELECT count(*) FROM notified)::int, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`;

/**
 * The statement text. Parameters: the claimColumns arrays, then the idempotency refs to look up
 * (uuid[]), and with the quota the quota (int) and the sorted pair keys to lock (uuid[]).
 */
export function claimStatementText(withQuota: boolean): string {
  const p = extra(withQuota);
  return `WITH ${input(p.refs)}${withQuota ? quotaGrant(p.quota!, p.pairs!) : openGrant}${phases}`
    + `${withQuota ? quotaSpend(p.quota!) : openSpend}${output}`;
}
