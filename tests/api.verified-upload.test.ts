import { beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes, randomUUID } from "node:crypto";
import type { Coin } from "../src/coins/model.ts";
import { tiers, typicalSizes, type Tier } from "../src/coins/tiers.ts";
import { coinMessage, mlDsaSets, verifyCoins } from "../src/devices/signatures.ts";
import { asDevice, call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { resetClaims, useTestDatabase } from "./helpers/db.ts";
import { decodedCoin, deviceIdentity, signedCoin, signedCoins, type DeviceIdentity } from "./helpers/identity.ts";

// Uploads (POST /v1/coins/upload, PUT /v1/coins/last-resort) verified against the device's
// identity keys (issue 20): AQM_VERIFY_SIGNATURES, 422 bad-signature naming the coins, 409 for a
// device not ready, and key replacement racing uploads, on one instance and across two.
const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
});
beforeEach(() => resetClaims(db.sql));

/** Device `n` of a user: its token, the user's id. */
interface Device {
  userId: string;
  n: number;
  token: string;
}

const deviceOf = async (user: User, n: number): Promise<Device> => ({ userId: user.id, n, token: (await asDevice(user, n)).token });

const register = (a: TestApp, device: Device, identity: DeviceIdentity, mlDsa = true) => call(a, "PUT", `/v1/devices/${device.n}`, {
  token: device.token, body: { ed25519_b64: identity.ed25519_b64, ...(mlDsa ? { ml_dsa_b64: identity.mlDsa_b64, ml_dsa: identity.set } : {}) },
});

/** Device `n` (1) of `user` (a new one) with `identity`'s keys registered: both, or the Ed25519 key alone. */
async function registered(identity: DeviceIdentity, { user, n = 1, mlDsa = true, via = app }: { user?: User; n?: number; mlDsa?: boolean; via?: TestApp } = {}) {
  const device = await deviceOf(user ?? await newUser(), n);
  const res = await register(via, device, identity, mlDsa);
  expect(res.status).toBe(200);
  return device;
}

const upload = (device: Device, coins: Coin[], a: TestApp = app) => call(a, "POST", "/v1/coins/upload", { token: device.token, body: { coins } });
const putLastResort = (device: Device, coins: Coin[], a: TestApp = app) => call(a, "PUT", "/v1/coins/last-resort", { token: device.token, body: { coins } });

type Stored = Coin & { device_id: number };
const asCoins = (rows: { device_id: number; key_id: string; coin_category: Tier; public_key_blob: Buffer; signature_blob: Buffer }[]): Stored[] =>
  rows.map((r) => ({
    key_id: r.key_id, coin_category: r.coin_category, public_key_b64: Buffer.from(r.public_key_blob).toString("base64"),
    signature_b64: Buffer.from(r.signature_blob).toString("base64"), device_id: r.device_id,
  }));

/** What the server holds for the user: its coins in upload order, its last-resort coins by tier; the bytes as stored. */
async function holdings(userId: string): Promise<{ coins: Stored[]; lastResort: Stored[] }> {
  const coins = await db.sql`SELECT device_id, key_id, coin_category, public_key_blob, signature_blob FROM coin_inventory
                             WHERE user_id = ${userId}::uuid ORDER BY record_id`;
  const lastResort = await db.sql`SELECT device_id, key_id, coin_category, public_key_blob, signature_blob FROM last_resort_coin
                                  WHERE user_id = ${userId}::uuid ORDER BY device_id, coin_category`;
  return { coins: asCoins(coins as never), lastResort: asCoins(lastResort as never) };
}

const on = (device: Device, coins: Coin[]): Stored[] => coins.map((c) => ({ ...c, device_id: device.n }));
const byTier = (coins: Coin[]) => [...coins].sort((a, b) => a.coin_category.localeCompare(b.coin_category));
const keyIds = (coins: { key_id: string }[]) => coins.map((c) => c.key_id);
const sorted = (ids: string[]) => [...ids].sort();

/** The 422 of a bad signature, naming exactly `bad` (in any order). */
function expectBadSignature(res: { status: number; headers: Headers; json: any }, bad: Coin[]) {
  expect([res.status, res.headers.get("content-type"), res.json.type, res.json.status]).toEqual([422, "application/problem+json", "urn:aqm:problem:bad-signature", 422]);
  expect(sorted(res.json.key_ids)).toEqual(sorted(keyIds(bad)));
}

