import { beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import { signToken } from "../src/auth/jwt.ts";
import { deviceDigest } from "../src/devices/digest.ts";
import { exampleDigest, exampleEd25519 } from "../src/devices/model.ts";
import { deviceService } from "../src/devices/service.ts";
import { call, makeApp, testSecret, type TestApp } from "./helpers/app.ts";
import { testDb } from "./helpers/claims.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
});
beforeEach(async () => {
  await db.sql`TRUNCATE coin_inventory, last_resort_coin, stock_watch, device RESTART IDENTITY`;
});

/** A user, with a token for each of its devices (the `dev` claim). */
const newOwner = () => {
  const id = randomUUID();
  return { id, token: (device: number) => signToken(testSecret, id, { device }) };
};
type Owner = ReturnType<typeof newOwner>;

/** A real Ed25519 public key, standard base64. */
const edKey = () => generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" }).subarray(-32).toString("base64");
const b64 = (bytes: number) => randomBytes(bytes).toString("base64");

const put = async (owner: Owner, device: number, body: unknown, path: number | string = device) => call(app, "PUT", `/v1/devices/${path}`, { token: await owner.token(device), body });
const list = async (reader: Owner, userId: string) => call(app, "GET", `/v1/users/${userId}/devices`, { token: await reader.token(1) });
const remove = async (owner: Owner, device: number, path: number | string) => call(app, "DELETE", `/v1/devices/${path}`, { token: await owner.token(device) });
const reset = async (owner: Owner, device: number) => call(app, "DELETE", "/v1/coins", { token: await owner.token(device) });
const check = async (owner: Owner, device: number, body: unknown, path: number | string = device) =>
  call(app, "POST", `/v1/devices/${path}/check`, { token: await owner.token(device), body });

function expectProblem(res: { status: number; headers: Headers; json: any }, status: number, field?: string) {
  expect([res.status, res.headers.get("content-type"), res.json.status, typeof res.json.detail]).toEqual([status, "application/problem+json", status, "string"]);
  expect(res.json.type).toStartWith("urn:aqm:problem:");
  if (field) expect(res.json.errors.map((e: { field: string }) => e.field)).toEqual([field]);
}

/** Coins stored directly: `n` of `owner`'s device, unclaimed or claimed. */
async function insertCoins(owner: Owner, device: number, n: number, { claimed = false, tier = "BRONZE" } = {}) {
  await db.sql`
    INSERT INTO coin_inventory (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob, fetched_by, fetched_at)
    SELECT ${owner.id}::uuid, ${device}, ${`d${device}-${randomUUID().slice(0, 8)}-`} || g, ${tier}, '\\x01', '\\x02',
           CASE WHEN ${claimed} THEN gen_random_uuid() END, CASE WHEN ${claimed} THEN now() END
    FROM generate_series(1, ${n}) g`;
}

async function insertLastResort(owner: Owner, device: number, tier: string, keyId: string, publicKey: Buffer, signature: Buffer) {
  await db.sql`
    INSERT INTO last_resort_coin (user_id, device_id, coin_category, key_id, public_key_blob, signature_blob)
    VALUES (${owner.id}::uuid, ${device}, ${tier}, ${keyId}, ${publicKey}, ${signature})`;
}

/** For devices 1, 2 and 3 of `owner`: [unclaimed coins, claimed coins, last-resort coins]. */
async function holdings(owner: Owner): Promise<number[][]> {
  const rows = await db.sql<{ n: number[] }[]>`
    SELECT ARRAY[(SELECT count(*)::int FROM coin_inventory c WHERE c.user_id = ${owner.id}::uuid AND c.device_id = d AND c.fetched_at IS NULL),
                 (SELECT count(*)::int FROM coin_inventory c WHERE c.user_id = ${owner.id}::uuid AND c.device_id = d AND c.fetched_at IS NOT NULL),
                 (SELECT count(*)::int FROM last_resort_coin l WHERE l.user_id = ${owner.id}::uuid AND l.device_id = d)] AS n
    FROM generate_series(1, 3) d ORDER BY d`;
  return rows.map((r) => r.n);
}

