import { t, type Static } from "elysia";
import { KeyConflictError, PayloadTooLargeError, ValidationError, type AppError } from "../errors.ts";
import { namedExamples } from "../http/openapi.ts";
import { tierShapes, wireLimits } from "./tiers.ts";

/** Standard base64 with padding; the decoded size is checked separately (413 or 422, not a pattern). */
export const base64Pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

// The documented examples (OpenAPI, Swagger UI): a user and a BRONZE coin of the exact wire sizes,
// genuinely signed by the example identity key (devices/model.ts: RFC 8032's first Ed25519 test
// vector, whose private key is published there), so the example uploads as shown to a device that
// registered that key.
export const exampleUserId = "6f1c0a9e-3b5d-4c1e-9a43-2f0f7d8b1c2a";
/** Bytes 0, 1, 2, … in standard base64. */
const exampleBlob = (bytes: number) => btoa(String.fromCharCode(...Array.from({ length: bytes }, (_, i) => i % 256)));
/**
 * The example coin. Its signature was made once, with WebCrypto, and written here (Ed25519 is
 * deterministic: the same key and message always give these bytes):
 *
 *   const seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"; // RFC 8032, 7.1, TEST 1
 *   const pkcs8 = Buffer.from("302e020100300506032b657004220420" + seed, "hex"); // RFC 8410 prefix + seed
 *   const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
 *   const message = Buffer.concat([Buffer.from(`aqm-coin-v1:BRONZE:${key_id}:`), publicKey]); // devices/signatures.ts, coinMessage
 *   Buffer.from(await crypto.subtle.sign("Ed25519", key, message)).toString("base64");
 *
 * tests/api.docs.test.ts verifies it with devices/signatures.ts.
 */
export const exampleCoin = {
  key_id: "0b6f7c52-7d1e-4d0e-8d7a-3f54f6f1f0a1",
  coin_category: "BRONZE" as const,
  public_key_b64: exampleBlob(tierShapes.BRONZE.publicKey[0]!),
  signature_b64: "mPezIK7rWsXeJ9EzGuvZG+Dcz4Xo8n0lx4rjYqfuqyCLpL0eeHwabGWogIJWmwP3LkOBz6LjtTXWrAb1cTMfCw==",
};
/** The last-resort example: the same public key under key_id `last-resort-bronze-1`, signed as exampleCoin. */
export const exampleLastResortCoin = {
  ...exampleCoin,
  key_id: "last-resort-bronze-1",
  signature_b64: "77Qq+EEJmyTppVfaBwfawT9SUNGNT5ZF/PoqcmCiX1v3vOp6c6hfMJf0htr0xRCHjv5N+g3hX6m2Et5uQxJfDw==",
};
/** The example identity key (Ed25519, RFC 8032 TEST 1's public key), standard base64: what signed the examples above. */
export const exampleIdentityKey = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

export const DeviceId = t.Integer({
  minimum: 1, maximum: 127, error: { message: "must be a device id, an integer from 1 to 127" },
  description: "A device of the user (1–127; a token acts for its `dev` claim's device, 1 without one)", examples: [1],
});

export const Uuid = t.String({ format: "uuid", error: { message: "must be a UUID" }, description: "A user id (UUID)", examples: [exampleUserId] });

export const CoinCategory = t.Union([t.Literal("GOLD"), t.Literal("SILVER"), t.Literal("BRONZE")], {
  error: { field: "coin_category", message: "must be GOLD, SILVER or BRONZE" },
  description: "Coin tier: GOLD (ML-KEM-768 + ML-DSA), SILVER (ML-KEM-768 + Ed25519), BRONZE (X25519 + Ed25519)",
  examples: ["BRONZE"],
});

export const keyIdMessage = "must be 1–36 characters of A–Z, a–z, 0–9, '.', '_', ':' or '-'";
export const KeyId = t.String({
  minLength: 1, maxLength: 36, pattern: "^[A-Za-z0-9._:-]+$",
  error: { message: keyIdMessage },
  description: "Chosen by the owner's device; unique per owner", examples: [exampleCoin.key_id],
});

/** The documented examples of the errors the coin routes answer with (the generic ones are in http/openapi.ts). */
export const coinProblemExamples: Record<number, AppError> = {
  409: new KeyConflictError([exampleCoin.key_id]),
  413: new PayloadTooLargeError(`The request body is larger than ${wireLimits.requestBodyBytes} bytes`),
  422: new ValidationError("The request body is invalid: coins[0].key_id", [{ field: "coins[0].key_id", message: keyIdMessage }]),
};

