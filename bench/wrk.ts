// The claim closed loop driven by wrk (C, one epoll loop per thread) instead of the bench's own
// Bun client: on a 2-core machine the load generator's CPU per request is taken from the server
// and PostgreSQL, and Bun's fetch spends several times what wrk does. Same requests as httpClaim
// (GET /v1/coins/fetch, owners and tiers round robin, requesters' tokens at random); every served
// key_id goes to the ledger (wrk cannot say which owner a response answered: key ids are random
// UUIDs, unique across owners, so the ledger keys them alone).
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Tier } from "../src/coins/tiers.ts";
import type { ClaimLedger, Population } from "./client.ts";
import type { Stats } from "./load.ts";

/** wrk's path, or undefined when it is not installed (apt-get install wrk). */
export function wrkPath(): string | undefined {
  try {
    return execFileSync("sh", ["-c", "command -v wrk"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const lua = (list: readonly string[]) => `{${list.map((s) => JSON.stringify(s)).join(",")}}`;

function script(pop: Population, claimTiers: readonly Tier[], count: number, out: string): string {
  const tokens = pop.requesters.map((r) => pop.tokens.get(r)!);
  return `
local targets = ${lua(pop.targets)}
local tiers = ${lua(claimTiers)}
local tokens = ${lua(tokens)}
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
-- globals: done() reads them from each thread (thread:get)
n, served, coins, short, failed = 0, 0, 0, 0, {}
keys, nkeys = {}, 0
function init(args)
  math.randomseed(os.time() * 1000 + id)
  n = id * 7919
end
function request()
  local i = n
  n = n + 1
  local target = targets[(i % #targets) + 1]
  local tier = tiers[(math.floor(i / #targets) % #tiers) + 1]
  return wrk.format("GET", "/v1/coins/fetch?target_user_id=" .. target .. "&coin_category=" .. tier .. "&count=${count}",
    { ["authorization"] = "Bearer " .. tokens[math.random(#tokens)] })
end
function response(status, headers, body)
  if status ~= 200 then
    failed[status] = (failed[status] or 0) + 1
    return
  end
  served = served + 1
  local got = 0
  for key in string.gmatch(body, '"key_id":"([^"]*)"') do
    got = got + 1
    nkeys = nkeys + 1
    keys[nkeys] = key
  end
  coins = coins + got
  if got < ${count} then short = short + 1 end
end
function done(summary, latency, requests)
  local f = io.open("${out}", "w")
  local s, c, sh, fl = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    s = s + t:get("served")
    c = c + t:get("coins")
    sh = sh + t:get("short")
    for status, k in pairs(t:get("failed")) do fl[tostring(status)] = (fl[tostring(status)] or 0) + k end
  end
  local parts = {}
  for status, k in pairs(fl) do table.insert(parts, string.format('"%s":%d', status, k)) end
  local e = summary.errors
  f:write(string.format('{"requests":%d,"durationUs":%d,"served":%d,"coins":%d,"short":%d,"failed":{%s},"socket":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"p50":%d,"p95":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration, s, c, sh, table.concat(parts, ","), e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
  for _, t in ipairs(threads) do
    for _, key in ipairs(t:get("keys")) do f:write(key, "\\n") end
  end
  f:close()
end
`;
}

/**
 * wrk's closed loop: \`concurrency\` connections on \`threads\` threads for \`seconds\`. Latencies are
 * of every answer (wrk does not split them by status); a run with failures says so in errorKinds.
 */
export async function wrkClaims(wrk: string, baseUrl: string, pop: Population, claimTiers: readonly Tier[], count: number, ledger: ClaimLedger,
  concurrency: number, seconds: number, threads = 1): Promise<Stats> {
  const dir = mkdtempSync(join(tmpdir(), "aqm-wrk-"));
  try {
    const out = join(dir, "out.txt");
    writeFileSync(join(dir, "claims.lua"), script(pop, claimTiers, count, out));
    const child = spawn(wrk, ["-t", String(threads), "-c", String(concurrency), "-d", `${seconds}s`, "--timeout", "60s", "-s", join(dir, "claims.lua"), baseUrl], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.stdout.resume();
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    if (code !== 0) throw new Error(`wrk exited with ${code}: ${stderr.trim()}`);
    const [head, ...keys] = readFileSync(out, "utf8").split("\n");
    const r = JSON.parse(head!) as { requests: number; durationUs: number; served: number; coins: number; short: number; failed: Record<string, number>;
      socket: Record<string, number>; p50: number; p95: number; p99: number; max: number };
    for (const key of keys) if (key) ledger.add("any owner", key);
    const elapsedS = r.durationUs / 1e6;
    const errorKinds: Record<string, number> = { ...r.failed };
    for (const [kind, n] of Object.entries(r.socket)) if (n > 0) errorKinds[`socket ${kind}`] = n;
    const ms = (us: number) => Math.round(us / 10) / 100;
    const round = (x: number) => Math.round(x * 100) / 100;
    return {
      requests: r.requests, errors: r.requests - r.served, errorKinds, short: r.short, coins: r.coins, elapsedS: round(elapsedS),
      reqPerS: round(r.served / elapsedS), coinsPerS: round(r.coins / elapsedS), p50: ms(r.p50), p95: ms(r.p95), p99: ms(r.p99), max: ms(r.max),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