/** Everything the device routes write, to show a refused request wrote nothing. */
const tables = async () => (await db.sql`
  SELECT (SELECT coalesce(json_agg(d ORDER BY user_id, device_id), '[]') FROM device d) AS devices,
         (SELECT coalesce(json_agg(c.record_id ORDER BY record_id), '[]') FROM coin_inventory c) AS coins,
         (SELECT coalesce(json_agg(l ORDER BY user_id, device_id, coin_category), '[]') FROM last_resort_coin l) AS last_resort,
         (SELECT count(*)::int FROM stock_watch) AS watches`)[0]!;

/** A device row without keys, as an upload creates it. */
const ensureDevice = (owner: Owner, device: number) => deviceService(testDb(db.sql), { AQM_MAX_DEVICES: 10 }).ensureDevice(owner.id, device);
const generation = async (owner: Owner, device: number) =>
  (await db.sql`SELECT generation FROM device WHERE user_id = ${owner.id}::uuid AND device_id = ${device}`)[0]?.generation;

describe("PUT /v1/devices/{device_id}", () => {
  test("registers the token's device keys; the same keys again change nothing; other keys replace them", async () => {
    const alice = newOwner();
    const created = (await ensureDevice(alice, 1)).generation;
    const first = await put(alice, 1, { ed25519_b64: exampleEd25519 });
    expect(first.status).toBe(200);
    expect(first.headers.get("cache-control")).toBe("no-store");
    expect(first.json).toEqual({ device_id: 1, replaced: false, coins_deleted: 0 });
    expect(await generation(alice, 1)).toBe(created + 1); // from no keys to some: a change
    expect((await put(alice, 1, { ed25519_b64: exampleEd25519 })).json).toEqual({ device_id: 1, replaced: false, coins_deleted: 0 });
    expect(await generation(alice, 1)).toBe(created + 1);

    const mlDsa = b64(1952);
    expect((await put(alice, 1, { ed25519_b64: exampleEd25519, ml_dsa_b64: mlDsa, ml_dsa: "ML-DSA-65" })).json)
      .toEqual({ device_id: 1, replaced: true, coins_deleted: 0 });
    expect(await generation(alice, 1)).toBe(created + 2);
    const [row] = await db.sql`SELECT encode(ed25519, 'base64') AS ed, ml_dsa_set, translate(encode(ml_dsa, 'base64'), E'\n', '') AS ml
                               FROM device WHERE user_id = ${alice.id}::uuid AND device_id = 1`;
    expect(row).toEqual({ ed: exampleEd25519, ml_dsa_set: "ML-DSA-65", ml: mlDsa });
    for (const [set, bytes] of [["ML-DSA-44", 1312], ["ML-DSA-87", 2592]] as const) {
      expect((await put(alice, 3, { ed25519_b64: edKey(), ml_dsa_b64: b64(bytes), ml_dsa: set })).status).toBe(200);
    }
  });

  test("another device's id → 403 naming device_id; one that is not an integer from 1 to 127 → 422 naming it; nothing written", async () => {
    const alice = newOwner();
    const other = await put(alice, 2, { ed25519_b64: edKey() }, 1);
    expectProblem(other, 403);
    expect(other.json.detail).toContain("device_id");
    const bad = ["0", "128", "-1", "abc", "1e1", "0x1", "1.5", " 1", "99999999999999999999", "9007199254740993", encodeURIComponent("1; DROP TABLE device --"), encodeURIComponent("1' OR '1'='1")];
    for (const path of bad) {
      expectProblem(await put(alice, 1, { ed25519_b64: edKey() }, path), 422, "device_id");
      expectProblem(await remove(alice, 1, path), 422, "device_id");
      expectProblem(await check(alice, 1, { digest_b64: exampleDigest }, path), 422, "device_id");
    }
    expect(await tables()).toMatchObject({ devices: [], coins: [] });
  });

  test("invalid keys → 422 naming the field, nothing written", async () => {
    const alice = newOwner();
    await put(alice, 1, { ed25519_b64: exampleEd25519 });
    await insertCoins(alice, 1, 3);
    const before = await tables();
    const ed = edKey();
    // sizes, truncated and unpadded base64, SQL, huge, not a string
    const badEd25519 = [b64(31), b64(33), b64(64), ed.slice(0, 40), ed.replace("=", ""), "'; DROP TABLE device; --", "A".repeat(100_000), 12345];
    const cases: [unknown, string][] = [
      [{}, "ed25519_b64"],
      ...badEd25519.map((bad): [unknown, string] => [{ ed25519_b64: bad }, "ed25519_b64"]),
      [{ ed25519_b64: ed, ml_dsa_b64: b64(1312) }, "ml_dsa"],
      [{ ed25519_b64: ed, ml_dsa: "ML-DSA-44" }, "ml_dsa_b64"],
      [{ ed25519_b64: ed, ml_dsa_b64: b64(1312), ml_dsa: "ML-DSA-99" }, "ml_dsa"],
      // a key of another set's size, one byte short or over, not base64
      ...([[1312, "ML-DSA-65"], [1952, "ML-DSA-87"], [1311, "ML-DSA-44"], [2593, "ML-DSA-87"]] as const)
        .map(([bytes, set]): [unknown, string] => [{ ed25519_b64: ed, ml_dsa_b64: b64(bytes), ml_dsa: set }, "ml_dsa_b64"]),
      [{ ed25519_b64: ed, ml_dsa_b64: "not base64!", ml_dsa: "ML-DSA-44" }, "ml_dsa_b64"],
      [{ ed25519_b64: ed, device_id: 2 }, "device_id"],
    ];
    for (const [body, field] of cases) expectProblem(await put(alice, 1, body), 422, field);
    expect(await tables()).toEqual(before);
  });

  test("changing the keys deletes that device's unclaimed and last-resort coins only; claimed coins stay", async () => {
    const [alice, bob] = [newOwner(), newOwner()];
    // coins of before the first registration: never verified against the keys, deleted by it
    await insertCoins(alice, 1, 4);
    expect((await put(alice, 1, { ed25519_b64: edKey() })).json).toEqual({ device_id: 1, replaced: false, coins_deleted: 4 });
    expect((await put(alice, 2, { ed25519_b64: edKey() })).json).toEqual({ device_id: 2, replaced: false, coins_deleted: 0 });
    await Promise.all([insertCoins(alice, 1, 5), insertCoins(alice, 1, 2, { claimed: true }), insertCoins(alice, 2, 3), insertCoins(bob, 1, 4)]);
    await insertLastResort(alice, 1, "BRONZE", "lr-1b", randomBytes(32), randomBytes(64));
    await insertLastResort(alice, 1, "SILVER", "lr-1s", randomBytes(1184), randomBytes(64));
    await insertLastResort(alice, 2, "BRONZE", "lr-2b", randomBytes(32), randomBytes(64));
    await insertLastResort(bob, 1, "BRONZE", "lr-bob", randomBytes(32), randomBytes(64));

    const key = edKey();
    expect((await put(alice, 1, { ed25519_b64: key })).json).toEqual({ device_id: 1, replaced: true, coins_deleted: 7 });
    expect(await holdings(alice)).toEqual([[0, 2, 0], [3, 0, 1], [0, 0, 0]]);
    expect(await holdings(bob)).toEqual([[4, 0, 1], [0, 0, 0], [0, 0, 0]]);

    // the same keys again: coins stored since stay
    await insertCoins(alice, 1, 2);
    expect((await put(alice, 1, { ed25519_b64: key })).json).toEqual({ device_id: 1, replaced: false, coins_deleted: 0 });
    expect((await holdings(alice))[0]).toEqual([2, 2, 0]);
  });
});