/** A 409 problem about the device's state whose detail names the route that registers its keys. */
function expectDeviceState(res: { status: number; headers: Headers; json: any }, n: number) {
  expect([res.status, res.headers.get("content-type"), res.json.type]).toEqual([409, "application/problem+json", "urn:aqm:problem:device-state"]);
  expect(res.json.detail).toContain(`PUT /v1/devices/${n}`);
}

/** The coin with one bit of its signature flipped (in the middle: ML-DSA's z, Ed25519's S). */
function flipped(coin: Coin): Coin {
  const signature = Buffer.from(coin.signature_b64, "base64");
  signature[Math.floor(signature.length / 2) + 1]! ^= 0x10;
  return { ...coin, signature_b64: signature.toString("base64") };
}

type Algorithm = "ed25519" | "ml-dsa";
const algorithmOf = (tier: Tier): Algorithm => (tier === "GOLD" ? "ml-dsa" : "ed25519");

/**
 * A coin of `tier` (fresh key_id, random public key of the tier's size) whose signature is made by
 * `identity` with `by` over the message of `over` — by default the coin's own tier, key_id and key.
 */
async function coinSigned(identity: DeviceIdentity, tier: Tier, { by = algorithmOf(tier), over = {} }: {
  by?: Algorithm; over?: { tier?: Tier; keyId?: string; publicKey?: Uint8Array };
} = {}): Promise<Coin> {
  const keyId = randomUUID();
  const publicKey = randomBytes(typicalSizes[tier].key);
  const message = coinMessage(over.tier ?? tier, over.keyId ?? keyId, over.publicKey ?? publicKey);
  const signature = by === "ml-dsa" ? identity.signMlDsa(message) : await identity.signEd25519(message);
  return { key_id: keyId, coin_category: tier, public_key_b64: publicKey.toString("base64"), signature_b64: Buffer.from(signature).toString("base64") };
}

/** One valid coin of each tier. */
const oneOfEach = (identity: DeviceIdentity) => Promise.all(tiers.map((tier) => signedCoin(identity, tier)));

describe("valid signatures verify and are stored", () => {
  for (const set of mlDsaSets) {
    test(`${set} device: GOLD (${set}), SILVER and BRONZE (Ed25519) coins verify and are stored byte for byte`, async () => {
      const identity = await deviceIdentity(set, `valid-${set}`);
      const device = await registered(identity);
      const coins = [...await signedCoins(identity, "GOLD", 3), ...await signedCoins(identity, "SILVER", 3), ...await signedCoins(identity, "BRONZE", 3)];
      const res = await upload(device, coins);
      expect([res.status, res.json]).toEqual([200, { inserted: 9, duplicates: 0 }]);
      expect(await holdings(device.userId)).toEqual({ coins: on(device, coins), lastResort: [] });
    });

    test(`${set} device: last-resort coins of each tier verify and are stored byte for byte`, async () => {
      const identity = await deviceIdentity(set, `valid-${set}`);
      const device = await registered(identity);
      const coins = await oneOfEach(identity);
      const res = await putLastResort(device, coins);
      expect(res.status).toBe(200);
      expect(res.json.last_resort).toEqual({ gold: true, silver: true, bronze: true });
      expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: on(device, byTier(coins)) });
    });
  }
});

