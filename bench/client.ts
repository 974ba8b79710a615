import { randomBytes } from "node:crypto";
import { signToken } from "../src/auth/jwt.ts";
import { typicalSizes, type Tier } from "../src/coins/tiers.ts";
import type { Job, Outcome } from "./load.ts";
import { tiers } from "./seed.ts";

/** Whose coins are claimed (round robin, so the stock drains evenly) and who claims them (at random). */
export interface Population {
  targets: string[];
  requesters: string[];
  tokens: Map<string, string>;
}

export async function signTokens(secret: string, users: string[], ttlSeconds: number): Promise<Map<string, string>> {
  const key = new TextEncoder().encode(secret);
  return new Map(await Promise.all(users.map(async (u) => [u, await signToken(key, u, { ttlSeconds })] as const)));
}

/** Every claimed coin of the run, to prove that none was handed out twice. */
export class ClaimLedger {
  private seen = new Set<string>();
  duplicates = 0;

  add(target: string, keyId: string): void {
    const key = `${target}/${keyId}`;
    if (this.seen.has(key)) this.duplicates++;
    else this.seen.add(key);
  }
}

const timeoutMs = 60_000;
export const randomOf = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

/** (target, tier) pairs in round robin over targets, then tiers. */
export function rotation(targets: string[], claimTiers: readonly Tier[]): () => { target: string; tier: Tier } {
  let k = 0;
  return () => {
    const i = k++;
    return { target: targets[i % targets.length]!, tier: claimTiers[Math.floor(i / targets.length) % claimTiers.length]! };
  };
}

export function claimedBy(target: string, coins: readonly { key_id: string }[], count: number, ledger: ClaimLedger): Outcome {
  for (const coin of coins) ledger.add(target, coin.key_id);
  return { ok: true, coins: coins.length, short: coins.length < count };
}

/** A failed request's kind: its status and, for a problem+json answer, its detail (which 503 it was). */
async function failed(response: Response): Promise<Outcome> {
  const text = await response.text();
  let detail: unknown;
  try {
    detail = (JSON.parse(text) as { detail?: unknown }).detail;
  } catch {
    detail = undefined;
  }
  return { ok: false, coins: 0, error: typeof detail === "string" ? `${response.status} ${detail}` : String(response.status) };
}

function bearer(pop: Population, user: string): Record<string, string> {
  return { authorization: `Bearer ${pop.tokens.get(user)}` };
}

export function httpClaim(baseUrl: string, pop: Population, claimTiers: readonly Tier[], count: number, ledger: ClaimLedger): Job {
  const next = rotation(pop.targets, claimTiers);
  return async () => {
    const { target, tier } = next();
    const url = `${baseUrl}/v1/coins/fetch?target_user_id=${target}&coin_category=${tier}&count=${count}`;
    const response = await fetch(url, { headers: bearer(pop, randomOf(pop.requesters)), signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return failed(response);
    const body = (await response.json()) as { coins: { key_id: string }[] };
    return claimedBy(target, body.coins, count, ledger);
  };
}

/** POST /v1/coins/claim for several tiers at once (a contact sync), targets in round robin. */
export function httpMultiClaim(baseUrl: string, pop: Population, want: { gold: number; silver: number; bronze: number }, ledger: ClaimLedger): Job {
  let k = 0;
  const count = want.gold + want.silver + want.bronze;
  return async () => {
    const target = pop.targets[k++ % pop.targets.length]!;
    const response = await fetch(`${baseUrl}/v1/coins/claim`, {
      method: "POST",
      headers: { ...bearer(pop, randomOf(pop.requesters)), "content-type": "application/json" },
      body: JSON.stringify({ target_user_id: target, want, fallback: "down" }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) return failed(response);
    const body = (await response.json()) as { coins: { key_id: string }[] };
    return claimedBy(target, body.coins, count, ledger);
  };
}

export function httpCount(baseUrl: string, pop: Population): Job {
  const next = rotation(pop.targets, tiers);
  return async () => {
    const url = `${baseUrl}/v1/coins/count?user_id=${next().target}`;
    const response = await fetch(url, { headers: bearer(pop, randomOf(pop.requesters)), signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return failed(response);
    await response.arrayBuffer();
    return { ok: true, coins: 0 };
  };
}

export const uploadBatchSize = 100;

/** A few random blobs per tier, reused across coins: the server stores each copy; only key_ids must be fresh. */
function blobPool(): Record<Tier, { key: string; sig: string }[]> {
  const make = (tier: Tier) => Array.from({ length: 16 }, () => ({
    key: randomBytes(typicalSizes[tier].key).toString("base64"),
    sig: randomBytes(typicalSizes[tier].sig).toString("base64"),
  }));
  return { GOLD: make("GOLD"), SILVER: make("SILVER"), BRONZE: make("BRONZE") };
}

/** 100-coin uploads by the targets themselves, the tiers mixed evenly in each batch, fresh key_ids. */
export function httpUpload(baseUrl: string, pop: Population): Job {
  const blobs = blobPool();
  const prefix = randomBytes(4).toString("hex");
  let seq = 0;
  let k = 0;
  const batch = () => Array.from({ length: uploadBatchSize }, (_, i) => {
    const tier = tiers[i % tiers.length]!;
    const { key, sig } = randomOf(blobs[tier]!);
    return `{"key_id":"${prefix}-${seq++}","coin_category":"${tier}","public_key_b64":"${key}","signature_b64":"${sig}"}`;
  });
  return async () => {
    const owner = pop.targets[k++ % pop.targets.length]!;
    const response = await fetch(`${baseUrl}/v1/coins/upload`, {
      method: "POST",
      headers: { ...bearer(pop, owner), "content-type": "application/json" },
      body: `{"coins":[${batch().join(",")}]}`,
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) return failed(response);
    const body = (await response.json()) as { inserted: number };
    return { ok: true, coins: body.inserted };
  };
}