describe("GET /v1/users/{user_id}/devices", () => {
  test("any user reads anyone's devices by device_id, keys in base64; a device without keys has no key fields", async () => {
    const [alice, bob, mlDsa] = [newOwner(), newOwner(), b64(1312)];
    await put(alice, 3, { ed25519_b64: exampleEd25519, ml_dsa_b64: mlDsa, ml_dsa: "ML-DSA-44" });
    const ed = edKey();
    await put(alice, 1, { ed25519_b64: ed });
    await ensureDevice(alice, 2);
    const res = await list(bob, alice.id.toUpperCase());
    expect(res.json).toEqual({
      devices: [{ device_id: 1, ed25519_b64: ed }, { device_id: 2 }, { device_id: 3, ed25519_b64: exampleEd25519, ml_dsa_b64: mlDsa, ml_dsa: "ML-DSA-44" }],
    });
    expect((await list(alice, bob.id)).json).toEqual({ devices: [] });
  });

  test("a user_id that is not a UUID → 422 naming user_id", async () => {
    const alice = newOwner();
    for (const bad of ["abc", "1", encodeURIComponent("' OR 1=1 --"), randomUUID().slice(0, 35), `${randomUUID()}0`]) {
      expectProblem(await list(alice, bad), 422, "user_id");
    }
    expectProblem(await call(app, "GET", `/v1/users/${alice.id}/devices`), 401);
  });
});

