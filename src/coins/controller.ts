import { Elysia } from "elysia";
import { authenticated } from "../auth/plugin.ts";
import { requireSelf, type TokenVerifier } from "../auth/jwt.ts";
import type { Config } from "../config.ts";
import { ForbiddenError, PayloadTooLargeError, ValidationError, type FieldError } from "../errors.ts";
import { problems } from "../http/openapi.ts";
import type { PairQuota } from "../limits/pair-quota.ts";
import type { RateLimiter } from "../limits/rate-limit.ts";
import { countClaim, type Metrics } from "../metrics/registry.ts";
import { CountQuery, FetchQuery, FetchResult, Inventory, UploadBody, UploadResult, decodedLength, limits, type Coin } from "./model.ts";
import type { CoinService } from "./service.ts";

export interface CoinsDeps {
  coins: CoinService;
  /** Absent when rate limits are off. */
  quota?: PairQuota;
  verify: TokenVerifier;
  limit: RateLimiter;
  metrics?: Metrics;
  config: Config;
}

function checkBlobSizes(coins: Coin[]): void {
  const errors: FieldError[] = [];
  coins.forEach((coin, i) => {
    if (decodedLength(coin.public_key_b64) > limits.publicKeyBytes) {
      errors.push({ field: `coins[${i}].public_key_b64`, message: `decodes to more than ${limits.publicKeyBytes} bytes` });
    }
    if (decodedLength(coin.signature_b64) > limits.signatureBytes) {
      errors.push({ field: `coins[${i}].signature_b64`, message: `decodes to more than ${limits.signatureBytes} bytes` });
    }
  });
  if (errors.length) throw new PayloadTooLargeError(`${errors.length} blob(s) are too large; nothing was written`, errors);
}

export const coinsController = ({ coins, quota, verify, limit, metrics, config }: CoinsDeps) =>
  new Elysia({ prefix: "/v1/coins" })
    .use(authenticated(verify))
    .post("/upload", async ({ body, caller, set }) => {
      Object.assign(set.headers, limit("upload", caller.userId));
      requireSelf(caller, body.user_id, "user_id");
      checkBlobSizes(body.coins);
      const { inserted, duplicates, insertedByTier } = await coins.uploadCoins(caller.userId, body.coins);
      for (const [tier, n] of Object.entries(insertedByTier)) metrics?.uploaded.inc({ tier }, n);
      return { inserted, duplicates };
    }, {
      body: UploadBody,
      parse: "json", // for the OpenAPI media type; the bounded parser in http/problem.ts runs first
      response: { 200: UploadResult, ...problems(400, 401, 403, 409, 413, 415, 422, 429, 503) },
      detail: {
        tags: ["coins"], summary: "Upload a batch of your own coins (1–100), atomically",
        description: "Identical re-uploads count as duplicates; a key_id reused with other content is a 409 and nothing is written.",
      },
    })
    .get("/fetch", async ({ query, caller, set }) => {
      Object.assign(set.headers, limit("fetch", caller.userId));
      requireSelf(caller, query.requester_id, "requester_id");
      set.headers["cache-control"] = "no-store";
      const { target_user_id: target, coin_category: tier, count } = query;
      let claimed;
      if (quota) {
        const claim = await quota.claim(target, caller.userId, tier, count);
        set.headers["x-pair-quota-remaining"] = String(claim.remaining);
        claimed = claim.coins;
      } else {
        claimed = await coins.fetchCoins(target, caller.userId, tier, count);
      }
      countClaim(metrics, tier, count, claimed.length);
      return { coins: claimed };
    }, {
      // Elysia would read "0x10" or "1e1" as numbers; only plain decimal digits are a count.
      transform({ query }) {
        if (typeof query.count === "string" && !/^\d{1,3}$/.test(query.count)) {
          throw new ValidationError("The request query is invalid: count", [{ field: "count", message: `must be an integer from 1 to ${limits.coinsPerFetch}` }]);
        }
      },
      query: FetchQuery,
      response: { 200: FetchResult, ...problems(401, 403, 422, 429, 503) },
      detail: {
        tags: ["coins"], summary: "Claim up to `count` of a user's coins of one tier; each coin is handed out once",
        description: "Oldest first. Fewer or none is a normal 200. One requester may claim at most the pair quota of one target per 24 h.",
      },
    })
    .get("/count", ({ query, caller, set }) => {
      Object.assign(set.headers, limit("count", caller.userId));
      const userId = query.user_id?.toLowerCase() ?? caller.userId;
      if (config.AQM_COUNT_VISIBILITY === "self" && userId !== caller.userId) {
        throw new ForbiddenError("This server only shows users their own counts");
      }
      set.headers["cache-control"] = "no-store";
      return coins.getInventoryCount(userId);
    }, {
      query: CountQuery,
      response: { 200: Inventory, ...problems(401, 403, 422, 429, 503) },
      detail: { tags: ["coins"], summary: "Available coins per tier of a user (default: yourself)" },
    });
