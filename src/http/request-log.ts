import { Elysia } from "elysia";

export interface RequestInfo {
  id: string;
  start: number;
  userId?: string;
  logged?: boolean;
  measured?: boolean;
}

const infos = new WeakMap<Request, RequestInfo>();

export const requestInfo = (request: Request): RequestInfo | undefined => infos.get(request);

const acceptableId = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * X-Request-Id (accepted when well-formed, else generated; echoed back) and one JSON line per
 * request: time, id, method, route, status, duration, user. Never headers, tokens or bodies.
 */
export const requestLog = (enabled: boolean) =>
  new Elysia({ name: "request-log" })
    .onRequest(({ request, set }) => {
      const given = request.headers.get("x-request-id");
      const id = given && acceptableId.test(given) ? given : crypto.randomUUID();
      infos.set(request, { id, start: performance.now() });
      set.headers["x-request-id"] = id;
    })
    .onAfterResponse({ as: "global" }, ({ request, route, set }) => {
      const info = infos.get(request);
      // Elysia can run this hook twice for a request that failed while parsing.
      if (!enabled || info?.logged) return;
      if (info) info.logged = true;
      console.log(JSON.stringify({
        time: new Date().toISOString(),
        request_id: info?.id,
        method: request.method,
        route: route || "(unmatched)",
        status: typeof set.status === "number" ? set.status : 200,
        ms: info ? Math.round((performance.now() - info.start) * 100) / 100 : undefined,
        user_id: info?.userId,
      }));
    });
