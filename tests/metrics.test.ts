import { beforeAll, expect, test } from "bun:test";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { FastCounter, FastGauge, FastHistogram } from "../src/metrics/series.ts";
import { makeCoins } from "./helpers/coins.ts";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const metricsToken = "metrics-token-0123456789";
let app: TestApp;
let admin: User;
let owner: User;
let requester: User;

beforeAll(async () => {
  app = makeApp(db.sql, { AQM_METRICS_TOKEN: metricsToken, AQM_PAIR_QUOTA: "3", AQM_RATE_COUNT_PER_MIN: "1" });
  [admin, owner, requester] = await Promise.all([newUser({ admin: true }), newUser(), newUser()]);
});

const scrape = async () => {
  const res = await call(app, "GET", "/metrics", { token: metricsToken });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toStartWith("text/plain");
  return res.text;
};
const value = (text: string, series: string) => {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

test("/metrics needs the metrics token or an admin JWT", async () => {
  const other = makeApp(db.sql, { AQM_METRICS_TOKEN: metricsToken });
  expect((await call(other, "GET", "/metrics")).status).toBe(401);
  expect((await call(other, "GET", "/metrics", { token: "wrong-token-of-some-length" })).status).toBe(401);
  expect((await call(other, "GET", "/metrics", { token: owner.token })).status).toBe(403);
  expect((await call(other, "GET", "/metrics", { token: admin.token })).status).toBe(200);
  expect((await call(other, "GET", "/metrics", { token: metricsToken })).status).toBe(200);
  const noToken = makeApp(db.sql); // no AQM_METRICS_TOKEN: admin JWTs only
  expect((await call(noToken, "GET", "/metrics", { token: metricsToken })).status).toBe(401);
});

test("counts uploads, claims (short and empty), rejections, requests and available coins", async () => {
  await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [...makeCoins(2, "GOLD"), ...makeCoins(3, "BRONZE")] } });
  const fetch = (tier: string, count: number) =>
    call(app, "GET", "/v1/coins/fetch", { token: requester.token, query: { target_user_id: owner.id, coin_category: tier, count } });
  expect((await fetch("GOLD", 1)).json.coins).toHaveLength(1); // full
  expect((await fetch("GOLD", 2)).json.coins).toHaveLength(1); // short
  expect((await fetch("SILVER", 1)).json.coins).toHaveLength(0); // empty (and short); quota now 2 of 3 used
  expect((await fetch("BRONZE", 3)).json.coins).toHaveLength(1); // quota leaves 1
  expect((await fetch("BRONZE", 1)).status).toBe(429); // quota spent
  await call(app, "GET", "/v1/coins/count", { token: owner.token });
  expect((await call(app, "GET", "/v1/coins/count", { token: owner.token })).status).toBe(429); // 1 per minute

  const text = await scrape();
  expect(value(text, 'aqm_coins_uploaded_total{tier="GOLD"}')).toBe(2);
  expect(value(text, 'aqm_coins_uploaded_total{tier="BRONZE"}')).toBe(3);
  expect(value(text, 'aqm_coins_claimed_total{tier="GOLD"}')).toBe(2);
  expect(value(text, 'aqm_coins_claimed_total{tier="BRONZE"}')).toBe(1);
  expect(value(text, 'aqm_claims_short_total{tier="GOLD"}')).toBe(1);
  expect(value(text, 'aqm_claims_short_total{tier="BRONZE"}')).toBe(1);
  expect(value(text, 'aqm_claims_empty_total{tier="SILVER"}')).toBe(1);
  expect(value(text, "aqm_pair_quota_rejections_total")).toBe(1);
  expect(value(text, 'aqm_rate_limited_total{group="count"}')).toBe(1);
  expect(value(text, 'aqm_http_requests_total{method="GET",route="/v1/coins/fetch",status="200"}')).toBe(4);
  expect(value(text, 'aqm_http_requests_total{method="GET",route="/v1/coins/fetch",status="429"}')).toBe(1);
  expect(value(text, 'aqm_http_request_duration_seconds_count{method="POST",route="/v1/coins/upload",status="200"}')).toBe(1);
  expect(value(text, 'aqm_coins_available{tier="GOLD"}')).toBe(0);
  expect(value(text, 'aqm_coins_available{tier="BRONZE"}')).toBe(2);
  expect(value(text, "aqm_db_pool_in_use")).toBe(0);
  expect(text).toContain("aqm_process_resident_memory_bytes");
});

