import { createHash, createHmac } from "node:crypto";

/** The first 128 bits of a hex digest, written as a UUID (PostgreSQL stores and compares those in 16 bytes). */
const asUuid = (h: string) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;

const keyed = (secret: Uint8Array, purpose: string, a: string, b: string) =>
  asUuid(createHmac("sha256", secret).update(`${purpose}\n${a}\n${b}`).digest("hex"));

export interface ClaimKeys {
  /** The quota row of (requester, target), under the current secret and the previous one (or null). */
  pair(requester: string, target: string): [string, string | null];
  /** An idempotent claim's record: (requester, Idempotency-Key) under the current and previous secret. */
  ref(requester: string, idempotencyKey: string): [string, string | null];
  /** A request body, to refuse an Idempotency-Key reused with another one. */
  body(canonical: string): string;
}

/**
 * The keyed hashes that stand for "who claimed from whom" in the database: without the server's
 * secret (AQM_HASH_SECRET) a quota row or a claim record names nobody. During a rotation the
 * previous secret (AQM_HASH_SECRET_PREVIOUS) is still read, so quotas and replays carry over.
 */
export function claimKeys(secret: Uint8Array, previous?: Uint8Array): ClaimKeys {
  return {
    pair: (requester, target) => [keyed(secret, "pair", requester, target), previous ? keyed(previous, "pair", requester, target) : null],
    ref: (requester, key) => [keyed(secret, "claim", requester, key), previous ? keyed(previous, "claim", requester, key) : null],
    body: (canonical) => asUuid(createHash("sha256").update(canonical).digest("hex")),
  };
}
