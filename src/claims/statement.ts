import { b64, phases } from "./phases.ts";

/**
 * The claim statement: one statement and one commit serve a whole batch of claims — any mix of
 * requesters, targets and tiers — with downward fallback, last-resort coins, idempotent replays
 * and, when it is on, the pair quota checked and spent exactly. Built once per variant (quota on
 * or off, routed or not, lean or whole: see Shape) from the pieces below; only the parameters
 * change between runs, so each stays one prepared statement.
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
 * - A replay rewrites its record, so its commit waits for a synchronous standby (see `touched`).
 * - A coin counted as served is a coin taken: if one was claimed and given back after the
 *   statement's snapshot, its lock holds a version the UPDATE cannot see, and the statement
 *   raises a serialization failure (rolled back, run again) instead of charging it unserved.
 * - No plan reads a whole table, whatever the estimates: with a table grown since its last ANALYZE
 *   (or never analyzed) PostgreSQL's guesses for this many joins reach billions of rows, and a
 *   generic plan once updated the coins through a scan of all of coin_inventory (76 claims/s
 *   instead of 3,700; tests/claim-plan.test.ts). So rows are updated by the ctids this statement
 *   locked (`= ANY(ARRAY(…))`: always a TID scan), and every other lookup of a growing table also
 *   names its keys as an array parameter.
 * The quota arithmetic is written inline (not as SQL functions, which PostgreSQL would plan again
 * on every execution) through the helpers below, which the maintenance purge shares.
 */

/** Per-request parameters, in order: one array per field, one element per request. */
export const claimColumns = [
  "idx int", "target uuid", "requester uuid", "pair uuid", "pair_prev uuid", "wg int", "ws int", "wb int",
  "fb bool", "lr bool", "final bool", "ref uuid", "ref_prev uuid", "body uuid", "multi bool", "devs text", "skip int",
] as const;

/** The current hour as a bucket number (now() is fixed for a statement). */
export const HOUR = "floor(extract(epoch FROM now()) / 3600)::int";
/** Hourly buckets that count: a bucket counts until its hour ended 24 h ago (the window errs strict by an hour). */
export const WINDOW_HOURS = 25;
const LIVE = `${HOUR} - ${WINDOW_HOURS}`;
/** Coins spent in the buckets that still count. */
export const quotaUsed = (hours: string, counts: string) =>
  `(SELECT coalesce(sum(b.c), 0)::int FROM unnest(${hours}, ${counts}) AS b(h, c) WHERE b.h > ${LIVE})`;

// postgres.js types a JS boolean[] parameter as bool: booleans travel as "t"/"f" text and are cast here.
const paramType = (type: string) => (type === "bool" ? "text[]::bool[]" : `${type}[]`);

/** Parameter numbers after the per-request arrays: the batch's owners (routed only), the refs, the quota and the pairs (quota on). */
const extra = (withQuota: boolean, routed: boolean, lean: boolean) => {
  let n = claimColumns.length;
  const next = (type: string) => `$${++n}::${type}`;
  const targets = routed ? next("uuid[]") : "";
  const refs = lean ? "" : next("uuid[]");
  return withQuota ? { targets, refs, quota: next("int"), pairs: next("uuid[]") } : { targets, refs, quota: undefined, pairs: undefined };
};

/**
 * How the statement is shaped for its engine. Routed, the batch's owners are a parameter of their
 * own: every reference to an owner-keyed table is filtered by it as well as joined, because
 * Citus routes a statement to one shard only when each reference names that shard's owners
 * itself (tests/citus/README.md). `routed` (Citus): no INSERT inside the statement — Citus would
 * run the statement in steps through the coordinator — so quota rows and replay records are
 * created beforehand (ensure.ts) and only updated here, and owners to notify are returned
 * (a pg_notify would fire on the worker) for the server to notify once the claim committed.
 */
export interface Shape {
  routed: boolean;
  /**
   * Every claim of the batch asks for its tiers from one device, without fallback, last-resort
   * coins or an idempotency key (GET /v1/coins/fetch, and POST /claim without those): the phases,
   * replays and devices those need are left out. PostgreSQL starts and ends every part of a plan
   * whether a batch uses it or not — about 350 µs a statement before it claims anything
   * (bench/statement-cost.ts) — and most claims are fetch-style.
   */
  lean: boolean;
  /** Routed: `<column> = ANY(<targets>) AND `, the filter each reference needs to stay on one shard; else nothing (one PostgreSQL plans better without it). */
  own: (column: string) => string;
}

