import { expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { claimQuery, deviceOne, type ClaimItem } from "../src/claims/batch.ts";
import { claimKeys } from "../src/claims/keys.ts";
import type { Sql } from "../src/db/pool.ts";
import { testHashSecrets } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

// One PostgreSQL's planner (tests/citus/ runs the routed shape on Citus).
const db = useTestDatabase();
const keys = claimKeys(testHashSecrets.current);
const owners = Array.from({ length: 200 }, () => randomUUID());

/** The claim statement's text and parameters for `items`, as the queue would send them. */
function statement(items: ClaimItem[], quota: number | null): { text: string; params: unknown[] } {
  let sent: { text: string; params: unknown[] } | undefined;
  const capture = { unsafe: (text: string, params: unknown[]) => (sent = { text, params }) };
  claimQuery(capture as unknown as Sql, items, quota);
  return sent!;
}

/**
 * `n` claims of the owners, tiers in turn; every third keyed, every fourth from all devices, every
 * fifth allowing last-resort coins — or, `lean`, fetch-style claims only (the lean statement).
 */
function batch(n: number, lean: boolean): ClaimItem[] {
  return Array.from({ length: n }, (_, i) => {
    const requester = randomUUID();
    const target = owners[(i * 7) % owners.length]!;
    const [pair, pairPrev] = keys.pair(requester, target);
    const [ref, refPrev] = !lean && i % 3 === 0 ? keys.ref(requester, randomUUID()) : [null, null];
    return {
      target, requester, want: [i % 3 === 0 ? 1 : 0, i % 3 === 1 ? 1 : 0, i % 3 === 2 ? 1 : 0], fallback: !lean, lastResort: !lean && i % 5 === 0, final: true,
      pair, pairPrev, ref, refPrev, body: ref === null ? null : keys.body("{}"),
      ...(!lean && i % 4 === 3 ? { devices: null, multi: true, skip: 0 } : deviceOne),
    };
  });
}

/** A parameter as an SQL literal (EXECUTE's arguments): the statement's casts type it. */
const literal = (value: unknown): string => {
  if (value === null) return "NULL";
  if (typeof value === "number") return String(value);
  if (Array.isArray(value)) {
    const items = value.map((v) => (v === null ? "NULL" : `"${String(v).replace(/["\\]/g, "\\$&")}"`));
    return `'{${items.join(",").replace(/'/g, "''")}}'`;
  }
  return `'${String(value).replace(/'/g, "''")}'`;
};

const tables = ["coin_inventory", "claim_quota", "claim_replay", "last_resort_coin", "device"];

interface PlanNode { "Node Type": string; "Relation Name"?: string; "Index Cond"?: string; "TID Cond"?: string; Plans?: PlanNode[] }
const nodesOf = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodesOf)];
/** How a plan node reads one of `tables` when it reads it whole: a sequential scan, or an index scan without a condition. */
const wholeRead = (node: PlanNode): string | undefined => {
  if (!node["Relation Name"] || !tables.includes(node["Relation Name"])) return undefined;
  if (node["Node Type"] === "Seq Scan") return `Seq Scan on ${node["Relation Name"]}`;
  if (/^Index (Only )?Scan$/.test(node["Node Type"]) && !node["Index Cond"]) return `${node["Node Type"]} on ${node["Relation Name"]} without an index condition`;
  return undefined;
};

