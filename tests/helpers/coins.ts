import { randomBytes, randomUUID } from "node:crypto";
import type { Coin, Tier } from "../../src/coins/model.ts";

/** Wire sizes of each tier's public key and signature (domain.md). */
export const tierSizes: Record<Tier, { key: number; sig: number }> = {
  GOLD: { key: 1184, sig: 3309 },
  SILVER: { key: 1184, sig: 64 },
  BRONZE: { key: 32, sig: 64 },
};

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
