import { Elysia, ValidationError as ElysiaValidationError } from "elysia";
import {
  BadRequestError, NotFoundError, PayloadTooLargeError, ProblemError, UnavailableError, isConnectionError,
  type FieldError, type Problem, ValidationError,
} from "../errors.ts";
import { limits } from "../coins/model.ts";
import { requestInfo } from "./request-log.ts";

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

/** Any thrown thing → the ProblemError the client sees. Unexpected ones are logged, never shown. */
export function toProblemError(code: string | number, error: unknown): ProblemError {
  if (error instanceof ProblemError) return error;
  // Elysia wraps what a parser throws; ours are already problems.
  const cause = (error as { cause?: unknown } | null)?.cause;
  if (code === "PARSE" && cause instanceof ProblemError) return cause;
  if (error instanceof ElysiaValidationError) return fromElysiaValidation(error);
  if (code === "PARSE") return new BadRequestError("The request body could not be parsed");
  if (code === "NOT_FOUND") return new NotFoundError("No such route");
  if (isConnectionError(error)) return new UnavailableError("The database is not reachable right now; retry shortly");
  const { name, message, code: errorCode } = (error ?? {}) as { name?: string; message?: string; code?: string };
  console.error(JSON.stringify({ level: "error", msg: "unhandled error", name, code: errorCode, error: String(message ?? error).slice(0, 300) }));
  return new ProblemError(500, "internal", "Internal server error", "The request could not be completed");
}

export function problemResponse(problem: ProblemError, requestId?: string): Response {
  const body: Problem = problem.toProblem();
  const headers: Record<string, string> = { "content-type": "application/problem+json", "cache-control": "no-store", ...problem.headers };
  if (requestId) headers["x-request-id"] = requestId;
  return new Response(JSON.stringify(body), { status: problem.status, headers });
}

/** No valid body nests deeper than 3; hostile nesting makes validation errors cost quadratic time. */
const MAX_DEPTH = 8;

function nestedDeeperThan(value: unknown, max: number): boolean {
  let level: unknown[] = [value];
  for (let depth = 0; level.length > 0; depth++) {
    if (depth > max) return true;
    const next: unknown[] = [];
    for (const v of level) if (v !== null && typeof v === "object") next.push(...Object.values(v));
    level = next;
  }
  return false;
}

async function readLimited(request: Request, max: number): Promise<string> {
  if (!request.body) return "";
  // Content-Length was checked in onRequest: read it in one go, with no extra copies.
  if (request.headers.has("content-length")) return request.text();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw new PayloadTooLargeError(`The request body is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/**
 * Body limit, JSON parsing and problem+json for every error. The size is checked from
 * Content-Length before anything is read, and again while reading (chunked bodies).
 */
export const problems = new Elysia({ name: "problems" })
  .onRequest(({ request }) => {
    const length = Number(request.headers.get("content-length") ?? 0);
    if (length > limits.requestBodyBytes) {
      throw new PayloadTooLargeError(`The request body is larger than ${limits.requestBodyBytes} bytes`);
    }
  })
  .onParse({ as: "global" }, async ({ request, contentType }) => {
    const text = await readLimited(request, limits.requestBodyBytes);
    if (text.trim() === "") return undefined;
    if (!contentType?.toLowerCase().startsWith("application/json")) {
      throw new ProblemError(415, "unsupported-media-type", "Unsupported media type", "Send the body as application/json");
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new BadRequestError("The request body is not valid JSON");
    }
    if (nestedDeeperThan(body, MAX_DEPTH)) throw new BadRequestError(`The request body is nested deeper than ${MAX_DEPTH} levels`);
    return body;
  })
  .onError({ as: "global" }, ({ code, error, request, set }) => {
    const problem = toProblemError(code, error);
    set.status = problem.status;
    return problemResponse(problem, requestInfo(request)?.id);
  });
