import { Elysia } from "elysia";
import { BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError } from "../errors.ts";

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
 * JSON bodies with a size limit: checked from Content-Length before anything is read, and again
 * while reading (chunked bodies); then parsed, with a nesting limit.
 */
export const jsonBody = (maxBytes: number) => new Elysia({ name: "json-body" })
  .onRequest(({ request }) => {
    const length = Number(request.headers.get("content-length") ?? 0);
    if (length > maxBytes) throw new PayloadTooLargeError(`The request body is larger than ${maxBytes} bytes`);
  })
  .onParse({ as: "global" }, async ({ request, contentType }) => {
    const text = await readLimited(request, maxBytes);
    if (text.trim() === "") return undefined;
    if (!contentType?.toLowerCase().startsWith("application/json")) throw new UnsupportedMediaTypeError("Send the body as application/json");
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new BadRequestError("The request body is not valid JSON");
    }
    if (nestedDeeperThan(body, MAX_DEPTH)) throw new BadRequestError(`The request body is nested deeper than ${MAX_DEPTH} levels`);
    return body;
  });
