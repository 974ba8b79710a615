import type { Shape } from "./statement.ts";

/**
 * The picking part of the claim statement (statement.ts): slots (the devices claimed from) and
 * demand per tier, then three phases —
 * each tier from its own stock, GOLD's shortfall from SILVER, then from BRONZE before SILVER's —
 * then the last-resort coins and each request's tally. Reads the CTEs `grant_` and `req`.
 */

const tierRows = (g: string, s: string, b: string) => `(VALUES (1, 'GOLD', ${g}), (2, 'SILVER', ${s}), (3, 'BRONZE', ${b}))`;

/**
 * The pick rule, the same for every phase: per group (target, device [, tier]) the oldest `total`
 * available coins of `tier` with record_id above `after`, numbered in FIFO order. The rows' ctid
 * goes along: the claim updates them by it (a locked row cannot move) through a TID scan of
 * `ctid = ANY(…)`, which no estimate of the batch's size makes the planner trade for reading the
 * table (statement.ts).
 */
const pick = (own: Shape["own"], groups: string, tier: string, after: string) => `
  SELECT p.ctid, p.record_id, g.target, g.dev, p.tier, row_number() OVER (PARTITION BY g.target, g.dev, p.tier ORDER BY p.record_id) AS rn
  FROM ${groups} g CROSS JOIN LATERAL (
    SELECT c.ctid, c.record_id, c.coin_category AS tier FROM coin_inventory c
    WHERE ${own("c.user_id")}c.user_id = g.target AND c.device_id = g.dev AND c.coin_category = ${tier} AND c.fetched_at IS NULL
      AND c.record_id > ${after}
    ORDER BY c.record_id LIMIT g.total
    FOR UPDATE SKIP LOCKED) p`;

/** The highest record_id that phase 1 picked for this target, device and tier (0: none). */
const pastPhase1 = (tier: string) => `coalesce((SELECT max(x.record_id) FROM p1 x WHERE x.target = g.target AND x.dev = g.dev AND x.tier = ${tier}), 0)`;

const tierRank = (tier: string) => `CASE ${tier} WHEN 'GOLD' THEN 1 WHEN 'SILVER' THEN 2 ELSE 3 END`;

// replace(), not translate(): the same text (encode's line breaks removed), at about 5 µs of
// PostgreSQL CPU per GOLD coin instead of 42 (bench/README.md, "Issue 21, second round")
export const b64 = (bytes: string) => `replace(encode(${bytes}, 'base64'), E'\\n', '')`;

/**
 * Each request's slots — the devices it claims from, want applying to each — then demand per
 * slot and the three phases of picking, per (target, device); then the request's allowance (the
 * pair quota left) applied to the coins found, in device order, tier order. A claim without `devices` has one slot, device 1 (whether or not
 * it has a row); one with `devices` (multi) claims from the devices that have a row, the caller's
 * own device skipped when it claims from itself, and answers each with its identity keys.
 */
