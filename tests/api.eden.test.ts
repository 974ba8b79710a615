// The typed client the README shows: Eden Treaty over `export type App`, against the real server process.
import { treaty } from "@elysiajs/eden";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import type { App } from "../src/app.ts";
import { newUser, type User } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { useTestDatabase } from "./helpers/db.ts";
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

test("errors arrive as typed problem details", async () => {
  const bad = await client(requester).v1.coins.fetch.get({ query: { target_user_id: owner.id, coin_category: "BRONZE", count: 0 } });
  expect(bad.data).toBeNull();
  expect(bad.error?.status).toBe(422);
  if (bad.error?.status === 422) expect(bad.error.value.errors?.[0]?.field).toBe("count");

  const anonymous = await treaty<App>(server.url).v1.coins.count.get();
  expect(anonymous.error?.status).toBe(401);
  expect(anonymous.response.headers.get("content-type")).toBe("application/problem+json");
});