test("the claim statement's plan, whole or lean, generic or custom, before and after ANALYZE: coins taken by ctid, no whole read of the coin, quota, replay, last-resort or device tables", async () => {
  // autovacuum off first: "not analyzed" below must stay true
  for (const table of tables) await db.sql.unsafe(`ALTER TABLE ${table} SET (autovacuum_enabled = off)`);
  await db.sql.begin(async (tx) => {
    await tx`SET LOCAL statement_timeout = 0`;
    await tx`
      INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
      SELECT o, c || '-' || i, c, '\\x01', '\\x02'
      FROM unnest(${owners}::uuid[]) AS o, unnest(ARRAY['GOLD', 'SILVER', 'BRONZE']) AS c, generate_series(1, 70) AS i`;
    await tx`UPDATE coin_inventory SET fetched_at = now(), fetched_by = gen_random_uuid() WHERE record_id % 2 = 0`;
    await tx`
      INSERT INTO claim_quota (target, pair, hours, counts)
      SELECT (${owners}::uuid[])[1 + i % 200], gen_random_uuid(), '{}', '{}' FROM generate_series(1, 200000) AS i`;
    await tx`
      INSERT INTO claim_replay (target, ref, body, short, last_resort)
      SELECT (${owners}::uuid[])[1 + i % 200], gen_random_uuid(), gen_random_uuid(), '{0,0,0}', '[]' FROM generate_series(1, 20000) AS i`;
    await tx`
      INSERT INTO device (user_id, device_id)
      SELECT o, 1 FROM (SELECT unnest(${owners}::uuid[]) UNION ALL SELECT gen_random_uuid() FROM generate_series(1, 20000)) AS u(o)`;
    await tx`
      INSERT INTO last_resort_coin (user_id, device_id, coin_category, key_id, public_key_blob, signature_blob)
      SELECT d.user_id, 1, c, 'lr-' || c, '\\x01', '\\x02' FROM device d, unnest(ARRAY['GOLD', 'SILVER', 'BRONZE']) AS c`;
  });
  // tables that grew since they were last analyzed (here: never): VACUUM counted their rows, but
  // no column has statistics, so every key looks shared by 0.5 % of the rows (PostgreSQL's
  // default) and the estimates built on them explode — the state a bench run met mid-run, when the
  // claim's UPDATE read all of coin_inventory at every statement (76 claims/s instead of 3,700)
  await maintain(`VACUUM ${tables.join(", ")}`);
  const analyzed = await db.sql`SELECT DISTINCT tablename::text FROM pg_stats WHERE schemaname = current_schema() AND tablename = ANY(${tables})`;
  expect(analyzed.map((r) => r.tablename)).toEqual([]);
  await checkPlans("not analyzed");
  await maintain(`ANALYZE ${tables.join(", ")}`);
  await checkPlans("analyzed");
}, 60_000);

/** VACUUM or ANALYZE without the pool's statement_timeout (a busy CI machine). */
async function maintain(command: string): Promise<void> {
  const conn = await db.sql.reserve();
  try {
    await conn`SET statement_timeout = 0`;
    await conn.unsafe(command);
  } finally {
    await conn`RESET statement_timeout`;
    conn.release();
  }
}

async function checkPlans(stats: string): Promise<void> {
  const found: string[] = [];
  const conn = await db.sql.reserve();
  try {
    // as the server's pool plans it (src/db/pool.ts), and as a custom plan would
    for (const mode of ["force_generic_plan", "force_custom_plan"]) {
      await conn.unsafe(`SET plan_cache_mode = ${mode}`);
      for (const [quota, lean] of [[100, false], [null, false], [100, true], [null, true]] as const) {
        for (const n of [1, 16, 128]) {
          const { text, params } = statement(batch(n, lean), quota);
          const name = `claim_plan_${n}_${quota ?? "off"}_${lean ? "lean" : "whole"}`;
          await conn.unsafe(`DEALLOCATE ALL`);
          await conn.unsafe(`PREPARE ${name} AS ${text}`);
          const [{ "QUERY PLAN": [{ Plan: plan }] }] = await conn.unsafe(`EXPLAIN (FORMAT JSON) EXECUTE ${name}(${params.map(literal).join(", ")})`) as never as [{ "QUERY PLAN": [{ Plan: PlanNode }] }];
          const nodes = nodesOf(plan);
          const where = `${stats}, ${mode}, quota ${quota ?? "off"}, ${n} ${lean ? "fetch-style " : ""}claims`;
          for (const whole of nodes.map(wholeRead).filter(Boolean)) found.push(`${where}: ${whole}`);
          // the claim's UPDATE takes the picked rows by ctid
          if (!nodes.some((node) => node["Node Type"] === "Tid Scan" && node["Relation Name"] === "coin_inventory")) found.push(`${where}: no Tid Scan on coin_inventory`);
        }
      }
    }
  } finally {
    conn.release();
  }
  expect(found).toEqual([]);
}
