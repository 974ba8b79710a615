import { afterAll, beforeAll, expect, test } from "bun:test";
import { inventory, makeCoins } from "./helpers/coins.ts";
import { makeApp, newUser, type User } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { startServer, type ServerProcess } from "./helpers/server.ts";

// Real HTTP: a Bun server on loopback and 200 concurrent clients.
const db = useTestDatabase({ AQM_DB_POOL_MAX: 10 });
let server: ReturnType<typeof Bun.serve>;
let base: string;
const serve = (env: Record<string, string> = {}) => {
  server?.stop(true);
  server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: makeApp(db.sql, env).fetch });
  base = `http://127.0.0.1:${server.port}`;
};
beforeAll(() => serve());
afterAll(() => server.stop(true));

async function upload(owner: User, n: number) {
  for (let i = 0; i < n; i += 100) {
    const res = await fetch(`${base}/v1/coins/upload`, {
      method: "POST",
      headers: { authorization: `Bearer ${owner.token}`, "content-type": "application/json" },
      body: JSON.stringify({ coins: makeCoins(Math.min(100, n - i), "GOLD") }),
    });
    expect(res.status).toBe(200);
  }
}

async function drain(): Promise<void> {
  const owner = await newUser();
  await upload(owner, 300);
  const requesters = await Promise.all(Array.from({ length: 200 }, () => newUser()));
  const asks = requesters.map((_, i) => (i % 3) + 1); // demand 399 > supply 300
  const responses = await Promise.all(requesters.map(async (r, i) => {
    const url = `${base}/v1/coins/fetch?target_user_id=${owner.id}&coin_category=GOLD&count=${asks[i]}`;
    const res = await fetch(url, { headers: { authorization: `Bearer ${r.token}` } });
    return { status: res.status, body: (await res.json()) as { coins: { key_id: string }[] } };
  }));
  expect(responses.every((r) => r.status === 200)).toBe(true);
  responses.forEach((r, i) => expect(r.body.coins.length).toBeLessThanOrEqual(asks[i]!));
  const keys = responses.flatMap((r) => r.body.coins.map((c) => c.key_id));
  expect(keys).toHaveLength(300);
  expect(new Set(keys).size).toBe(300);
  const count = await fetch(`${base}/v1/coins/count`, { headers: { authorization: `Bearer ${owner.token}` } });
  expect(await count.json()).toEqual(inventory(0, 0, 0));
}

test("200 concurrent HTTP fetches against one user's coins (default configuration): no key_id twice, supply exactly handed out", drain);

test("the same with rate limits off (benchmark mode)", async () => {
  serve({ AQM_RATE_LIMITS: "off" });
  await drain();
});

test("3 server processes, 200 concurrent fetches of one pair: exactly the pair quota is handed out, no key twice", async () => {
  const servers: ServerProcess[] = await Promise.all([0, 1, 2].map(() => startServer({ ...db.serverEnv, AQM_CRON: "off", AQM_RATE_FETCH_PER_MIN: "100000" })));
  try {
    const [owner, thief] = await Promise.all([newUser(), newUser()]);
    for (let i = 0; i < 500; i += 100) {
      const res = await fetch(`${servers[0]!.url}/v1/coins/upload`, {
        method: "POST", headers: { authorization: `Bearer ${owner.token}`, "content-type": "application/json" },
        body: JSON.stringify({ coins: makeCoins(100, "BRONZE") }),
      });
      expect(res.status).toBe(200);
    }
    const responses = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const url = `${servers[i % 3]!.url}/v1/coins/fetch?target_user_id=${owner.id}&coin_category=BRONZE&count=${(i % 3) + 1}`;
      const res = await fetch(url, { headers: { authorization: `Bearer ${thief.token}` } });
      return { status: res.status, body: (await res.json()) as { coins?: { key_id: string }[] } };
    }));
    expect(responses.every((r) => r.status === 200 || r.status === 429)).toBe(true);
    const keys = responses.flatMap((r) => r.body.coins?.map((c) => c.key_id) ?? []);
    expect(keys).toHaveLength(100); // AQM_PAIR_QUOTA's default
    expect(new Set(keys).size).toBe(100);
    expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL AND user_id = ${owner.id}::uuid`)[0]!.n).toBe(100);
  } finally {
    for (const s of servers) s.proc.kill("SIGTERM");
    await Promise.all(servers.map((s) => s.exited));
  }
}, 60_000);
