import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { migrate } from "../../src/db/migrate.ts";
import { createPool, type Sql } from "../../src/db/pool.ts";
import { newUser, type User } from "../helpers/app.ts";
import { makeCoins } from "../helpers/coins.ts";
import { startServer, type ServerProcess } from "../helpers/server.ts";
import { waitFor } from "../helpers/wait.ts";
import { startHaCluster, type HaCluster } from "./cluster.ts";
import { keyedLoad, report, type KeyedLoad } from "./load.ts";

// The failover proof (CI: .ci/failover.sh; `bun test ./tests/ha/failover.ha.ts`). A Patroni 3 +
// etcd 3.4 cluster — a primary and two standbys, synchronous replication that fails closed
// (synchronous_mode_strict) — two server processes whose DATABASE_URL names all three hosts, and
// 16 clients claiming with an Idempotency-Key each, retrying with it on the other instance after
// a 503 or a network error. Three scenarios: the primary killed hard, an orchestrated switchover,
// and the synchronous standby's WAL receiver frozen (commits wait, deadlines expire) before the
// primary is killed. Each asserts 0 duplicates, 0 keyed coins lost, every answer within the
// deadline bound, and the time to the first 200; each writes its figures to bench/results/.

const WAIT_MS = 1500;
/** The deadline, the cancel's grace, and a second for a shared 2-core machine (README, "Bounded answers"). */
const BOUND_MS = WAIT_MS + 250 + 1000;

let cluster: HaCluster;
let sql: Sql;
let servers: ServerProcess[] = [];
let owner: User;
let tokens: string[];
/** Every coin any claim of any scenario received, with the claim's key. */
const handedOut = new Map<string, string>();
const results: Record<string, unknown>[] = [];
const log = (line: string) => process.env.HA_VERBOSE && console.log(`ha: ${line}`);

beforeAll(async () => {
  cluster = await startHaCluster({ log });
  await cluster.waitHealthy(90_000);
  sql = createPool(cluster.url, { AQM_DB_POOL_MAX: 2 });
  await migrate(sql);
  const env = {
    DATABASE_URL: cluster.url, AQM_DB_POOL_WAIT_MS: String(WAIT_MS), AQM_PAIR_QUOTA: "1000000",
    AQM_RATE_FETCH_PER_MIN: "1000000", AQM_RATE_UPLOAD_PER_MIN: "1000000",
    AQM_CRON: "on", AQM_CRON_PURGE_STALE: "* * * * * *", AQM_CRON_HARD_DELETE: "* * * * * *",
  };
  servers = [await startServer(env), await startServer(env)];
  owner = await newUser();
  for (let i = 0; i < 80; i++) {
    const res = await fetch(`${servers[i % 2]!.url}/v1/coins/upload`, {
      method: "POST", headers: { authorization: `Bearer ${owner.token}`, "content-type": "application/json" },
      body: JSON.stringify({ coins: makeCoins(100, "BRONZE") }),
    });
    expect(res.status).toBe(200);
  }
  tokens = (await Promise.all(Array.from({ length: 16 }, () => newUser()))).map((u) => u.token);
}, 180_000);

afterAll(async () => {
  for (const s of servers) s.proc.kill("SIGKILL");
  await sql?.end({ timeout: 1 });
  await cluster?.stop();
  if (results.length && process.env.HA_SAVE) {
    const dir = join(import.meta.dir, "..", "..", "bench", "results");
    mkdirSync(dir, { recursive: true });
    const at = new Date().toISOString().replace(/:/g, "-").replace(/\..*/, "Z");
    const config = "default (AQM_RATE_LIMITS=on; the pair quota checked and spent by every claim, AQM_PAIR_QUOTA=1000000 and the "
      + "per-user buckets widened: 16 clients claim one owner's coins), AQM_DB_POOL_WAIT_MS=1500, 2 server processes, "
      + "16 clients claiming 1 BRONZE coin each with an Idempotency-Key, retried on the other instance";
    writeFileSync(join(dir, `${at}-failover.json`), JSON.stringify({ at, config, timing: cluster.timing, deadlineMs: WAIT_MS, scenarios: results }, null, 2));
  }
});

