type Handler = (request: Request) => Response | Promise<Response>;

/**
 * Elysia finds the path by searching for "/" from the 12th character of the URL, assuming a host
 * of at least four characters: with `Host: a`, "GET /zz/v1/health" was routed as /v1/health. A
 * request whose host is shorter gets a stand-in host (only in the URL the router reads; headers,
 * body and signal are the client's), so it reaches the route it asked for.
 */
export function withRoutableHost(handler: Handler): Handler {
  return (request) => {
    const url = request.url;
    const start = url.indexOf("://") + 3;
    const slash = url.indexOf("/", start);
    if (slash < 0 || slash >= 11) return handler(request);
    const routable = `${url.slice(0, start)}host.invalid${url.slice(slash)}`;
    return handler(new Request(routable, {
      method: request.method, headers: request.headers, body: request.body, signal: request.signal, duplex: "half",
    } as RequestInit));
  };
}
