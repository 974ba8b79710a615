import { createPublicKey, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { importSPKI } from "jose";
import { ConfigError, type Config } from "../config.ts";

export type AsymmetricAlg = "EdDSA" | "ES256" | "RS256";

export interface AuthKeys {
  /** HS256 secret, when one is configured (or generated for development). */
  secret?: Uint8Array;
  publicKey?: { alg: AsymmetricAlg; key: CryptoKey };
  issuer?: string;
  audience?: string;
  /** Where the development secret came from, for the start-up message. */
  source: "AQM_JWT_SECRET" | "AQM_JWT_PUBLIC_KEY" | "both" | "development secret";
}

function algorithmOf(pem: string): AsymmetricAlg {
  let type: string | undefined;
  try {
    type = createPublicKey(pem).asymmetricKeyType;
  } catch {
    throw new ConfigError("AQM_JWT_PUBLIC_KEY is not a readable PEM public key");
  }
  if (type === "ed25519") return "EdDSA";
  if (type === "ec") return "ES256";
  if (type === "rsa") return "RS256";
  throw new ConfigError(`AQM_JWT_PUBLIC_KEY has key type ${type}; expected Ed25519, P-256 or RSA`);
}

/**
 * A development secret: created once in the data directory, reused across restarts. `stands in`
 * names the settings it replaces: when the file cannot be made (Deno without file access, as
 * `deno task start` runs; an unwritable AQM_DATA_DIR) the ConfigError says what to set instead.
 */
export function developmentSecret(dataDir: string, name = "jwt-secret", standsIn = "AQM_JWT_SECRET"): Uint8Array {
  const file = join(dataDir, name);
  try {
    if (!existsSync(file)) {
      mkdirSync(dataDir, { recursive: true });
      writeFileSync(file, randomBytes(32).toString("base64url") + "\n", { mode: 0o600 });
    }
    return new TextEncoder().encode(readFileSync(file, "utf8").trim());
  } catch (error) {
    const { name: kind, message } = error as Error;
    const unset = standsIn === "AQM_JWT_SECRET" ? "neither AQM_JWT_SECRET nor AQM_JWT_PUBLIC_KEY is set" : `${standsIn} is not set`;
    const set = standsIn === "AQM_JWT_SECRET" ? "set AQM_JWT_SECRET (at least 32 characters) or AQM_JWT_PUBLIC_KEY" : `set ${standsIn} (at least 32 characters)`;
    // Deno 2 names a missing --allow-read/--allow-write NotCapable (PermissionDenied before)
    if (kind === "NotCapable" || kind === "PermissionDenied") {
      throw new ConfigError(`${unset}, and the development stand-in ${file} needs file access, which deno task start does not allow: `
        + `${set}, or use deno task dev, which allows the file`);
    }
    throw new ConfigError(`${unset}, and the development stand-in ${file} cannot be created (${message}): `
      + `${set}, or point AQM_DATA_DIR at a writable directory`);
  }
}

/**
 * The keys bearer tokens are checked with. Without any configured key the server uses a
 * development secret, except in production, where it refuses to start.
 */
export async function loadAuthKeys(config: Config): Promise<AuthKeys> {
  const { AQM_JWT_SECRET: secret, AQM_JWT_PUBLIC_KEY: pem } = config;
  const common = { issuer: config.AQM_JWT_ISSUER || undefined, audience: config.AQM_JWT_AUDIENCE || undefined };
  if (!secret && !pem) {
    if (config.NODE_ENV === "production") {
      throw new ConfigError("NODE_ENV=production needs AQM_JWT_SECRET (at least 32 bytes) or AQM_JWT_PUBLIC_KEY (PEM)");
    }
    return { ...common, secret: developmentSecret(config.AQM_DATA_DIR), source: "development secret" };
  }
  let publicKey: AuthKeys["publicKey"];
  if (pem) {
    const alg = algorithmOf(pem);
    publicKey = { alg, key: await importSPKI(pem, alg) };
  }
  return {
    ...common,
    secret: secret ? new TextEncoder().encode(secret) : undefined,
    publicKey,
    source: secret && pem ? "both" : secret ? "AQM_JWT_SECRET" : "AQM_JWT_PUBLIC_KEY",
  };
}

export interface HashSecrets {
  current: Uint8Array;
  previous?: Uint8Array;
}

/**
 * The key of the keyed hashes kept in the database (claims/keys.ts). Production needs
 * AQM_HASH_SECRET, shared by every instance; development creates one in the data directory.
 */
export function loadHashSecrets(config: Config): HashSecrets {
  const encode = (s: string) => new TextEncoder().encode(s);
  const previous = config.AQM_HASH_SECRET_PREVIOUS ? encode(config.AQM_HASH_SECRET_PREVIOUS) : undefined;
  if (config.AQM_HASH_SECRET) return { current: encode(config.AQM_HASH_SECRET), previous };
  if (config.NODE_ENV === "production") {
    throw new ConfigError("NODE_ENV=production needs AQM_HASH_SECRET (at least 32 bytes, the same on every instance)");
  }
  return { current: developmentSecret(config.AQM_DATA_DIR, "hash-secret", "AQM_HASH_SECRET"), previous };
}