/** A new leader, other than `old`: polled every 100 ms (the time is at most that late). */
async function promotion(old: string): Promise<{ leader: string; at: number }> {
  const leader = await waitFor(async () => {
    const now = await cluster.leader().catch(() => null);
    return now && now !== old ? now : null;
  }, "a new leader", 90_000, 100);
  return { leader, at: performance.now() };
}

/** Runs `disrupt` under keyed load; checks and reports what the clients saw. */
async function scenario(name: string, disrupt: (leader: string) => Promise<{ eventAt: number; killed?: string }>, maxFirstOkAfterEventMs: number) {
  const leader = await cluster.waitHealthy(90_000);
  const load: KeyedLoad = keyedLoad(() => servers, owner.id, tokens);
  await waitFor(() => load.received.size >= 50, "claims before the event", 30_000);
  const before: [number, number] = [performance.now(), 0];
  await Bun.sleep(2000); // the rate before: a measured window
  before[1] = performance.now();
  const { eventAt, killed } = await disrupt(leader);
  const promoted = await promotion(leader);
  await waitFor(() => load.attempts.some((a) => a.status === 200 && a.start >= promoted.at), "a 200 after the promotion", 30_000);
  const after: [number, number] = [performance.now(), 0];
  await Bun.sleep(2000); // the rate after: a measured window
  after[1] = performance.now();
  await load.stop();

  const figures = { scenario: name, ...report(load, { eventAt, promotedAt: promoted.at, before, after }), duplicates: 0, lost: 0 };
  // none twice: a coin reached one claim (one Idempotency-Key) only, in this scenario and all before it
  for (const [key, coins] of load.received) {
    for (const coin of coins) {
      if (handedOut.has(coin) && handedOut.get(coin) !== key) figures.duplicates++;
      handedOut.set(coin, key);
    }
  }
  // none lost: the coins claimed on the primary that survived are exactly those handed out
  const claimed = (await sql<{ key_id: string }[]>`SELECT key_id FROM coin_inventory WHERE fetched_at IS NOT NULL`).map((r) => r.key_id);
  figures.lost = claimed.filter((k) => !handedOut.has(k)).length;
  const vanished = [...handedOut.keys()].filter((k) => !claimed.includes(k));
  results.push({ ...figures, vanished: vanished.length });
  console.log(`failover ${JSON.stringify(results.at(-1))}`);

  if (load.odd.length) {
    for (const s of servers) console.log(`server log: ${JSON.stringify(s.lines.filter((l) => l.level === "error").slice(-5))}\n${s.stderr().slice(-3000)}`);
  }
  expect(load.odd).toEqual([]);
  expect(load.gaveUp).toEqual([]);
  expect(figures.duplicates).toBe(0);
  expect(figures.lost).toBe(0);
  expect(vanished).toEqual([]); // every coin answered 200 is claimed on the node that survived
  // every request answered (the servers stay up: no network error) within the deadline bound
  expect(load.attempts.filter((a) => a.status === 0).length).toBe(0);
  expect(figures.slowestMs).toBeLessThanOrEqual(BOUND_MS);
  expect(figures.firstOkAfterPromotionMs!).toBeLessThanOrEqual(5000);
  expect(figures.firstOkAfterEventMs).toBeLessThanOrEqual(maxFirstOkAfterEventMs);
  if (killed) {
    await cluster.start(killed);
    await cluster.waitHealthy(120_000);
  }
}

test("(a) the primary killed hard (Patroni and PostgreSQL): a standby is promoted and both instances serve again — 0 duplicates, 0 keyed coins lost, every answer within the deadline bound, first 200 within 5 s of the promotion and 30 s of the death", async () => {
  await scenario("hard kill", async (leader) => {
    await cluster.kill(leader);
    return { eventAt: performance.now(), killed: leader }; // dead from here
  }, 30_000);
}, 240_000);

