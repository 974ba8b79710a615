/**
 * Every error the server reports, in one place. Each one becomes an RFC 9457
 * application/problem+json body; `type` is a stable URI clients can switch on.
 */
export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldError[];
  [extension: string]: unknown;
}

export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    detail: string,
    readonly extensions: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
    this.name = new.target.name;
  }

  toProblem(): Problem {
    return { type: `urn:aqm:problem:${this.slug}`, title: this.title, status: this.status, detail: this.message, ...this.extensions };
  }
}

export class ValidationError extends ProblemError {
  constructor(detail: string, readonly errors: FieldError[] = []) {
    super(422, "validation", "Invalid request", detail, { errors });
  }
}

export class PayloadTooLargeError extends ProblemError {
  constructor(detail: string, errors: FieldError[] = []) {
    super(413, "payload-too-large", "Payload too large", detail, errors.length ? { errors } : {});
  }
}

export class BadRequestError extends ProblemError {
  constructor(detail: string) {
    super(400, "bad-request", "Bad request", detail);
  }
}

export class UnauthorizedError extends ProblemError {
  constructor(detail: string) {
    super(401, "unauthorized", "Unauthorized", detail, {}, { "WWW-Authenticate": 'Bearer realm="aqm"' });
  }
}

export class ForbiddenError extends ProblemError {
  constructor(detail: string) {
    super(403, "forbidden", "Forbidden", detail);
  }
}

export class NotFoundError extends ProblemError {
  constructor(detail: string) {
    super(404, "not-found", "Not found", detail);
  }
}

export class KeyConflictError extends ProblemError {
  constructor(readonly keyIds: string[]) {
    super(409, "key-conflict", "Key id already used with other content",
      `${keyIds.length} key_id(s) already exist with different content; nothing was written`, { key_ids: keyIds });
  }
}

export class RateLimitedError extends ProblemError {
  constructor(detail: string, retryAfterSeconds: number, headers: Record<string, string> = {}) {
    super(429, "rate-limited", "Too many requests", detail, { retry_after: retryAfterSeconds },
      { "Retry-After": String(retryAfterSeconds), ...headers });
  }
}

export class UnavailableError extends ProblemError {
  constructor(detail: string, retryAfterSeconds = 1) {
    super(503, "unavailable", "Service unavailable", detail, {}, { "Retry-After": String(retryAfterSeconds) });
  }
}

/** A PostgreSQL error the service did not expect; carries the SQLSTATE, never the SQL text. */
export class DatabaseError extends ProblemError {
  constructor(readonly sqlstate: string, override readonly cause?: unknown) {
    super(500, "internal", "Internal server error", "The request could not be completed");
  }
}

/** SQLSTATE codes the server reacts to. */
export const SQLSTATE = {
  uniqueViolation: "23505",
  checkViolation: "23514",
  queryCanceled: "57014",
  adminShutdown: "57P01",
  cannotConnectNow: "57P03",
  tooManyConnections: "53300",
} as const;

/** The SQLSTATE of a postgres.js error, or undefined for anything else. */
export function sqlstateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** SQLSTATEs that mean "try again shortly": a timeout, a lock or serialization conflict. */
const transient = new Set([SQLSTATE.queryCanceled, "55P03", "40001", "40P01"]);

/**
 * Errors that mean "PostgreSQL cannot serve this right now" (unreachable, shutting down, out of
 * connections, statement timeout) rather than "this request is wrong": answered 503.
 */
export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  if (code.startsWith("08") || code === SQLSTATE.adminShutdown || code === SQLSTATE.cannotConnectNow
    || code === SQLSTATE.tooManyConnections || transient.has(code)) return true;
  return ["CONNECT_TIMEOUT", "CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EPIPE", "ETIMEDOUT"].includes(code);
}
