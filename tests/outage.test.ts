import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { request as httpRequest } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from "../src/db/embedded.ts";
import { newUser } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { startServer, type ServerProcess } from "./helpers/server.ts";
import { waitFor } from "./helpers/wait.ts";

// PostgreSQL crashes (immediate shutdown) under claim load and comes back, with two server
// processes on it. A PostgreSQL of its own: the suite's shared one must not go down.
let pg: EmbeddedDatabase;
let dataDir: string;
let servers: ServerProcess[];

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "aqm-outage-"));
  pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
  const env = { DATABASE_URL: pg.url, AQM_CRON: "off", AQM_DB_POOL_WAIT_MS: "1500", AQM_RATE_FETCH_PER_MIN: "1000000", AQM_RATE_UPLOAD_PER_MIN: "1000000" };
  servers = [await startServer(env), await startServer(env)];
}, 60_000);

afterAll(async () => {
  for (const s of servers ?? []) s.proc.kill("SIGKILL");
  await pg?.stop().catch(() => {});
  rmSync(dataDir, { recursive: true, force: true });
});

interface Answer {
  server: number;
  /** Which of the load's clients sent it. */
  client: number;
  /** Its Idempotency-Key (a keyed claim; retries of one claim send the same one). */
  claimKey?: string;
  start: number;
  end: number;
  status: number;
  retryAfter?: string;
  keys: string[];
  /** A keyed 200 without X-Pair-Quota-Remaining: the replay of what an earlier attempt with its key claimed. */
  replay?: boolean;
  error?: string;
}

/** One request on a new connection; node:http never sends it twice. */
function send(url: string, { token, body, headers = {} }: { token?: string; body?: string; headers?: Record<string, string> } = {}):
  Promise<{ status: number; retryAfter?: string; quotaRemaining?: string; body: string; error?: string }> {
  return new Promise((resolve) => {
    const req = httpRequest(url, {
      method: body === undefined ? "GET" : "POST", agent: false,
      headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { "content-type": "application/json" }) },
    }, (res) => {
      let text = "";
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({
        status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined,
        quotaRemaining: res.headers["x-pair-quota-remaining"] as string | undefined, body: text,
      }));
      res.on("error", (e) => resolve({ status: 0, body: text, error: e.message }));
    });
    req.on("error", (e) => resolve({ status: 0, body: "", error: e.message }));
    req.end(body);
  });
}

const get = (url: string, token?: string) => send(url, { token });

/** How long a keyed client goes on retrying its last claim once the load stops (the database is back by then). */
const GIVE_UP_MS = 10_000;

/**
 * Claims of one BRONZE coin from 12 clients over both instances, until stopped; every answer
 * recorded. A client for which `keyed(i)` holds claims with POST /v1/coins/claim and an
 * Idempotency-Key, and retries a claim with the same key after a 503 or a network error until it
 * gets a 200 (once the load stops, for GIVE_UP_MS at most: then it gives that claim up); the
 * others use GET /v1/coins/fetch, which takes no key, and move on after a failure.
 */
async function claimLoad(keyed: (client: number) => boolean) {
  const owner = await newUser();
  const up = await fetch(`${servers[0]!.url}/v1/coins/upload`, {
    method: "POST", headers: { authorization: `Bearer ${owner.token}`, "content-type": "application/json" },
    body: JSON.stringify({ coins: makeCoins(100, "BRONZE") }),
  });
  expect(up.status).toBe(200);
  const requesters = await Promise.all(Array.from({ length: 12 }, () => newUser()));
  const answers: Answer[] = [];
  const gaveUp: string[] = [];
  let running = true;
  let stoppedAt = Infinity;
  const claimBody = JSON.stringify({ target_user_id: owner.id, want: { bronze: 1 }, fallback: "none" });
  const loops = requesters.map(async (r, client) => {
    const server = client % 2;
    const base = servers[server]!.url;
    while (running) {
      const claimKey = keyed(client) ? randomUUID() : undefined;
      for (;;) {
        const start = performance.now();
        const res = claimKey
          ? await send(`${base}/v1/coins/claim`, { token: r.token, body: claimBody, headers: { "idempotency-key": claimKey } })
          : await get(`${base}/v1/coins/fetch?target_user_id=${owner.id}&coin_category=BRONZE&count=1`, r.token);
        const keys = res.status === 200 ? (JSON.parse(res.body) as { coins: { key_id: string }[] }).coins.map((c) => c.key_id) : [];
        const replay = claimKey !== undefined && res.status === 200 && res.quotaRemaining === undefined;
        answers.push({ server, client, claimKey, start, end: performance.now(), status: res.status, retryAfter: res.retryAfter, keys, replay, error: res.error });
        if (!claimKey || (res.status !== 503 && res.status !== 0)) break; // unkeyed: no retry; keyed: a 200 (anything else fails the test)
        if (performance.now() - stoppedAt > GIVE_UP_MS) {
          gaveUp.push(claimKey);
          break;
        }
        await Bun.sleep(20); // the client's pace (not Retry-After: the test wants many requests during the outage)
      }
      await Bun.sleep(20); // the client's pace
    }
  });
  await waitFor(() => answers.filter((a) => a.status === 200).length >= 10, "claims before the outage");
  return {
    answers, requesters, gaveUp,
    async stop() {
      running = false;
      stoppedAt = performance.now();
      await Promise.all(loops);
    },
  };
}