test("(b) an orchestrated switchover: 0 duplicates, 0 keyed coins lost, every answer within the deadline bound, first 200 within 5 s of the promotion", async () => {
  await scenario("switchover", async () => {
    const eventAt = performance.now();
    await cluster.switchover();
    return { eventAt };
  }, 10_000);
}, 240_000);

test("(c) the synchronous standby's WAL receiver frozen: commits wait, deadlines expire (503 within the bound), then the primary dies and the standby is promoted — every coin answered 200 is claimed on the promoted node, 0 duplicates, 0 keyed coins lost", async () => {
  let frozenAt = 0;
  await scenario("frozen standby, then the primary killed", async (leader) => {
    const sync = (await cluster.syncStandby())!;
    const { walreceiver } = await cluster.pids(sync);
    expect(walreceiver).not.toBeNull();
    process.kill(walreceiver!, "SIGSTOP");
    frozenAt = performance.now();
    try {
      // commits wait for the standby: the claims' deadlines expire
      await waitFor(async () => (await sql`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'`.catch(() => [])).length > 0, "commits waiting for the standby", 15_000);
      await Bun.sleep(3 * WAIT_MS); // the freeze itself: several deadlines' worth of claims answered 503
    } catch (error) {
      process.kill(walreceiver!, "SIGCONT");
      throw error;
    }
    await cluster.kill(leader);
    const eventAt = performance.now(); // dead from here
    process.kill(walreceiver!, "SIGCONT");
    return { eventAt, killed: leader };
  }, 30_000);
  expect(frozenAt).toBeGreaterThan(0);
  expect(results.at(-1)!.answers503).toBeGreaterThan(0); // the freeze did make deadlines expire
}, 240_000);

test("after the failovers: a waiting claim is woken by an upload on the other instance (LISTEN followed the primary), and each maintenance job ran once per tick on the new primary", async () => {
  const partner = await newUser();
  const requester = await newUser();
  const started = performance.now();
  const waiting = fetch(`${servers[0]!.url}/v1/coins/claim`, {
    method: "POST", headers: { authorization: `Bearer ${requester.token}`, "content-type": "application/json" },
    body: JSON.stringify({ target_user_id: partner.id, want: { bronze: 1 }, wait_ms: 20_000 }),
  });
  const admin = await newUser({ admin: true });
  await waitFor(async () => (await (await fetch(`${servers[0]!.url}/metrics`, { headers: { authorization: `Bearer ${admin.token}` } })).text())
    .includes("aqm_claim_waiting 1"), "the claim waiting for a stock change");
  const up = await fetch(`${servers[1]!.url}/v1/coins/upload`, {
    method: "POST", headers: { authorization: `Bearer ${partner.token}`, "content-type": "application/json" },
    body: JSON.stringify({ coins: makeCoins(1, "BRONZE") }),
  });
  expect(up.status).toBe(200);
  const res = await waiting;
  expect(res.status).toBe(200);
  expect(((await res.json()) as { coins: unknown[] }).coins.length).toBe(1);
  expect(performance.now() - started).toBeLessThan(10_000);

  // the cron ticks: after the last promotion, each job still runs, and never twice for one tick
  const runs = servers.flatMap((s) => s.lines.filter((l) => typeof l.job === "string" && typeof l.tick === "string" && l.deleted !== undefined));
  for (const job of ["purge-stale", "hard-delete"]) {
    const ticks = runs.filter((l) => l.job === job).map((l) => l.tick as string);
    expect(new Set(ticks).size).toBe(ticks.length);
    const recent = ticks.filter((t) => Date.parse(t) > Date.now() - 5000);
    expect(recent.length).toBeGreaterThan(0);
  }
}, 60_000);