export const phases = ({ routed, own, lean }: Shape) => `
slot AS (${lean ? `
  SELECT g.idx, d.dev::smallint AS dev, NULL::jsonb AS keys FROM grant_ g CROSS JOIN LATERAL unnest(g.devs::smallint[]) AS d(dev)` : `
  SELECT g.idx, s.dev, s.keys
  FROM grant_ g CROSS JOIN LATERAL (
    SELECT d.dev::smallint AS dev, NULL::jsonb AS keys FROM unnest(g.devs::smallint[]) AS d(dev) WHERE NOT g.multi
    UNION ALL
    SELECT v.device_id, jsonb_strip_nulls(jsonb_build_object('ed25519_b64', ${b64("v.ed25519")}, 'ml_dsa_b64', ${b64("v.ml_dsa")}, 'ml_dsa', v.ml_dsa_set))
    FROM device v
    WHERE ${own("v.user_id")}g.multi AND v.user_id = g.target AND (g.devs IS NULL OR v.device_id = ANY(g.devs::smallint[])) AND v.device_id <> g.skip
  ) s`}
),
-- demand is what was asked, picked in full; the allowance is applied to what was found (assigned)
dem AS (
  SELECT g.*, s.dev, s.keys, g.idx * 128 + s.dev AS sid, g.wg AS dg, g.ws AS ds, g.wb AS db
  FROM grant_ g JOIN slot s ON s.idx = g.idx
  WHERE g.allowance > 0
),
d1 AS (
  SELECT d.sid, d.idx, d.target, d.dev, v.tier, v.n, sum(v.n) OVER (PARTITION BY d.target, d.dev, v.tier ORDER BY d.sid) - v.n AS lo
  FROM dem d CROSS JOIN LATERAL ${tierRows("d.dg", "d.ds", "d.db")} v(rank, tier, n)
  WHERE v.n > 0
),
p1 AS MATERIALIZED (${pick(own, "(SELECT target, dev, tier, sum(n) AS total FROM d1 GROUP BY 1, 2, 3)", "g.tier", "0")}
),
a1 AS (
  SELECT p.ctid, p.record_id, p.target, d.sid, d.idx, d.tier AS for_tier FROM p1 p
  JOIN d1 d ON d.target = p.target AND d.dev = p.dev AND d.tier = p.tier AND p.rn > d.lo AND p.rn <= d.lo + d.n
),
${lean ? `
picked AS (SELECT ctid, record_id, target, sid, idx, for_tier FROM a1),` : fallback(own)}
-- what the quota allows of what was found: per request, in device order, tier order (the tier a
-- coin serves), oldest first; the rest stays in stock (its lock ends with the statement)
assigned AS (
  SELECT p.ctid, p.record_id, p.target, p.sid, p.idx, p.for_tier
  FROM (SELECT p.*, row_number() OVER (PARTITION BY p.idx ORDER BY p.sid, ${tierRank("p.for_tier")}, p.record_id) AS n FROM picked p) p
  JOIN grant_ g ON g.idx = p.idx
  WHERE p.n <= g.allowance
),
-- per slot, the coins it got for each tier asked (grouped once: no per-request subqueries,
-- which would make a batch of n requests cost n²)
got AS (
  SELECT sid, count(*) FILTER (WHERE for_tier = 'GOLD') AS g, count(*) FILTER (WHERE for_tier = 'SILVER') AS s,
         count(*) FILTER (WHERE for_tier = 'BRONZE') AS b
  FROM assigned GROUP BY sid
),
${lean ? "" : lastResort(own)}
stally AS (
  SELECT d.sid, d.idx, d.dev, d.keys,
         ARRAY[
           CASE WHEN l.g THEN 0 ELSE d.wg - coalesce(o.g, 0) END,
           CASE WHEN l.s THEN 0 ELSE d.ws - coalesce(o.s, 0) END,
           CASE WHEN l.b THEN 0 ELSE d.wb - coalesce(o.b, 0) END]::int[] AS short,
         (coalesce(o.g + o.s + o.b, 0) + coalesce(l.n, 0))::int AS served
  FROM dem d LEFT JOIN got o ON o.sid = d.sid
  LEFT JOIN ${lean ? "(SELECT NULL::int AS sid, NULL::bigint AS n, NULL::bool AS g, NULL::bool AS s, NULL::bool AS b WHERE false)" : `(
    SELECT sid, count(*) AS n, bool_or(rank = 1) AS g, bool_or(rank = 2) AS s, bool_or(rank = 3) AS b
    FROM lrc GROUP BY sid)`} l ON l.sid = d.sid
),
-- per request: its shortfall (summed over its devices), coins served and, multi, per device its
-- keys and shortfall (the answer's devices, in device order)
tally AS (
  SELECT g.idx, g.target, g.pair, g.ref, g.body, g.final, g.existed, g.allowance,
         coalesce(x.short, ARRAY[0, 0, 0]) AS short, coalesce(x.served, 0) AS served,
         CASE WHEN g.multi THEN coalesce(x.devices, '[]') END AS devices
  FROM grant_ g LEFT JOIN (
    SELECT s.idx, ARRAY[sum(s.short[1]), sum(s.short[2]), sum(s.short[3])]::int[] AS short, sum(s.served)::int AS served,
           jsonb_agg(s.keys || jsonb_build_object('device_id', s.dev, 'short', s.short) ORDER BY s.dev) FILTER (WHERE s.keys IS NOT NULL) AS devices
    FROM stally s GROUP BY s.idx) x ON x.idx = g.idx
),
${lean ? "" : replayRecord(routed, own)}
go AS (
  SELECT t.* FROM tally t WHERE t.served > 0${lean ? "" : " AND (t.ref IS NULL OR t.ref IN (SELECT ref FROM rw))"}
),`;