const Base64Blob = (what: string) => t.String({
  minLength: 4, pattern: base64Pattern,
  error: { message: "must be standard base64 with padding, at least 1 byte" },
  description: `${what}, standard base64 with padding; its decoded size must match the tier (see AQM_TIER_SIZES)`,
});

export const Coin = t.Object({
  key_id: KeyId,
  coin_category: CoinCategory,
  public_key_b64: Base64Blob("Public key"),
  signature_b64: Base64Blob("Signature over the public key"),
}, { additionalProperties: false });

export const UploadBody = t.Object({
  user_id: t.Optional(Uuid),
  coins: t.Array(Coin, { minItems: 1, maxItems: wireLimits.coinsPerUpload }),
}, { additionalProperties: false, examples: [{ coins: [exampleCoin] }] });

export const UploadResult = t.Object({
  inserted: t.Integer({ description: "Coins stored by this request" }),
  duplicates: t.Integer({ description: "Coins already stored with identical content (or repeated in the batch); skipped" }),
}, { description: "How many coins of the batch were stored, and how many were stored already", examples: [{ inserted: 1, duplicates: 0 }] });

export const LastResortBody = t.Object({
  coins: t.Array(Coin, { minItems: 1, maxItems: 3, description: "At most one coin per tier; each replaces your last-resort coin of its tier" }),
}, { additionalProperties: false, examples: [{ coins: [exampleLastResortCoin] }] });

export const FetchQuery = t.Object({
  target_user_id: Uuid,
  coin_category: CoinCategory,
  count: t.Integer({ minimum: 1, maximum: wireLimits.coinsPerClaim, description: "How many coins to claim", examples: [2], error: { field: "count", message: `must be an integer from 1 to ${wireLimits.coinsPerClaim}` } }),
  requester_id: t.Optional(Uuid),
}, { additionalProperties: false });

const tierWant = (tier: string) => t.Optional(t.Integer({
  minimum: 0, maximum: wireLimits.coinsPerClaim, description: `${tier} coins wanted`,
  error: { message: `must be an integer from 0 to ${wireLimits.coinsPerClaim}` },
}));

export const ClaimBody = t.Object({
  target_user_id: Uuid,
  want: t.Object({ gold: tierWant("GOLD"), silver: tierWant("SILVER"), bronze: tierWant("BRONZE") }, {
    additionalProperties: false, description: `Coins wanted per tier: at least one, at most ${wireLimits.coinsPerClaim} in all`,
  }),
  fallback: t.Optional(t.Union([t.Literal("down"), t.Literal("none")], {
    default: "down", error: { message: "must be \"down\" or \"none\"" },
    description: "down: a tier's shortfall is filled from the tiers below it (GOLD → SILVER → BRONZE), never upward",
  })),
  wait_ms: t.Optional(t.Integer({
    minimum: 0, maximum: 30_000, default: 0, error: { message: "must be an integer from 0 to 30000" },
    description: "When nothing can be served, wait up to this long for the owner to upload, then answer with what there is",
  })),
  allow_last_resort: t.Optional(t.Boolean({
    default: false, error: { message: "must be true or false" },
    description: "A tier still short after fallback gets the owner's last-resort coin of that tier (reusable, flagged last_resort)",
  })),
  devices: t.Optional(t.Union([
    t.Literal("all"),
    t.Array(DeviceId, { minItems: 1, maxItems: 127, uniqueItems: true }),
  ], {
    error: { message: "must be \"all\" or a list of distinct device ids (1–127)" },
    description: "Claim from several of the owner's devices, `want` applying to each: \"all\" of them or these ids (devices that exist). "
      + "The answer is then per device. Claiming from yourself leaves out your own device. Absent: device 1, answered as `coins` and `short`.",
  })),
}, {
  additionalProperties: false,
  ...namedExamples({
    "device 1": { target_user_id: exampleUserId, want: { silver: 1, bronze: 2 }, fallback: "down" },
    "all devices": { target_user_id: exampleUserId, want: { bronze: 2 }, devices: "all" },
  }),
});

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
  last_resort: t.Optional(t.Literal(true, { description: "The owner's reusable last-resort coin of this tier (never deleted by a claim)" })),
});

export const FetchResult = t.Object({
  coins: t.Array(ServedCoin, { description: "Claimed coins, oldest first; fewer than asked (or none) when the stock is short" }),
}, { description: "The coins claimed: handed out to you, never to anyone else", examples: [{ coins: [exampleCoin] }] });

const TierNumbers = (description: string) => t.Object({
  gold: t.Integer({ minimum: 0 }), silver: t.Integer({ minimum: 0 }), bronze: t.Integer({ minimum: 0 }),
}, { description });

