import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import type { Tier } from "../src/coins/tiers.ts";
import { asDevice, call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { makeCoin, makeCoins } from "./helpers/coins.ts";
import { resetClaims, useTestDatabase } from "./helpers/db.ts";
import { deviceIdentity } from "./helpers/identity.ts";
import { startServer, type ServerProcess } from "./helpers/server.ts";

// POST /v1/coins/claim with `devices`: one claim for several of a user's devices.
const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
});
beforeEach(() => resetClaims(db.sql));

type Want = Partial<Record<"gold" | "silver" | "bronze", number>>;
const claim = (a: TestApp, user: User, target: string, want: Want, extra: Record<string, unknown> = {}, key?: string) =>
  call(a, "POST", "/v1/coins/claim", { token: user.token, body: { target_user_id: target, want, ...extra }, headers: key ? { "idempotency-key": key } : {} });

async function stock(device: User, counts: Partial<Record<Tier, number>>, a: TestApp = app) {
  const coins = Object.entries(counts).flatMap(([tier, n]) => makeCoins(n, tier as Tier));
  const res = await call(a, "POST", "/v1/coins/upload", { token: device.token, body: { coins } });
  expect(res.status).toBe(200);
  return coins;
}

/** A user with devices 1..n, each holding `bronze` BRONZE coins; device d's coins in coins[d - 1]. */
async function owner(n: number, bronze: number) {
  const user = await newUser();
  const devices = await Promise.all(Array.from({ length: n }, (_, i) => asDevice(user, i + 1)));
  const coins = [];
  for (const d of devices) coins.push(await stock(d, { BRONZE: bronze }));
  return { user, devices, coins };
}

const keysOf = (entry: { coins: { key_id: string }[] }) => entry.coins.map((c) => c.key_id);

