import { beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { exampleCoin, exampleIdentityKey, exampleLastResortCoin, exampleUserId } from "../src/coins/model.ts";
import { deviceDigest, noKeys } from "../src/devices/digest.ts";
import { exampleDigest, exampleEd25519, exampleKeyedDigest } from "../src/devices/model.ts";
import { coinMessage, verifyCoins } from "../src/devices/signatures.ts";
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
  ["put", "/v1/coins/last-resort", ["401", "409", "413", "422", "429", "503"]],
  ["get", "/v1/coins/fetch", ["401", "403", "422", "429", "503"]],
  ["post", "/v1/coins/claim", ["401", "422", "429", "503"]],
  ["get", "/v1/coins/count", ["401", "403", "422", "429", "503"]],
  ["delete", "/v1/coins", ["401", "429", "503"]],
  ["put", "/v1/devices/{device_id}", ["400", "401", "403", "409", "413", "415", "422", "429", "503"]],
  ["delete", "/v1/devices/{device_id}", ["401", "404", "422", "429", "503"]],
  ["post", "/v1/devices/{device_id}/check", ["400", "401", "403", "409", "413", "415", "422", "429", "503"]],
  ["get", "/v1/users/{user_id}/devices", ["401", "422", "429", "503"]],
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

/** A media type's examples: its `example`, or each of its named `examples`' value. */
const examplesOf = (media: any): unknown[] => (media.example !== undefined ? [media.example] : Object.values(media.examples ?? {}).map((e: any) => e.value));

test("every request body and every 200 response has an example; bodies a route accepts without are optional", () => {
  for (const { path, method, op } of operations()) {
    for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) expect(examplesOf(media).length, `${method} ${path} ${type}`).toBeGreaterThan(0);
    for (const [type, media] of Object.entries(op.responses["200"].content)) expect(examplesOf(media).length, `${method} ${path} 200 ${type}`).toBeGreaterThan(0);
    for (const media of [...Object.values(op.requestBody?.content ?? {}), ...Object.values(op.responses["200"].content)] as any[]) {
      expect(media.example !== undefined && media.examples !== undefined).toBe(false); // OpenAPI: one or the other
      for (const named of Object.values(media.examples ?? {}) as any[]) expect(named.value).toBeDefined();
    }
    if (op.requestBody) expect(op.requestBody.required, `${method} ${path}`).toBe(!path.startsWith("/v1/admin/"));
  }
  expect(doc.paths["/v1/coins/upload"].post.requestBody.content["application/json"].example.coins[0].user_id).toBeUndefined();
  // the unions: one named example per variant, each of its variant's shape
  const count = doc.paths["/v1/coins/count"].get.responses["200"].content["application/json"];
  expect(Object.keys(count.examples)).toEqual(["Inventory", "InventoryByDevice"]);
  expect(count.examples.Inventory.value.devices).toBeUndefined();
  expect(count.examples.InventoryByDevice.value.devices.map((d: any) => d.device_id)).toEqual([1, 2]);
  const claim = doc.paths["/v1/coins/claim"].post;
  const answers = claim.responses["200"].content["application/json"].examples;
  expect(Object.keys(answers)).toEqual(["ClaimResult", "ClaimDevicesResult"]);
  expect(Object.keys(answers.ClaimResult.value)).toEqual(["coins", "short"]);
  expect(answers.ClaimDevicesResult.value.devices[0]).toMatchObject({ device_id: 1, ed25519_b64: exampleIdentityKey, coins: [exampleCoin] });
  expect(Object.keys(claim.requestBody.content["application/json"].examples)).toEqual(["device 1", "all devices"]);
  expect(claim.requestBody.content["application/json"].examples["all devices"].value.devices).toBe("all");
  expect(Object.keys(doc.paths["/v1/devices/{device_id}/check"].post.requestBody.content["application/json"].examples))
    .toEqual(["the example key registered", "nothing held (a new device)"]);
});

