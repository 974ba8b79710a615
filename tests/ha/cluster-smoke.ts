// Smoke run of the HA harness (tests/ha/cluster.ts), printing the times a client sees:
//
//   bun tests/ha/cluster-smoke.ts            # as root or as a user that may run PostgreSQL
//   HA_TTL=20 HA_LOOP_WAIT=1 HA_RETRY_TIMEOUT=5 bun tests/ha/cluster-smoke.ts
//
// Starts the cluster, writes through the multi-host URL (target_session_attrs=primary), does a
// switchover and a hard kill of the leader (timing until a write is acknowledged by the new
// leader through the same URL), starts the killed node again until it is a healthy replica, checks
// that every acknowledged write is there, stops everything. Exit 0, or 1 with the reason.
import postgres from "postgres";
import { startHaCluster, type HaCluster } from "./cluster.ts";

const started = Date.now();
const stamp = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s`;
const say = (line: string) => console.log(`[${stamp()}] ${line}`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const numberEnv = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);
const verbose = process.env.HA_VERBOSE === "1";

let cluster: HaCluster | undefined;
const overall = setTimeout(() => {
  console.error(`FAIL: the smoke run takes longer than 6 minutes${cluster ? `\n${cluster.logTail(40)}` : ""}`);
  process.exit(1);
}, 360_000);

try {
  cluster = await startHaCluster({
    ttl: numberEnv("HA_TTL"), loopWait: numberEnv("HA_LOOP_WAIT"), retryTimeout: numberEnv("HA_RETRY_TIMEOUT"),
    log: verbose ? (line) => say(`harness: ${line}`) : undefined,
  });
  const c = cluster;
  const { ttl, loopWait, retryTimeout } = c.timing;
  say(`cluster up in ${c.dir} (ttl ${ttl}, loop_wait ${loopWait}, retry_timeout ${retryTimeout}); `
    + c.nodes.map((n) => `${n.name} pg ${n.pgPort} rest ${n.restPort}`).join("; "));
  say(`leader: ${await c.leader()}, sync standby: ${await c.syncStandby()}`);
  const portOf = new Map(c.nodes.map((n) => [n.pgPort, n.name]));

  // The measuring client reconnects every 100 ms. postgres.js's default backoff grows with every
  // failed connection (0.5–1 × min(3^n / 100, 20) s): after an outage it can add up to 20 s of its
  // own, which the second client (all defaults but connect_timeout) shows.
  const clients = {
    tuned: { sql: postgres(c.url, { max: 2, connect_timeout: 2, backoff: () => 0.1, onnotice: () => {} }), options: { backoff: () => 0.1 } as { backoff?: () => number } },
    defaults: { sql: postgres(c.url, { max: 2, connect_timeout: 2, onnotice: () => {} }), options: {} as { backoff?: () => number } },
  };
  type Client = keyof typeof clients;
  await clients.tuned.sql`create table ha_smoke (id bigint primary key, node text not null, at timestamptz not null default now())`;
  let nextId = 1;
  const acknowledged: number[] = [];

  /** One insert through the multi-host URL: the node that acknowledged it, or the error. */
  const write = async (client: Client = "tuned"): Promise<{ node: string } | { error: string }> => {
    const id = nextId++;
    const { sql } = clients[client];
    const attempt = sql`insert into ha_smoke (id, node) values (${id}, inet_server_port()::text) returning inet_server_port() as port`
      .then(([row]) => {
        acknowledged.push(id);
        return { node: portOf.get(Number(row?.port)) ?? `port ${row?.port}` };
      }, (error: Error & { code?: string }) => ({ error: `${error.code ?? ""} ${error.message}`.trim() }));
    // A commit on a new leader waits (synchronous_mode_strict) until a synchronous standby streams
    // from it: that wait is part of the time measured, so an attempt is given long.
    const result = await Promise.race([attempt, sleep(30_000).then(() => null)]);
    if (result) return result;
    clients[client].sql = postgres(c.url, { max: 2, connect_timeout: 2, onnotice: () => {}, ...clients[client].options });
    void sql.end({ timeout: 0 }).catch(() => {});
    return { error: "no answer within 30 s" };
  };

  /** Polls Patroni's view until the leader is another node than `from`: when that happened (ms after `since`). */
  const watchLeader = (since: number, from: string) => {
    let done = false;
    const seen = (async () => {
      while (!done) {
        const name = await c.leader();
        if (name && name !== from) return { ms: Date.now() - since, name };
        await sleep(100);
      }
      return null;
    })();
    return { seen, cancel: () => (done = true) };
  };

  /** Writes until one is acknowledged by a node other than `not`; the time from `since`. */
  const firstWrite = async (since: number, not: string, client: Client = "tuned", limitMs = 120_000) => {
    let attempts = 0;
    let lastError = "";
    while (Date.now() - since < limitMs) {
      attempts++;
      const result = await write(client);
      if ("node" in result && result.node !== not) return { ms: Date.now() - since, node: result.node, attempts, lastError };
      if ("error" in result) lastError = result.error;
      await sleep(50);
    }
    throw new Error(`no write acknowledged by a node other than ${not} within ${limitMs} ms (last error: ${lastError})`);
  };
  const both = async (since: number, not: string) => {
    const [tuned, defaults] = await Promise.all([firstWrite(since, not, "tuned"), firstWrite(since, not, "defaults")]);
    return { ...tuned, defaultsMs: defaults.ms };
  };

  const first = await write();
  if (!("node" in first)) throw new Error(`the first write failed: ${first.error}`);
  say(`write acknowledged by ${first.node} (the leader)`);

  // --- switchover ---------------------------------------------------------------------------------
  const before = (await c.leader())!;
  const target = (await c.syncStandby())!;
  say(`switchover ${before} → ${target} ...`);
  const t0 = Date.now();
  const swWatch = watchLeader(t0, before);
  await c.switchover(target);
  const restMs = Date.now() - t0;
  const sw = await both(t0, before);
  if (sw.node !== target) throw new Error(`after the switchover to ${target}, ${sw.node} acknowledged the write`);
  const swLeader = await swWatch.seen;
  say(`SWITCHOVER: leader key on ${swLeader?.name} after ${seconds(swLeader?.ms ?? NaN)}; REST call returned after ${seconds(restMs)}; first write acknowledged by ${sw.node} `
    + `${seconds(sw.ms)} after the call (${sw.attempts} attempts${sw.lastError ? `; last error: ${sw.lastError}` : ""}); `
    + `with postgres.js's default backoff: ${seconds(sw.defaultsMs)}`);
  const afterSwitch = await c.waitHealthy(60_000, 2);
  say(`healthy again: leader ${afterSwitch}, sync standby ${await c.syncStandby()}`);

  // --- hard kill of the leader ----------------------------------------------------------------------
  const victim = (await c.leader())!;
  const heir = await c.syncStandby();
  const victimPids = await c.pids(victim);
  say(`kill -9 of ${victim} (postmaster ${victimPids.postmaster}; sync standby ${heir}) ...`);
  const k0 = Date.now();
  const killWatch = watchLeader(k0, victim);
  await c.kill(victim);
  const killMs = Date.now() - k0;
  const kw = await both(k0, victim);
  const elected = await Promise.race([killWatch.seen, sleep(10_000).then(() => null)]);
  killWatch.cancel();
  const newLeader = elected?.name ?? null;
  say(`HARD KILL: processes dead after ${seconds(killMs)}; ${newLeader} leader after ${seconds(elected?.ms ?? NaN)}; first write acknowledged by ${kw.node} ${seconds(kw.ms)} after the kill `
    + `(${kw.attempts} attempts${kw.lastError ? `; last error: ${kw.lastError}` : ""}); with postgres.js's default backoff: ${seconds(kw.defaultsMs)}`);
  if (kw.node !== newLeader) throw new Error(`the write was acknowledged by ${kw.node} but the leader is ${newLeader}`);

  // --- the killed node comes back -------------------------------------------------------------------
  const s0 = Date.now();
  await c.start(victim);
  for (;;) {
    await c.waitHealthy(120_000 - (Date.now() - s0), 2);
    const member = (await c.members())?.find((m) => m.name === victim);
    const { walreceiver } = await c.pids(victim);
    if (member && member.role !== "leader" && member.state === "running" && walreceiver) break;
    if (Date.now() - s0 > 120_000) throw new Error(`${victim} did not come back as a streaming replica within 120 s\n${c.logTail(40)}`);
    await sleep(250);
  }
  const victimLog = await Bun.file(`${c.dir}/${victim}.log`).text();
  const rewind = victimLog.includes("running pg_rewind")
    ? `pg_rewind ran, ${/pg_rewind exit code=(\d+)/.exec(victimLog)?.[0] ?? "no exit code logged"}`
    : "no pg_rewind needed";
  say(`REJOIN: ${victim} is a streaming replica again ${seconds(Date.now() - s0)} after its Patroni started`
    + ` (${rewind}); members: `
    + (await c.members())!.map((m) => `${m.name}=${m.role}/${m.state}`).join(", "));

  // --- every acknowledged write is there -------------------------------------------------------------
  const rows = await clients.tuned.sql<{ id: string }[]>`select id from ha_smoke`;
  const present = new Set(rows.map((r) => Number(r.id)));
  const lost = acknowledged.filter((id) => !present.has(id));
  if (lost.length) throw new Error(`acknowledged writes lost: ${lost.join(", ")}`);
  say(`all ${acknowledged.length} acknowledged writes are on the leader (${rows.length} rows)`);

  await Promise.all(Object.values(clients).map((client) => client.sql.end({ timeout: 1 })));
  await c.stop();
  say("stopped; OK");
  clearTimeout(overall);
  process.exit(0);
} catch (error) {
  console.error(`FAIL: ${error instanceof Error ? error.message : String(error)}`);
  if (cluster) console.error(cluster.logTail(40));
  await cluster?.stop().catch(() => {});
  process.exit(1);
}