describe("DELETE /v1/devices/{device_id}", () => {
  test("removes any device of the token's user with its unclaimed, last-resort coins and stock watch; claimed coins stay", async () => {
    const [alice, bob] = [newOwner(), newOwner()];
    await Promise.all([put(alice, 1, { ed25519_b64: edKey() }), put(alice, 2, { ed25519_b64: edKey() }), put(bob, 2, { ed25519_b64: edKey() })]);
    await Promise.all([insertCoins(alice, 2, 6), insertCoins(alice, 2, 3, { claimed: true }), insertCoins(alice, 1, 2), insertCoins(bob, 2, 5)]);
    await insertLastResort(alice, 2, "GOLD", "lr-2g", randomBytes(1184), randomBytes(2420));
    await insertLastResort(alice, 1, "GOLD", "lr-1g", randomBytes(1184), randomBytes(2420));
    await db.sql`INSERT INTO stock_watch (user_id, device_id, until) VALUES
      (${alice.id}::uuid, 1, now() + interval '1 minute'), (${alice.id}::uuid, 2, now() + interval '1 minute'), (${bob.id}::uuid, 2, now() + interval '1 minute')`;

    expect(await remove(alice, 1, 2)).toMatchObject({ status: 200, json: { coins_deleted: 7 } }); // from device 1
    expect(await holdings(alice)).toEqual([[2, 0, 1], [0, 3, 0], [0, 0, 0]]);
    expect((await list(bob, alice.id)).json.devices.map((d: { device_id: number }) => d.device_id)).toEqual([1]);
    const watches = async (user: Owner) => [...await db.sql`SELECT device_id FROM stock_watch WHERE user_id = ${user.id}::uuid ORDER BY 1`];
    expect(await watches(alice)).toEqual([{ device_id: 1 }]);
    expect(await watches(bob)).toEqual([{ device_id: 2 }]);
    expect(await holdings(bob)).toEqual([[0, 0, 0], [5, 0, 0], [0, 0, 0]]);
    expect((await list(alice, bob.id)).json.devices).toHaveLength(1);

    const before = await tables();
    expectProblem(await remove(alice, 1, 2), 404);
    expectProblem(await remove(alice, 1, 9), 404);
    expect(await tables()).toEqual(before);
  });

  test("coins of a device without a row are removed too (not a 404)", async () => {
    const alice = newOwner();
    await insertCoins(alice, 3, 2);
    expect((await remove(alice, 1, 3)).json).toEqual({ coins_deleted: 2 });
    expectProblem(await remove(alice, 1, 3), 404);
  });
});

describe("DELETE /v1/coins", () => {
  test("deletes the token's device's unclaimed and last-resort coins; its row, keys and other devices stay", async () => {
    const alice = newOwner();
    const key = edKey();
    await put(alice, 2, { ed25519_b64: key });
    const registered = await generation(alice, 2);
    await Promise.all([insertCoins(alice, 2, 4), insertCoins(alice, 2, 1, { claimed: true }), insertCoins(alice, 1, 3)]);
    await insertLastResort(alice, 2, "SILVER", "lr-2s", randomBytes(1184), randomBytes(64));
    await insertLastResort(alice, 1, "SILVER", "lr-1s", randomBytes(1184), randomBytes(64));
    expect(await reset(alice, 2)).toMatchObject({ status: 200, json: { deleted: 5 } });
    expect(await holdings(alice)).toEqual([[3, 0, 1], [0, 1, 0], [0, 0, 0]]);
    expect((await list(alice, alice.id)).json).toEqual({ devices: [{ device_id: 2, ed25519_b64: key }] });
    expect(await generation(alice, 2)).toBe(registered); // same keys: uploads verified against them stay valid
    expect((await reset(alice, 2)).json).toEqual({ deleted: 0 });
    expectProblem(await call(app, "DELETE", "/v1/coins"), 401);
  });
});

/** The digest as its doc comment defines it, written out independently of src/devices/digest.ts. */
function specDigest(fields: (string | Buffer)[]): string {
  const bytes = fields.map((f) => (typeof f === "string" ? Buffer.from(f, "utf8") : f));
  const length = (n: number) => Buffer.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]); // big-endian
  return createHash("sha256").update(Buffer.concat(bytes.flatMap((b) => [length(b.length), b]))).digest("base64");
}

