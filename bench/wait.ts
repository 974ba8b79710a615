import { randomBytes, randomUUID } from "node:crypto";
import { signToken } from "../src/auth/jwt.ts";
import { typicalSizes } from "../src/coins/tiers.ts";
import { percentile } from "./load.ts";
import { startMonitor } from "./monitor.ts";
import { startWaitSampler } from "./pgwaits.ts";
import { log, type Bench } from "./phases.ts";
import { addCpuPerUnit, type Row } from "./report.ts";

const waiters = 1000;
const uploads = 10;

const round = (x: number) => Math.round(x * 100) / 100;

/**
 * 1,000 claims (deployed configuration, distinct requesters, want 1 BRONZE, wait_ms 30 s) wait
 * on a user with no coins; that user then uploads 10 × 100 coins, one upload after the other.
 * Each claim's latency runs from the start of the upload whose coin it got to its answer. Also
 * records how many database connections the servers held while all of them waited, and before.
 */
export async function waitPhase(b: Bench, push: (row: Row) => void): Promise<void> {
  const server = b.stack.servers.default!;
  const key = new TextEncoder().encode(b.stack.secret);
  const owner = randomUUID();
  const ownerToken = await signToken(key, owner, { ttlSeconds: 3600 });
  const admin = await signToken(key, randomUUID(), { admin: true, ttlSeconds: 3600 });
  const requesters = b.pop.requesters.slice(0, waiters);
  // the servers' connections (both servers run on this database; each opens its pool at start and
  // keeps it): what the waiters add is what counts
  const serverConnections = async () => (await b.sql<[{ n: number }]>`
    SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'aqm-coin-server%' AND datname = current_database()`)[0].n;
  const connectionsBefore = await serverConnections();
  const monitor = startMonitor(server.pid, b.stack.postmasterPid);
  const waits = startWaitSampler(b.sql);
  const uploadStarted: number[] = [];
  const answers = requesters.map(async (requester) => {
    const response = await fetch(`${server.baseUrl}/v1/coins/claim`, {
      method: "POST",
      headers: { authorization: `Bearer ${b.pop.tokens.get(requester)}`, "content-type": "application/json" },
      body: JSON.stringify({ target_user_id: owner, want: { bronze: 1 }, wait_ms: 30_000 }),
      signal: AbortSignal.timeout(60_000),
    }).catch(() => undefined);
    const at = performance.now();
    const body = response?.ok ? (await response.json()) as { coins: { key_id: string }[] } : undefined;
    const coin = body?.coins[0];
    if (coin) b.ledger.add(owner, coin.key_id);
    return { ok: !!response?.ok, at, from: coin ? Number(coin.key_id.split("-")[1]) : undefined };
  });
  const waiting = async () => {
    const text = await fetch(`${server.baseUrl}/metrics`, { headers: { authorization: `Bearer ${admin}` } }).then((r) => r.text(), () => "");
    return Number(text.match(/^aqm_claim_waiting (\d+)/m)?.[1] ?? 0);
  };
  const deadline = performance.now() + 20_000;
  while ((await waiting()) < waiters && performance.now() < deadline) await Bun.sleep(50);
  const connections = await serverConnections();
  const prefix = randomBytes(3).toString("hex");
  for (let u = 0; u < uploads; u++) {
    const coins = Array.from({ length: 100 }, (_, i) => ({
      key_id: `${prefix}-${u}-${i}`, coin_category: "BRONZE",
      public_key_b64: randomBytes(typicalSizes.BRONZE.key).toString("base64"), signature_b64: randomBytes(typicalSizes.BRONZE.sig).toString("base64"),
    }));
    uploadStarted[u] = performance.now();
    const res = await fetch(`${server.baseUrl}/v1/coins/upload`, {
      method: "POST", headers: { authorization: `Bearer ${ownerToken}`, "content-type": "application/json" }, body: JSON.stringify({ coins }),
    });
    if (!res.ok) log(`wait phase: upload ${u} answered ${res.status}`);
    await res.arrayBuffer();
  }
  const results = await Promise.all(answers);
  const usage = monitor.stop();
  const active = await waits.stop();
  const latencies = Float64Array.from(results.filter((r) => r.from !== undefined).map((r) => r.at - uploadStarted[r.from!]!)).sort();
  const served = latencies.length;
  const elapsedS = (Math.max(...results.map((r) => r.at)) - uploadStarted[0]!) / 1000;
  const errors = results.filter((r) => !r.ok).length;
  const row: Row = {
    config: "default", phase: `wait ${waiters.toLocaleString("en-US")}`, mode: `${uploads} uploads release`,
    requests: waiters, errors, errorKinds: errors ? { failed: errors } : {}, short: waiters - served - errors, coins: served,
    elapsedS: round(elapsedS), reqPerS: round(served / elapsedS), coinsPerS: round(served / elapsedS),
    p50: round(percentile(latencies, 50)), p95: round(percentile(latencies, 95)), p99: round(percentile(latencies, 99)),
    max: round(latencies[latencies.length - 1] ?? NaN), ...usage, ...active, dbConnections: connections, dbConnectionsBefore: connectionsBefore,
  };
  addCpuPerUnit(row);
  push(row);
  log(`wait ${waiters}: ${served} released by uploads, upload→answer p50 ${row.p50} ms p99 ${row.p99} ms, ${connections} database connections while all waited (${connectionsBefore} before they came), ${errors} errors`);
}
