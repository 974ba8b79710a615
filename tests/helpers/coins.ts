import { randomBytes, randomUUID } from "node:crypto";
import type { Coin } from "../../src/coins/model.ts";
import { typicalSizes as tierSizes, type Tier } from "../../src/coins/tiers.ts";

export function makeCoin(tier: Tier = "BRONZE", keyId: string = randomUUID()): Coin {
  const { key, sig } = tierSizes[tier];
  return {
    key_id: keyId,
    coin_category: tier,
    public_key_b64: randomBytes(key).toString("base64"),
    signature_b64: randomBytes(sig).toString("base64"),
  };
}

export function makeCoins(n: number, tier: Tier = "BRONZE"): Coin[] {
  return Array.from({ length: n }, () => makeCoin(tier));
}

/** The AQM client's standard batch: 5 GOLD, 6 SILVER, 5 BRONZE. */
export function standardBatch(): Coin[] {
  return [...makeCoins(5, "GOLD"), ...makeCoins(6, "SILVER"), ...makeCoins(5, "BRONZE")];
}

/** A count response: available coins per tier, and which last-resort coins are stored (none by default). */
export const inventory = (gold: number, silver: number, bronze: number, last_resort = { gold: false, silver: false, bronze: false }) =>
  ({ gold, silver, bronze, last_resort });