describe("bad signatures: 422 naming exactly the offending coins, nothing of the upload written", () => {
  test("a signature with one bit flipped, in each tier: upload and last resort", async () => {
    const identity = await deviceIdentity("ML-DSA-65", "tamper");
    const device = await registered(identity);
    const good = await oneOfEach(identity);
    const bad = (await oneOfEach(identity)).map(flipped);
    expectBadSignature(await upload(device, [good[0]!, bad[0]!, good[1]!, bad[1]!, good[2]!, bad[2]!]), bad);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });

    // last resort: the stored coins stay when a PUT replacing them has one bad coin
    const kept = await oneOfEach(identity);
    expect((await putLastResort(device, kept)).status).toBe(200);
    for (const [i, tier] of tiers.entries()) {
      const replacing = await oneOfEach(identity);
      replacing[i] = flipped(replacing[i]!);
      expectBadSignature(await putLastResort(device, replacing), [replacing[i]!]);
      expect([tier, await holdings(device.userId)]).toEqual([tier, { coins: [], lastResort: on(device, byTier(kept)) }]);
    }
  });

  test("a signature by another device's key (the same user's device 2), in each tier: upload and last resort; device 2 itself stores them", async () => {
    const [mine, theirs] = [await deviceIdentity("ML-DSA-44", "own-1"), await deviceIdentity("ML-DSA-44", "own-2")];
    const user = await newUser();
    const [one, two] = [await registered(mine, { user, n: 1 }), await registered(theirs, { user, n: 2 })];
    const good = await oneOfEach(mine);
    const bad = await oneOfEach(theirs);
    expectBadSignature(await upload(one, [...good, ...bad]), bad);
    expectBadSignature(await putLastResort(one, [bad[0]!, good[1]!, good[2]!]), [bad[0]!]);
    expect(await holdings(user.id)).toEqual({ coins: [], lastResort: [] });
    expect((await upload(two, bad)).json).toEqual({ inserted: 3, duplicates: 0 }); // the coins are sound: only the signer is wrong for device 1
    expect(await holdings(user.id)).toEqual({ coins: on(two, bad), lastResort: [] });
  });

  test("GOLD signed with the device's Ed25519 key (AQM_TIER_SIZES=loose, to pass the size check of a 64-byte GOLD signature): upload and last resort", async () => {
    const loose = makeApp(db.sql, { AQM_TIER_SIZES: "loose" });
    const identity = await deviceIdentity("ML-DSA-87", "gold-by-ed25519");
    const device = await registered(identity, { via: loose });
    const good = await signedCoin(identity, "GOLD");
    const bad = await coinSigned(identity, "GOLD", { by: "ed25519" });
    expect(Buffer.from(bad.signature_b64, "base64")).toHaveLength(64);
    expect((await upload(device, [bad])).json.type).toBe("urn:aqm:problem:validation"); // strict sizes refuse it before any signature check
    expectBadSignature(await upload(device, [good, bad], loose), [bad]);
    expectBadSignature(await putLastResort(device, [bad], loose), [bad]);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });
  });

  test("SILVER and BRONZE signed with the device's ML-DSA key (AQM_TIER_SIZES=loose, to pass the size check): upload and last resort", async () => {
    const loose = makeApp(db.sql, { AQM_TIER_SIZES: "loose" });
    const identity = await deviceIdentity("ML-DSA-65", "ed-tiers-by-ml-dsa");
    const device = await registered(identity, { via: loose });
    const good = [await signedCoin(identity, "SILVER"), await signedCoin(identity, "BRONZE")];
    const bad = [await coinSigned(identity, "SILVER", { by: "ml-dsa" }), await coinSigned(identity, "BRONZE", { by: "ml-dsa" })];
    expect(bad.map((c) => Buffer.from(c.signature_b64, "base64").length)).toEqual([3309, 3309]);
    expectBadSignature(await upload(device, [good[0]!, bad[0]!, good[1]!, bad[1]!], loose), bad);
    expectBadSignature(await putLastResort(device, bad, loose), bad);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });
  });

  test("a signature over another coin's bytes — same key, other key_id; other tier; other public key — in each tier", async () => {
    const identity = await deviceIdentity("ML-DSA-65", "other-bytes");
    const device = await registered(identity);
    const otherTier: Record<Tier, Tier> = { GOLD: "SILVER", SILVER: "BRONZE", BRONZE: "SILVER" };
    const kinds: Record<string, (tier: Tier) => Promise<Coin>> = {
      "other key_id": (tier) => coinSigned(identity, tier, { over: { keyId: randomUUID() } }),
      "other tier": (tier) => coinSigned(identity, tier, { over: { tier: otherTier[tier] } }),
      "other public key": (tier) => coinSigned(identity, tier, { over: { publicKey: randomBytes(typicalSizes[tier].key) } }),
    };
    for (const [kind, make] of Object.entries(kinds)) {
      const bad = await Promise.all(tiers.map(make));
      const res = await upload(device, [...await oneOfEach(identity), ...bad]);
      expect([kind, res.status]).toEqual([kind, 422]);
      expectBadSignature(res, bad);
      expectBadSignature(await putLastResort(device, bad), bad);
      expect([kind, await holdings(device.userId)]).toEqual([kind, { coins: [], lastResort: [] }]);
    }
    // a valid coin's signature moved to another key_id, as a replay would
    const valid = await signedCoin(identity, "BRONZE");
    const moved = { ...valid, key_id: randomUUID() };
    expectBadSignature(await upload(device, [moved]), [moved]);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });
  });

  test("a batch of 10 with 2 bad (a flipped bit, another key): 422 naming both; none of the 8 good ones stored (alone they are)", async () => {
    const [identity, other] = [await deviceIdentity("ML-DSA-44", "mixed"), await deviceIdentity("ML-DSA-44", "mixed-other")];
    const device = await registered(identity);
    const coins = [...await signedCoins(identity, "GOLD", 3), ...await signedCoins(identity, "SILVER", 4), ...await signedCoins(identity, "BRONZE", 3)];
    const bad = [flipped(coins[2]!), await signedCoin(other, "BRONZE")];
    const batch = [...coins.slice(0, 2), bad[0]!, ...coins.slice(3, 7), bad[1]!, ...coins.slice(7, 9)];
    expect(batch).toHaveLength(10);
    expectBadSignature(await upload(device, batch), bad);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });
    const good = batch.filter((c) => !bad.includes(c));
    expect((await upload(device, good)).json).toEqual({ inserted: 8, duplicates: 0 });
    expect(await holdings(device.userId)).toEqual({ coins: on(device, good), lastResort: [] });
  });
});

