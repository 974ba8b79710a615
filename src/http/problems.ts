import { Elysia, ValidationError as ElysiaValidationError } from "elysia";
import {
  AppError, BadRequestError, BadSignatureError, InternalError, KeyConflictError, NotFoundError, PayloadTooLargeError, RateLimitedError,
  UnauthorizedError, UnavailableError, ValidationError, type FieldError,
} from "../errors.ts";
import { requestInfo } from "./request-log.ts";

/** How each kind of error is answered: one place for every status and title. */
export const problemTypes: Record<string, { status: number; title: string }> = {
  "validation": { status: 422, title: "Invalid request" },
  "idempotency-key-reused": { status: 422, title: "Idempotency-Key reused with another body" },
  "payload-too-large": { status: 413, title: "Payload too large" },
  "bad-request": { status: 400, title: "Bad request" },
  "unsupported-media-type": { status: 415, title: "Unsupported media type" },
  "unauthorized": { status: 401, title: "Unauthorized" },
  "forbidden": { status: 403, title: "Forbidden" },
  "not-found": { status: 404, title: "Not found" },
  "key-conflict": { status: 409, title: "Key id already used with other content" },
  "bad-signature": { status: 422, title: "Invalid signature" },
  "device-state": { status: 409, title: "Device not ready for this request" },
  "digest-mismatch": { status: 409, title: "Digest does not match" },
  "rate-limited": { status: 429, title: "Too many requests" },
  "unavailable": { status: 503, title: "Service unavailable" },
  "internal": { status: 500, title: "Internal server error" },
};

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldError[];
  [extension: string]: unknown;
}

/** "/coins/3/key_id" → "coins[3].key_id" */
function fieldName(path: string, location: string): string {
  const name = path.split("/").filter(Boolean)
    .map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : i === 0 ? part : `.${part}`)).join("");
  return name || location;
}

interface SchemaMessage {
  field?: string;
  message?: string;
}

declare module "elysia/type-system/types" {
  interface ElysiaTypeCustomErrors {
    /** `error: { message, field? }` on a schema: the message clients get for that field. */
    aqm: { field?: string; message: string };
  }
}

/** Our schemas carry `error: { message }` so clients read "must be a UUID", not TypeBox internals. */
function messageOf(schema: unknown): SchemaMessage | undefined {
  const own = (schema as { error?: SchemaMessage } | undefined)?.error;
  if (own?.message) return own;
  const variants = (schema as { anyOf?: { error?: SchemaMessage }[] } | undefined)?.anyOf;
  return variants?.find((v) => v.error?.message)?.error;
}

function fromElysiaValidation(error: ElysiaValidationError): ValidationError {
  const location = ["query", "body", "params", "headers"].includes(error.type) ? error.type : "query";
  const custom = error.customError as SchemaMessage | undefined;
  const seen = new Set<string>();
  const errors: FieldError[] = [];
  for (const e of error.all) {
    const path = "path" in e ? String(e.path) : "";
    const field = path ? fieldName(path, location) : custom?.field ?? location;
    if (seen.has(field)) continue; // one message per field is enough; unions repeat themselves
    seen.add(field);
    const own = "schema" in e ? messageOf(e.schema) : undefined;
    const message = own?.message ?? (!path ? custom?.message : undefined) ?? ("summary" in e && e.summary ? e.summary : e.message);
    errors.push({ field, message: String(message) });
    if (errors.length >= 20) break;
  }
  return new ValidationError(`The request ${location} is invalid: ${errors.map((e) => e.field).join(", ")}`, errors);
}

/** Anything thrown while handling a request → the AppError it means. */
export function toAppError(code: string | number, error: unknown): AppError {
  if (error instanceof AppError) return error;
  const cause = (error as { cause?: unknown } | null)?.cause;
  if (code === "PARSE" && cause instanceof AppError) return cause; // Elysia wraps what a parser throws
  if (error instanceof ElysiaValidationError) return fromElysiaValidation(error);
  if (code === "PARSE") return new BadRequestError("The request body could not be parsed");
  if (code === "NOT_FOUND") return new NotFoundError("No such route");
  const { name, message, code: errorCode } = (error ?? {}) as { name?: string; message?: string; code?: unknown };
  return new InternalError(typeof errorCode === "string" ? errorCode : name ?? "Error", String(message ?? error).slice(0, 300), error);
}

export function problemOf(error: AppError): { problem: Problem; headers: Record<string, string> } {
  const { status, title } = problemTypes[error.kind] ?? problemTypes.internal!;
  const problem: Problem = { type: `urn:aqm:problem:${error.kind}`, title, status, detail: error.message };
  const headers: Record<string, string> = {};
  if (error instanceof ValidationError || error instanceof PayloadTooLargeError) {
    if (error.errors.length || error instanceof ValidationError) problem.errors = error.errors;
  }
  if (error instanceof KeyConflictError || error instanceof BadSignatureError) problem.key_ids = error.keyIds;
  if (error instanceof UnauthorizedError) headers["WWW-Authenticate"] = 'Bearer realm="aqm"';
  if (error instanceof RateLimitedError) {
    problem.retry_after = error.retryAfterS;
    headers["Retry-After"] = String(error.retryAfterS);
    if (error.rateLimit) {
      Object.assign(headers, { "RateLimit-Limit": String(error.rateLimit.limit), "RateLimit-Remaining": "0", "RateLimit-Reset": String(error.rateLimit.reset) });
    }
  }
  if (error instanceof UnavailableError) headers["Retry-After"] = String(error.retryAfterS);
  return { problem, headers };
}

export function problemResponse(error: AppError, requestId?: string): Response {
  const { problem, headers } = problemOf(error);
  const all: Record<string, string> = { "content-type": "application/problem+json", "cache-control": "no-store", ...headers };
  if (requestId) all["x-request-id"] = requestId;
  return new Response(JSON.stringify(problem), { status: problem.status, headers: all });
}

/**
 * Every error becomes RFC 9457 problem+json. A 500 is logged once, with its SQLSTATE (or error
 * class) and message, never the request body.
 */
export const problemHandler = new Elysia({ name: "problems" })
  .onError({ as: "global" }, ({ code, error, request, set, route }) => {
    const appError = toAppError(code, error);
    const id = requestInfo(request)?.id;
    if (appError instanceof InternalError) {
      console.error(JSON.stringify({
        time: new Date().toISOString(), level: "error", msg: "internal error", request_id: id, route: route || undefined,
        code: appError.code, error: appError.detail,
      }));
    }
    set.status = problemTypes[appError.kind]?.status ?? 500;
    return problemResponse(appError, id);
  });