describe("devices: all or a list", () => {
  test("\"all\": one entry per device in device order, want per device, each device's own coins oldest first, its shortfall", async () => {
    const { user, coins } = await owner(3, 2);
    const bob = await newUser();
    const res = await claim(app, bob, user.id, { bronze: 3 }, { devices: "all" });
    expect(res.status).toBe(200);
    expect(Object.keys(res.json)).toEqual(["devices"]);
    expect(res.json.devices.map((d: { device_id: number }) => d.device_id)).toEqual([1, 2, 3]);
    res.json.devices.forEach((d: { coins: { key_id: string }[]; short: unknown }, i: number) => {
      expect(d.coins).toEqual(coins[i]!);
      expect(d.short).toEqual({ gold: 0, silver: 0, bronze: 1 });
    });
  });

  test("a list: only the devices named that exist; unknown ids are left out", async () => {
    const { user, coins } = await owner(3, 2);
    const res = await claim(app, await newUser(), user.id, { bronze: 1 }, { devices: [3, 1, 9] });
    expect(res.json.devices.map((d: { device_id: number }) => d.device_id)).toEqual([1, 3]);
    expect(keysOf(res.json.devices[0])).toEqual([coins[0]![0]!.key_id]);
    expect(keysOf(res.json.devices[1])).toEqual([coins[2]![0]!.key_id]);
  });

  test("a user without devices: an empty list; without `devices` the answer is today's, from device 1 only", async () => {
    expect((await claim(app, await newUser(), randomUUID(), { bronze: 1 }, { devices: "all" })).json).toEqual({ devices: [] });
    const { user, coins } = await owner(2, 2);
    const res = await claim(app, await newUser(), user.id, { bronze: 5 });
    expect(res.json).toEqual({ coins: coins[0], short: { gold: 0, silver: 0, bronze: 3 } });
    const fetched = await call(app, "GET", "/v1/coins/fetch", { token: (await newUser()).token, query: { target_user_id: user.id, coin_category: "BRONZE", count: 5 } });
    expect(fetched.json).toEqual({ coins: [] }); // device 1 is empty now; device 2's coins are not served as device 1's
  });

  test("claiming from oneself leaves out the caller's own device", async () => {
    const { user, devices, coins } = await owner(3, 1);
    const res = await claim(app, devices[1]!, user.id, { bronze: 1 }, { devices: "all" });
    expect(res.json.devices.map((d: { device_id: number }) => d.device_id)).toEqual([1, 3]);
    expect(keysOf(res.json.devices[0])).toEqual([coins[0]![0]!.key_id]);
  });

  test("each device's identity keys are served with its coins; a device without keys has none", async () => {
    const user = await newUser();
    const [one, two] = [await asDevice(user, 1), await asDevice(user, 2)];
    const identity = await deviceIdentity("ML-DSA-44", "claim-devices");
    const put = await call(app, "PUT", "/v1/devices/2", { token: two.token, body: { ed25519_b64: identity.ed25519_b64, ml_dsa_b64: identity.mlDsa_b64, ml_dsa: "ML-DSA-44" } });
    expect(put.status).toBe(200);
    await stock(one, { SILVER: 1 });
    const res = await claim(app, await newUser(), user.id, { silver: 1 }, { devices: "all" });
    expect(res.json.devices[0]).toEqual({ device_id: 1, coins: [expect.objectContaining({ coin_category: "SILVER" })], short: { gold: 0, silver: 0, bronze: 0 } });
    expect(res.json.devices[1]).toEqual({
      device_id: 2, ed25519_b64: identity.ed25519_b64, ml_dsa_b64: identity.mlDsa_b64, ml_dsa: "ML-DSA-44", coins: [], short: { gold: 0, silver: 1, bronze: 0 },
    });
  });

  test("fallback and last-resort coins per device: a device's shortfall is filled from its own lower tiers and its own last-resort coin", async () => {
    const user = await newUser();
    const [one, two] = [await asDevice(user, 1), await asDevice(user, 2)];
    await stock(one, { BRONZE: 1 });
    const lr = makeCoin("SILVER");
    expect((await call(app, "PUT", "/v1/coins/last-resort", { token: two.token, body: { coins: [lr] } })).status).toBe(200);
    const res = await claim(app, await newUser(), user.id, { silver: 1 }, { devices: "all", allow_last_resort: true });
    expect(res.json.devices[0].coins.map((c: { coin_category: string }) => c.coin_category)).toEqual(["BRONZE"]);
    expect(res.json.devices[1].coins).toEqual([{ ...lr, last_resort: true }]);
    expect(res.json.devices.map((d: { short: unknown }) => d.short)).toEqual([{ gold: 0, silver: 0, bronze: 0 }, { gold: 0, silver: 0, bronze: 0 }]);
  });

  test("bad `devices` values are 422 naming the field, and nothing is claimed", async () => {
    const { user } = await owner(1, 3);
    for (const devices of ["some", [], [0], [128], [1, 1], ["x"], [1.5], [null], { all: true }, "ALL"]) {
      const res = await claim(app, await newUser(), user.id, { bronze: 1 }, { devices });
      expect([JSON.stringify(devices), res.status]).toEqual([JSON.stringify(devices), 422]);
      expect(res.json.errors.map((e: { field: string }) => e.field)).toContain("devices");
    }
    expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL`)[0]!.n).toBe(0);
  });
});

describe("the pair quota counts coins across devices", () => {
  test("quota 5, 2 per device of 3 devices: 2 + 2 + 1 in device order, then 429", async () => {
    const quota = makeApp(db.sql, { AQM_PAIR_QUOTA: "5" });
    const { user } = await owner(3, 3);
    const bob = await newUser();
    const res = await claim(quota, bob, user.id, { bronze: 2 }, { devices: "all" });
    expect(res.json.devices.map((d: { coins: unknown[] }) => d.coins.length)).toEqual([2, 2, 1]);
    expect(res.json.devices[2].short).toEqual({ gold: 0, silver: 0, bronze: 1 });
    expect(res.headers.get("x-pair-quota-remaining")).toBe("0");
    expect((await claim(quota, bob, user.id, { bronze: 1 }, { devices: "all" })).status).toBe(429);
    expect((await claim(quota, bob, user.id, { bronze: 1 })).status).toBe(429); // the same pair, whatever the form
  });

  test("what the quota leaves goes to coins that exist: an empty device takes none of it, nor an empty tier", async () => {
    const quota = makeApp(db.sql, { AQM_PAIR_QUOTA: "2" });
    const user = await newUser();
    const [one, two] = [await asDevice(user, 1), await asDevice(user, 2)];
    await stock(one, { GOLD: 1 });
    await call(app, "POST", "/v1/coins/claim", { token: (await newUser()).token, body: { target_user_id: user.id, want: { gold: 1 } } }); // device 1 now empty
    const coins = await stock(two, { SILVER: 2 });
    const res = await claim(quota, await newUser(), user.id, { gold: 2, silver: 2 }, { devices: "all", fallback: "none" });
    expect(res.json.devices[0]).toMatchObject({ device_id: 1, coins: [], short: { gold: 2, silver: 2, bronze: 0 } });
    expect(res.json.devices[1]).toMatchObject({ device_id: 2, coins, short: { gold: 2, silver: 0, bronze: 0 } });
    expect(res.headers.get("x-pair-quota-remaining")).toBe("0");
  });
});

describe("Idempotency-Key and waiting", () => {
  test("a retry returns the first answer byte for byte — keys as served then — without claiming more; another body is 422", async () => {
    const user = await newUser();
    const [one, two] = [await asDevice(user, 1), await asDevice(user, 2)];
    const identity = await deviceIdentity("ML-DSA-65", "replay-1");
    await call(app, "PUT", "/v1/devices/2", { token: two.token, body: { ed25519_b64: identity.ed25519_b64 } });
    await stock(one, { BRONZE: 2 });
    const lr = makeCoin("GOLD");
    await call(app, "PUT", "/v1/coins/last-resort", { token: one.token, body: { coins: [lr] } });
    const bob = await newUser();
    const key = randomUUID();
    const body = { bronze: 1, gold: 1 };
    const first = await claim(app, bob, user.id, body, { devices: "all", allow_last_resort: true, fallback: "none" }, key);
    expect(first.status).toBe(200);
    expect(first.json.devices[0].coins).toHaveLength(2);
    // device 2's keys change meanwhile: the replay still answers what the first attempt served
    const other = await deviceIdentity("ML-DSA-65", "replay-2");
    expect((await call(app, "PUT", "/v1/devices/2", { token: two.token, body: { ed25519_b64: other.ed25519_b64 } })).json.replaced).toBe(true);
    const again = await claim(app, bob, user.id, body, { devices: "all", allow_last_resort: true, fallback: "none" }, key);
    expect(again.text).toBe(first.text);
    expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL`)[0]!.n).toBe(1);
    expect((await claim(app, bob, user.id, body, { devices: [1], allow_last_resort: true, fallback: "none" }, key)).status).toBe(422);
  });

  test("a waiting all-devices claim is woken by an upload of any device", async () => {
    const user = await newUser();
    const devices = [await asDevice(user, 1), await asDevice(user, 2)];
    for (const d of devices) await stock(d, { GOLD: 1 }); // the devices exist; no BRONZE
    const waiting = claim(app, await newUser(), user.id, { bronze: 1 }, { devices: "all", wait_ms: 5000, fallback: "none" });
    await Bun.sleep(300);
    const started = performance.now();
    const coins = await stock(devices[1]!, { BRONZE: 1 });
    const res = await waiting;
    expect(performance.now() - started).toBeLessThan(4000);
    expect(res.json.devices[1].coins).toEqual(coins);
    expect(res.json.devices[0].coins).toEqual([]);
  });
});

