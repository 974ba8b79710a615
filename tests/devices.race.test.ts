import { beforeAll, expect, test } from "bun:test";
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { signToken } from "../src/auth/jwt.ts";
import { exampleEd25519 } from "../src/devices/model.ts";
import { deviceService } from "../src/devices/service.ts";
import { call, makeApp, testSecret, type TestApp } from "./helpers/app.ts";
import { testDb } from "./helpers/claims.ts";
import { useTestDatabase } from "./helpers/db.ts";

// Devices under concurrency: the device limit is exact, and a device removed while its coins are
// being claimed has every coin either handed out once or deleted, never both, and none handed
// out once the removal has answered.
const db = useTestDatabase({ AQM_DB_POOL_MAX: 12 });
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql, { AQM_RATE_LIMITS: "off", AQM_DB_POOL_MAX: "10" });
});

const COINS = 800;
const CLIENTS = 24;
const PER_CLAIM = 2;

interface Claim {
  requester: string;
  started: number;
  ended: number;
  status: number;
  keys: string[];
}

test("DELETE /v1/devices/1 racing a stream of claims: served ∪ deleted = all, served ∩ deleted = ∅, nothing served after it answered", async () => {
  const owner = randomUUID();
  const ownerToken = await signToken(testSecret, owner, { device: 1 });
  await db.sql`INSERT INTO device (user_id, device_id) VALUES (${owner}::uuid, 1)`;
  await db.sql`
    INSERT INTO coin_inventory (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
    SELECT ${owner}::uuid, 1, 'coin-' || g, 'BRONZE', '\\x01', '\\x02' FROM generate_series(1, ${COINS}) g`;

  const claims: Claim[] = [];
  let served = 0;
  let stop = false;
  let answeredAt = Infinity;
  const requesters = await Promise.all(Array.from({ length: CLIENTS }, async () => {
    const id = randomUUID();
    return { id, token: await signToken(testSecret, id) };
  }));
  const client = async ({ id, token }: { id: string; token: string }) => {
    let afterAnswer = 0;
    while (!stop && afterAnswer < 3) {
      const started = performance.now();
      const res = await call(app, "GET", "/v1/coins/fetch", { token, query: { target_user_id: owner, coin_category: "BRONZE", count: PER_CLAIM } });
      const keys = res.status === 200 ? res.json.coins.map((c: { key_id: string }) => c.key_id) : [];
      claims.push({ requester: id, started, ended: performance.now(), status: res.status, keys });
      served += keys.length;
      if (started > answeredAt) afterAnswer++;
    }
  };
  const running = Promise.all(requesters.map(client));

  while (served < COINS / 4) await Bun.sleep(1);
  const deleteStarted = performance.now();
  const removal = await call(app, "DELETE", "/v1/devices/1", { token: ownerToken });
  answeredAt = performance.now();
  const safety = setTimeout(() => (stop = true), 5_000);
  await running;
  clearTimeout(safety);

  expect(removal.status).toBe(200);
  expect(claims.every((c) => c.status === 200)).toBe(true);
  const servedKeys = claims.flatMap((c) => c.keys);
  const servedSet = new Set(servedKeys);
  expect(servedKeys.length).toBe(servedSet.size); // none handed out twice

  // what the database holds: exactly the served coins, each claimed by the requester that got it
  const rows = await db.sql<{ key_id: string; fetched_by: string | null }[]>`
    SELECT key_id, fetched_by::text FROM coin_inventory WHERE user_id = ${owner}::uuid`;
  expect(rows.filter((r) => r.fetched_by === null)).toEqual([]); // no unclaimed coin of the device left
  expect(new Set(rows.map((r) => r.key_id))).toEqual(servedSet);
  const claimer = new Map(claims.flatMap((c) => c.keys.map((k) => [k, c.requester] as const)));
  for (const r of rows) expect(r.fetched_by).toBe(claimer.get(r.key_id)!);
  expect(removal.json.coins_deleted).toBe(COINS - servedSet.size); // the deleted ones are exactly the others
  expect(await db.sql`SELECT 1 FROM device WHERE user_id = ${owner}::uuid`).toHaveLength(0);

  // nothing served by a claim that started once the removal had answered
  const after = claims.filter((c) => c.started > answeredAt);
  expect(after.length).toBeGreaterThanOrEqual(CLIENTS);
  expect(after.flatMap((c) => c.keys)).toEqual([]);

  // the race was real: coins served before, claims in flight during it, coins left to delete
  expect(servedSet.size).toBeGreaterThanOrEqual(COINS / 4);
  expect(claims.filter((c) => c.started < answeredAt && c.ended > deleteStarted).length).toBeGreaterThan(0);
  expect(removal.json.coins_deleted).toBeGreaterThan(0);
}, 30_000);

