import { Elysia, t } from "elysia";
import { authenticated } from "../auth/plugin.ts";
import { requireSelf, type TokenVerifier } from "../auth/jwt.ts";
import { ValidationError } from "../errors.ts";
import { problemResponses } from "../http/openapi.ts";
import type { Throttle } from "../rate-limit/throttle.ts";
import { countClaim, type Metrics } from "../metrics/registry.ts";
import type { ClaimResult, ClaimService } from "./service.ts";
import { ClaimBody, ClaimDevicesResult, ClaimResult as ClaimResultSchema, FetchQuery, FetchResult } from "../coins/model.ts";
import { tiers, wireLimits, type TierCounts } from "../coins/tiers.ts";

export interface ClaimRoutesDeps {
  claims: ClaimService;
  verify: TokenVerifier;
  throttle: Throttle;
  metrics?: Metrics;
  holdOpen?: (request: Request, seconds: number) => void;
}

const tierNumbers = ([gold, silver, bronze]: TierCounts) => ({ gold, silver, bronze });

const countError = { field: "count", message: `must be an integer from 1 to ${wireLimits.coinsPerClaim}` };

function answered(set: { headers: Record<string, unknown> }, result: ClaimResult, want: TierCounts, metrics?: Metrics): void {
  set.headers["cache-control"] = "no-store";
  if (result.remaining !== undefined) set.headers["x-pair-quota-remaining"] = String(result.remaining);
  if (!result.replayed) countClaim(metrics, want, result.coins, result.short);
}

/** GET /v1/coins/fetch (the original, one-tier form) and POST /v1/coins/claim: both claim through one service. */
export const claimController = ({ claims, verify, throttle, metrics, holdOpen }: ClaimRoutesDeps) =>
  new Elysia({ prefix: "/v1/coins" })
    .use(authenticated(verify))
    .get("/fetch", async ({ query, caller, set, request }) => {
      Object.assign(set.headers, throttle("fetch", caller.userId));
      requireSelf(caller, query.requester_id, "requester_id");
      const want: TierCounts = [0, 0, 0];
      want[tiers.indexOf(query.coin_category)] = query.count;
      const result = await claims.claim({
        requester: caller.userId, target: query.target_user_id.toLowerCase(), want, fallback: false, allowLastResort: false, waitMs: 0,
        signal: request.signal,
      });
      answered(set, result, want, metrics);
      return { coins: result.coins };
    }, {
      // Elysia would read "0x10" or "1e1" as numbers; only plain decimal digits are a count.
      transform({ query }) {
        if (typeof query.count === "string" && !/^\d{1,3}$/.test(query.count)) {
          throw new ValidationError("The request query is invalid: count", [countError]);
        }
      },
      query: FetchQuery,
      response: { 200: FetchResult, ...problemResponses(401, 403, 422, 429, 503) },
      detail: {
        tags: ["coins"], summary: "Claim up to `count` of a user's coins of one tier; each coin is handed out once",
        description: "The simple form of POST /v1/coins/claim. Oldest first. Fewer or none is a normal 200. "
          + "One requester may claim at most the pair quota of one target per 24 h.",
      },
    })
    .post("/claim", async ({ body, headers, caller, set, request }) => {
      Object.assign(set.headers, throttle("fetch", caller.userId));
      const want: TierCounts = [body.want.gold ?? 0, body.want.silver ?? 0, body.want.bronze ?? 0];
      const total = want[0] + want[1] + want[2];
      if (total < 1 || total > wireLimits.coinsPerClaim) {
        throw new ValidationError("The request body is invalid: want", [{ field: "want", message: `must ask for 1 to ${wireLimits.coinsPerClaim} coins in all` }]);
      }
      const target = body.target_user_id.toLowerCase();
      const fallback = (body.fallback ?? "down") === "down";
      const waitMs = body.wait_ms ?? 0;
      const allowLastResort = body.allow_last_resort ?? false;
      const key = headers["idempotency-key"]?.toLowerCase();
      const devices = Array.isArray(body.devices) ? [...body.devices].sort((a, b) => a - b) : body.devices;
      if (waitMs > 0) holdOpen?.(request, Math.ceil(waitMs / 1000) + 10);
      const result = await claims.claim({
        requester: caller.userId, target, want, fallback, allowLastResort, waitMs, idempotencyKey: key, devices, requesterDevice: caller.deviceId,
        canonicalBody: key && JSON.stringify([target, want, fallback, waitMs, allowLastResort, ...(devices === undefined ? [] : [devices])]),
        signal: request.signal,
      });
      answered(set, result, want, metrics);
      if (result.devices !== undefined) return { devices: result.devices.map((d) => ({ ...d, short: tierNumbers(d.short) })) };
      return { coins: result.coins, short: tierNumbers(result.short) };
    }, {
      body: ClaimBody,
      headers: t.Object({
        "idempotency-key": t.Optional(t.String({
          format: "uuid", error: { message: "must be a UUID" },
          description: "Makes the claim replayable: a retry with the same key and body returns the same coins",
        })),
      }, { additionalProperties: true }),
      parse: "json",
      response: { 200: t.Union([ClaimResultSchema, ClaimDevicesResult]), ...problemResponses(400, 401, 413, 415, 422, 429, 503) },
      detail: {
        tags: ["coins"], summary: "Claim coins of several tiers in one call, with fallback, waiting, last-resort coins and idempotent retry",
        description: "Each tier is served from its own stock first; with fallback \"down\" a shortfall is filled from lower tiers "
          + "(GOLD's first, from SILVER then BRONZE; then SILVER's from BRONZE). With wait_ms, a claim that finds nothing waits for the "
          + "owner's next upload (on any instance). With an Idempotency-Key (a UUID) a retry returns the first answer, byte for byte, "
          + "without claiming more or counting against the quota again; the same key with another body is 422.",
      },
    });
