import { SignJWT, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from "jose";
import { ForbiddenError, UnauthorizedError } from "../errors.ts";
import type { AuthKeys } from "./keys.ts";

export interface Caller {
  /** The token's subject: the user the request acts for. */
  userId: string;
  scopes: ReadonlySet<string>;
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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
  // Keyed by the whole token, signature included, and honouring exp: a hit is exactly a token
  // that verified before and has not expired since.
  const verified = new Map<string, { caller: Caller; expiresAt: number }>();
  const algorithms = [...(keys.secret ? ["HS256"] : []), ...(keys.publicKey ? [keys.publicKey.alg] : [])];
  const pickKey: JWTVerifyGetKey = (header) => {
    if (header.alg === "HS256" && keys.secret) return keys.secret;
    if (keys.publicKey && header.alg === keys.publicKey.alg) return keys.publicKey.key;
    throw new UnauthorizedError(`Tokens signed with ${header.alg} are not accepted`);
  };

  return async function verify(authorization: string | undefined | null): Promise<Caller> {
    const match = authorization?.match(/^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i);
    if (!match) throw new UnauthorizedError("Send Authorization: Bearer <token>");
    const token = match[1]!;
    const hit = verified.get(token);
    const at = now();
    if (hit && hit.expiresAt > at) return hit.caller;
    if (hit) verified.delete(token);
    let payload;
    try {
      ({ payload } = await jwtVerify(token, pickKey, {
        algorithms, issuer: keys.issuer, audience: keys.audience, currentDate: new Date(at), requiredClaims: requireExp ? ["exp"] : [],
      }));
    } catch (error) {
      if (error instanceof UnauthorizedError) throw error;
      if (error instanceof joseErrors.JWTExpired) throw new UnauthorizedError("The token has expired");
      if (error instanceof joseErrors.JWTClaimValidationFailed) {
        throw new UnauthorizedError(error.reason === "missing" ? `The token has no ${error.claim} claim` : `The token's ${error.claim} claim is not accepted`);
      }
      throw new UnauthorizedError("The token is malformed or its signature does not verify");
    }
    if (typeof payload.sub !== "string" || !uuid.test(payload.sub)) throw new UnauthorizedError("The token's sub must be a user UUID");
    if (typeof payload.exp === "number") {
      const from = typeof payload.iat === "number" ? Math.min(payload.iat, at / 1000) : at / 1000;
      if (payload.exp - from > maxTtlS) throw new UnauthorizedError(`The token lives longer than the ${maxTtlS} s this server accepts`);
    }
    const scope = typeof payload.scope === "string" ? payload.scope : "";
    const caller: Caller = { userId: payload.sub.toLowerCase(), scopes: new Set(scope.split(" ").filter(Boolean)) };
    if (verified.size >= CACHE_SIZE) verified.delete(verified.keys().next().value!); // oldest first
    // A token without exp (when allowed) is verified again at least hourly.
    verified.set(token, { caller, expiresAt: Math.min(typeof payload.exp === "number" ? payload.exp * 1000 : Infinity, at + 3600_000) });
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
  { admin = false, ttlSeconds = 3600, issuer, audience }: { admin?: boolean; ttlSeconds?: number; issuer?: string; audience?: string } = {},
): Promise<string> {
  const jwt = new SignJWT(admin ? { scope: "admin" } : {});
  if (issuer) jwt.setIssuer(issuer);
  if (audience) jwt.setAudience(audience);
  return jwt
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(secret);
}
