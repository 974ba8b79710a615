/** The coin tiers, best first: the order claims serve them in and fall back along. */
export const tiers = ["GOLD", "SILVER", "BRONZE"] as const;
export type Tier = (typeof tiers)[number];

/** Per-tier numbers in tier order: [gold, silver, bronze]. */
export type TierCounts = [number, number, number];

/** What each tier's public key and signature measure on the wire, in bytes (domain.md). */
export const tierShapes: Record<Tier, { publicKey: readonly number[]; signature: readonly number[]; names: string }> = {
  GOLD: { publicKey: [1184], signature: [2420, 3309, 4627], names: "ML-KEM-768 key, ML-DSA-44/65/87 signature" },
  SILVER: { publicKey: [1184], signature: [64], names: "ML-KEM-768 key, Ed25519 signature" },
  BRONZE: { publicKey: [32], signature: [64], names: "X25519 key, Ed25519 signature" },
};

/** The sizes of a typical coin of each tier (GOLD with ML-DSA-65), for tests and the bench. */
export const typicalSizes: Record<Tier, { key: number; sig: number }> = {
  GOLD: { key: 1184, sig: 3309 },
  SILVER: { key: 1184, sig: 64 },
  BRONZE: { key: 32, sig: 64 },
};

/** Wire limits; one place for each number. */
export const wireLimits = {
  coinsPerUpload: 100,
  coinsPerClaim: 100,
  /** Upper bounds with AQM_TIER_SIZES=loose (and the 413 backstop with strict sizes). */
  publicKeyBytes: 2048,
  signatureBytes: 5120,
  requestBodyBytes: 1024 * 1024,
} as const;
