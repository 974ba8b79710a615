import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { newUser, type User } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { postKeyed as post } from "./helpers/http.ts";
import { startServer, type ServerProcess } from "./helpers/server.ts";
import { waitFor } from "./helpers/wait.ts";

// Three server processes under keyed claim load; one of them is killed with SIGKILL (no drain, no
// returns, connections cut mid-statement) three times and started again. Clients retry a failed
// claim with the same Idempotency-Key on another instance, as the README's client flows say.

const db = useTestDatabase();
const env = () => ({
  ...db.serverEnv, AQM_CRON: "off", AQM_PAIR_QUOTA: "1000000", AQM_RATE_FETCH_PER_MIN: "1000000", AQM_RATE_UPLOAD_PER_MIN: "1000000",
});
const servers: ServerProcess[] = [];

beforeAll(async () => {
  servers.push(...(await Promise.all([startServer(env()), startServer(env()), startServer(env())])));
}, 60_000);

afterAll(() => {
  for (const s of servers) s.proc.kill("SIGKILL");
});

test("kill -9 of a server under keyed claim load: clients retrying with their Idempotency-Key on another instance end with exactly the coins claimed for them — 0 lost, 0 twice", async () => {
  const owner = await newUser();
  const stock = 3000;
  for (let i = 0; i < stock / 100; i++) {
    const res = await fetch(`${servers[i % 3]!.url}/v1/coins/upload`, {
      method: "POST", headers: { authorization: `Bearer ${owner.token}`, "content-type": "application/json" },
      body: JSON.stringify({ coins: makeCoins(100, "BRONZE") }),
    });
    expect(res.status).toBe(200);
  }
  const clients: User[] = await Promise.all(Array.from({ length: 12 }, () => newUser()));
  /** Per Idempotency-Key, the coins its claim received (once, whatever the retries). */
  const received = new Map<string, string[]>();
  const failures = { network: 0, unavailable: 0, other: [] as string[] };
  let running = true;
  let gaveUp = 0;
  const body = JSON.stringify({ target_user_id: owner.id, want: { bronze: 1 }, fallback: "none" });

  const loops = clients.map(async (client, c) => {
    let at = c % 3;
    while (running) {
      const key = randomUUID();
      // retry the same key on the next instance until a 200; after the load stops, for 20 s at most
      for (let attempt = 0; ; attempt++) {
        const res = await post(`${servers[at]!.url}/v1/coins/claim`, client.token, key, body);
        if (res.status === 200) {
          received.set(key, (JSON.parse(res.body) as { coins: { key_id: string }[] }).coins.map((k) => k.key_id));
          break;
        }
        if (res.status === 0) failures.network++;
        else if (res.status === 503) failures.unavailable++;
        else failures.other.push(`${res.status} ${res.body.slice(0, 200)}`);
        at = (at + 1) % 3;
        if (!running && attempt > 200) {
          gaveUp++;
          break;
        }
        await Bun.sleep(Math.min(20 * 2 ** Math.min(attempt, 4), 200)); // client back-off between retries
      }
    }
  });

  // three kills, each of another instance, each started again once it is dead
  for (let k = 0; k < 3; k++) {
    const claimsBefore = received.size;
    await waitFor(() => received.size >= claimsBefore + 150, "claims served before the kill", 20_000);
    const victim = servers[k]!;
    victim.proc.kill("SIGKILL");
    await victim.exited;
    servers[k] = await startServer(env());
  }
  await waitFor(() => received.size >= 150 * 3 + 150, "claims served after the last restart", 20_000);
  running = false;
  await Promise.all(loops);

  console.log(`kill test: ${received.size} claims, ${failures.network} network errors and ${failures.unavailable} 503s retried`);
  expect(failures.other).toEqual([]);
  expect(gaveUp).toBe(0);
  expect(failures.network).toBeGreaterThan(0); // the kills did cut requests in flight
  const handedOut = [...received.values()].flat();
  expect(handedOut.length).toBe(received.size); // one coin per claim
  expect(new Set(handedOut).size).toBe(handedOut.length); // none twice
  const claimed = (await db.sql<{ key_id: string }[]>`SELECT key_id FROM coin_inventory WHERE fetched_at IS NOT NULL`).map((r) => r.key_id);
  // every coin claimed in the database reached the client its claim was for: none lost
  expect(claimed.sort()).toEqual([...handedOut].sort());
}, 120_000);
