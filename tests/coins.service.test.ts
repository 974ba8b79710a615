import { beforeEach, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { KeyConflictError, ValidationError } from "../src/errors.ts";
import { testClaims, testDb, testCoins } from "./helpers/claims.ts";
import { inventory, makeCoin, makeCoins, standardBatch } from "./helpers/coins.ts";
import { resetCoins, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const svc = () => testCoins(testDb(db.sql));
const fetchCoins = (...args: Parameters<ReturnType<typeof testClaims>["fetch"]>) => testClaims(db.sql).fetch(...args);
const rowCount = async () => (await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM coin_inventory`)[0]!.n;

beforeEach(() => resetCoins(db.sql));

describe("uploadCoins", () => {
  test("stores a single coin with its bytes intact", async () => {
    const owner = randomUUID();
    const coin = makeCoin("GOLD");
    expect(await svc().uploadCoins(owner, 1, [coin])).toMatchObject({ inserted: 1, duplicates: 0 });
    const [row] = await db.sql`SELECT * FROM coin_inventory`;
    expect(row!.user_id).toBe(owner);
    expect(row!.key_id).toBe(coin.key_id);
    expect(Buffer.from(row!.public_key_blob).toString("base64")).toBe(coin.public_key_b64);
    expect(Buffer.from(row!.signature_blob).toString("base64")).toBe(coin.signature_b64);
    expect(row!.public_key_blob.length).toBe(1184);
    expect(row!.fetched_by).toBeNull();
  });

  test("stores a batch of mixed tiers in one go", async () => {
    const owner = randomUUID();
    expect(await svc().uploadCoins(owner, 1, standardBatch())).toEqual({ inserted: 16, duplicates: 0, insertedByTier: { GOLD: 5, SILVER: 6, BRONZE: 5 } });
    expect(await svc().getInventoryCount(owner, 1)).toEqual(inventory(5, 6, 5));
  });

  test("uploading the same batch again is idempotent", async () => {
    const owner = randomUUID();
    const batch = makeCoins(10);
    expect(await svc().uploadCoins(owner, 1, batch)).toMatchObject({ inserted: 10, duplicates: 0 });
    expect(await svc().uploadCoins(owner, 1, batch)).toMatchObject({ inserted: 0, duplicates: 10 });
    expect(await rowCount()).toBe(10);
  });

  test("a coin repeated inside one batch is stored once", async () => {
    const coin = makeCoin();
    expect(await svc().uploadCoins(randomUUID(), 1, [coin, makeCoin(), coin])).toMatchObject({ inserted: 2, duplicates: 1 });
    expect(await rowCount()).toBe(2);
  });

  test("key_id is unique per owner, not globally", async () => {
    const coin = makeCoin();
    await svc().uploadCoins(randomUUID(), 1, [coin]);
    expect(await svc().uploadCoins(randomUUID(), 1, [coin])).toMatchObject({ inserted: 1, duplicates: 0 });
  });

  test("an invalid tier rejects the whole batch and writes nothing", async () => {
    const bad = { ...makeCoin(), coin_category: "PLATINUM" } as never;
    const error = await svc().uploadCoins(randomUUID(), 1, [makeCoin(), bad]).catch((e) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.errors[0].field).toBe("coin_category");
    expect(await rowCount()).toBe(0);
  });

  test("invalid base64 rejects the whole batch and writes nothing", async () => {
    const bad = { ...makeCoin(), public_key_b64: "not base64!" };
    const error = await svc().uploadCoins(randomUUID(), 1, [makeCoin(), bad]).catch((e) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(await rowCount()).toBe(0);
  });

  test("same key_id with different content is a conflict, and nothing of the batch is written", async () => {
    const owner = randomUUID();
    const coin = makeCoin();
    await svc().uploadCoins(owner, 1, [coin]);
    const changed = { ...makeCoin(), key_id: coin.key_id };
    const fresh = makeCoin();
    const error = await svc().uploadCoins(owner, 1, [fresh, changed]).catch((e) => e);
    expect(error).toBeInstanceOf(KeyConflictError);
    expect(error.keyIds).toEqual([coin.key_id]);
    expect(await rowCount()).toBe(1);
  });

  test("same key_id twice in one batch with different content is a conflict — whole coins, or the signature alone", async () => {
    const a = makeCoin();
    for (const b of [{ ...makeCoin(), key_id: a.key_id }, { ...a, signature_b64: makeCoin().signature_b64 }]) {
      const error = await svc().uploadCoins(randomUUID(), 1, [makeCoin(), a, makeCoin(), b]).catch((e) => e);
      expect(error).toBeInstanceOf(KeyConflictError);
      expect(error.keyIds).toEqual([a.key_id]);
    }
    expect(await rowCount()).toBe(0);
  });

  test("re-uploading a coin that was already claimed does not make it available again", async () => {
    const owner = randomUUID();
    const coin = makeCoin();
    await svc().uploadCoins(owner, 1, [coin]);
    expect(await fetchCoins(owner, randomUUID(), "BRONZE", 1)).toHaveLength(1);
    expect(await svc().uploadCoins(owner, 1, [coin])).toMatchObject({ inserted: 0, duplicates: 1 });
    expect(await fetchCoins(owner, randomUUID(), "BRONZE", 1)).toEqual([]);
  });

  test("an empty list writes nothing", async () => {
    expect(await svc().uploadCoins(randomUUID(), 1, [])).toMatchObject({ inserted: 0, duplicates: 0 });
    expect(await rowCount()).toBe(0);
  });
});

describe("claiming one tier (GET /v1/coins/fetch)", () => {
  test("returns coins of the requested tier only, with their content", async () => {
    const owner = randomUUID();
    const batch = standardBatch();
    await svc().uploadCoins(owner, 1, batch);
    const got = await fetchCoins(owner, randomUUID(), "SILVER", 10);
    expect(got).toHaveLength(6);
    expect(got.every((c) => c.coin_category === "SILVER")).toBe(true);
    expect(got).toEqual(batch.filter((c) => c.coin_category === "SILVER"));
  });

  test("FIFO across uploads and inside one batch, where every row shares uploaded_at", async () => {
    const owner = randomUUID();
    const first = makeCoins(30);
    const second = makeCoins(5);
    await svc().uploadCoins(owner, 1, first);
    await svc().uploadCoins(owner, 1, second);
    const [{ distinct }] = await db.sql`SELECT count(DISTINCT uploaded_at)::int AS distinct FROM coin_inventory` as never as [{ distinct: number }];
    expect(distinct).toBe(2);
    const order: string[] = [];
    for (let i = 0; i < 7; i++) order.push(...(await fetchCoins(owner, randomUUID(), "BRONZE", 5)).map((c) => c.key_id));
    expect(order).toEqual([...first, ...second].map((c) => c.key_id));
  });

  test("upload 5, fetch 3: 3 returned, 2 still available", async () => {
    const owner = randomUUID();
    await svc().uploadCoins(owner, 1, makeCoins(5));
    expect(await fetchCoins(owner, randomUUID(), "BRONZE", 3)).toHaveLength(3);
    expect((await svc().getInventoryCount(owner, 1)).bronze).toBe(2);
  });

  test("asking for more than exist returns what exists", async () => {
    const owner = randomUUID();
    await svc().uploadCoins(owner, 1, makeCoins(2));
    expect(await fetchCoins(owner, randomUUID(), "BRONZE", 10)).toHaveLength(2);
  });

  test("an empty inventory, an unknown user or an empty tier give an empty list", async () => {
    const owner = randomUUID();
    expect(await fetchCoins(owner, randomUUID(), "GOLD", 5)).toEqual([]);
    await svc().uploadCoins(owner, 1, makeCoins(3, "BRONZE"));
    expect(await fetchCoins(owner, randomUUID(), "GOLD", 5)).toEqual([]);
  });

  test("marks the claim with the requester and time", async () => {
    const owner = randomUUID();
    const requester = randomUUID();
    await svc().uploadCoins(owner, 1, makeCoins(2));
    const [coin] = await fetchCoins(owner, requester, "BRONZE", 1);
    const [row] = await db.sql`SELECT fetched_by, fetched_at FROM coin_inventory WHERE key_id = ${coin!.key_id}`;
    expect(row!.fetched_by).toBe(requester);
    expect(Math.abs(Date.now() - new Date(row!.fetched_at).getTime())).toBeLessThan(60_000);
    const [untouched] = await db.sql`SELECT fetched_by FROM coin_inventory WHERE key_id <> ${coin!.key_id}`;
    expect(untouched!.fetched_by).toBeNull();
  });

  test("never hands out a claimed coin again", async () => {
    const owner = randomUUID();
    await svc().uploadCoins(owner, 1, makeCoins(4));
    const a = await fetchCoins(owner, randomUUID(), "BRONZE", 3);
    const b = await fetchCoins(owner, randomUUID(), "BRONZE", 3);
    expect(b).toHaveLength(1);
    expect(a.map((c) => c.key_id)).not.toContain(b[0]!.key_id);
    expect(await fetchCoins(owner, randomUUID(), "BRONZE", 3)).toEqual([]);
  });

  test("does not touch other users' coins", async () => {
    const alice = randomUUID();
    const bob = randomUUID();
    await svc().uploadCoins(alice, 1, makeCoins(3));
    await svc().uploadCoins(bob, 1, makeCoins(3));
    await fetchCoins(alice, randomUUID(), "BRONZE", 3);
    expect(await svc().getInventoryCount(bob, 1)).toEqual(inventory(0, 0, 3));
  });
});

describe("getInventoryCount", () => {
  test("counts available coins per tier, zeros for missing tiers and unknown users", async () => {
    const owner = randomUUID();
    expect(await svc().getInventoryCount(owner, 1)).toEqual(inventory(0, 0, 0));
    await svc().uploadCoins(owner, 1, [...makeCoins(2, "GOLD"), ...makeCoins(4, "BRONZE")]);
    await fetchCoins(owner, randomUUID(), "BRONZE", 1);
    expect(await svc().getInventoryCount(owner, 1)).toEqual(inventory(2, 0, 3));
  });
});