test("the device routes: a path parameter pre-filled, bearer auth, and their own problem examples where a status means something else there", () => {
  expect(doc.security).toEqual([{ bearer: [] }]);
  expect(doc.tags.map((tag: { name: string }) => tag.name)).toContain("devices");
  for (const [method, path] of [["put", "/v1/devices/{device_id}"], ["delete", "/v1/devices/{device_id}"], ["post", "/v1/devices/{device_id}/check"]]) {
    const op = doc.paths[path!][method!];
    expect(op.security).toBeUndefined(); // the document's: bearer
    expect(op.tags).toEqual(["devices"]);
    expect(op.parameters).toEqual([expect.objectContaining({ name: "device_id", in: "path", required: true, example: 1, schema: expect.objectContaining({ type: "integer", minimum: 1, maximum: 127 }) })]);
  }
  expect(doc.paths["/v1/users/{user_id}/devices"].get.parameters[0]).toMatchObject({ name: "user_id", in: "path", required: true, example: exampleUserId });
  const problem = (path: string, method: string, status: number) => doc.paths[path][method].responses[status].content["application/problem+json"].example;
  expect(problem("/v1/devices/{device_id}/check", "post", 409).type).toBe("urn:aqm:problem:digest-mismatch");
  expect(problem("/v1/devices/{device_id}", "put", 409)).toMatchObject({ type: "urn:aqm:problem:device-state", detail: expect.stringContaining("AQM_MAX_DEVICES") });
  expect(problem("/v1/devices/{device_id}", "put", 403).detail).toContain("device_id must be the token's own device");
  expect(problem("/v1/devices/{device_id}", "put", 422).errors).toEqual([{ field: "ed25519_b64", message: expect.any(String) }]);
  expect(problem("/v1/devices/{device_id}", "delete", 404).detail).toBe("This user has no device 2");
  expect(problem("/v1/coins/upload", "post", 409).type).toBe("urn:aqm:problem:key-conflict"); // elsewhere, the status's usual example
  const body = doc.paths["/v1/devices/{device_id}"].put.requestBody.content["application/json"];
  expect(body.schema.properties.ml_dsa).toMatchObject({ enum: ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"], description: expect.stringContaining("parameter set") });
});

// RFC 8032, 7.1, TEST 1: the example identity key's private half (published in the RFC).
const exampleSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const exampleSigner = crypto.subtle.importKey("pkcs8", Buffer.from(`302e020100300506032b657004220420${exampleSeed}`, "hex"), { name: "Ed25519" }, true, ["sign"]);
const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, "base64"));
const asSigned = (coin: typeof exampleCoin) => ({ key_id: coin.key_id, coin_category: coin.coin_category, publicKey: bytes(coin.public_key_b64), signature: bytes(coin.signature_b64) });
const exampleKeys = { ed25519: bytes(exampleEd25519), mlDsa: null, mlDsaSet: null };

/** What the page does to the upload example as it sends it (src/http/docs-page.js): a fresh key_id, signed again with the example key. */
async function freshExample() {
  const key_id = randomUUID();
  const signature = await crypto.subtle.sign("Ed25519", await exampleSigner, new Uint8Array(coinMessage("BRONZE", key_id, bytes(exampleCoin.public_key_b64))));
  return { ...exampleCoin, key_id, signature_b64: Buffer.from(signature).toString("base64") };
}

