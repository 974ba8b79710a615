import { AppError, InternalError, KeyConflictError, UnavailableError, ValidationError } from "../errors.ts";

/** SQLSTATE codes the server reacts to by name (the classes 08 and 57P: isTransient). */
export const SQLSTATE = {
  checkViolation: "23514",
  queryCanceled: "57014",
  tooManyConnections: "53300",
  deadlock: "40P01",
  serialization: "40001",
  lockNotAvailable: "55P03",
  undefinedTable: "42P01",
  /** A node that is no longer the writable primary (a switchover demoting it): nothing was written. */
  readOnly: "25006",
  /** Raised by aqm_key_conflict() (migration 011). */
  keyConflict: "AQ409",
} as const;

/** The SQLSTATE of a PostgreSQL error, or undefined for anything else. */
export function sqlstateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** postgres.js's own codes for a connection that failed, closed, timed out or went silent (its Errors.connection): only it makes these. */
export const driverConnectionCodes: ReadonlySet<string> = new Set(["CONNECT_TIMEOUT", "CONNECTION_CLOSED", "CONNECTION_ENDED",
  "CONNECTION_DESTROYED", "CONNECTION_UNRESPONSIVE"]);

/** postgres.js's codes and the OS's for a connection that failed. */
const connectionCodes = new Set([...driverConnectionCodes,
  "ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]);

/** "PostgreSQL cannot serve this right now": unreachable, shutting down, no longer the primary, out of connections, a timeout or a lock conflict. */
export function isTransient(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  return code.startsWith("08") || code.startsWith("57P") || connectionCodes.has(code) || ([
    SQLSTATE.tooManyConnections, SQLSTATE.queryCanceled, SQLSTATE.deadlock, SQLSTATE.serialization, SQLSTATE.lockNotAvailable,
    SQLSTATE.readOnly,
  ] as string[]).includes(code);
}

/**
 * Any error from postgres.js → the domain error it means. Errors the server already speaks pass
 * through; transient ones become 503s; invalid values a caller slipped past validation become
 * 422s; anything else is an InternalError carrying the SQLSTATE and PostgreSQL's message.
 */
export function translate(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const code = sqlstateOf(error);
  if (isTransient(error)) {
    const sqlstate = code ?? (error as { code: string }).code;
    const message = code === SQLSTATE.queryCanceled ? "The database did not answer in time; retry shortly"
      : code === SQLSTATE.deadlock || code === SQLSTATE.serialization || code === SQLSTATE.lockNotAvailable ? "The request met a concurrent one; retry shortly"
      : "The database is not reachable right now; retry shortly";
    return new UnavailableError(message, 1, sqlstate, error);
  }
  const message = String((error as { message?: unknown } | null)?.message ?? error);
  switch (code) {
    case SQLSTATE.keyConflict:
      return new KeyConflictError(String((error as { detail?: unknown }).detail ?? "").split(",").filter(Boolean));
    case SQLSTATE.checkViolation:
      return new ValidationError("A value is outside its allowed set", [{ field: "coin_category", message: "must be GOLD, SILVER or BRONZE" }]);
    case "22P02": // invalid_text_representation: a user id that is not a UUID
      return new ValidationError("A user id is not a UUID", [{ field: "user_id", message: "must be a UUID" }]);
    case "22023": // invalid_parameter_value: decode() of invalid base64
      return new ValidationError("A blob is not valid base64", [{ field: "coins", message: "blobs must be standard base64" }]);
    case "22001": // string_data_right_truncation
      return new ValidationError("A key_id is longer than 36 characters", [{ field: "key_id", message: "at most 36 characters" }]);
    default:
      return new InternalError(code ?? (error as { name?: string } | null)?.name ?? "Error", message.slice(0, 300), error);
  }
}

/** The SQLSTATE of an error as the claim queue receives it: translated (sqlstate) or raw. */
const stateOf = (error: unknown) => (error as { sqlstate?: string } | null)?.sqlstate ?? sqlstateOf(error);

/** A statement that failed only because of a concurrent one (deadlock, serialization): nothing was done, run it again. */
export const isConflict = (error: unknown) => {
  const code = stateOf(error);
  return code === SQLSTATE.deadlock || code === SQLSTATE.serialization;
};

/** The message of aqm_claim_moved() (migration 017). */
const CLAIM_MOVED_MESSAGE = "a coin this claim picked changed after the claim began";

/** Why a claim statement met a concurrent one: its metric label (the claim statement's aqm_claim_moved() raises 40001 with its own message). */
export function conflictKind(error: unknown): "deadlock" | "coin_moved" | "serialization" {
  if (stateOf(error) === SQLSTATE.deadlock) return "deadlock";
  const raw = (error as { cause?: unknown } | null)?.cause ?? error; // (translated: the database's error is its cause)
  return String((raw as { message?: unknown } | null)?.message ?? "").startsWith(CLAIM_MOVED_MESSAGE) ? "coin_moved" : "serialization";
}

/**
 * Citus refused a statement it could not route to one shard (0A000: the owners of a batch were
 * not one shard's, e.g. after a shard split): nothing was done; the shard map is read again.
 */
export const isUnrouted = (error: unknown) => error instanceof InternalError && error.code === "0A000";