/** Not lean: GOLD's shortfall from SILVER, then from BRONZE before SILVER's. */
const fallback = (own: Shape["own"]) => `
s1 AS (
  SELECT d.sid, d.idx, d.target, d.dev,
         d.dg - count(a.record_id) FILTER (WHERE a.for_tier = 'GOLD') AS sg,
         d.ds - count(a.record_id) FILTER (WHERE a.for_tier = 'SILVER') AS ss
  FROM dem d LEFT JOIN a1 a ON a.sid = d.sid
  WHERE d.fb
  GROUP BY d.sid, d.idx, d.target, d.dev, d.dg, d.ds
),
-- fallback, GOLD's shortfall first: from SILVER …
d2 AS (
  SELECT sid, idx, target, dev, sg AS n, sum(sg) OVER (PARTITION BY target, dev ORDER BY sid) - sg AS lo FROM s1 WHERE sg > 0
),
p2 AS MATERIALIZED (${pick(own, "(SELECT target, dev, sum(n) AS total FROM d2 GROUP BY 1, 2)", "'SILVER'", pastPhase1("'SILVER'"))}
),
a2 AS (
  SELECT p.ctid, p.record_id, p.target, d.sid, d.idx FROM p2 p
  JOIN d2 d ON d.target = p.target AND d.dev = p.dev AND p.rn > d.lo AND p.rn <= d.lo + d.n
),
-- … then from BRONZE, before SILVER's shortfall (from BRONZE too)
d3 AS (
  SELECT s.sid, s.idx, s.target, s.dev, v.part, v.n, sum(v.n) OVER (PARTITION BY s.target, s.dev ORDER BY s.sid, v.part) - v.n AS lo
  FROM s1 s LEFT JOIN (SELECT sid, count(*) AS n FROM a2 GROUP BY sid) g2 ON g2.sid = s.sid
  CROSS JOIN LATERAL (VALUES (1, s.sg - coalesce(g2.n, 0)), (2, s.ss)) v(part, n)
  WHERE v.n > 0
),
p3 AS MATERIALIZED (${pick(own, "(SELECT target, dev, sum(n) AS total FROM d3 GROUP BY 1, 2)", "'BRONZE'", pastPhase1("'BRONZE'"))}
),
a3 AS (
  SELECT p.ctid, p.record_id, p.target, d.sid, d.idx, d.part FROM p3 p
  JOIN d3 d ON d.target = p.target AND d.dev = p.dev AND p.rn > d.lo AND p.rn <= d.lo + d.n
),
picked AS (
  SELECT ctid, record_id, target, sid, idx, for_tier FROM a1
  UNION ALL SELECT ctid, record_id, target, sid, idx, 'GOLD' FROM a2
  UNION ALL SELECT ctid, record_id, target, sid, idx, CASE part WHEN 1 THEN 'GOLD' ELSE 'SILVER' END FROM a3
),`;

/** Not lean: a tier still short after fallback gets the device's last-resort coin. */
const lastResort = (own: Shape["own"]) => `
-- a tier still short after fallback gets the device's last-resort coin, when the request allows it
lrc AS (
  SELECT x.* FROM (
    SELECT d.sid, d.idx, d.dev, v.rank, l.coin_category, l.key_id, l.public_key_blob, l.signature_blob, d.allowance,
           row_number() OVER (PARTITION BY d.idx ORDER BY d.sid, v.rank) + coalesce(k.n, 0) AS n
    FROM dem d LEFT JOIN got o ON o.sid = d.sid
    LEFT JOIN (SELECT idx, count(*) AS n FROM assigned GROUP BY idx) k ON k.idx = d.idx
    CROSS JOIN LATERAL ${tierRows("d.dg", "d.ds", "d.db")} v(rank, tier, n)
    JOIN last_resort_coin l ON ${own("l.user_id")}l.user_id = d.target AND l.device_id = d.dev AND l.coin_category = v.tier
    WHERE d.lr AND v.n > CASE v.rank WHEN 1 THEN coalesce(o.g, 0) WHEN 2 THEN coalesce(o.s, 0) ELSE coalesce(o.b, 0) END
  ) x
  -- (last-resort coins count against the quota too, after every ordinary coin)
  WHERE x.n <= x.allowance
),`;

/** Not lean: an idempotent request's answer recorded for its retries. */
const replayRecord = (routed: boolean, own: Shape["own"]) => `
-- an idempotent request records its answer (unless a concurrent retry did) before it may claim;
-- a waiting request that found nothing records nothing until its last attempt. Routed, the record
-- exists already (short NULL) and is filled in; a concurrent fill makes this one find nothing
lrj AS (
  SELECT l.idx, jsonb_agg(jsonb_build_object('key_id', l.key_id, 'coin_category', l.coin_category, 'device_id', l.dev,
           'public_key_b64', ${b64("l.public_key_blob")}, 'signature_b64', ${b64("l.signature_blob")}) ORDER BY l.dev, l.rank) AS coins
  FROM lrc l GROUP BY l.idx
),
rw AS (${routed ? `
  UPDATE claim_replay p SET body = t.body, short = t.short, last_resort = coalesce(j.coins, '[]'), devices = t.devices, created_at = now()
  FROM tally t LEFT JOIN lrj j ON j.idx = t.idx
  WHERE ${own("p.target")}p.target = t.target AND p.ref = t.ref AND p.short IS NULL
    AND t.ref IS NOT NULL AND t.allowance > 0 AND (t.served > 0 OR t.final)
  RETURNING p.ref` : `
  INSERT INTO claim_replay (target, ref, body, short, last_resort, devices)
  SELECT t.target, t.ref, t.body, t.short, coalesce(j.coins, '[]'), t.devices
  FROM tally t LEFT JOIN lrj j ON j.idx = t.idx
  WHERE t.ref IS NOT NULL AND t.allowance > 0 AND (t.served > 0 OR t.final)
  ORDER BY t.ref
  ON CONFLICT (target, ref) DO NOTHING
  RETURNING ref`}
),`;
