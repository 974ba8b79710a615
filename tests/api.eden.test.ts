// The typed client the README shows: Eden Treaty over `export type App`, against the real server process.
import { treaty } from "@elysiajs/eden";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import type { App } from "../src/app.ts";
import { asDevice, newUser, type User } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { decodedCoin, deviceIdentity, signedCoins } from "./helpers/identity.ts";
import { verifyCoins } from "../src/devices/signatures.ts";
import { startServer, type ServerProcess } from "./helpers/server.ts";

const db = useTestDatabase();
let server: ServerProcess;
let owner: User;
let requester: User;
beforeAll(async () => {
  server = await startServer({ DATABASE_URL: db.url, AQM_CRON: "off" });
  [owner, requester] = await Promise.all([newUser(), newUser()]);
});
afterAll(async () => {
  server?.proc.kill("SIGTERM");
  await server?.exited;
});

const client = (user: User) => treaty<App>(server.url, { headers: { authorization: `Bearer ${user.token}` } });

test("upload, count, fetch and claim through treaty<App>, with typed answers", async () => {
  const upload = await client(owner).v1.coins.upload.post({ coins: makeCoins(3) });
  expect(upload.status).toBe(200);
  expect(upload.data).toEqual({ inserted: 3, duplicates: 0 });

  const count = await client(owner).v1.coins.count.get();
  const bronze: number | undefined = count.data?.bronze;
  expect(bronze).toBe(3);

  const fetched = await client(requester).v1.coins.fetch.get({ query: { target_user_id: owner.id, coin_category: "BRONZE", count: 1 } });
  expect(fetched.status).toBe(200);
  expect(fetched.data?.coins).toHaveLength(1);
  expect(fetched.response.headers.get("x-pair-quota-remaining")).toBe("99");

  const key = randomUUID();
  const claim = await client(requester).v1.coins.claim.post({ target_user_id: owner.id, want: { bronze: 5 } }, { headers: { "idempotency-key": key } });
  // the answer's type is a union: per device when the claim named `devices`, else coins and short
  const single = claim.data && "coins" in claim.data ? claim.data : undefined;
  expect(single?.coins.map((c) => c.coin_category)).toEqual(["BRONZE", "BRONZE"]);
  expect(single?.short).toEqual({ gold: 0, silver: 0, bronze: 3 });

  const ready = await treaty<App>(server.url).v1.health.ready.get();
  expect(ready.data?.status).toBe("ready");
});

test("devices: register identity keys, list them, claim all devices and narrow the union answer, verify the coins as a sender", async () => {
  const [owner, requester] = await Promise.all([newUser(), newUser()]);
  const phone = await deviceIdentity();
  const laptop = await deviceIdentity("ML-DSA-44");
  const laptopUser = await asDevice(owner, 2); // a token whose `dev` claim is 2

  // each device registers its own keys (the path names the token's device), then uploads coins it signed
  const registered = await client(owner).v1.devices({ device_id: 1 }).put({ ed25519_b64: phone.ed25519_b64 });
  expect(registered.data).toEqual({ device_id: 1, replaced: false, coins_deleted: 0 });
  const second = await client(laptopUser).v1.devices({ device_id: 2 }).put({ ed25519_b64: laptop.ed25519_b64, ml_dsa_b64: laptop.mlDsa_b64, ml_dsa: "ML-DSA-44" });
  expect(second.status).toBe(200);
  const wrong = await client(owner).v1.devices({ device_id: 2 }).put({ ed25519_b64: laptop.ed25519_b64 });
  expect(wrong.error?.status).toBe(403); // another device's keys: only with that device's token
  expect((await client(owner).v1.coins.upload.post({ coins: await signedCoins(phone, "BRONZE", 2) })).data).toEqual({ inserted: 2, duplicates: 0 });
  expect((await client(laptopUser).v1.coins.upload.post({ coins: await signedCoins(laptop, "BRONZE", 1) })).data).toEqual({ inserted: 1, duplicates: 0 });

  // anyone may read a user's devices and their public keys
  const listed = await client(requester).v1.users({ user_id: owner.id }).devices.get();
  expect(listed.data?.devices).toEqual([
    { device_id: 1, ed25519_b64: phone.ed25519_b64 },
    { device_id: 2, ed25519_b64: laptop.ed25519_b64, ml_dsa_b64: laptop.mlDsa_b64, ml_dsa: "ML-DSA-44" },
  ]);

  // the counts of another user: summed, and per device (the union's InventoryByDevice side)
  const counts = await client(requester).v1.coins.count.get({ query: { user_id: owner.id } });
  const byDevice = counts.data && "devices" in counts.data ? counts.data : undefined;
  expect(byDevice?.bronze).toBe(3);
  expect(byDevice?.devices.map((d) => [d.device_id, d.bronze])).toEqual([[1, 2], [2, 1]]);

  const claim = await client(requester).v1.coins.claim.post({ target_user_id: owner.id, want: { bronze: 2 }, devices: "all" });
  expect(claim.status).toBe(200);
  // with `devices`, the answer is the union's ClaimDevicesResult side: narrowed by its `devices` field
  const perDevice = claim.data && "devices" in claim.data ? claim.data.devices : undefined;
  expect(perDevice?.map((d) => ({ id: d.device_id, coins: d.coins.length, short: d.short.bronze, key: d.ed25519_b64 }))).toEqual([
    { id: 1, coins: 2, short: 0, key: phone.ed25519_b64 },
    { id: 2, coins: 1, short: 1, key: laptop.ed25519_b64 },
  ]);
  // the sender's side: every coin verifies against the identity keys served with its device
  for (const device of perDevice ?? []) {
    const keys = { ed25519: new Uint8Array(Buffer.from(device.ed25519_b64!, "base64")), mlDsa: null, mlDsaSet: null };
    expect(await verifyCoins(keys, device.coins.map(decodedCoin))).toEqual([]);
  }

  // a device that lost its private keys: its coins go, its keys stay
  expect((await client(laptopUser).v1.coins.delete()).data).toEqual({ deleted: 0 });
  const removed = await client(laptopUser).v1.devices({ device_id: 2 }).delete();
  expect(removed.data).toEqual({ coins_deleted: 0 });
});

test("errors arrive as typed problem details", async () => {
  const bad = await client(requester).v1.coins.fetch.get({ query: { target_user_id: owner.id, coin_category: "BRONZE", count: 0 } });
  expect(bad.data).toBeNull();
  expect(bad.error?.status).toBe(422);
  if (bad.error?.status === 422) expect(bad.error.value.errors?.[0]?.field).toBe("count");

  const anonymous = await treaty<App>(server.url).v1.coins.count.get();
  expect(anonymous.error?.status).toBe(401);
  expect(anonymous.response.headers.get("content-type")).toBe("application/problem+json");
});
