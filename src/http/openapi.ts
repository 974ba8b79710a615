import { toOpenAPISchema } from "@elysiajs/openapi";
import { FormatRegistry } from "@sinclair/typebox";
import { Elysia, t } from "elysia";
import {
  BadRequestError, ForbiddenError, NotFoundError, RateLimitedError, UnauthorizedError, UnavailableError, UnsupportedMediaTypeError,
  type AppError,
} from "../errors.ts";
import { exactDocument, exampleNames, routeProblemExample } from "./openapi-document.ts";

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

/**
 * A problem response whose documented example is `error` rather than its status's usual one (a
 * 409 that is a digest mismatch, not a key conflict): `response: { 409: problemExample(new …) }`.
 * The same schema as problemResponses' (clients and Eden type it alike); the example rides along
 * under a symbol, which neither validation nor the generated document sees.
 */
export function problemExample(error: AppError): typeof ProblemSchema {
  return { ...ProblemSchema, [routeProblemExample]: error } as typeof ProblemSchema;
}

/**
 * Schema options for several documented examples, each with the name Swagger UI lists it by (the
 * first is shown first): `t.Object({…}, { ...namedExamples({ "one device": …, "all devices": … }) })`.
 * `examples` stays the JSON Schema array; the names travel beside it and become the media type's
 * named examples (openapi-document.ts).
 */
export function namedExamples(named: Record<string, unknown>): { examples: unknown[]; [exampleNames]: string[] } {
  return { examples: Object.values(named), [exampleNames]: Object.keys(named) };
}

/** The example each documented error status shows: what the server answers in a typical case. */
const genericProblemExamples: Record<number, AppError> = {
  400: new BadRequestError("The request body is not valid JSON"),
  401: new UnauthorizedError("Send Authorization: Bearer <token>"),
  403: new ForbiddenError("user_id must be the token's subject; a token acts for one user only"),
  404: new NotFoundError("No such route"),
  415: new UnsupportedMediaTypeError("Send the body as application/json"),
  429: new RateLimitedError("Too many requests for this route group; slow down", 2, { limit: 30, reset: 2 }),
  503: new UnavailableError("The database did not answer in time; retry shortly"),
};

export interface DocsOptions {
  /** Examples for the statuses only the features know how to show (a conflict, a size, a field). */
  problemExamples: Record<number, AppError>;
  /** An upload example the page sends with fresh key ids, so that "Execute" works every time. */
  upload: { path: string; exampleKeyIds: string[] };
}

const description = `Stores the signed public halves of one-time key pairs (coins) and hands each out exactly once.
Every error is \`application/problem+json\` (RFC 9457).

**Getting a token.** Every route but the health routes needs a JWT whose \`sub\` is your user UUID
(and whose \`dev\` claim names the device it acts for, 1 to 127; 1 when absent).
On a development server (no \`AQM_JWT_SECRET\` or \`AQM_JWT_PUBLIC_KEY\` set), run
\`bun run token <your-user-uuid>\` in the server's directory (\`--device N\` for another device, \`--admin\` adds the admin scope);
in production your identity service issues them. Click **Authorize** and paste the token alone, without \`Bearer \`.

**The examples work as shown** with any valid token, top to bottom. The example identity key is the public key of
RFC 8032's first Ed25519 test vector (its private key is published there): register it for your device 1
(PUT /v1/devices/{device_id}); the upload example is a BRONZE coin signed by it, so it verifies, and it stores a new coin
each time (this page gives the example's \`key_id\` a fresh UUID and signs the coin again with that test key as it
sends it; your own clients choose their key ids and sign with their own keys). Count shows your device's inventory;
fetch and claim (one device, or all of them) answer 200 (with no coins while the example target has none); the check
example's digest is that of a device holding the example key and no last-resort coins; DELETE /v1/coins empties your
device again. The admin routes and /metrics need the admin scope.`;

const documentation = {
  info: {
    title: "AQM coin inventory", version: "1.0.0", description,
    // package.json is private and the repository has no LICENSE: nothing is licensed to others.
    license: { name: "Proprietary (private project, no license granted)", identifier: "LicenseRef-Proprietary" },
  },
  servers: [{ url: "/", description: "This server" }],
  tags: [
    { name: "coins", description: "Upload, claim and count coins" },
    { name: "devices", description: "Your devices' identity keys, removal, reset and state check" },
    { name: "admin", description: "Maintenance; needs the admin scope" },
    { name: "health", description: "Liveness, readiness and metrics" },
  ],
  components: {
    securitySchemes: {
      bearer: {
        type: "http", scheme: "bearer", bearerFormat: "JWT",
        description: "Paste the JWT alone, without `Bearer `. Development: `bun run token <your-user-uuid> [--device N] [--admin]`.",
      },
    },
  },
  security: [{ bearer: [] }],
};

// Swagger UI's files come from the swagger-ui-dist package, the page's own script from this
// directory: /docs renders with no internet access. Text imports, loaded on the first request for
// them: `bun build --compile` embeds them in the executable, and Bun and Deno read them alike (no
// path resolved at run time).
const assets = {
  "swagger-ui.css": {
    type: "text/css; charset=utf-8",
    load: () => import("swagger-ui-dist/swagger-ui.css", { with: { type: "text" } }),
  },
  "swagger-ui-bundle.js": {
    type: "text/javascript; charset=utf-8",
    load: () => import("swagger-ui-dist/swagger-ui-bundle.js", { with: { type: "text" } }),
  },
  "docs-page.js": {
    type: "text/javascript; charset=utf-8",
    load: () => import("./docs-page.js", { with: { type: "text" } }),
  },
} as const;
type AssetName = keyof typeof assets;

const page = ({ upload }: DocsOptions) => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${documentation.info.title} — API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/docs-page.js" data-spec="/docs/json" data-upload-path="${upload.path}"
    data-example-key-ids='${JSON.stringify(upload.exampleKeyIds)}'></script>
</body>
</html>
`;

/**
 * GET /docs (also /docs/: Swagger UI), GET /docs/json (OpenAPI 3.1) and the page's assets. The
 * document is generated by @elysiajs/openapi from every route's schemas, then corrected
 * (openapi-document.ts); one instance per app, so each document describes its own app.
 */
export function docs(options: DocsOptions) {
  const html = page(options);
  const problemExamples = { ...genericProblemExamples, ...options.problemExamples };
  let cached: { routes: number; document: object } | undefined;
  const plugin = new Elysia();
  // Every route of the app this plugin is used in (Elysia keeps the method protected; the generator calls it too).
  const routesOf = (app: Elysia) => (app as unknown as { getGlobalRoutes(): Parameters<typeof exactDocument>[1] }).getGlobalRoutes();
  return plugin
    .get("/docs", ({ set }) => {
      set.headers["content-type"] = "text/html; charset=utf-8";
      return html;
    }, { detail: { hide: true } })
    .get("/docs/json", () => {
      const routes = routesOf(plugin);
      if (cached?.routes !== routes.length) {
        const { paths, components } = toOpenAPISchema(plugin);
        const generated = { openapi: "3.1.2", ...documentation, paths, components: { ...components, ...documentation.components } };
        cached = { routes: routes.length, document: exactDocument(generated, routes, { problemSchema: ProblemSchema, problemExamples }) };
      }
      return cached.document;
    }, { detail: { hide: true } })
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
}
