import { createHmac, timingSafeEqual } from "node:crypto";
import { compactVerify } from "jose";
import { UnauthorizedError } from "../errors.ts";
import type { AuthKeys } from "./keys.ts";

const bad = () => new UnauthorizedError("The token is malformed or its signature does not verify");

function json(part: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw bad();
  return value as Record<string, unknown>;
}

/**
 * Checks a compact JWS's signature and returns its payload (claims are checked by the caller).
 * HS256 is verified here with node:crypto's HMAC — synchronous, a few microseconds — because a
 * burst of new tokens through WebCrypto (jose) cost 50–300 µs each; the asymmetric algorithms go
 * through jose. Header parameters the server does not understand (`crit`) are refused.
 */
export async function verifySignature(token: string, keys: AuthKeys): Promise<Record<string, unknown>> {
  const [h, p, s] = token.split(".") as [string, string, string];
  const header = json(h);
  if (header.crit !== undefined) throw new UnauthorizedError("Tokens with critical header parameters are not accepted");
  if (header.alg === "HS256" && keys.secret) {
    const expected = createHmac("sha256", keys.secret).update(`${h}.${p}`).digest();
    const given = Buffer.from(s, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw bad();
    return json(p);
  }
  if (keys.publicKey && header.alg === keys.publicKey.alg) {
    try {
      await compactVerify(token, keys.publicKey.key, { algorithms: [keys.publicKey.alg] });
    } catch {
      throw bad();
    }
    return json(p);
  }
  throw new UnauthorizedError(`Tokens signed with ${String(header.alg)} are not accepted`);
}