const input = ({ own, lean }: Shape, refs: string) => `
req AS (
  SELECT r.*, (r.pair IS NOT NULL AND row_number() OVER (PARTITION BY r.pair ORDER BY r.idx) > 1)${lean ? "" : `
              OR (r.ref IS NOT NULL AND row_number() OVER (PARTITION BY r.ref ORDER BY r.idx) > 1)`} AS dup
  FROM unnest(${claimColumns.map((c, i) => `$${i + 1}::${paramType(c.split(" ")[1]!)}`).join(", ")})
    AS r(${claimColumns.map((c) => c.split(" ")[0]).join(", ")})
),${lean ? "" : seen(own, refs)}`;

const seen = (own: Shape["own"], refs: string) => `
-- one request per pair and per idempotency key in a statement (the claimer sends no more); a
-- further one (dup) runs again in a later statement
seen AS MATERIALIZED (
  SELECT r.idx, p.ref, p.body = r.body AS same, p.short, p.last_resort, p.devices
  FROM claim_replay p JOIN req r ON p.ref = r.ref OR p.ref = r.ref_prev
  -- any owner's record (a key reused for another target is a mismatch); routed, only the records
  -- of this shard's owners can be read (docs/runbook.md, "Citus": limits)
  WHERE ${own("p.target")}p.ref = ANY(${refs}) AND p.short IS NOT NULL
),`;

/** Quota on: lock the batch's pair rows (newest versions, key order); a request's allowance is what is left. */
const quotaGrant = ({ routed, own, lean }: Shape, quota: string, pairs: string) => `
-- (nothing but the locked rows here: after a wait, FOR UPDATE returns the newest row, but a
-- LATERAL beside it would still have been computed from the old one)
locked AS MATERIALIZED (
  SELECT q.pair, q.hours, q.counts, q.xmin::text AS version FROM claim_quota q
  WHERE ${own("q.target")}q.pair = ANY(${pairs})
  ORDER BY q.pair
  FOR UPDATE
),
qlock AS (
  -- moved: the row changed after this statement's snapshot (it waited for a concurrent claim of
  -- the pair, whose replay record, if any, this statement cannot see)
  SELECT l.pair, u.used, u.oldest,
         ${lean ? "false" : `l.version IS DISTINCT FROM (SELECT p.xmin::text FROM claim_quota p WHERE ${own("p.target")}p.pair = l.pair)`} AS moved
  FROM locked l CROSS JOIN LATERAL (
    SELECT coalesce(sum(b.c), 0)::int AS used, min(b.h) AS oldest FROM unnest(l.hours, l.counts) AS b(h, c) WHERE b.h > ${LIVE}) u
),
grant_ AS (
  SELECT r.*, a.pair IS NOT NULL AS existed, least(a.oldest, b.oldest) AS oldest, x.blocked, coalesce(a.moved, false) AS moved,
         CASE WHEN x.blocked THEN 0 ELSE greatest(0, ${quota} - coalesce(a.used, 0) - coalesce(b.used, 0)) END AS allowance
  FROM req r LEFT JOIN qlock a ON a.pair = r.pair LEFT JOIN qlock b ON b.pair = r.pair_prev
  -- a keyed claim of a pair without a row first creates the row, then runs again: its replay
  -- record must never outlive a refused quota write (see qw). Routed, rows are only updated: a
  -- pair without one (created beforehand, purged since) runs again
  CROSS JOIN LATERAL (SELECT r.dup OR (${routed ? "" : "r.ref IS NOT NULL AND "}a.pair IS NULL) AS blocked) x${unseen(lean)}
),`;

/** Not lean: a request whose idempotency key has a record is replayed, not claimed again. */
const unseen = (lean: boolean) => (lean ? "" : `
  WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.idx = r.idx)`);

/** The allowance of a claim without quota: more than any claim can ask for. */
const UNBOUNDED = 1_000_000_000;

const openGrant = ({ lean }: Shape) => `
grant_ AS (
  SELECT r.*, true AS existed, NULL::int AS oldest, r.dup AS blocked, false AS moved, CASE WHEN r.dup THEN 0 ELSE ${UNBOUNDED} END AS allowance
  FROM req r${unseen(lean)}
),`;

/** Quota on: spend what was served; refused only for a pair another statement created meanwhile, past the quota. */
const quotaSpend = ({ routed, own }: Shape, quota: string) => `
-- rows locked above: the update cannot be refused. (By key, not by ctid as the coins are: a
-- row this statement waited for has a newer version than its snapshot, which a TID scan would
-- not see; the update finds it through the old one)
qu AS (
  UPDATE claim_quota q SET (hours, counts) = (
    SELECT array_agg(m.h ORDER BY m.h), array_agg(m.c ORDER BY m.h)
    FROM (SELECT l.h, sum(l.c)::int AS c
          FROM (SELECT b.h, b.c FROM unnest(q.hours, q.counts) AS b(h, c) WHERE b.h > ${LIVE}
                UNION ALL SELECT ${HOUR}, go.served) l
          GROUP BY l.h) m)
  FROM go WHERE ${own("q.target")}q.pair = ANY(ARRAY(SELECT l.pair FROM locked l)) AND q.target = go.target AND q.pair = go.pair AND go.existed
  RETURNING q.pair
),${routed ? `
qw AS (SELECT pair FROM qu),` : quotaInsert(quota)}
won AS (SELECT idx, ref FROM go WHERE pair IN (SELECT pair FROM qw)),`;

