import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { claimQuery, deviceOne, isLean, type ClaimItem, type ClaimRow } from "../src/claims/batch.ts";
import { claimKeys } from "../src/claims/keys.ts";
import { HOUR } from "../src/claims/statement.ts";
import type { Tier, TierCounts } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";
import { testHashSecrets } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { resetClaims, useTestDatabase } from "./helpers/db.ts";

// Fetch-style batches (one device, no fallback, last resort or key) go out as the lean statement
// (statement.ts): it must answer exactly as the whole one would. One PostgreSQL; on Citus the
// routed lean shape runs in every fetch-style claim of the suite's files (tests/citus/suite.ts).
const db = useTestDatabase();
beforeEach(() => resetClaims(db.sql));
const keys = claimKeys(testHashSecrets.current);
const QUOTA = 5;

const one = (tier: Tier, n: number): TierCounts => [tier === "GOLD" ? n : 0, tier === "SILVER" ? n : 0, tier === "BRONZE" ? n : 0];

async function upload(owner: string, tier: Tier, n: number, device = 1): Promise<void> {
  const coins = makeCoins(n, tier);
  await db.sql`
    INSERT INTO coin_inventory (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
    SELECT ${owner}::uuid, ${device}, k, ${tier}, decode(p, 'base64'), decode(s, 'base64')
    FROM unnest(${coins.map((c) => c.key_id)}::text[], ${coins.map((c) => c.public_key_b64)}::text[], ${coins.map((c) => c.signature_b64)}::text[])
      WITH ORDINALITY AS u(k, p, s, o)
    ORDER BY o`;
}

function claim(target: string, want: TierCounts, quota: boolean, requester = randomUUID(), device = 1): ClaimItem {
  const [pair, pairPrev] = quota ? keys.pair(requester, target) : [null, null];
  return {
    target, requester, want, fallback: false, lastResort: false, final: true, pair, pairPrev, ref: null, refPrev: null, body: null,
    ...(device === 1 ? deviceOne : { devices: [device], multi: false, skip: 0 }),
  };
}

class RolledBack extends Error {}

/** The statement's rows for `items` in a transaction rolled back after it: both shapes see the same state. */
async function rowsOf(items: ClaimItem[], quota: number | null, full: boolean): Promise<ClaimRow[]> {
  let rows: ClaimRow[] = [];
  await db.sql.begin(async (tx) => {
    rows = [...(await claimQuery(tx as unknown as Sql, items, quota, true, false, full))];
    throw new RolledBack();
  }).catch((error) => {
    if (!(error instanceof RolledBack)) throw error;
  });
  // the statement's own clock ('n' row) differs between the two runs; the rest must not
  return rows.map((r) => (r.k === "n" ? { ...r, at: null } : r))
    .sort((a, b) => a.k.localeCompare(b.k) || (a.idx ?? -1) - (b.idx ?? -1) || Number(a.record_id ?? 0) - Number(b.record_id ?? 0));
}

/** `retry_after` counts seconds to a window's end from each statement's now(): the two runs may straddle a second. */
function expectSameAnswers(lean: ClaimRow[], full: ClaimRow[]): void {
  expect(lean.length).toBe(full.length);
  lean.forEach((row, i) => {
    const other = full[i]!;
    if (row.retry_after !== null && other.retry_after !== null) expect(Math.abs(row.retry_after - other.retry_after)).toBeLessThanOrEqual(1);
    expect({ ...row, retry_after: row.retry_after === null }).toEqual({ ...other, retry_after: other.retry_after === null });
  });
}

for (const quotaOn of [true, false]) {
  test(`a fetch-style batch gets the same answers from the lean statement as from the whole one, quota ${quotaOn ? "on" : "off"}: FIFO splits, short and empty tiers, another device, a spent quota, a pair twice`, async () => {
    const [alice, bob, carol] = [randomUUID(), randomUUID(), randomUUID()];
    await upload(alice, "GOLD", 3);
    await upload(alice, "SILVER", 2);
    await upload(alice, "BRONZE", 2, 2);
    await upload(carol, "BRONZE", 10);
    const spent = randomUUID();
    if (quotaOn) {
      // this requester has spent alice's quota within the hour
      await db.sql.unsafe(`INSERT INTO claim_quota (target, pair, hours, counts) VALUES ($1, $2, ARRAY[${HOUR}], ARRAY[${QUOTA}])`,
        [alice, keys.pair(spent, alice)[0]]);
    }
    const twice = randomUUID();
    const items = [
      claim(alice, one("GOLD", 2), quotaOn, twice),
      claim(alice, one("GOLD", 2), quotaOn), // one left: short 1
      claim(alice, one("SILVER", 1), quotaOn, spent), // quota on: refused, with its retry_after
      claim(bob, one("BRONZE", 1), quotaOn), // nothing stocked
      claim(alice, one("BRONZE", 1), quotaOn, randomUUID(), 2), // from device 2
      claim(alice, one("SILVER", 1), quotaOn, twice), // the first claim's pair again: runs again (quota on)
      claim(carol, one("BRONZE", 7), quotaOn), // quota on: five at most
      claim(alice, one("SILVER", 3), quotaOn), // what the two before left: both coins with the quota on (they were refused), none without
    ];
    expect(items.every(isLean)).toBe(true);
    const quota = quotaOn ? QUOTA : null;
    const full = await rowsOf(items, quota, true);
    const lean = await rowsOf(items, quota, false);
    expectSameAnswers(lean, full);
    // and the answers are the expected ones, not merely equal
    const status = (idx: number) => lean.find((r) => r.k === "m" && r.idx === idx)!;
    const coins = (idx: number) => lean.filter((r) => r.k === "c" && r.idx === idx).length;
    expect([0, 1, 3, 4, 6].map(status).map((r) => r.status)).toEqual(["ok", "ok", "ok", "ok", "ok"]);
    expect([coins(0), coins(1), coins(3), coins(4), coins(6)]).toEqual([2, 1, 0, 1, quotaOn ? QUOTA : 7]);
    expect(status(1).short).toEqual([1, 0, 0]);
    expect(status(3).short).toEqual([0, 0, 1]);
    expect(status(2).status).toBe(quotaOn ? "quota" : "ok");
    if (quotaOn) expect(status(2).retry_after).toBeGreaterThan(0);
    expect(status(5).status).toBe(quotaOn ? "retry" : "ok");
    expect(coins(7)).toBe(quotaOn ? 2 : 0);
  });
}

test("a batch with one claim that needs more (fallback, last resort, a key or devices) goes out whole; fetch-style ones go out lean", () => {
  const target = randomUUID();
  const plain = claim(target, one("GOLD", 1), true);
  const texts: string[] = [];
  const capture = { unsafe: (text: string) => texts.push(text) } as unknown as Sql;
  const [ref, refPrev] = keys.ref(randomUUID(), randomUUID());
  const needsMore: Partial<ClaimItem>[] = [{ fallback: true }, { lastResort: true }, { ref, refPrev, body: keys.body("{}") }, { devices: null, multi: true, skip: 0 }];
  claimQuery(capture, [plain, plain], QUOTA);
  for (const more of needsMore) claimQuery(capture, [plain, { ...plain, ...more }], QUOTA);
  claimQuery(capture, [plain], QUOTA, true, false, true);
  const [lean, ...whole] = texts;
  expect(lean).not.toContain("claim_replay");
  expect(lean).not.toContain("last_resort_coin");
  for (const text of whole) {
    expect(text).toContain("claim_replay");
    expect(text).toContain("last_resort_coin");
  }
});
