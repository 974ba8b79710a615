import { beforeAll, expect, test } from "bun:test";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const front = "https://app.example.com";
let off: TestApp;
let listed: TestApp;
let any: TestApp;
let user: User;
beforeAll(async () => {
  off = makeApp(db.sql);
  listed = makeApp(db.sql, { AQM_CORS_ORIGINS: `${front}, http://localhost:5173` });
  any = makeApp(db.sql, { AQM_CORS_ORIGINS: "*" });
  user = await newUser();
});

const preflight = (app: TestApp, origin: string) => call(app, "OPTIONS", "/v1/coins/upload", {
  headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
});

test("off by default: no CORS headers, and a preflight is an unknown route", async () => {
  expect((await preflight(off, front)).status).toBe(404);
  const res = await call(off, "GET", "/v1/coins/count", { token: user.token, headers: { origin: front } });
  expect(res.status).toBe(200);
  expect(res.headers.get("access-control-allow-origin")).toBeNull();
});

test("a listed origin gets its preflight answered and may read every answer, errors included", async () => {
  const pre = await preflight(listed, front);
  expect(pre.status).toBe(204);
  expect(pre.headers.get("access-control-allow-origin")).toBe(front);
  expect(pre.headers.get("access-control-allow-methods")).toBe("GET, POST, PUT, DELETE");
  expect(pre.headers.get("access-control-allow-headers")).toContain("authorization");
  expect(pre.headers.get("access-control-allow-headers")).toContain("idempotency-key");
  expect(pre.headers.get("access-control-allow-credentials")).toBeNull(); // bearer tokens, never cookies

  const ok = await call(listed, "GET", "/v1/coins/count", { token: user.token, headers: { origin: "http://localhost:5173" } });
  expect(ok.status).toBe(200);
  expect(ok.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
  expect(ok.headers.get("vary")).toContain("origin");
  expect(ok.headers.get("access-control-expose-headers")).toContain("ratelimit-remaining");
  expect(ok.headers.get("access-control-expose-headers")).toContain("x-request-id");

  const refused = await call(listed, "GET", "/v1/coins/count", { headers: { origin: front } });
  expect(refused.status).toBe(401);
  expect(refused.headers.get("content-type")).toBe("application/problem+json");
  expect(refused.headers.get("access-control-allow-origin")).toBe(front);
  expect(refused.headers.get("access-control-expose-headers")).toContain("www-authenticate");
});

test("another origin gets no CORS headers, so its browser keeps the answer from it", async () => {
  expect((await preflight(listed, "https://evil.example.net")).status).toBe(404);
  const res = await call(listed, "GET", "/v1/coins/count", { token: user.token, headers: { origin: "https://evil.example.net" } });
  expect(res.headers.get("access-control-allow-origin")).toBeNull();
  expect(res.headers.get("vary")).toContain("origin"); // caches keep the answers per origin apart
});

test("* allows any origin", async () => {
  const pre = await preflight(any, "https://anything.example.org");
  expect(pre.status).toBe(204);
  expect(pre.headers.get("access-control-allow-origin")).toBe("*");
  const res = await call(any, "GET", "/v1/health/live", { headers: { origin: "https://anything.example.org" } });
  expect(res.headers.get("access-control-allow-origin")).toBe("*");
});