export const ClaimResult = t.Object({
  coins: t.Array(ServedCoin, { description: "GOLD first, then SILVER, then BRONZE, oldest first within a tier; last-resort coins last. Each says its real tier" }),
  short: TierNumbers("Per tier asked for: coins that could not be served, even after fallback (0 for tiers not asked for)"),
}, {
  title: "ClaimResult", description: "Without `devices`: the coins claimed (of device 1), and per tier how many could not be served",
  examples: [{ coins: [exampleCoin], short: { gold: 0, silver: 1, bronze: 1 } }],
});

const DeviceKeysFields = {
  device_id: DeviceId,
  ed25519_b64: t.Optional(t.String({ contentEncoding: "base64", description: "The device's Ed25519 identity key (32 B): SILVER and BRONZE coins are signed with it" })),
  ml_dsa_b64: t.Optional(t.String({ contentEncoding: "base64", description: "The device's ML-DSA identity key: GOLD coins are signed with it" })),
  ml_dsa: t.Optional(t.Union([t.Literal("ML-DSA-44"), t.Literal("ML-DSA-65"), t.Literal("ML-DSA-87")], { description: "The ML-DSA parameter set of ml_dsa_b64" })),
};

export const ClaimDevicesResult = t.Object({
  devices: t.Array(t.Object({
    ...DeviceKeysFields,
    coins: ClaimResult.properties.coins,
    short: ClaimResult.properties.short,
  }), { description: "One entry per device claimed from that exists, in device order (the identity keys as registered; none when it registered none)" }),
}, {
  title: "ClaimDevicesResult",
  description: "With `devices`: per device, its identity keys (verify each coin's signature against them), the coins claimed of it and its shortfall per tier",
  examples: [{ devices: [
    { device_id: 1, ed25519_b64: exampleIdentityKey, coins: [exampleCoin], short: { gold: 0, silver: 0, bronze: 1 } },
    { device_id: 2, coins: [], short: { gold: 0, silver: 0, bronze: 2 } },
  ] }],
});

export const CountQuery = t.Object({
  user_id: t.Optional(Uuid),
  below: t.Optional(t.Integer({
    minimum: 1, maximum: 1_000_000, error: { message: "must be an integer from 1 to 1000000" },
    description: "Long-poll (your own inventory only): answer as soon as any tier has fewer than this many coins",
  })),
  wait_ms: t.Optional(t.Integer({
    minimum: 0, maximum: 30_000, error: { message: "must be an integer from 0 to 30000" },
    description: "Long-poll: how long to wait for a tier to fall below `below`",
  })),
}, { additionalProperties: false });

export const Inventory = t.Object({
  gold: t.Integer({ minimum: 0 }),
  silver: t.Integer({ minimum: 0 }),
  bronze: t.Integer({ minimum: 0 }),
  last_resort: t.Object({ gold: t.Boolean(), silver: t.Boolean(), bronze: t.Boolean() }, {
    description: "Whether a last-resort coin of each tier is stored (it is not counted above)",
  }),
}, {
  title: "Inventory", description: "Without user_id (or while long-polling): your device's available (unclaimed) coins per tier",
  examples: [{ gold: 5, silver: 6, bronze: 4, last_resort: { gold: false, silver: false, bronze: true } }],
});

export const InventoryByDevice = t.Object({
  ...Inventory.properties,
  devices: t.Array(t.Object({ device_id: DeviceId, ...Inventory.properties }), {
    description: "Each device's counts (the fields above are their sums; last_resort: whether any device has one)",
  }),
}, {
  title: "InventoryByDevice", description: "With user_id: available coins per tier summed over the user's devices, and per device",
  examples: [{ gold: 7, silver: 6, bronze: 4, last_resort: { gold: false, silver: false, bronze: true },
    devices: [
      { device_id: 1, gold: 5, silver: 6, bronze: 4, last_resort: { gold: false, silver: false, bronze: true } },
      { device_id: 2, gold: 2, silver: 0, bronze: 0, last_resort: { gold: false, silver: false, bronze: false } },
    ] }],
});

export type Coin = Static<typeof Coin>;
export type InventoryByDevice = Static<typeof InventoryByDevice>;
export type ServedCoin = Static<typeof ServedCoin>;
export type UploadBody = Static<typeof UploadBody>;
export type UploadResult = Static<typeof UploadResult>;
export type FetchQuery = Static<typeof FetchQuery>;
export type ClaimBody = Static<typeof ClaimBody>;
export type Inventory = Static<typeof Inventory>;

/** Bytes a valid padded base64 string decodes to. */
export function decodedLength(b64: string): number {
  const padding = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  return (b64.length / 4) * 3 - padding;
}