const edKey = () => generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" }).subarray(-32).toString("base64");
const tokenOf = (userId: string, device: number) => signToken(testSecret, userId, { device });
const deviceCount = async (userId: string) => (await db.sql`SELECT count(*)::int AS n FROM device WHERE user_id = ${userId}::uuid`)[0]!.n;

test("PUT /v1/devices: 2 × AQM_MAX_DEVICES new devices at once → exactly AQM_MAX_DEVICES, the others 409 naming the limit", async () => {
  const limited = makeApp(db.sql, { AQM_MAX_DEVICES: "4" });
  const user = randomUUID();
  const register = async (device: number) =>
    call(limited, "PUT", `/v1/devices/${device}`, { token: await tokenOf(user, device), body: { ed25519_b64: edKey() } });
  const answers = await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map(register));
  const made = answers.flatMap((r) => (r.status === 200 ? [r.json.device_id as number] : []));
  expect(made).toHaveLength(4);
  for (const res of answers.filter((r) => r.status !== 200)) {
    expect([res.status, res.json.type]).toEqual([409, "urn:aqm:problem:device-state"]);
    expect(res.json.detail).toContain("AQM_MAX_DEVICES");
    expect(res.json.detail).toContain("DELETE /v1/devices/{id}");
  }
  expect(await deviceCount(user)).toBe(4);
  // registered devices still replace their keys; removing one makes room for another
  const [kept] = made;
  const outside = [1, 2, 3, 4, 5, 6, 7, 8].find((d) => !made.includes(d))!;
  expect((await register(kept!)).json).toMatchObject({ device_id: kept, replaced: true });
  expect((await register(outside)).status).toBe(409);
  expect((await call(limited, "DELETE", `/v1/devices/${kept}`, { token: await tokenOf(user, kept!) })).status).toBe(200);
  expect((await register(outside)).status).toBe(200);
});

test("ensureDevice (the upload path's): the row made once, its generation and keys; the limit exact under concurrency", async () => {
  const devices = deviceService(testDb(db.sql), { AQM_MAX_DEVICES: 5 });
  const user = randomUUID();
  const created = await devices.ensureDevice(user, 7);
  expect(created).toEqual({ generation: expect.any(Number), keys: { ed25519: null, mlDsa: null, mlDsaSet: null } });
  expect(await devices.ensureDevice(user, 7)).toEqual(created);
  await call(app, "PUT", "/v1/devices/7", { token: await tokenOf(user, 7), body: { ed25519_b64: exampleEd25519 } });
  const seven = await devices.ensureDevice(user, 7);
  expect(seven.generation).toBe(created.generation + 1);
  expect(Buffer.from(seven.keys.ed25519!).toString("base64")).toBe(exampleEd25519);

  // 2 × 5 new devices at once, each asked for three times: exactly 4 more (with device 7: 5)
  const ids = Array.from({ length: 10 }, (_, i) => 20 + i);
  const results = await Promise.allSettled(ids.flatMap((id) => [1, 2, 3].map(() => devices.ensureDevice(user, id))));
  expect(ids.filter((_, i) => results[i * 3]!.status === "fulfilled")).toHaveLength(4);
  ids.forEach((_, i) => expect(new Set(results.slice(i * 3, i * 3 + 3).map((r) => r.status)).size).toBe(1)); // the three calls of a device agree
  for (const r of results) if (r.status === "rejected") expect(r.reason.kind).toBe("device-state");
  expect(await deviceCount(user)).toBe(5);
});
