import { Elysia } from "elysia";
import { requestInfo } from "../http/request-log.ts";
import type { TokenVerifier } from "./jwt.ts";

/** Adds `caller` (the verified token's subject and scopes) to every route after it; 401 otherwise. */
export const authenticated = (verify: TokenVerifier) =>
  new Elysia()
    // request.headers, not Elysia's headers object: that one is built from every header, per request
    .derive({ as: "scoped" }, async ({ request }) => {
      const caller = await verify(request.headers.get("authorization"));
      const info = requestInfo(request);
      if (info) info.userId = caller.userId;
      return { caller };
    });
