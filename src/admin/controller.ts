import { Elysia, t } from "elysia";
import { authenticated } from "../auth/plugin.ts";
import { requireAdmin, type TokenVerifier } from "../auth/jwt.ts";
import type { CoinService } from "../coins/service.ts";
import { problems } from "../http/openapi.ts";
import type { PairQuota } from "../limits/pair-quota.ts";
import type { RateLimiter } from "../limits/rate-limit.ts";

export const PurgeBody = t.Optional(t.Object({
  max_age_days: t.Optional(t.Integer({
    minimum: 1, maximum: 3650, default: 30, description: "Unclaimed coins older than this are deleted",
    error: { message: "must be an integer from 1 to 3650" },
  })),
}, { additionalProperties: false }));

export const HardDeleteBody = t.Optional(t.Object({
  grace_hours: t.Optional(t.Integer({
    minimum: 0, maximum: 8760, default: 1, description: "Claimed coins older than this are deleted",
    error: { message: "must be an integer from 0 to 8760" },
  })),
}, { additionalProperties: false }));

const Deleted = t.Object({ deleted: t.Integer({ minimum: 0 }) });

export interface AdminDeps {
  coins: CoinService;
  quota?: PairQuota;
  verify: TokenVerifier;
  limit: RateLimiter;
}

export const adminController = ({ coins, quota, verify, limit }: AdminDeps) =>
  new Elysia({ prefix: "/v1/admin" })
    .use(authenticated(verify))
    // A derive runs before body validation: a caller without the scope learns nothing more.
    .derive(({ caller, set }) => {
      requireAdmin(caller);
      Object.assign(set.headers, limit("admin", caller.userId));
      return {};
    })
    .post("/purge-stale", async ({ body }) => ({ deleted: await coins.purgeStale(body?.max_age_days ?? 30) }), {
      body: PurgeBody,
      parse: "json", // for the OpenAPI media type; the bounded parser in http/problem.ts runs first
      response: { 200: Deleted, ...problems(400, 401, 403, 415, 422, 429, 503) },
      detail: { tags: ["admin"], summary: "Delete coins nobody claimed within max_age_days (default 30)" },
    })
    .post("/hard-delete", async ({ body }) => {
      const deleted = await coins.hardDeleteFetched(body?.grace_hours ?? 1);
      await quota?.purgeExpired();
      return { deleted };
    }, {
      body: HardDeleteBody,
      parse: "json", // for the OpenAPI media type; the bounded parser in http/problem.ts runs first
      response: { 200: Deleted, ...problems(400, 401, 403, 415, 422, 429, 503) },
      detail: { tags: ["admin"], summary: "Delete claimed coins (and who claimed them) older than grace_hours (default 1)" },
    });