describe("POST /v1/devices/{device_id}/check", () => {
  test("matches the digest of the device's keys and last-resort coins; one byte off → 409", async () => {
    const alice = newOwner();
    const ed25519_b64 = edKey();
    const edBytes = Buffer.from(ed25519_b64, "base64");
    const mlDsa = randomBytes(2592);
    await put(alice, 1, { ed25519_b64, ml_dsa_b64: mlDsa.toString("base64"), ml_dsa: "ML-DSA-87" });
    const gold = { keyId: "lr-gold-ü", publicKey: randomBytes(1184), signature: randomBytes(4627) };
    const bronze = { keyId: "lr-bronze", publicKey: randomBytes(32), signature: randomBytes(64) };
    await insertLastResort(alice, 1, "GOLD", gold.keyId, gold.publicKey, gold.signature);
    await insertLastResort(alice, 1, "BRONZE", bronze.keyId, bronze.publicKey, bronze.signature);
    await insertLastResort(alice, 2, "SILVER", "other-device", randomBytes(1184), randomBytes(64)); // another device's: not covered

    const expected = specDigest(["aqm-device-digest-v1", edBytes, "ML-DSA-87", mlDsa,
      gold.keyId, gold.publicKey, gold.signature, "", Buffer.alloc(0), Buffer.alloc(0), bronze.keyId, bronze.publicKey, bronze.signature]);
    expect(Buffer.from(deviceDigest({ keys: { ed25519: edBytes, mlDsa, mlDsaSet: "ML-DSA-87" }, lastResort: { GOLD: gold, BRONZE: bronze } })).toString("base64"))
      .toBe(expected);
    expect(await check(alice, 1, { digest_b64: expected })).toMatchObject({ status: 200, json: { match: true } });

    const before = await tables();
    for (const i of [0, 31]) {
      const off = Buffer.from(expected, "base64");
      off[i]! ^= 1;
      const res = await check(alice, 1, { digest_b64: off.toString("base64") });
      expect([res.status, res.json.type]).toEqual([409, "urn:aqm:problem:digest-mismatch"]);
    }
    // one stored byte differs: the device's digest no longer matches
    await db.sql`UPDATE last_resort_coin SET signature_blob = set_byte(signature_blob, 63, get_byte(signature_blob, 63) # 1)
                 WHERE user_id = ${alice.id}::uuid AND device_id = 1 AND coin_category = 'BRONZE'`;
    expectProblem(await check(alice, 1, { digest_b64: expected }), 409);
    expect((await tables()).devices).toEqual(before.devices); // a check writes nothing
  });

  test("a device the server holds nothing for matches the digest of empty fields; keys alone change it", async () => {
    const alice = newOwner();
    expect(specDigest(["aqm-device-digest-v1", ...Array<string>(12).fill("")])).toBe(exampleDigest);
    expect((await check(alice, 5, { digest_b64: exampleDigest })).json).toEqual({ match: true });
    expect(await tables()).toMatchObject({ devices: [] }); // a check creates nothing
    await put(alice, 5, { ed25519_b64: exampleEd25519 });
    expectProblem(await check(alice, 5, { digest_b64: exampleDigest }), 409);
    const withKey = specDigest(["aqm-device-digest-v1", Buffer.from(exampleEd25519, "base64"), ...Array<string>(11).fill("")]);
    expect((await check(alice, 5, { digest_b64: withKey })).json).toEqual({ match: true });
  });

  test("another device → 403; a digest that is not 32 bytes of base64 → 422 naming digest_b64", async () => {
    const alice = newOwner();
    expectProblem(await check(alice, 2, { digest_b64: exampleDigest }, 1), 403);
    const digest = exampleDigest;
    for (const bad of [digest.slice(0, 43), `${digest.slice(0, 43)}A`, b64(31), b64(33), "", "'; DROP TABLE device; --", 42, null, "A".repeat(100_000)]) {
      expectProblem(await check(alice, 1, { digest_b64: bad }), 422, "digest_b64");
    }
    expectProblem(await check(alice, 1, {}), 422, "digest_b64");
    expectProblem(await check(alice, 1, { digest_b64: digest, extra: true }), 422, "extra");
  });
});