/** Not routed: quota rows created by the claim itself. */
const quotaInsert = (quota: string) => `
-- pairs with no row in this statement's snapshot: a concurrent statement may have inserted one
-- meanwhile, and then the newest count decides
qi AS (
  INSERT INTO claim_quota AS q (target, pair, hours, counts)
  SELECT target, pair, ARRAY[${HOUR}], ARRAY[served] FROM go WHERE NOT existed ORDER BY pair
  ON CONFLICT (target, pair) DO UPDATE SET (hours, counts) = (
    SELECT array_agg(m.h ORDER BY m.h), array_agg(m.c ORDER BY m.h)
    FROM (SELECT l.h, sum(l.c)::int AS c
          FROM (SELECT b.h, b.c FROM unnest(q.hours, q.counts) AS b(h, c) WHERE b.h > ${LIVE}
                UNION ALL SELECT ${HOUR}, excluded.counts[1]) l
          GROUP BY l.h) m)
  WHERE ${quotaUsed("q.hours", "q.counts")} + excluded.counts[1]
        + coalesce((SELECT b.used FROM req r JOIN qlock b ON b.pair = r.pair_prev WHERE r.pair = q.pair LIMIT 1), 0) <= ${quota}
  RETURNING pair
),
qw AS (SELECT pair FROM qu UNION ALL SELECT pair FROM qi),
newrows AS (
  INSERT INTO claim_quota (target, pair, hours, counts)
  SELECT DISTINCT target, pair, '{}'::int[], '{}'::int[] FROM grant_ WHERE blocked AND NOT existed ORDER BY pair
  ON CONFLICT (target, pair) DO NOTHING
),`;

const openSpend = `
won AS (SELECT idx, ref FROM go),`;

const coinOut = (c: string) =>
  `${c}.key_id, ${c}.coin_category, ${b64(`${c}.public_key_blob`)} AS public_key_b64, ${b64(`${c}.signature_blob`)} AS signature_b64`;

/**
 * The claim itself, then one result set: coin rows ('c'), one status row per request ('m'), 'n'
 * (with the statement's time) and, routed, one 'w' row per watched owner to notify.
 */
const output = ({ routed, own, lean }: Shape, refs: string) => `
upd AS (
  UPDATE coin_inventory c SET fetched_by = r.requester, fetched_at = now(), claim_ref = w.ref
  FROM assigned a JOIN won w ON w.idx = a.idx JOIN req r ON r.idx = a.idx
  WHERE ${own("c.user_id")}c.ctid = ANY(ARRAY(SELECT x.ctid FROM assigned x)) AND c.ctid = a.ctid AND c.user_id = a.target
  RETURNING a.idx, c.record_id, c.fetched_at, c.device_id, ${coinOut("c")}
),${lean ? "" : `
-- a replay writes its record again (same values): its commit then waits for a synchronous standby
-- like a claim's, so a replay is answered only once the claim it repeats is durable there too — a
-- claim whose own wait was cancelled (answered 503) is visible here though a failover may lose it
touched AS (
  UPDATE claim_replay p SET body = p.body FROM seen s JOIN req r ON r.idx = s.idx
  WHERE ${own("p.target")}p.ref = ANY(${refs}) AND p.target = r.target AND p.ref = s.ref AND s.same
),`}
-- owners long-polling their count hear of every claim that takes their coins
notified AS (
  SELECT ${routed ? "DISTINCT w.user_id::text AS owner" : "pg_notify('aqm_stock', w.user_id::text)"} FROM stock_watch w
  WHERE ${own("w.user_id")}w.until > now() AND w.user_id IN (SELECT r.target FROM won JOIN req r ON r.idx = won.idx)
)
SELECT 'c' AS k, u.idx, u.record_id, u.key_id, u.coin_category, u.public_key_b64, u.signature_b64, false AS lr,
       NULL AS status, NULL::int[] AS short, NULL::int AS remaining, NULL::int AS retry_after, NULL AS at, u.device_id AS dev, NULL::jsonb AS devices
FROM upd u${lean ? "" : replayed(own, refs)}
UNION ALL
SELECT 'm', r.idx, NULL, NULL, NULL, NULL, NULL, NULL,
       ${lean ? leanStatus : status},
       ${lean ? "t.short" : "coalesce(s.short, t.short)"},
       g.allowance - t.served,
       CASE WHEN g.oldest IS NOT NULL THEN greatest(1, ceil((g.oldest + ${WINDOW_HOURS}) * 3600 - extract(epoch FROM now())))::int END,
       NULL, NULL, ${lean ? "t.devices" : "CASE WHEN s.idx IS NOT NULL THEN s.devices ELSE t.devices END"}
FROM req r${lean ? "" : " LEFT JOIN seen s ON s.idx = r.idx"} LEFT JOIN grant_ g ON g.idx = r.idx LEFT JOIN tally t ON t.idx = r.idx
LEFT JOIN won w ON w.idx = r.idx
UNION ALL
-- the time the coins were taken at, as stored (on Citus the UPDATE's now() is the coordinator's,
-- the worker's may differ); now() when none was
SELECT 'n', (SELECT count(*) FROM notified)::int, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       coalesce((SELECT u.fetched_at FROM upd u LIMIT 1), now())::text, NULL, NULL
-- every coin counted as served was taken, or the whole statement rolls back and runs again: one
-- claimed and given back after this statement's snapshot is locked in its newest version, which
-- the UPDATE (under that snapshot) cannot see (migration 017)
WHERE (SELECT aqm_claim_moved(m.missed)::text FROM (
         SELECT count(*) - (SELECT count(*) FROM upd) AS missed FROM assigned a JOIN won w ON w.idx = a.idx) m
       WHERE m.missed <> 0) IS NULL${routed ? `