describe("AQM_VERIFY_SIGNATURES and devices not ready", () => {
  test("registered (the default): a device without keys stores unverified coins and last-resort coins (random signature bytes)", async () => {
    const device = await deviceOf(await newUser(), 4);
    const coins = [...makeCoins(2, "GOLD"), ...makeCoins(2, "SILVER"), ...makeCoins(2, "BRONZE")];
    expect((await upload(device, coins)).json).toEqual({ inserted: 6, duplicates: 0 });
    const lastResort = makeCoins(1, "GOLD");
    expect((await putLastResort(device, lastResort)).status).toBe(200);
    expect(await holdings(device.userId)).toEqual({ coins: on(device, coins), lastResort: on(device, lastResort) });
  });

  test("required: a device without keys → 409 naming PUT /v1/devices/{id}, for uploads and last-resort coins, nothing written; once registered, its coins are verified and stored", async () => {
    const required = makeApp(db.sql, { AQM_VERIFY_SIGNATURES: "required" });
    const identity = await deviceIdentity("ML-DSA-65", "required");
    const device = await deviceOf(await newUser(), 5);
    const coins = await oneOfEach(identity); // signed, but the server knows no key of the device yet
    expectDeviceState(await upload(device, coins, required), 5);
    expectDeviceState(await putLastResort(device, coins, required), 5);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });
    expect((await register(required, device, identity)).status).toBe(200);
    expect((await upload(device, coins, required)).json).toEqual({ inserted: 3, duplicates: 0 });
    const bad = flipped(await signedCoin(identity, "SILVER"));
    expectBadSignature(await upload(device, [bad], required), [bad]);
    expect(await holdings(device.userId)).toEqual({ coins: on(device, coins), lastResort: [] });
  });

  test("off: a registered device's badly signed coins and last-resort coins are stored", async () => {
    const off = makeApp(db.sql, { AQM_VERIFY_SIGNATURES: "off" });
    const [identity, other] = [await deviceIdentity("ML-DSA-65", "off"), await deviceIdentity("ML-DSA-65", "off-other")];
    const device = await registered(identity, { via: off });
    const bad = [flipped(await signedCoin(identity, "GOLD")), await signedCoin(other, "SILVER"), flipped(await signedCoin(identity, "BRONZE"))];
    expectBadSignature(await upload(device, bad), bad); // the default mode refuses them
    expect((await upload(device, bad, off)).json).toEqual({ inserted: 3, duplicates: 0 });
    expect((await putLastResort(device, bad, off)).status).toBe(200);
    expect(await holdings(device.userId)).toEqual({ coins: on(device, bad), lastResort: on(device, byTier(bad)) });
  });

  test("GOLD from a device with an Ed25519 key but no ML-DSA key → 409 naming PUT /v1/devices/{id}, nothing of the upload written; its SILVER and BRONZE verify and are stored", async () => {
    const identity = await deviceIdentity("ML-DSA-65", "no-ml-dsa");
    const device = await registered(identity, { n: 3, mlDsa: false });
    const [gold, silver, bronze] = await oneOfEach(identity); // GOLD signed with an ML-DSA key the server was never given
    expectDeviceState(await upload(device, [silver!, gold!, bronze!]), 3);
    expectDeviceState(await putLastResort(device, [gold!, bronze!]), 3);
    expect(await holdings(device.userId)).toEqual({ coins: [], lastResort: [] });
    expect((await upload(device, [silver!, bronze!])).json).toEqual({ inserted: 2, duplicates: 0 });
    expect((await putLastResort(device, [bronze!])).status).toBe(200);
    expect(await holdings(device.userId)).toEqual({ coins: on(device, [silver!, bronze!]), lastResort: on(device, [bronze!]) });
  });
});