/**
 * For a wait that timed out: the answers since `since` by status, per instance, and the servers'
 * stderr (an instance that stopped answering says why there), then the error again.
 */
const explain = (answers: Answer[], since: number, what: string) => (error: unknown): never => {
  const after = answers.filter((a) => a.start > since);
  console.error(`answers after ${what} by status, per instance:`, JSON.stringify([0, 1].map((s) => after.filter((a) => a.server === s)
    .reduce((m, a) => ({ ...m, [a.status]: (m[a.status] ?? 0) + 1 }), {} as Record<number, number>))), servers.map((s) => s.stderr()));
  throw error;
};

/** How many coins are claimed in the database that no 200 answer carried. */
async function claimedUnserved(answers: Answer[]): Promise<number> {
  const served = answers.flatMap((a) => a.keys);
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL AND NOT key_id = ANY(${served})`;
    return row!.n;
  } finally {
    await sql.end();
  }
}

/**
 * The coins claimed in the database that no 200 answer carried, with who claimed them; checks
 * first that no coin was served twice and that every served coin is claimed. Empties the table.
 */
async function lostCoins(answers: Answer[]): Promise<{ key_id: string; fetched_by: string }[]> {
  const served = answers.flatMap((a) => a.keys);
  expect(served.length - new Set(served).size).toBe(0); // no coin in two 200 answers
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    const claimed = await sql<{ key_id: string; fetched_by: string }[]>`SELECT key_id, fetched_by::text FROM coin_inventory WHERE fetched_at IS NOT NULL`;
    const claimedKeys = new Set(claimed.map((c) => c.key_id));
    expect(served.filter((k) => !claimedKeys.has(k))).toEqual([]);
    await sql`DELETE FROM coin_inventory`;
    const servedKeys = new Set(served);
    return claimed.filter((c) => !servedKeys.has(c.key_id));
  } finally {
    await sql.end();
  }
}

test("during a PostgreSQL crash every request is answered 503 within the deadline plus 1 s, and each instance serves again within a second of its return; "
  + "a keyed claim retried with its Idempotency-Key loses no coin, an unkeyed one at most the one coin its client had in flight, and no coin is served twice", async () => {
  const keyed = (client: number) => client % 4 < 2; // 6 keyed clients and 6 unkeyed ones, half of each on either instance
  const { answers, requesters, gaveUp, stop } = await claimLoad(keyed);
  const crashedAt = performance.now();
  await pg.crash();
  const healthDuringOutage: { status: number; ms: number }[] = [];
  const probes = (async () => {
    while (performance.now() - crashedAt < 3500) {
      const start = performance.now();
      const res = await get(`${servers[healthDuringOutage.length % 2]!.url}/v1/health`);
      healthDuringOutage.push({ status: res.status, ms: performance.now() - start });
      await Bun.sleep(200); // the probe's pace
    }
  })();
  await Bun.sleep(4000); // the scenario: PostgreSQL stays down for 4 s
  await probes;
  await pg.start();
  const backAt = performance.now();
  // every client served again (a keyed client's first 200 after the return answers the claim it had pending)
  await waitFor(() => requesters.every((_, c) => answers.some((a) => a.client === c && a.status === 200 && a.start > backAt)), "a 200 for every client", 10_000)
    .catch(explain(answers, backAt, "the return"));
  await stop();

  // every request got an HTTP answer: nothing was dropped; each a 200 or a 503
  expect(answers.filter((a) => a.error)).toEqual([]);
  expect(answers.filter((a) => a.status !== 200 && a.status !== 503)).toEqual([]);
  // while PostgreSQL was down: 503 with Retry-After, within AQM_DB_POOL_WAIT_MS (1.5 s) plus 1 s
  const during = answers.filter((a) => a.start > crashedAt + 50 && a.end < backAt);
  expect(during.length).toBeGreaterThan(10);
  for (const a of during) {
    expect(a.status).toBe(503);
    expect(Number(a.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(a.end - a.start).toBeLessThanOrEqual(1500 + 1000);
  }
  expect(healthDuringOutage.length).toBeGreaterThan(3);
  for (const h of healthDuringOutage) {
    expect(h.status).toBe(503);
    expect(h.ms).toBeLessThanOrEqual(1000);
  }
  // each instance serves again within a second of PostgreSQL's return
  for (const s of [0, 1]) {
    const first = answers.filter((a) => a.server === s && a.status === 200 && a.start > backAt).sort((a, b) => a.end - b.end)[0]!;
    expect(first.end - backAt, `instance ${s}'s first 200 after the return (its stderr: ${servers[s]!.stderr().slice(-2000)})`).toBeLessThanOrEqual(1000);
  }
  // every keyed claim ended in a 200 (none given up), one 200 per key
  expect(gaveUp).toEqual([]);
  const keyedOk = answers.filter((a) => a.claimKey && a.status === 200).map((a) => a.claimKey!);
  expect(keyedOk.length - new Set(keyedOk).size).toBe(0);
  const retried = new Set(answers.filter((a) => a.claimKey && a.status !== 200).map((a) => a.claimKey)).size;
  const replayed = answers.filter((a) => a.replay).length; // a commit the crash cut off, answered on the retry
  // no coin in two 200 answers; the coins claimed in the database that no 200 carried: none of a
  // keyed client's; of an unkeyed client, at most the one its request in flight at the crash
  // claimed (committed as PostgreSQL went down, its answer lost: README, "What can still be lost")
  const lost = await lostCoins(answers);
  const lostOf = (client: number) => lost.filter((c) => c.fetched_by === requesters[client]!.id).length;
  expect(lost.filter((c) => !requesters.some((r) => r.id === c.fetched_by))).toEqual([]);
  for (let c = 0; c < requesters.length; c++) expect(lostOf(c), `client ${c}${keyed(c) ? " (keyed)" : ""}`).toBeLessThanOrEqual(keyed(c) ? 0 : 1);
  console.log(`outage test (crash): ${retried} keyed claim(s) retried with their key, all answered (${replayed} with what an attempt cut off by the crash had claimed); `
    + `${lost.length} coin(s) of unkeyed claims committed as PostgreSQL crashed, answer lost`);
}, 60_000);

