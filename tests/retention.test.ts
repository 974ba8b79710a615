import { beforeEach, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { maintenanceBatch, retention } from "../src/coins/retention.ts";
import { testClaims, testDb, testCoins } from "./helpers/claims.ts";
import { inventory, makeCoins } from "./helpers/coins.ts";
import { resetCoins, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
/** Uploads and counts, the one-tier claim, and the retention SQL the maintenance jobs run. */
const svc = () => ({ ...testCoins(testDb(db.sql)), ...retention(db.sql), fetchCoins: testClaims(db.sql).fetch });

beforeEach(async () => {
  await resetCoins(db.sql);
  await db.sql`TRUNCATE claimed_key`;
});

/** Makes the coins `interval` older (their times are now(), give or take a second: they were just uploaded or claimed). */
async function age(keyIds: string[], column: "uploaded_at" | "fetched_at", interval: string) {
  // (now() rather than the column itself: Citus refuses a timestamp's arithmetic on a column in an UPDATE)
  await db.sql`UPDATE coin_inventory SET ${db.sql(column)} = now() - ${interval}::interval WHERE key_id IN ${db.sql(keyIds)}`;
}

describe("purgeStale", () => {
  test("removes old unfetched coins and keeps recent ones", async () => {
    const owner = randomUUID();
    const old = makeCoins(3);
    const recent = makeCoins(2);
    await svc().uploadCoins(owner, 1, [...old, ...recent]);
    await age(old.map((c) => c.key_id), "uploaded_at", "31 days");
    expect(await svc().purgeStale(30)).toBe(3);
    const left = await db.sql`SELECT key_id FROM coin_inventory ORDER BY record_id`;
    expect(left.map((r) => r.key_id)).toEqual(recent.map((c) => c.key_id));
  });

  test("ignores fetched coins, however old (hard delete owns them)", async () => {
    const owner = randomUUID();
    const coins = makeCoins(2);
    await svc().uploadCoins(owner, 1, coins);
    await svc().fetchCoins(owner, randomUUID(), "BRONZE", 1);
    await age(coins.map((c) => c.key_id), "uploaded_at", "90 days");
    expect(await svc().purgeStale(30)).toBe(1);
    const [row] = await db.sql`SELECT fetched_by FROM coin_inventory`;
    expect(row!.fetched_by).not.toBeNull();
  });

  test("honours the age argument", async () => {
    const coins = makeCoins(2);
    await svc().uploadCoins(randomUUID(), 1, coins);
    await age([coins[0]!.key_id], "uploaded_at", "8 days");
    expect(await svc().purgeStale(10)).toBe(0);
    expect(await svc().purgeStale(7)).toBe(1);
  });

  test("deletes more than one batch", async () => {
    const owner = randomUUID();
    await db.sql`
      INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob, uploaded_at)
      SELECT ${owner}::uuid, 'k' || i, 'BRONZE', '\\x00', '\\x00', now() - interval '40 days'
      FROM generate_series(1, ${maintenanceBatch + 7}) AS i`;
    expect(await svc().purgeStale(30)).toBe(maintenanceBatch + 7);
  });
});

describe("hardDeleteClaimed", () => {
  test("removes claims older than the grace period, and with them who fetched", async () => {
    const owner = randomUUID();
    const requester = randomUUID();
    await svc().uploadCoins(owner, 1, makeCoins(4));
    const old = await svc().fetchCoins(owner, requester, "BRONZE", 2);
    await svc().fetchCoins(owner, requester, "BRONZE", 1);
    await age(old.map((c) => c.key_id), "fetched_at", "2 hours");
    expect(await svc().hardDeleteClaimed(1)).toBe(2);
    const rows = await db.sql`SELECT key_id, fetched_by FROM coin_inventory`;
    expect(rows).toHaveLength(2);
    expect(rows.filter((r) => r.fetched_by === requester)).toHaveLength(1);
    expect(rows.map((r) => r.key_id)).not.toContain(old[0]!.key_id);
  });

  test("keeps recent claims and never touches unfetched coins", async () => {
    const owner = randomUUID();
    const coins = makeCoins(3);
    await svc().uploadCoins(owner, 1, coins);
    await age(coins.map((c) => c.key_id), "uploaded_at", "400 days");
    await svc().fetchCoins(owner, randomUUID(), "BRONZE", 1);
    expect(await svc().hardDeleteClaimed(1)).toBe(0);
    expect(await svc().hardDeleteClaimed(0)).toBe(1);
    expect((await svc().getInventoryCount(owner, 1)).bronze).toBe(2);
  });
});

describe("claimed keys outlive the hard delete", () => {
  test("a retried upload of a coin claimed and hard-deleted is not published again", async () => {
    const owner = randomUUID();
    const coin = makeCoins(1)[0]!;
    await svc().uploadCoins(owner, 1, [coin]);
    expect(await svc().fetchCoins(owner, randomUUID(), "BRONZE", 1)).toHaveLength(1);
    expect(await svc().hardDeleteClaimed(0)).toBe(1);
    const [kept] = await db.sql`SELECT * FROM claimed_key`;
    expect(Object.keys(kept!).sort()).toEqual(["claimed_on", "key_id", "user_id"]); // never who claimed it, nor when within the day
    expect(await svc().uploadCoins(owner, 1, [coin, makeCoins(1)[0]!])).toMatchObject({ inserted: 1, duplicates: 1 });
    const again = await svc().fetchCoins(owner, randomUUID(), "BRONZE", 5);
    expect(again.map((c) => c.key_id)).not.toContain(coin.key_id);
    expect(again).toHaveLength(1);
  });

  test("the kept key ids are forgotten after the purge age", async () => {
    const owner = randomUUID();
    await svc().uploadCoins(owner, 1, makeCoins(2));
    await svc().fetchCoins(owner, randomUUID(), "BRONZE", 2);
    await svc().hardDeleteClaimed(0);
    await db.sql`UPDATE claimed_key SET claimed_on = claimed_on - 31 WHERE key_id = (SELECT min(key_id) FROM claimed_key)`;
    expect(await svc().purgeClaimedKeys(30)).toBe(1);
    expect((await db.sql`SELECT count(*)::int AS n FROM claimed_key`)[0]!.n).toBe(1);
  });
});

test("full cycle: upload → fetch → count → purge stale → hard delete, counts right at every step", async () => {
  const alice = randomUUID();
  const bob = randomUUID();
  const s = svc();
  const total = async () => (await db.sql`SELECT count(*)::int AS n FROM coin_inventory`)[0]!.n as number;

  expect((await s.uploadCoins(alice, 1, [...makeCoins(5, "GOLD"), ...makeCoins(6, "SILVER"), ...makeCoins(5, "BRONZE")])).inserted).toBe(16);
  expect(await s.getInventoryCount(alice, 1)).toEqual(inventory(5, 6, 5));

  // Bob caches Alice as a BESTIE: 5 GOLD, 4 SILVER, 1 BRONZE.
  expect(await s.fetchCoins(alice, bob, "GOLD", 5)).toHaveLength(5);
  expect(await s.fetchCoins(alice, bob, "SILVER", 4)).toHaveLength(4);
  expect(await s.fetchCoins(alice, bob, "BRONZE", 1)).toHaveLength(1);
  expect(await s.getInventoryCount(alice, 1)).toEqual(inventory(0, 2, 4));
  expect(await total()).toBe(16);

  await db.sql`UPDATE coin_inventory SET uploaded_at = now() - interval '31 days' WHERE coin_category = 'SILVER'`;
  expect(await s.purgeStale(30)).toBe(2);
  expect(await s.getInventoryCount(alice, 1)).toEqual(inventory(0, 0, 4));
  expect(await total()).toBe(14);

  expect(await s.hardDeleteClaimed(1)).toBe(0);
  await db.sql`UPDATE coin_inventory SET fetched_at = now() - interval '61 minutes' WHERE fetched_at IS NOT NULL`;
  expect(await s.hardDeleteClaimed(1)).toBe(10);
  expect(await total()).toBe(4);
  expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_by IS NOT NULL`)[0]!.n).toBe(0);
  expect(await s.getInventoryCount(alice, 1)).toEqual(inventory(0, 0, 4));
});