describe("counts per device", () => {
  test("your device's counts; with user_id the sums and each device; the long-poll watches your own device", async () => {
    const user = await newUser();
    const [one, two] = [await asDevice(user, 1), await asDevice(user, 2)];
    await stock(one, { GOLD: 1, BRONZE: 2 });
    await stock(two, { GOLD: 3, SILVER: 3, BRONZE: 3 });
    await call(app, "PUT", "/v1/coins/last-resort", { token: two.token, body: { coins: [makeCoin("BRONZE")] } });
    const none = { gold: false, silver: false, bronze: false };
    expect((await call(app, "GET", "/v1/coins/count", { token: two.token })).json).toEqual({ gold: 3, silver: 3, bronze: 3, last_resort: { ...none, bronze: true } });
    const all = await call(app, "GET", "/v1/coins/count", { token: (await newUser()).token, query: { user_id: user.id } });
    expect(all.json).toEqual({
      gold: 4, silver: 3, bronze: 5, last_resort: { ...none, bronze: true },
      devices: [
        { device_id: 1, gold: 1, silver: 0, bronze: 2, last_resort: none },
        { device_id: 2, gold: 3, silver: 3, bronze: 3, last_resort: { ...none, bronze: true } },
      ],
    });
    // device 2 waits for a tier of its own to fall below 3; a claim of device 1's coins does not end the wait
    const polling = call(app, "GET", "/v1/coins/count", { token: two.token, query: { below: 3, wait_ms: 4000 } });
    await Bun.sleep(200);
    await claim(app, await newUser(), user.id, { gold: 1 }, { devices: [1] });
    await Bun.sleep(300);
    const started = performance.now();
    await claim(app, await newUser(), user.id, { silver: 1 }, { devices: [2] });
    const res = await polling;
    expect(performance.now() - started).toBeLessThan(3000);
    expect(res.json.silver).toBe(2);
  });
});

