// Device identities (an Ed25519 and an ML-DSA key pair) and coins they sign, for the signature
// checks. Ed25519 through WebCrypto, ML-DSA through @noble/post-quantum.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import type { Coin } from "../../src/coins/model.ts";
import { typicalSizes, type Tier } from "../../src/coins/tiers.ts";
import { coinMessage, type DeviceKeys, type MlDsaSet, type SignedCoin } from "../../src/devices/signatures.ts";

export interface DeviceIdentity {
  set: MlDsaSet;
  ed25519: Uint8Array;
  ed25519_b64: string;
  mlDsa: Uint8Array;
  mlDsa_b64: string;
  /** What the server keeps of the device: its public keys. */
  keys: DeviceKeys;
  signEd25519(message: Uint8Array): Promise<Uint8Array>;
  signMlDsa(message: Uint8Array): Uint8Array;
}

const mlDsa = { "ML-DSA-44": ml_dsa44, "ML-DSA-65": ml_dsa65, "ML-DSA-87": ml_dsa87 } as const;

// An Ed25519 PKCS #8 key is this prefix then the 32-byte seed (RFC 8410): it makes seeded keys.
const pkcs8Prefix = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

const seeded = new Map<string, Promise<DeviceIdentity>>();

/** A device's identity; the same seed (and set) gives the same keys, made once per process. */
export function deviceIdentity(set: MlDsaSet = "ML-DSA-65", seed?: string | number): Promise<DeviceIdentity> {
  if (seed === undefined) return makeIdentity(set, randomBytes(32), randomBytes(32));
  const id = `${set}:${seed}`;
  let identity = seeded.get(id);
  if (!identity) {
    const derive = (label: string) => createHash("sha256").update(`${label}:${seed}`).digest();
    identity = makeIdentity(set, derive("ed25519"), derive("ml-dsa"));
    seeded.set(id, identity);
  }
  return identity;
}

async function makeIdentity(set: MlDsaSet, ed25519Seed: Uint8Array, mlDsaSeed: Uint8Array): Promise<DeviceIdentity> {
  const pkcs8 = new Uint8Array(pkcs8Prefix.length + 32);
  pkcs8.set(pkcs8Prefix);
  pkcs8.set(ed25519Seed, pkcs8Prefix.length);
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const { x } = await crypto.subtle.exportKey("jwk", privateKey);
  const ed25519 = new Uint8Array(Buffer.from(x!, "base64url"));
  const { publicKey, secretKey } = mlDsa[set].keygen(mlDsaSeed);
  return {
    set,
    ed25519,
    ed25519_b64: Buffer.from(ed25519).toString("base64"),
    mlDsa: publicKey,
    mlDsa_b64: Buffer.from(publicKey).toString("base64"),
    keys: { ed25519, mlDsa: publicKey, mlDsaSet: set },
    signEd25519: async (message) => new Uint8Array(await crypto.subtle.sign("Ed25519", privateKey, new Uint8Array(message))),
    signMlDsa: (message) => mlDsa[set].sign(message, secretKey),
  };
}

/** A coin as uploaded: random public key bytes of its tier's size, signed by the identity. */
export async function signedCoin(identity: DeviceIdentity, tier: Tier, keyId: string = randomUUID()): Promise<Coin> {
  const publicKey = randomBytes(typicalSizes[tier].key);
  const message = coinMessage(tier, keyId, publicKey);
  const signature = tier === "GOLD" ? identity.signMlDsa(message) : await identity.signEd25519(message);
  return {
    key_id: keyId,
    coin_category: tier,
    public_key_b64: publicKey.toString("base64"),
    signature_b64: Buffer.from(signature).toString("base64"),
  };
}

export function signedCoins(identity: DeviceIdentity, tier: Tier, n: number): Promise<Coin[]> {
  return Promise.all(Array.from({ length: n }, () => signedCoin(identity, tier)));
}

/** An uploaded coin's bytes, as verifyCoins takes them. */
export function decodedCoin(coin: Coin): SignedCoin {
  return {
    key_id: coin.key_id,
    coin_category: coin.coin_category,
    publicKey: new Uint8Array(Buffer.from(coin.public_key_b64, "base64")),
    signature: new Uint8Array(Buffer.from(coin.signature_b64, "base64")),
  };
}