test("the example coins are genuinely signed by the example identity key, RFC 8032 TEST 1's public key", async () => {
  const { x } = await crypto.subtle.exportKey("jwk", await exampleSigner);
  expect(Buffer.from(x!, "base64url").toString("hex")).toBe("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"); // the RFC's PUBLIC KEY
  expect([exampleEd25519, exampleIdentityKey]).toEqual([Buffer.from(x!, "base64url").toString("base64"), exampleEd25519]);
  expect(exampleCoin.coin_category).toBe("BRONZE");
  expect(await verifyCoins(exampleKeys, [asSigned(exampleCoin), asSigned(exampleLastResortCoin), asSigned(await freshExample())])).toEqual([]);
  // the signature covers the tier, the key_id and the public key
  const other = { ...exampleCoin, key_id: "another" };
  expect(await verifyCoins(exampleKeys, [asSigned(other), asSigned({ ...exampleCoin, coin_category: "SILVER" as "BRONZE" })])).toEqual(["another", exampleCoin.key_id]);
  expect(await verifyCoins({ ...exampleKeys, ed25519: bytes(exampleCoin.public_key_b64) }, [asSigned(exampleCoin)])).toEqual([exampleCoin.key_id]);
});

test("the device digest, worked example: a device with no keys and no last-resort coins; then with the example key", async () => {
  // 13 fields, each a 4-byte big-endian length then its bytes: the label, then 12 empty fields (72 bytes in all)
  const input = Buffer.concat([Buffer.from([0, 0, 0, 20]), Buffer.from("aqm-device-digest-v1"), Buffer.alloc(12 * 4)]);
  expect(input.toString("hex")).toBe(`0000001461716d2d6465766963652d6469676573742d7631${"0".repeat(96)}`);
  const empty = Buffer.from(deviceDigest({ keys: noKeys, lastResort: {} }));
  expect(empty).toEqual(Buffer.from(new Bun.CryptoHasher("sha256").update(input).digest()));
  expect(empty.toString("hex")).toBe("73faeda5cb350bbb97e89c331ac9e9d17127ec6fe229aeb48a98c92a34bcb35e");
  expect(empty.toString("base64")).toBe(exampleDigest);
  const keyed = Buffer.from(deviceDigest({ keys: exampleKeys, lastResort: {} }));
  expect(keyed.toString("base64")).toBe(exampleKeyedDigest);
  // the README shows both, and the definition as digest.ts's comment gives it
  const readme = await Bun.file(new URL("../README.md", import.meta.url)).text();
  for (const shown of [empty.toString("hex"), empty.toString("base64"), keyed.toString("base64"), input.toString("hex")]) expect(readme.includes(shown), `README shows ${shown}`).toBe(true);
});

