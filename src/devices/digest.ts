import { createHash } from "node:crypto";
import { tiers, type Tier } from "../coins/tiers.ts";
import type { DeviceKeys } from "./signatures.ts";

export interface LastResortState {
  keyId: string;
  publicKey: Uint8Array;
  signature: Uint8Array;
}

/** What the server holds for one device, as far as the digest covers it. */
export interface DeviceState {
  keys: DeviceKeys;
  lastResort: Partial<Record<Tier, LastResortState>>;
}

export const noKeys: DeviceKeys = { ed25519: null, mlDsa: null, mlDsaSet: null };

const utf8 = new TextEncoder();
const empty = new Uint8Array(0);

/**
 * The device digest, version 1 (POST /v1/devices/{id}/check): SHA-256 over the concatenation
 * of these fields, each written as its length in bytes (4 bytes, unsigned, big-endian) followed
 * by its bytes, in this order:
 *
 *  1. the ASCII string `aqm-device-digest-v1`;
 *  2. the device's Ed25519 public key (32 bytes; empty when none is registered);
 *  3. the name of its ML-DSA parameter set as ASCII, `ML-DSA-44`, `ML-DSA-65` or `ML-DSA-87`
 *     (empty when none is registered);
 *  4. its ML-DSA public key (empty when none is registered);
 *  5. then for each tier in the order GOLD, SILVER, BRONZE, three fields: the device's
 *     last-resort coin of that tier's key_id as UTF-8, its public key, its signature (the raw
 *     bytes, not base64) — three empty fields when the device has no last-resort coin of that tier.
 *
 * A device the server holds nothing for (no row at all) has the digest of all-empty fields but
 * the first, so a fresh device matches it: base64 `c/rtpcs1C7uX6JwzGsnp0XEn7G/iKa60ipjJKjS8s14=`.
 * Unclaimed one-time coins are not covered: they leave by being claimed.
 */
export function deviceDigest({ keys, lastResort }: DeviceState): Uint8Array {
  const fields: Uint8Array[] = [utf8.encode("aqm-device-digest-v1"), keys.ed25519 ?? empty, utf8.encode(keys.mlDsaSet ?? ""), keys.mlDsa ?? empty];
  for (const tier of tiers) {
    const coin = lastResort[tier];
    fields.push(coin ? utf8.encode(coin.keyId) : empty, coin?.publicKey ?? empty, coin?.signature ?? empty);
  }
  const hash = createHash("sha256");
  for (const field of fields) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(field.length);
    hash.update(length).update(field);
  }
  return new Uint8Array(hash.digest());
}
