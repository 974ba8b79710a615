import { Elysia } from "elysia";
import { ConnectionGate, type GateEvents } from "../db/gate.ts";

const held = new WeakMap<Request, () => void>();

/**
 * Bounds how many large request bodies (uploads, up to 1 MiB each) are read and parsed at once.
 * A body waiting for a database connection would otherwise sit in memory several times over
 * (text, parsed JSON, parameters); a request waiting here has not been read yet, so its bytes
 * stay in the socket. Waits at most `waitMs`, then 503, like a database connection.
 */
export function bodyGate(limit: number, waitMs: number, routes: readonly string[], events?: GateEvents) {
  const gate = new ConnectionGate(limit, 100_000, events);
  const release = (request: Request) => {
    held.get(request)?.();
    held.delete(request);
  };
  return new Elysia({ name: "body-gate" })
    // async, so that Elysia awaits it (it decides by the function's kind)
    .onRequest(async ({ request }) => {
      if (request.method === "GET" || request.method === "HEAD" || !routes.includes(new URL(request.url).pathname)) return;
      await new Promise<void>((admitted, refused) => {
        gate.run(() => new Promise<void>((done) => {
          held.set(request, done);
          admitted();
        }), performance.now() + waitMs, request.signal).catch(refused);
      });
    })
    .onAfterResponse({ as: "global" }, ({ request }) => release(request))
    .onError({ as: "global" }, ({ request }) => {
      // the response is still to come; release once it went (or the connection did)
      queueMicrotask(() => release(request));
    });
}