UNION ALL
SELECT 'w', NULL, NULL, owner, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM notified` : ""}`;

/** Not lean: the last-resort coins served, and the coins and last-resort coins of each replay. */
const replayed = (own: Shape["own"], refs: string) => `
UNION ALL
SELECT 'c', l.idx, l.rank, ${coinOut("l")}, true, NULL, NULL, NULL, NULL, NULL, l.dev, NULL FROM lrc l JOIN won w ON w.idx = l.idx
UNION ALL
SELECT 'c', s.idx, c.record_id, ${coinOut("c")}, false, NULL, NULL, NULL, NULL, NULL, c.device_id, NULL
FROM seen s JOIN req r ON r.idx = s.idx JOIN coin_inventory c ON c.user_id = r.target AND c.claim_ref = s.ref
WHERE ${own("c.user_id")}c.claim_ref = ANY(${refs}) AND s.same
UNION ALL
SELECT 'c', s.idx, e.ord, e.j->>'key_id', e.j->>'coin_category', e.j->>'public_key_b64', e.j->>'signature_b64', true,
       NULL, NULL, NULL, NULL, NULL, coalesce((e.j->>'device_id')::smallint, 1), NULL
FROM seen s CROSS JOIN LATERAL jsonb_array_elements(s.last_resort) WITH ORDINALITY AS e(j, ord) WHERE s.same`;

const status = `CASE WHEN s.idx IS NOT NULL THEN CASE WHEN s.same THEN 'replay' ELSE 'mismatch' END
            WHEN g.blocked THEN 'retry'
            -- a keyed claim that found the quota spent by a claim it waited for (maybe its own
            -- first attempt, committed just now) runs again: a fresh snapshot may show its replay
            WHEN g.allowance = 0 AND r.ref IS NOT NULL AND g.moved THEN 'retry'
            WHEN g.allowance = 0 THEN 'quota'
            WHEN t.served > 0 AND w.idx IS NULL THEN 'retry'
            WHEN t.ref IS NOT NULL AND t.final AND t.served = 0 AND t.ref NOT IN (SELECT ref FROM rw) THEN 'retry'
            ELSE 'ok' END`;

/** Lean: no replays and no keys, so none of the keyed cases above. */
const leanStatus = `CASE WHEN g.blocked THEN 'retry'
            WHEN g.allowance = 0 THEN 'quota'
            WHEN t.served > 0 AND w.idx IS NULL THEN 'retry'
            ELSE 'ok' END`;

/**
 * The statement text. Parameters: the claimColumns arrays, then, routed, the batch's owners
 * (uuid[]), the idempotency refs to look up (uuid[]; not lean), and with the quota the quota (int) and the
 * sorted pair keys to lock (uuid[]).
 */
export function claimStatementText(withQuota: boolean, routed: boolean, lean = false): string {
  const p = extra(withQuota, routed, lean);
  const shape: Shape = { routed, lean, own: (column) => (routed ? `${column} = ANY(${p.targets}) AND ` : "") };
  return `WITH ${input(shape, p.refs)}${withQuota ? quotaGrant(shape, p.quota!, p.pairs!) : openGrant(shape)}${phases(shape)}`
    + `${withQuota ? quotaSpend(shape, p.quota!) : openSpend}${output(shape, p.refs)}`;
}
