import { beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { problemTypes } from "../src/http/problems.ts";
import { call, makeApp, newUser, type TestApp } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
let doc: any;
beforeAll(async () => {
  app = makeApp(db.sql);
  const res = await call(app, "GET", "/docs/json");
  expect(res.status).toBe(200);
  doc = res.json;
});

/** Every route, with the error statuses its documentation must declare. */
const routes = [
  ["post", "/v1/coins/upload", ["401", "403", "409", "413", "422", "429", "503"]],
  ["put", "/v1/coins/last-resort", ["401", "413", "422", "429", "503"]],
  ["get", "/v1/coins/fetch", ["401", "403", "422", "429", "503"]],
  ["post", "/v1/coins/claim", ["401", "422", "429", "503"]],
  ["get", "/v1/coins/count", ["401", "403", "422", "429", "503"]],
  ["get", "/v1/health", []],
  ["get", "/v1/health/live", []],
  ["get", "/v1/health/ready", []],
  ["post", "/v1/admin/purge-stale", ["401", "403", "422", "429", "503"]],
  ["post", "/v1/admin/hard-delete", ["401", "403", "422", "429", "503"]],
  ["get", "/metrics", ["401", "403"]],
] as const;

const operations = () => Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops as object).map(([method, op]) => ({ path, method, op })));

/** Every schema object in the document (inside parameters, bodies, responses and components), recursively. */
function schemas(): any[] {
  const found: any[] = [];
  const visit = (s: any) => {
    if (!s || typeof s !== "object") return;
    found.push(s);
    for (const key of ["properties", "patternProperties"]) for (const child of Object.values(s[key] ?? {})) visit(child);
    for (const key of ["anyOf", "oneOf", "allOf", "prefixItems"]) for (const child of s[key] ?? []) visit(child);
    for (const key of ["items", "additionalProperties", "not"]) visit(s[key]);
  };
  for (const s of Object.values(doc.components.schemas)) visit(s);
  for (const { op } of operations()) {
    for (const p of op.parameters ?? []) visit(p.schema);
    for (const media of Object.values(op.requestBody?.content ?? {})) visit((media as any).schema);
    for (const response of Object.values(op.responses ?? {})) for (const media of Object.values((response as any).content ?? {})) visit((media as any).schema);
  }
  return found;
}