test("the pre-filled examples succeed with any valid token, and the upload example with fresh key ids stores new coins each time", async () => {
  const user = await newUser();
  const admin = await newUser({ admin: true });
  const body = (path: string, method: string, name?: string) => {
    const media = doc.paths[path][method].requestBody.content["application/json"];
    return name === undefined ? examplesOf(media)[0] : media.examples[name].value;
  };
  const query = (path: string) => Object.fromEntries(doc.paths[path].get.parameters.filter((p: any) => p.example !== undefined).map((p: any) => [p.name, p.example]));
  const device = doc.paths["/v1/devices/{device_id}"].put.parameters[0].example;

  // as a device that registered no keys (AQM_VERIFY_SIGNATURES=registered: not verified) and as one that registered the example key
  const example = (path: string, method: string) => body(path, method);
  const upload = async (coins: unknown) => call(app, "POST", "/v1/coins/upload", { token: user.token, body: { ...example("/v1/coins/upload", "post"), coins } });
  expect((await upload([await freshExample()])).json).toEqual({ inserted: 1, duplicates: 0 });
  const register = await call(app, "PUT", `/v1/devices/${device}`, { token: user.token, body: example("/v1/devices/{device_id}", "put") });
  expect([register.status, register.json]).toEqual([200, { device_id: 1, replaced: false, coins_deleted: 1 }]); // keys from none: coins stored before go
  expect((await call(app, "PUT", `/v1/devices/${device}`, { token: user.token, body: example("/v1/devices/{device_id}", "put") })).json)
    .toEqual({ device_id: 1, replaced: false, coins_deleted: 0 });

  for (let round = 0; round < 2; round++) {
    const res = await upload([await freshExample()]); // what the page does (tests/e2e checks it in a browser)
    expect([res.status, res.json]).toEqual([200, { inserted: 1, duplicates: 0 }]);
  }
  // as written, the example is a valid, verified upload too: new the first time, a duplicate after
  expect((await call(app, "POST", "/v1/coins/upload", { token: user.token, body: example("/v1/coins/upload", "post") })).json).toEqual({ inserted: 1, duplicates: 0 });
  expect((await call(app, "POST", "/v1/coins/upload", { token: user.token, body: example("/v1/coins/upload", "post") })).json).toEqual({ inserted: 0, duplicates: 1 });
  // a fresh key_id without a fresh signature does not verify
  const unsigned = await upload([{ ...exampleCoin, key_id: randomUUID() }]);
  expect([unsigned.status, unsigned.json.type]).toEqual([422, "urn:aqm:problem:bad-signature"]);

  expect(query("/v1/coins/fetch")).toMatchObject({ count: 2, coin_category: "BRONZE" });
  expect(query("/v1/coins/count")).toEqual({});
  for (let round = 0; round < 2; round++) {
    expect((await call(app, "GET", "/v1/coins/fetch", { token: user.token, query: query("/v1/coins/fetch") })).status).toBe(200);
    expect((await call(app, "POST", "/v1/coins/claim", { token: user.token, body: body("/v1/coins/claim", "post", "device 1") })).status).toBe(200);
    const all = await call(app, "POST", "/v1/coins/claim", { token: user.token, body: body("/v1/coins/claim", "post", "all devices") });
    expect([all.status, all.json]).toEqual([200, { devices: [] }]); // the example target has no devices here
    const lastResort = await call(app, "PUT", "/v1/coins/last-resort", { token: user.token, body: example("/v1/coins/last-resort", "put") });
    expect([lastResort.status, lastResort.json.bronze, lastResort.json.last_resort.bronze]).toEqual([200, 3, true]); // verified too
    expect((await call(app, "GET", "/v1/coins/count", { token: user.token })).json.bronze).toBe(3);
    expect((await call(app, "GET", "/v1/coins/count", { token: user.token, query: { user_id: user.id } })).json.devices.map((d: any) => d.device_id)).toEqual([1]);
    expect((await call(app, "POST", "/v1/admin/purge-stale", { token: admin.token, body: example("/v1/admin/purge-stale", "post") })).status).toBe(200);
    expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: example("/v1/admin/hard-delete", "post") })).status).toBe(200);
  }
  const devices = await call(app, "GET", `/v1/users/${doc.paths["/v1/users/{user_id}/devices"].get.parameters[0].example}/devices`, { token: user.token });
  expect([devices.status, devices.json]).toEqual([200, { devices: [] }]);
  expect((await call(app, "GET", `/v1/users/${user.id}/devices`, { token: user.token })).json).toEqual({ devices: [{ device_id: 1, ed25519_b64: exampleEd25519 }] });

  // the check's first example is what this device holds once its last-resort coin is gone; the second a new device's
  const check = (name: string) => call(app, "POST", `/v1/devices/${device}/check`, { token: user.token, body: body("/v1/devices/{device_id}/check", "post", name) });
  expect((await check("the example key registered")).json.type).toBe("urn:aqm:problem:digest-mismatch"); // it holds the last-resort example
  expect((await call(app, "DELETE", "/v1/coins", { token: user.token })).json).toEqual({ deleted: 4 }); // 3 coins, 1 last-resort coin
  expect((await check("the example key registered")).json).toEqual({ match: true });
  expect((await check("nothing held (a new device)")).status).toBe(409);
  const removed = await call(app, "DELETE", `/v1/devices/${device}`, { token: user.token });
  expect([removed.status, removed.json]).toEqual([200, { coins_deleted: 0 }]);
  expect((await check("nothing held (a new device)")).json).toEqual({ match: true });
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