describe("across server processes", () => {
  let servers: ServerProcess[] = [];
  afterAll(async () => {
    for (const s of servers) s.proc.kill("SIGTERM");
    await Promise.all(servers.map((s) => s.exited));
  });

  test("3 processes, 120 keyed all-devices claims of one user's 3 devices: no coin twice; one requester gets exactly the pair quota across devices", async () => {
    servers = await Promise.all([0, 1, 2].map(() => startServer({ ...db.serverEnv, AQM_CRON: "off", AQM_RATE_FETCH_PER_MIN: "100000", AQM_PAIR_QUOTA: "50" })));
    const user = await newUser();
    const devices = await Promise.all([1, 2, 3].map((d) => asDevice(user, d)));
    for (const d of [...devices, ...devices]) { // 200 per device: more than the 120 claims can take with the thief held to 50
      const res = await fetch(`${servers[0]!.url}/v1/coins/upload`, {
        method: "POST", headers: { authorization: `Bearer ${d.token}`, "content-type": "application/json" },
        body: JSON.stringify({ coins: makeCoins(100, "BRONZE") }),
      });
      expect(res.status).toBe(200);
    }
    const [thief, ...others] = await Promise.all(Array.from({ length: 21 }, () => newUser()));
    // keyed, as a careful client sends them: a claim answered 503 (a slow database: Citus under this
    // load) is sent again with its key, and gets the first attempt's coins if that one committed
    const responses = await Promise.all(Array.from({ length: 120 }, async (_, i) => {
      const who = i % 2 === 0 ? thief! : others[i % others.length]!;
      const key = randomUUID();
      for (let attempt = 0; ; attempt++) {
        const res = await fetch(`${servers[(i + attempt) % 3]!.url}/v1/coins/claim`, {
          method: "POST", headers: { authorization: `Bearer ${who.token}`, "content-type": "application/json", "idempotency-key": key },
          body: JSON.stringify({ target_user_id: user.id, want: { bronze: 1 + (i % 3) }, devices: "all" }),
        });
        const body = (await res.json()) as { devices?: { device_id: number; coins: { key_id: string }[] }[] };
        if (res.status !== 503 || attempt === 5) return { who, status: res.status, body };
      }
    }));
    expect(responses.every((r) => r.status === 200 || (r.status === 429 && r.who === thief))).toBe(true);
    const served = responses.flatMap((r) => (r.body.devices ?? []).flatMap((d) => d.coins.map((c) => `${d.device_id}:${c.key_id}`)));
    expect(new Set(served).size).toBe(served.length);
    const byThief = responses.filter((r) => r.who === thief).flatMap((r) => (r.body.devices ?? []).flatMap((d) => d.coins));
    expect(byThief).toHaveLength(50);
    expect(served.length).toBeLessThan(600); // (the stock never ran out: the quota, not the supply, held the thief)
    const rows = await db.sql<{ device_id: number; key_id: string }[]>`
      SELECT device_id, key_id FROM coin_inventory WHERE user_id = ${user.id}::uuid AND fetched_at IS NOT NULL`;
    expect(new Set(rows.map((r) => `${r.device_id}:${r.key_id}`))).toEqual(new Set(served));
  }, 60_000);
});
