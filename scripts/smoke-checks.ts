// The black-box smoke: every route of a running server, over real HTTP, including a 200-way
// concurrent claim that must hand out no coin twice and a pair quota that must hold exactly.
// Runtime-neutral (fetch, node:crypto, jose): run by scripts/smoke.ts under Bun or Deno.
import { randomBytes, randomUUID } from "node:crypto";
import { signToken } from "../src/auth/jwt.ts";
import { typicalSizes, type Tier } from "../src/coins/tiers.ts";

export interface SmokeTarget {
  url: string;
  /** The HS256 secret the server verifies tokens with. */
  secret: Uint8Array;
  /** The server's AQM_PAIR_QUOTA. */
  pairQuota: number;
}

interface User {
  id: string;
  token: string;
}

const coin = (tier: Tier) => ({
  key_id: randomUUID(), coin_category: tier,
  public_key_b64: randomBytes(typicalSizes[tier].key).toString("base64"),
  signature_b64: randomBytes(typicalSizes[tier].sig).toString("base64"),
});
const coins = (n: number, tier: Tier) => Array.from({ length: n }, () => coin(tier));

function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error(what);
}

function noDuplicates(keys: string[], expected: number, what: string): void {
  check(new Set(keys).size === keys.length, `${what}: ${keys.length - new Set(keys).size} key_ids handed out twice`);
  check(keys.length === expected, `${what}: ${keys.length} coins handed out, expected ${expected}`);
}