test("a PostgreSQL that stops answering (frozen, connections open) gets every request answered 503 within the deadline plus 1 s; what it was running is rolled back, not committed after the answer", async () => {
  const { answers, stop } = await claimLoad(() => false); // GET /v1/coins/fetch: no key, its coins go back in stock
  const postmaster = pg.pid()!;
  const frozenAt = performance.now();
  // the postmaster first, then its children: once it is stopped it forks no backend that would
  // escape the freeze (a list read before could miss one forked meanwhile, which then answers)
  process.kill(postmaster, "SIGSTOP");
  const cluster = [postmaster, ...(await Bun.file(`/proc/${postmaster}/task/${postmaster}/children`).text()).split(" ").filter(Boolean).map(Number)];
  for (const pid of cluster.slice(1)) process.kill(pid, "SIGSTOP");
  await Bun.sleep(6000); // the scenario: PostgreSQL stays frozen for 6 s
  for (const pid of cluster) process.kill(pid, "SIGCONT");
  const thawedAt = performance.now();
  await waitFor(() => [0, 1].every((s) => answers.some((a) => a.server === s && a.status === 200 && a.start > thawedAt)), "a 200 from each instance", 10_000).catch(explain(answers, thawedAt, "the thaw"));
  await stop();

  if (answers.some((a) => a.error)) console.error(`frozen ${frozenAt}–${thawedAt}; the servers' stderr:`, servers.map((s) => s.stderr()));
  expect(answers.filter((a) => a.error)).toEqual([]);
  const during = answers.filter((a) => a.start > frozenAt + 50 && a.end < thawedAt);
  expect(during.length).toBeGreaterThanOrEqual(12);
  for (const a of during) {
    expect(a.status).toBe(503);
    expect(a.end - a.start).toBeLessThanOrEqual(1500 + 1000); // AQM_DB_POOL_WAIT_MS (1.5 s) plus 1 s
  }
  // statements at the frozen database when their answers were given up: cancelled, or stopped by
  // statement_timeout, when it resumes — or they commit after all (the cancel came too late, or
  // they were frozen inside their commit); then their coins go back in stock. Nothing is lost.
  await waitFor(async () => (await claimedUnserved(answers)) === 0, "the coins of late claims back in stock", 5000, 100);
  expect(await lostCoins(answers)).toEqual([]);
  const late = servers.map((s) => s.stderr().split("statement finished after its answer was given up").length - 1);
  console.log(`outage test (frozen): ${late[0]! + late[1]!} statement(s) finished after their answer was given up; no coin lost`);
}, 60_000);