describe("replacing keys while uploads run", () => {
  interface Sent {
    signer: "A" | "B";
    lastResort: boolean;
    coins: Coin[];
    res?: Awaited<ReturnType<typeof call>>;
  }

  test("uploads signed by A and by B race PUT /v1/devices/{id} replacing A by B: afterwards every coin and last-resort coin of the device verifies under B and none under A; uploads by A answered 200 were deleted by it (coins_deleted counts them), uploads by B answered 200 are stored", async () => {
    // deadlines far off (statement, pool wait): on a busy machine a 503 would only blur what is asserted
    const pool = db.pool({ AQM_DB_POOL_MAX: 10, AQM_DB_STATEMENT_TIMEOUT_MS: 60_000, AQM_DB_UNRESPONSIVE_S: 0 });
    const race = makeApp(pool, { AQM_RATE_UPLOAD_PER_MIN: "1000000", AQM_DB_POOL_WAIT_MS: "60000" });
    const [a, b] = [await deviceIdentity("ML-DSA-44", "race-a"), await deviceIdentity("ML-DSA-44", "race-b")];
    const device = await registered(a, { via: race });
    // committed before anything races: 20 coins and 2 last-resort coins (SILVER, BRONZE) signed by A
    const stock = [...await signedCoins(a, "SILVER", 10), ...await signedCoins(a, "BRONZE", 10)];
    expect((await upload(device, stock, race)).status).toBe(200);
    expect((await putLastResort(device, [await signedCoin(a, "SILVER"), await signedCoin(a, "BRONZE")], race)).status).toBe(200);

    // signed beforehand: 10 coins an upload, a SILVER and a BRONZE a last-resort PUT
    const make = (signer: "A" | "B", lastResort: boolean, n: number) => Promise.all(Array.from({ length: n }, async (): Promise<Sent> => {
      const identity = signer === "A" ? a : b;
      const coins = lastResort ? [await signedCoin(identity, "SILVER"), await signedCoin(identity, "BRONZE")]
        : await Promise.all(Array.from({ length: 10 }, (_, i) => signedCoin(identity, i % 2 ? "SILVER" : "BRONZE")));
      return { signer, lastResort, coins };
    }));
    const interleave = (...lists: Sent[][]) => Array.from({ length: Math.max(...lists.map((l) => l.length)) }, (_, i) => lists.flatMap((l) => l[i] ?? [])).flat();
    const first = interleave(await make("A", false, 40), await make("A", true, 5));
    const racing = interleave(await make("A", false, 20), await make("B", false, 20), await make("A", true, 5), await make("B", true, 5));
    const after = interleave(await make("A", false, 5), await make("B", false, 5), await make("A", true, 2), await make("B", true, 2));
    const send = async (s: Sent) => {
      s.res = await (s.lastResort ? putLastResort : upload)(device, s.coins, race);
    };

    // the 45 first ones start; once 5 have answered the replacement starts, with 50 more beside it
    let answered = 0;
    let fifthAnswered!: () => void;
    const fifth = new Promise<void>((resolve) => (fifthAnswered = resolve));
    const firstDone = first.map((s) => send(s).then(() => ++answered === 5 && fifthAnswered()));
    await fifth;
    const inFlight = first.filter((s) => !s.res).length;
    const replacing = register(race, device, b);
    const racingDone = racing.map(send);
    const put = await replacing;
    await Promise.all([...firstDone, ...racingDone]);
    await Promise.all(after.map(send)); // after the replacement answered
    expect([put.status, put.json.replaced]).toEqual([200, true]);
    expect(inFlight).toBeGreaterThan(0);

    const all = [...first, ...racing, ...after];
    for (const s of all) {
      expect([200, 422]).toContain(s.res!.status);
      if (s.res!.status === 422) expectBadSignature(s.res!, s.coins); // each of its coins signed with the keys no longer current
    }
    for (const s of after) expect([s.signer, s.res!.status]).toEqual([s.signer, s.signer === "A" ? 422 : 200]);

    const { coins, lastResort } = await holdings(device.userId);
    const stored = [...coins, ...lastResort];
    // checked again against the stored bytes: every coin verifies under B, none under A
    expect(await verifyCoins(b.keys, stored.map(decodedCoin))).toEqual([]);
    expect(sorted(await verifyCoins(a.keys, stored.map(decodedCoin)))).toEqual(sorted(keyIds(stored)));
    expect(lastResort.map((c) => c.coin_category)).toEqual(["BRONZE", "SILVER"]); // (B's last-resort PUTs after it answered)
    // exactly the coins of B's uploads answered 200 are stored
    const storedByB = all.filter((s) => s.signer === "B" && !s.lastResort && s.res!.status === 200);
    expect(sorted(keyIds(coins))).toEqual(sorted(storedByB.flatMap((s) => keyIds(s.coins))));
    // A's uploads answered 200 had committed when the replacement locked the row (a later one
    // stores nothing under the new generation): it deleted all of them with the stock and the 2 last-resort coins
    const storedByA = all.filter((s) => s.signer === "A" && !s.lastResort && s.res!.status === 200);
    expect(all.filter((s) => s.signer === "A" && s.res!.status === 200).length).toBeGreaterThanOrEqual(5);
    expect(put.json.coins_deleted).toBe(stock.length + 2 + storedByA.reduce((n, s) => n + s.res!.json.inserted, 0));
    await pool.end({ timeout: 5 });
  }, 90_000);

  test("an instance keeping A after another replaced it by B: it refuses coins signed by A (422; last resort too) and stores coins signed by B", async () => {
    const [one, two, three] = [makeApp(db.sql), makeApp(db.sql), makeApp(db.sql)];
    const [a, b] = [await deviceIdentity("ML-DSA-65", "instances-a"), await deviceIdentity("ML-DSA-65", "instances-b")];
    const device = await registered(a, { via: two });
    // one and three read the device with A and keep it
    const kept = [...await oneOfEach(a), ...await oneOfEach(a)];
    expect((await upload(device, kept.slice(0, 3), one)).json).toEqual({ inserted: 3, duplicates: 0 });
    expect((await upload(device, kept.slice(3), three)).json).toEqual({ inserted: 3, duplicates: 0 });
    const put = await register(two, device, b);
    expect([put.status, put.json]).toEqual([200, { device_id: 1, replaced: true, coins_deleted: 6 }]);

    // one: coins signed by B first (its kept A refuses them; read again, B accepts them), then by A
    const byB = await oneOfEach(b);
    expect((await upload(device, byB, one)).json).toEqual({ inserted: 3, duplicates: 0 });
    const byA = await oneOfEach(a);
    expectBadSignature(await upload(device, byA, one), byA);
    // three: coins signed by A first (its kept A verifies them; the write finds the keys moved, checked again: refused)
    const againByA = await oneOfEach(a);
    expectBadSignature(await upload(device, againByA, three), againByA);
    const lastResortByA = await oneOfEach(a);
    expectBadSignature(await putLastResort(device, lastResortByA, three), lastResortByA);
    const lastResortByB = await oneOfEach(b);
    expect((await putLastResort(device, lastResortByB, three)).status).toBe(200);
    expect(await holdings(device.userId)).toEqual({ coins: on(device, byB), lastResort: on(device, byTier(lastResortByB)) });
  }, 30_000);
});