test("the claim queue's wait is observed once per claim served: 40 concurrent claims, 40 observations", async () => {
  const fresh = makeApp(db.sql, { AQM_METRICS_TOKEN: metricsToken });
  const target = await newUser();
  await call(fresh, "POST", "/v1/coins/upload", { token: target.token, body: { coins: makeCoins(60, "BRONZE") } });
  const requesters = await Promise.all(Array.from({ length: 40 }, () => newUser()));
  const answers = await Promise.all(requesters.map((r) =>
    call(fresh, "GET", "/v1/coins/fetch", { token: r.token, query: { target_user_id: target.id, coin_category: "BRONZE", count: 1 } })));
  expect(answers.map((a) => a.status)).toEqual(requesters.map(() => 200));
  expect(answers.every((a) => a.json.coins.length === 1)).toBe(true);
  const text = (await call(fresh, "GET", "/metrics", { token: metricsToken })).text;
  const waits = value(text, "aqm_claim_queue_seconds_count");
  expect(waits).toBe(40);
  expect(value(text, 'aqm_claim_queue_seconds_bucket{le="+Inf"}')).toBe(40);
  expect(value(text, "aqm_claim_queue_seconds_sum")).toBeGreaterThanOrEqual(0);
  expect(value(text, "aqm_claim_batch_size_sum")).toBeGreaterThanOrEqual(40); // more if one ran again after a conflict (it waited once)
});

test("the hot-path counter, histogram and gauge print exactly what prom-client's would for the same changes", async () => {
  const ours = new Registry();
  const theirs = new Registry();
  const labelNames = ["method", "route", "status"];
  const buckets = [0.001, 0.01, 0.1, 1];
  const counter = new FastCounter("t_requests_total", "Requests", [ours], false);
  const histogram = new FastHistogram("t_duration_seconds", "Duration", [ours], false, buckets);
  const plain = new FastHistogram("t_batch", "Batch", [ours], true, [1, 2, 4]);
  new FastCounter("t_untouched_total", "Never counted", [ours], true);
  const gauge = new FastGauge("t_queue", "Queue", [ours]);
  new FastHistogram("t_idle_seconds", "Never observed", [ours], true, [1]);
  const pCounter = new Counter({ name: "t_requests_total", help: "Requests", labelNames, registers: [theirs] });
  const pHistogram = new Histogram({ name: "t_duration_seconds", help: "Duration", labelNames, buckets, registers: [theirs] });
  const pPlain = new Histogram({ name: "t_batch", help: "Batch", buckets: [1, 2, 4], registers: [theirs] });
  new Counter({ name: "t_untouched_total", help: "Never counted", registers: [theirs] });

  const pGauge = new Gauge({ name: "t_queue", help: "Queue", registers: [theirs] });
  new Histogram({ name: "t_idle_seconds", help: "Never observed", buckets: [1], registers: [theirs] });
  const changes: [string, string, string, number][] = [
    ["GET", "/v1/coins/fetch", "200", 0.0004], ["GET", "/v1/coins/fetch", "200", 0.01], ["POST", "/v1/coins/upload", "413", 0.3],
    ["GET", "/v1/coins/fetch", "429", 7], ["GET", "/v1/coins/fetch", "200", 0.05], ["GET", "(unmatched)", "404", 0.001],
  ];
  for (const [method, route, status, seconds] of changes) {
    const key = `${method} ${status} ${route}`;
    const labels = () => ({ method, route, status });
    counter.inc(key, labels);
    histogram.observe(seconds, key, labels);
    pCounter.inc(labels());
    pHistogram.observe(labels(), seconds);
  }
  for (const n of [1, 3, 3, 9]) {
    plain.observe(n);
    pPlain.observe(n);
  }
  counter.inc("GET 200 /v1/coins/fetch", () => ({ method: "GET", route: "/v1/coins/fetch", status: "200" }), 5);
  pCounter.inc({ method: "GET", route: "/v1/coins/fetch", status: "200" }, 5);
  gauge.set(12);
  pGauge.set(12);
  expect(await ours.metrics()).toBe(await theirs.metrics());
});