export function smokeChecks({ url, secret, pairQuota }: SmokeTarget): [string, () => Promise<void>][] {
  const user = async (admin = false): Promise<User> => {
    const id = randomUUID();
    return { id, token: await signToken(secret, id, { admin }) };
  };
  const call = async (method: string, path: string, { token, body, headers = {} }: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) => {
    const res = await fetch(url + path, {
      method, signal: AbortSignal.timeout(20_000),
      headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  const expectStatus = (res: { status: number; text: string }, status: number, what: string) =>
    check(res.status === status, `${what}: ${res.status} ${res.text.slice(0, 200)}, expected ${status}`);
  const upload = async (owner: User, batch: unknown[]) => {
    const res = await call("POST", "/v1/coins/upload", { token: owner.token, body: { coins: batch } });
    expectStatus(res, 200, "upload");
    return res.json as { inserted: number; duplicates: number };
  };
  const fetchCoins = async (requester: User, target: User, tier: Tier, count: number) => {
    const res = await call("GET", `/v1/coins/fetch?target_user_id=${target.id}&coin_category=${tier}&count=${count}`, { token: requester.token });
    return { status: res.status, keys: ((res.json?.coins ?? []) as { key_id: string }[]).map((c) => c.key_id) };
  };

  return [
    ["GET /v1/health", async () => {
      const res = await call("GET", "/v1/health");
      expectStatus(res, 200, "health");
      check(res.json?.status === "ok" && res.json?.db_connected === true, `health: ${res.text}`);
    }],
    ["GET /docs, its assets and /docs/json", async () => {
      const page = await call("GET", "/docs");
      expectStatus(page, 200, "/docs");
      const sources = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
      check(sources.length >= 2 && sources.every((s) => s.startsWith("/docs/assets/")), `/docs loads ${sources.join(", ")}`);
      for (const src of sources) {
        const asset = await call("GET", src);
        check(asset.status === 200 && asset.text.length > 1_000, `${src}: ${asset.status}, ${asset.text.length} characters`); // the real file, not an error page
      }
      const doc = await call("GET", "/docs/json");
      expectStatus(doc, 200, "/docs/json");
      check(Object.keys(doc.json?.paths ?? {}).length >= 9, "/docs/json lists fewer than 9 paths");
    }],
    ["401 without a token, 422 for a bad body (problem+json)", async () => {
      const anonymous = await call("GET", "/v1/coins/count");
      expectStatus(anonymous, 401, "no token");
      check(anonymous.headers.get("content-type") === "application/problem+json", "401 is not problem+json");
      const bad = await call("POST", "/v1/coins/upload", { token: (await user()).token, body: { coins: [{ key_id: "x" }] } });
      expectStatus(bad, 422, "bad upload");
    }],
    ["POST /v1/coins/upload, GET /v1/coins/count, PUT /v1/coins/last-resort", async () => {
      const owner = await user();
      const batch = coins(10, "BRONZE");
      check((await upload(owner, batch)).inserted === 10, "10 coins inserted");
      check((await upload(owner, batch)).duplicates === 10, "the same batch again: 10 duplicates");
      const lastResort = await call("PUT", "/v1/coins/last-resort", { token: owner.token, body: { coins: [coin("BRONZE")] } });
      expectStatus(lastResort, 200, "last-resort");
      const count = await call("GET", `/v1/coins/count?user_id=${owner.id}`, { token: (await user()).token });
      expectStatus(count, 200, "count");
      check(count.json.bronze === 10 && count.json.last_resort.bronze === true, `count: ${count.text}`);
    }],
    ["200 concurrent GET /v1/coins/fetch of one owner's 300 coins: each handed out once", async () => {
      const owner = await user();
      for (let i = 0; i < 3; i++) await upload(owner, coins(100, "GOLD"));
      const requesters = await Promise.all(Array.from({ length: 200 }, () => user()));
      const results = await Promise.all(requesters.map((r, i) => fetchCoins(r, owner, "GOLD", (i % 3) + 1))); // demand 399
      check(results.every((r) => r.status === 200), `statuses ${[...new Set(results.map((r) => r.status))].join(", ")}`);
      noDuplicates(results.flatMap((r) => r.keys), 300, "200-way claim");
      const count = await call("GET", "/v1/coins/count", { token: owner.token });
      check(count.json.gold === 0, `left: ${count.text}`);
    }],
    ["200 concurrent fetches by one requester: exactly the pair quota, then 429", async () => {
      const [owner, requester] = await Promise.all([user(), user()]);
      const supply = pairQuota + 100;
      for (let i = 0; i < supply; i += 100) await upload(owner, coins(Math.min(100, supply - i), "SILVER"));
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => fetchCoins(requester, owner, "SILVER", (i % 3) + 1)));
      check(results.every((r) => r.status === 200 || r.status === 429), `statuses ${[...new Set(results.map((r) => r.status))].join(", ")}`);
      check(results.some((r) => r.status === 429), "no fetch was refused at the quota");
      noDuplicates(results.flatMap((r) => r.keys), pairQuota, "pair quota");
    }],
    ["POST /v1/coins/claim: fallback, and an Idempotency-Key replays", async () => {
      const [owner, requester] = await Promise.all([user(), user()]);
      await upload(owner, [...coins(1, "SILVER"), ...coins(2, "BRONZE")]);
      const body = { target_user_id: owner.id, want: { gold: 1, bronze: 1 } };
      const headers = { "idempotency-key": randomUUID() };
      const first = await call("POST", "/v1/coins/claim", { token: requester.token, body, headers });
      expectStatus(first, 200, "claim");
      check(first.json.coins.map((c: { coin_category: string }) => c.coin_category).join() === "SILVER,BRONZE", `claim: ${first.text}`);
      const again = await call("POST", "/v1/coins/claim", { token: requester.token, body, headers });
      check(again.status === 200 && again.text === first.text, "the retry did not replay the first answer");
    }],
    ["a waiting claim is answered by an upload (LISTEN/NOTIFY)", async () => {
      const [owner, requester] = await Promise.all([user(), user()]);
      const started = performance.now();
      const waiting = call("POST", "/v1/coins/claim", { token: requester.token, body: { target_user_id: owner.id, want: { bronze: 1 }, wait_ms: 15_000 } });
      await new Promise((r) => setTimeout(r, 500));
      await upload(owner, coins(1, "BRONZE"));
      const res = await waiting;
      expectStatus(res, 200, "waiting claim");
      check(res.json.coins.length === 1, `waiting claim: ${res.text}`);
      check(performance.now() - started < 10_000, "the waiting claim was answered by its deadline, not by the upload");
    }],
    ["POST /v1/admin/hard-delete and /v1/admin/purge-stale (the maintenance lock), GET /metrics", async () => {
      const [admin, someone] = await Promise.all([user(true), user()]);
      expectStatus(await call("POST", "/v1/admin/hard-delete", { token: someone.token, body: {} }), 403, "hard-delete without the admin scope");
      const hard = await call("POST", "/v1/admin/hard-delete", { token: admin.token, body: { grace_hours: 0 } });
      expectStatus(hard, 200, "hard-delete");
      check(hard.json.deleted >= 300, `hard-delete deleted ${hard.json.deleted}`);
      expectStatus(await call("POST", "/v1/admin/purge-stale", { token: admin.token, body: { max_age_days: 30 } }), 200, "purge-stale");
      const metrics = await call("GET", "/metrics", { token: admin.token });
      expectStatus(metrics, 200, "metrics");
      check(/aqm_coins_claimed_total\{tier="GOLD"\} 300/.test(metrics.text), "metrics do not count the 300 GOLD coins claimed");
    }],
  ];
}