test("the OpenAPI document lists every route with its schemas, bearer auth and a problem+json example per error status", () => {
  expect(doc.openapi).toStartWith("3.1");
  expect(doc.servers).toEqual([{ url: "/", description: "This server" }]);
  expect(doc.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer", bearerFormat: "JWT" });
  expect(Object.keys(doc.paths).sort()).toEqual([...new Set(routes.map(([, p]) => p))].sort());
  for (const [method, path, statuses] of routes) {
    const op = doc.paths[path][method];
    expect(op).toBeDefined();
    const content = op.responses["200"].content;
    expect(content[path === "/metrics" ? "text/plain" : "application/json"].schema).toBeDefined();
    for (const status of statuses) {
      const problem = op.responses[status]?.content?.["application/problem+json"];
      expect(problem?.schema, `${method} ${path} ${status}`).toEqual({ $ref: "#/components/schemas/Problem" });
      expect(problem.example.status).toBe(Number(status));
      const kind = problem.example.type.replace("urn:aqm:problem:", "");
      expect(problemTypes[kind]).toMatchObject({ status: Number(status), title: problem.example.title });
      expect(op.responses[status].content["application/json"]).toBeUndefined();
    }
  }
  const upload = doc.paths["/v1/coins/upload"].post;
  const body = upload.requestBody.content["application/json"].schema;
  expect(body.properties.coins.maxItems).toBe(100);
  expect(body.properties.coins.items.properties.coin_category.enum).toEqual(["GOLD", "SILVER", "BRONZE"]);
  const fetchParams = doc.paths["/v1/coins/fetch"].get.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`);
  expect(fetchParams.sort()).toEqual(["query:coin_category", "query:count", "query:requester_id", "query:target_user_id"]);
  for (const path of ["/v1/health", "/v1/health/live", "/v1/health/ready"]) expect(doc.paths[path].get.security).toEqual([]);
  expect(doc.paths["/metrics"].get.parameters).toBeUndefined(); // Authorization is the security scheme's, not a parameter
});

test("integers are integers, enums keep their description and default, and the server's own `error` keyword stays out", () => {
  const all = schemas();
  expect(all.length).toBeGreaterThan(50);
  for (const s of all) {
    expect(s.format === "integer" || s.format === "numeric").toBe(false);
    expect(s.error).toBeUndefined();
    if (s.anyOf) expect(s.anyOf.some((v: any) => v.type === "integer")).toBe(false);
  }
  const count = doc.paths["/v1/coins/fetch"].get.parameters.find((p: any) => p.name === "count");
  expect(count.schema).toMatchObject({ type: "integer", minimum: 1, maximum: 100 });
  expect(doc.paths["/v1/coins/upload"].post.responses["200"].content["application/json"].schema.properties.inserted.type).toBe("integer");
  expect(doc.components.schemas.Problem.properties.status).toEqual({ type: "integer" });
  const claim = doc.paths["/v1/coins/claim"].post.requestBody.content["application/json"].schema;
  expect(claim.properties.want.properties.gold).toMatchObject({ type: "integer", minimum: 0, maximum: 100 });
  expect(claim.properties.fallback).toMatchObject({ type: "string", enum: ["down", "none"], default: "down" });
  expect(claim.properties.fallback.description).toContain("never upward");
});

test("every request body and every 200 response has an example; bodies a route accepts without are optional", () => {
  for (const { path, method, op } of operations()) {
    for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) expect((media as any).example, `${method} ${path} ${type}`).toBeDefined();
    for (const [type, media] of Object.entries(op.responses["200"].content)) expect((media as any).example, `${method} ${path} 200 ${type}`).toBeDefined();
    if (op.requestBody) expect(op.requestBody.required, `${method} ${path}`).toBe(!path.startsWith("/v1/admin/"));
  }
  expect(doc.paths["/v1/coins/upload"].post.requestBody.content["application/json"].example.coins[0].user_id).toBeUndefined();
});

test("the pre-filled examples succeed with any valid token, and the upload example with fresh key ids stores new coins each time", async () => {
  const user = await newUser();
  const admin = await newUser({ admin: true });
  const example = (path: string, method: string) => doc.paths[path][method].requestBody.content["application/json"].example;
  const query = (path: string) => Object.fromEntries(doc.paths[path].get.parameters.filter((p: any) => p.example !== undefined).map((p: any) => [p.name, p.example]));

  for (let round = 0; round < 2; round++) {
    const body = example("/v1/coins/upload", "post");
    const fresh = { ...body, coins: body.coins.map((c: object) => ({ ...c, key_id: randomUUID() })) }; // what the page does (tests/e2e checks it in a browser)
    const upload = await call(app, "POST", "/v1/coins/upload", { token: user.token, body: fresh });
    expect(upload.status).toBe(200);
    expect(upload.json).toEqual({ inserted: 1, duplicates: 0 });
  }
  // as written, the example is a valid upload too: new the first time, a duplicate after
  expect((await call(app, "POST", "/v1/coins/upload", { token: user.token, body: example("/v1/coins/upload", "post") })).json).toEqual({ inserted: 1, duplicates: 0 });
  expect((await call(app, "POST", "/v1/coins/upload", { token: user.token, body: example("/v1/coins/upload", "post") })).json).toEqual({ inserted: 0, duplicates: 1 });

  expect(query("/v1/coins/fetch")).toMatchObject({ count: 2, coin_category: "BRONZE" });
  expect(query("/v1/coins/count")).toEqual({});
  for (let round = 0; round < 2; round++) {
    expect((await call(app, "GET", "/v1/coins/fetch", { token: user.token, query: query("/v1/coins/fetch") })).status).toBe(200);
    expect((await call(app, "POST", "/v1/coins/claim", { token: user.token, body: example("/v1/coins/claim", "post") })).status).toBe(200);
    expect((await call(app, "PUT", "/v1/coins/last-resort", { token: user.token, body: example("/v1/coins/last-resort", "put") })).status).toBe(200);
    expect((await call(app, "GET", "/v1/coins/count", { token: user.token })).json.bronze).toBe(3);
    expect((await call(app, "POST", "/v1/admin/purge-stale", { token: admin.token, body: example("/v1/admin/purge-stale", "post") })).status).toBe(200);
    expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: example("/v1/admin/hard-delete", "post") })).status).toBe(200);
  }
});

test("the page says how to get a token, and that it is pasted without Bearer", () => {
  expect(doc.info.description).toContain("bun run token <your-user-uuid>");
  expect(doc.info.description).toContain("without `Bearer `");
  expect(doc.components.securitySchemes.bearer.description).toContain("without `Bearer `");
});

test("/docs and /docs/ serve Swagger UI with its assets from this server, no CDN, and the spec from an absolute path", async () => {
  for (const path of ["/docs", "/docs/"]) {
    const page = await call(app, "GET", path);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(page.text).toContain('data-spec="/docs/json"');
    const sources = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(sources.sort()).toEqual(["/docs/assets/docs-page.js", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"]);
    for (const src of sources) {
      const asset = await call(app, "GET", src);
      expect(asset.status).toBe(200);
      expect(asset.text.length).toBeGreaterThan(1000);
    }
    expect(page.text).not.toMatch(/unpkg|jsdelivr|cdnjs|https?:\/\//);
  }
  expect((await call(app, "GET", "/docs/assets/..%2Fpackage.json")).status).toBeGreaterThanOrEqual(400);
  expect((await call(app, "GET", "/docs/assets/index.html")).status).toBe(422);
});
