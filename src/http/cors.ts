type Handler = (request: Request) => Response | Promise<Response>;

const allowMethods = "GET, POST, PUT, DELETE";
const allowHeaders = "authorization, content-type, idempotency-key, x-request-id";
/** What a browser client may read besides the CORS-safelisted response headers. */
const exposeHeaders = [
  "x-request-id", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-pair-quota-remaining", "www-authenticate",
].join(", ");
const PREFLIGHT_MAX_AGE_S = 600;

/** AQM_CORS_ORIGINS as a list: "" → none (CORS off), "*" → any origin, else the origins named. */
export function parseOrigins(setting: string): { any: boolean; origins: Set<string> } | null {
  const entries = setting.split(",").map((o) => o.trim().replace(/\/+$/, "").toLowerCase()).filter(Boolean);
  if (entries.length === 0) return null;
  return { any: entries.includes("*"), origins: new Set(entries) };
}

function withHeaders(response: Response, headers: Record<string, string>): Response {
  try {
    for (const [name, value] of Object.entries(headers)) {
      if (name === "vary" && response.headers.has("vary")) response.headers.append("vary", value);
      else response.headers.set(name, value);
    }
    return response;
  } catch {
    // a Response with immutable headers: answer a copy
    const copy = new Response(response.body, response);
    for (const [name, value] of Object.entries(headers)) copy.headers.set(name, value);
    return copy;
  }
}

/**
 * CORS for the origins in AQM_CORS_ORIGINS, around the whole app, so that every answer carries it
 * (problem responses too). Preflights from an allowed origin are answered here with 204. Tokens
 * travel in the Authorization header, never cookies, so credentials are not allowed.
 */
export function withCors(handler: Handler, setting: string): Handler {
  const policy = parseOrigins(setting);
  if (!policy) return handler;
  const allowed = (origin: string | null): origin is string => origin !== null && (policy.any || policy.origins.has(origin.toLowerCase()));
  const varyOn: Record<string, string> = policy.any ? {} : { vary: "origin" };
  return async (request) => {
    const origin = request.headers.get("origin");
    if (request.method === "OPTIONS" && request.headers.has("access-control-request-method") && allowed(origin)) {
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": policy.any ? "*" : origin, "access-control-allow-methods": allowMethods,
          "access-control-allow-headers": allowHeaders, "access-control-max-age": String(PREFLIGHT_MAX_AGE_S), ...varyOn,
        },
      });
    }
    const response = await handler(request);
    if (!allowed(origin)) return policy.any ? response : withHeaders(response, varyOn);
    return withHeaders(response, { "access-control-allow-origin": policy.any ? "*" : origin, "access-control-expose-headers": exposeHeaders, ...varyOn });
  };
}
