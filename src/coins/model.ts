import { t, type Static } from "elysia";

/** Wire and storage limits of a coin; one place for each number. */
export const limits = {
  coinsPerUpload: 100,
  coinsPerFetch: 100,
  publicKeyBytes: 2048,
  signatureBytes: 5120,
  requestBodyBytes: 1024 * 1024,
} as const;

export const tiers = ["GOLD", "SILVER", "BRONZE"] as const;

/** Standard base64 with padding; the decoded size is checked separately (413, not 422). */
export const base64Pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

export const Uuid = t.String({ format: "uuid", error: { message: "must be a UUID" }, description: "A user id (UUID)", examples: ["6f1c0a9e-3b5d-4c1e-9a43-2f0f7d8b1c2a"] });

export const CoinCategory = t.Union([t.Literal("GOLD"), t.Literal("SILVER"), t.Literal("BRONZE")], {
  error: { field: "coin_category", message: "must be GOLD, SILVER or BRONZE" },
  description: "Coin tier: GOLD (ML-KEM-768 + ML-DSA), SILVER (ML-KEM-768 + Ed25519), BRONZE (X25519 + Ed25519)",
});

export const KeyId = t.String({
  minLength: 1, maxLength: 36, pattern: "^[A-Za-z0-9._:-]+$",
  error: { message: "must be 1–36 characters of A–Z, a–z, 0–9, '.', '_', ':' or '-'" },
  description: "Chosen by the owner's device; unique per owner", examples: ["0b6f7c52-7d1e-4d0e-8d7a-3f54f6f1f0a1"],
});

const Base64Blob = (what: string, maxBytes: number) => t.String({
  minLength: 4, pattern: base64Pattern,
  error: { message: "must be standard base64 with padding, at least 1 byte" },
  description: `${what}, standard base64 with padding; 1–${maxBytes} bytes decoded`,
});

export const Coin = t.Object({
  key_id: KeyId,
  coin_category: CoinCategory,
  public_key_b64: Base64Blob("Public key", limits.publicKeyBytes),
  signature_b64: Base64Blob("Signature over the public key", limits.signatureBytes),
}, { additionalProperties: false });

export const UploadBody = t.Object({
  user_id: t.Optional(Uuid),
  coins: t.Array(Coin, { minItems: 1, maxItems: limits.coinsPerUpload }),
}, { additionalProperties: false });

export const UploadResult = t.Object({
  inserted: t.Integer({ description: "Coins stored by this request" }),
  duplicates: t.Integer({ description: "Coins already stored with identical content (or repeated in the batch); skipped" }),
});

export const FetchQuery = t.Object({
  target_user_id: Uuid,
  coin_category: CoinCategory,
  count: t.Integer({ minimum: 1, maximum: limits.coinsPerFetch, description: "How many coins to claim", error: { field: "count", message: `must be an integer from 1 to ${limits.coinsPerFetch}` } }),
  requester_id: t.Optional(Uuid),
}, { additionalProperties: false });

/**
 * A claimed coin as served. The same fields as an uploaded one, without the base64 patterns:
 * what is served was validated on the way in, and checking ~4 KB blobs again on every
 * response would cost more than the claim itself.
 */
export const ServedCoin = t.Object({
  key_id: t.String({ description: KeyId.description }),
  coin_category: CoinCategory,
  public_key_b64: t.String({ contentEncoding: "base64", description: "Public key, standard base64" }),
  signature_b64: t.String({ contentEncoding: "base64", description: "Signature over the public key, standard base64" }),
});

export const FetchResult = t.Object({
  coins: t.Array(ServedCoin, { description: "Claimed coins, oldest first; fewer than asked (or none) when the stock is short" }),
});

export const CountQuery = t.Object({ user_id: t.Optional(Uuid) }, { additionalProperties: false });

export const Inventory = t.Object({
  gold: t.Integer({ minimum: 0 }),
  silver: t.Integer({ minimum: 0 }),
  bronze: t.Integer({ minimum: 0 }),
});

export type Tier = (typeof tiers)[number];
export type Coin = Static<typeof Coin>;
export type UploadBody = Static<typeof UploadBody>;
export type UploadResult = Static<typeof UploadResult>;
export type FetchQuery = Static<typeof FetchQuery>;
export type Inventory = Static<typeof Inventory>;

/** Bytes a valid padded base64 string decodes to. */
export function decodedLength(b64: string): number {
  const padding = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  return (b64.length / 4) * 3 - padding;
}
