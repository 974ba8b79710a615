/**
 * Everything that can go wrong, in the server's own terms. Services and the database layer
 * throw these; the HTTP layer (http/problems.ts) is the one place that turns each into a status
 * and an RFC 9457 problem body, so a maintenance job logs the same error a request would answer.
 */
export interface FieldError {
  field: string;
  message: string;
}

export abstract class AppError extends Error {
  /** Stable name clients switch on: the problem type is `urn:aqm:problem:<kind>`. */
  abstract readonly kind: string;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A field (or several) of the request is invalid. */
export class ValidationError extends AppError {
  readonly kind = "validation";
  constructor(message: string, readonly errors: FieldError[] = []) {
    super(message);
  }
}

/** The body, or a blob in it, is larger than allowed. */
export class PayloadTooLargeError extends AppError {
  readonly kind = "payload-too-large";
  constructor(message: string, readonly errors: FieldError[] = []) {
    super(message);
  }
}

export class BadRequestError extends AppError {
  readonly kind = "bad-request";
}

export class UnsupportedMediaTypeError extends AppError {
  readonly kind = "unsupported-media-type";
}

export class UnauthorizedError extends AppError {
  readonly kind = "unauthorized";
}

export class ForbiddenError extends AppError {
  readonly kind = "forbidden";
}

export class NotFoundError extends AppError {
  readonly kind = "not-found";
}

/** key_ids already stored (or repeated in the batch) with other content; nothing was written. */
export class KeyConflictError extends AppError {
  readonly kind = "key-conflict";
  constructor(readonly keyIds: string[]) {
    super(`${keyIds.length} key_id(s) already exist with different content; nothing was written`);
  }
}

/** Coins whose signature does not verify against their device's identity key; nothing was written. */
export class BadSignatureError extends AppError {
  readonly kind = "bad-signature";
  constructor(readonly keyIds: string[]) {
    super(`${keyIds.length} coin signature(s) do not verify against the device's identity key; nothing was written`);
  }
}

/**
 * The device is not in a state this request needs: no identity keys registered where they are
 * required, past the user's device limit, removed meanwhile. The message names what to do.
 */
export class DeviceStateError extends AppError {
  readonly kind = "device-state";
}

/** The digest a device sent does not match what the server holds for it (POST /v1/devices/{id}/check). */
export class DigestMismatchError extends AppError {
  readonly kind = "digest-mismatch";
  constructor() {
    super("The server holds other identity keys or last-resort coins for this device than the digest describes");
  }
}

/** An Idempotency-Key already used for a claim with another body. */
export class IdempotencyMismatchError extends AppError {
  readonly kind = "idempotency-key-reused";
  constructor() {
    super("This Idempotency-Key was used for a claim with another body; use a new key for a new claim");
  }
}

/** A per-user rate limit or the pair quota: retry after `retryAfterS` seconds. */
export class RateLimitedError extends AppError {
  readonly kind = "rate-limited";
  constructor(message: string, readonly retryAfterS: number, readonly rateLimit?: { limit: number; reset: number }) {
    super(message);
  }
}

/** The database cannot serve this request right now (unreachable, saturated, too slow): retry shortly. */
export class UnavailableError extends AppError {
  readonly kind = "unavailable";
  /** `cause`: the database's error it stands for, when there is one (never shown). */
  constructor(message: string, readonly retryAfterS = 1, readonly sqlstate?: string, override readonly cause?: unknown) {
    super(message);
  }
}

/** Anything the server did not expect. Carries the SQLSTATE (or error class) for the log, never shown. */
export class InternalError extends AppError {
  readonly kind = "internal";
  constructor(readonly code: string, readonly detail: string, override readonly cause?: unknown) {
    super("The request could not be completed");
  }
}
