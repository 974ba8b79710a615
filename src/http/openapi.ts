import { openapi } from "@elysiajs/openapi";
import { FormatRegistry } from "@sinclair/typebox";
import { Elysia, t } from "elysia";

// @elysiajs/openapi registers TypeBox's string formats through its bundled Zod, building a Zod schema
// on every check: that was a tenth of the server's CPU under claim load. Every UUID in a request
// is checked by this regex instead (this module runs after the plugin's).
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
FormatRegistry.Set("uuid", (value) => uuid.test(value));

export const ProblemSchema = t.Object({
  type: t.String({ examples: ["urn:aqm:problem:validation"] }),
  title: t.String(),
  status: t.Integer(),
  detail: t.String(),
  errors: t.Optional(t.Array(t.Object({ field: t.String(), message: t.String() }))),
}, { description: "RFC 9457 problem details (application/problem+json)", additionalProperties: true });

/** OpenAPI response entries for the error statuses a route can answer with. */
export function problemResponses<const S extends number>(...statuses: S[]): Record<S, typeof ProblemSchema> {
  return Object.fromEntries(statuses.map((s) => [s, ProblemSchema])) as Record<S, typeof ProblemSchema>;
}

// Swagger UI's files come from the swagger-ui-dist package: /docs renders with no internet access.
// Text imports, loaded on the first request for them: `bun build --compile` embeds them in the
// executable, and Bun and Deno read them alike (no path resolved at run time).
const assets = {
  "swagger-ui.css": {
    type: "text/css; charset=utf-8",
    load: () => import("swagger-ui-dist/swagger-ui.css", { with: { type: "text" } }),
  },
  "swagger-ui-bundle.js": {
    type: "text/javascript; charset=utf-8",
    load: () => import("swagger-ui-dist/swagger-ui-bundle.js", { with: { type: "text" } }),
  },
} as const;
type AssetName = keyof typeof assets;

/**
 * GET /docs (Swagger UI) and GET /docs/json (OpenAPI 3). @elysiajs/openapi, not the deprecated
 * @elysiajs/swagger; its Swagger UI provider is pointed at local assets instead of a CDN.
 */
export const docs = new Elysia({ name: "docs" })
  .use(openapi({
    path: "/docs",
    specPath: "/docs/json",
    provider: "swagger-ui",
    swagger: { theme: "/docs/assets/swagger-ui.css", cdn: "/docs/assets/swagger-ui-bundle.js", persistAuthorization: true, autoDarkMode: false },
    documentation: {
      info: {
        title: "AQM coin inventory",
        version: "1.0.0",
        description: "Stores the signed public halves of one-time key pairs (coins) and hands each out exactly once. "
          + "Every error is application/problem+json (RFC 9457).",
      },
      tags: [
        { name: "coins", description: "Upload, claim and count coins" },
        { name: "admin", description: "Maintenance; needs the admin scope" },
        { name: "health", description: "Liveness" },
      ],
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } } },
      security: [{ bearer: [] }],
    },
  }))
  .get("/docs/assets/:file", async ({ params, set }) => {
    const asset = assets[params.file as AssetName];
    const { default: text } = await asset.load();
    set.headers["content-type"] = asset.type;
    set.headers["cache-control"] = "public, max-age=86400";
    return text;
  }, {
    params: t.Object({ file: t.Union(Object.keys(assets).map((k) => t.Literal(k as AssetName))) }),
    detail: { hide: true },
  });
