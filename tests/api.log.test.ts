import { afterEach, beforeEach, expect, spyOn, test } from "bun:test";
import { makeCoins } from "./helpers/coins.ts";
import { call, makeApp, newUser } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
let lines: string[] = [];
let spy: ReturnType<typeof spyOn>;
beforeEach(() => {
  lines = [];
  spy = spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
});
afterEach(() => spy.mockRestore());

test("one JSON line per request with id, method, route, status, duration and user — never tokens or key material", async () => {
  const app = makeApp(db.sql, { AQM_LOG: "on" });
  const user = await newUser();
  const coins = makeCoins(2);
  await call(app, "POST", "/v1/coins/upload", { token: user.token, body: { coins }, headers: { "x-request-id": "req-1" } });
  await call(app, "GET", "/v1/coins/fetch", { token: user.token, query: { target_user_id: user.id, coin_category: "BRONZE", count: 2 } });
  await call(app, "GET", "/v1/coins/count", { token: "garbage.token.here" });
  await waitFor(() => lines.length === 3, "three log lines"); // written after the response is handed back
  const [upload, fetch, unauth] = lines.map((l) => JSON.parse(l));
  expect(upload).toMatchObject({ request_id: "req-1", method: "POST", route: "/v1/coins/upload", status: 200, user_id: user.id });
  expect(typeof upload.ms).toBe("number");
  expect(new Date(upload.time).getTime()).toBeGreaterThan(Date.now() - 60_000);
  expect(fetch).toMatchObject({ method: "GET", route: "/v1/coins/fetch", status: 200, user_id: user.id });
  expect(unauth).toMatchObject({ route: "/v1/coins/count", status: 401 });
  const all = lines.join("\n");
  expect(all).not.toContain(user.token);
  expect(all).not.toContain("garbage.token.here");
  for (const c of coins) {
    expect(all).not.toContain(c.public_key_b64.slice(0, 16));
    expect(all).not.toContain(c.signature_b64.slice(0, 16));
  }
});

test("a request refused while parsing is logged once", async () => {
  const app = makeApp(db.sql, { AQM_LOG: "on" });
  const user = await newUser();
  const res = await call(app, "POST", "/v1/coins/upload", { token: user.token, rawBody: "x".repeat(1024 * 1024 + 1), headers: { "content-type": "application/json" } });
  expect(res.status).toBe(413);
  await waitFor(() => lines.length >= 1, "the log line");
  await call(app, "GET", "/v1/health"); // a later request's line comes after any repeat of the first
  await waitFor(() => lines.length >= 2, "the next log line");
  expect(lines).toHaveLength(2);
  expect(JSON.parse(lines[0]!)).toMatchObject({ status: 413, route: "/v1/coins/upload" });
});

test("AQM_LOG=off prints nothing", async () => {
  const app = makeApp(db.sql, { AQM_LOG: "off" });
  const logging = makeApp(db.sql, { AQM_LOG: "on" });
  await call(app, "GET", "/v1/health");
  await call(logging, "GET", "/v1/health"); // once this one's line is out, the first one's would be too
  await waitFor(() => lines.length === 1, "the logging app's line");
  expect(lines).toHaveLength(1);
});
