import { SignJWT } from "jose";
import { ForbiddenError, UnauthorizedError } from "../errors.ts";
import type { AuthKeys } from "./keys.ts";
import { verifySignature } from "./signature.ts";

export interface Caller {
  /** The token's subject: the user the request acts for. */
  userId: string;
  /** The device the token acts for (its `dev` claim; 1 when it has none). */
  deviceId: number;
  scopes: ReadonlySet<string>;
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Device ids are 1–127 (as Signal's). */
export const MAX_DEVICE_ID = 127;

/** Verified tokens kept, so a client's repeated requests skip the signature check. */
const CACHE_SIZE = 10_000;

export interface TokenRules {
  /** Refuse tokens without `exp` (AQM_JWT_REQUIRE_EXP). */
  requireExp: boolean;
  /** Refuse tokens that live longer than this, from `iat` or from now (AQM_JWT_MAX_TTL_S). */
  maxTtlS: number;
  /** The clock, ms since the epoch (tests move it). */
  now?: () => number;
}

/** Verifies `Authorization: Bearer <JWT>` (the scheme in any case); anything wrong is a 401 that says what. */
export function tokenVerifier(keys: AuthKeys, { requireExp, maxTtlS, now = Date.now }: TokenRules = { requireExp: true, maxTtlS: 86_400 }) {
  // Keyed by the whole Authorization header, the token's signature included, and honouring exp:
  // a hit is exactly a header that verified before and whose token has not expired since.
  const verified = new Map<string, { caller: Caller; expiresAt: number }>();

  return async function verify(authorization: string | undefined | null): Promise<Caller> {
    const hit = authorization ? verified.get(authorization) : undefined;
    const at = now();
    if (hit && hit.expiresAt > at) return hit.caller;
    if (hit) verified.delete(authorization!);
    const match = authorization?.match(/^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i);
    if (!match) throw new UnauthorizedError("Send Authorization: Bearer <token>");
    const token = match[1]!;
    const payload = await verifySignature(token, keys);
    const nowS = at / 1000;
    const numeric = (claim: string) => {
      const v = payload[claim];
      if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v))) throw new UnauthorizedError(`The token's ${claim} claim is not accepted`);
      return v as number | undefined;
    };
    const [exp, nbf, iat] = [numeric("exp"), numeric("nbf"), numeric("iat")];
    if (exp === undefined && requireExp) throw new UnauthorizedError("The token has no exp claim");
    if (exp !== undefined && exp <= nowS) throw new UnauthorizedError("The token has expired");
    if (nbf !== undefined && nbf > nowS) throw new UnauthorizedError("The token's nbf claim is not accepted (not valid yet)");
    if (exp !== undefined && exp - Math.min(iat ?? nowS, nowS) > maxTtlS) {
      throw new UnauthorizedError(`The token lives longer than the ${maxTtlS} s this server accepts`);
    }
    if (keys.issuer !== undefined && payload.iss !== keys.issuer) throw new UnauthorizedError("The token's iss claim is not accepted");
    const aud = payload.aud;
    if (keys.audience !== undefined && !(aud === keys.audience || (Array.isArray(aud) && aud.includes(keys.audience)))) {
      throw new UnauthorizedError("The token's aud claim is not accepted");
    }
    if (typeof payload.sub !== "string" || !uuid.test(payload.sub)) throw new UnauthorizedError("The token's sub must be a user UUID");
    const dev = payload.dev ?? 1;
    if (typeof dev !== "number" || !Number.isInteger(dev) || dev < 1 || dev > MAX_DEVICE_ID) {
      throw new UnauthorizedError(`The token's dev claim must be a device id, an integer from 1 to ${MAX_DEVICE_ID}`);
    }
    const scope = typeof payload.scope === "string" ? payload.scope : "";
    const caller: Caller = { userId: payload.sub.toLowerCase(), deviceId: dev, scopes: new Set(scope.split(" ").filter(Boolean)) };
    if (verified.size >= CACHE_SIZE) verified.delete(verified.keys().next().value!); // oldest first
    // A token without exp (when allowed) is verified again at least hourly. Only "Bearer <token>"
    // is kept: spaces around the token would make one token any number of entries.
    if (authorization!.length === "Bearer ".length + token.length) verified.set(authorization!, { caller, expiresAt: Math.min(exp !== undefined ? exp * 1000 : Infinity, at + 3600_000) });
    return caller;
  };
}

export type TokenVerifier = ReturnType<typeof tokenVerifier>;

export function requireAdmin(caller: Caller): void {
  if (!caller.scopes.has("admin")) throw new ForbiddenError("This route needs the admin scope");
}

/** Acting for another user than the token's subject is refused. */
export function requireSelf(caller: Caller, claimed: string | undefined, field: string): void {
  if (claimed !== undefined && claimed.toLowerCase() !== caller.userId) {
    throw new ForbiddenError(`${field} must be the token's subject; a token acts for one user only`);
  }
}

/** Signs an HS256 token (development and tests; production tokens come from an identity service). */
export async function signToken(
  secret: Uint8Array, userId: string,
  { admin = false, ttlSeconds = 3600, issuer, audience, device }: { admin?: boolean; ttlSeconds?: number; issuer?: string; audience?: string; device?: number } = {},
): Promise<string> {
  const jwt = new SignJWT({ ...(admin ? { scope: "admin" } : {}), ...(device !== undefined ? { dev: device } : {}) });
  if (issuer) jwt.setIssuer(issuer);
  if (audience) jwt.setAudience(audience);
  return jwt
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(secret);
}
