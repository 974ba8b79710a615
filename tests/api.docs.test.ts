import { beforeAll, expect, test } from "bun:test";
import { call, makeApp, type TestApp } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
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

test("the OpenAPI document lists every route with its schemas, bearer auth and error responses", async () => {
  const res = await call(app, "GET", "/docs/json");
  expect(res.status).toBe(200);
  const doc = res.json;
  expect(doc.openapi).toStartWith("3.");
  expect(doc.components.securitySchemes.bearer).toEqual({ type: "http", scheme: "bearer", bearerFormat: "JWT" });
  expect(Object.keys(doc.paths).sort()).toEqual([...new Set(routes.map(([, p]) => p))].sort());
  for (const [method, path, statuses] of routes) {
    const op = doc.paths[path][method];
    expect(op).toBeDefined();
    const content = op.responses["200"].content;
    expect(content[path === "/metrics" ? "text/plain" : "application/json"].schema).toBeDefined();
    for (const status of statuses) expect(op.responses[status]).toBeDefined();
  }
  const upload = doc.paths["/v1/coins/upload"].post;
  const body = upload.requestBody.content["application/json"].schema;
  expect(body.properties.coins.maxItems).toBe(100);
  const category = body.properties.coins.items.properties.coin_category;
  expect(category.enum ?? category.anyOf.map((v: { const: string }) => v.const)).toEqual(["GOLD", "SILVER", "BRONZE"]);
  for (const status of ["409", "413"]) expect(upload.responses[status]).toBeDefined();
  const fetchParams = doc.paths["/v1/coins/fetch"].get.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`);
  expect(fetchParams.sort()).toEqual(["query:coin_category", "query:count", "query:requester_id", "query:target_user_id"]);
  expect(doc.paths["/v1/health"].get.security).toEqual([]);
});

test("/docs serves Swagger UI with its assets from this server, no CDN", async () => {
  const page = await call(app, "GET", "/docs");
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toContain("text/html");
  const sources = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  expect(sources.length).toBeGreaterThanOrEqual(2);
  for (const src of sources) {
    expect(src).toStartWith("/docs/assets/");
    const asset = await call(app, "GET", src);
    expect(asset.status).toBe(200);
    expect(asset.text.length).toBeGreaterThan(10_000);
  }
  expect(page.text).not.toMatch(/unpkg|jsdelivr|cdnjs/);
  expect((await call(app, "GET", "/docs/assets/..%2Fpackage.json")).status).toBeGreaterThanOrEqual(400);
  expect((await call(app, "GET", "/docs/assets/index.html")).status).toBe(422);
});
