import { beforeAll, describe, expect, test } from "bun:test";
import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tokenVerifier } from "../src/auth/jwt.ts";
import { loadAuthKeys, loadHashSecrets } from "../src/auth/keys.ts";
import { ConfigError } from "../src/config.ts";
import { UnauthorizedError } from "../src/errors.ts";
import { makeCoins } from "./helpers/coins.ts";
import { call, makeApp, newUser, testConfig, testSecret, token, type TestApp, type User } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
let alice: User;
let mallory: User;

beforeAll(async () => {
  app = makeApp(db.sql);
  [alice, mallory] = await Promise.all([newUser(), newUser()]);
  await call(app, "POST", "/v1/coins/upload", { token: alice.token, body: { coins: makeCoins(5) } });
});

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
const count = (tokenValue: string) => call(app, "GET", "/v1/coins/count", { token: tokenValue });
const aliceCount = async () => (await call(app, "GET", "/v1/coins/count", { token: alice.token })).json.bronze as number;

function expect401(res: { status: number; headers: Headers; json: any }) {
  expect(res.status).toBe(401);
  expect(res.headers.get("www-authenticate")).toStartWith("Bearer");
  expect(res.headers.get("content-type")).toBe("application/problem+json");
}

describe("401: who are you?", () => {
  test("missing or malformed Authorization", async () => {
    expect401(await call(app, "GET", "/v1/coins/count"));
    for (const header of ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer x.y.z", "Bearer a.b", "Bearer ' OR 1=1 --"]) {
      expect401(await call(app, "GET", "/v1/coins/count", { headers: { authorization: header } }));
    }
  });

  test("a token signed with another key", async () => {
    const forged = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id).setExpirationTime("1h")
      .sign(new TextEncoder().encode("another-secret-another-secret-another!!"));
    expect401(await count(forged));
  });

  test("alg: none", async () => {
    expect401(await count(`${b64url({ alg: "none", typ: "JWT" })}.${b64url({ sub: alice.id })}.`));
  });

  test("a tampered payload", async () => {
    const [h, , s] = alice.token.split(".");
    expect401(await count(`${h}.${b64url({ sub: mallory.id, scope: "admin" })}.${s}`));
  });

  test("an expired token", async () => {
    const expired = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(testSecret);
    const res = await count(expired);
    expect401(res);
    expect(res.json.detail).toContain("expired");
  });

  test("a token that verified before is refused once it expires (the verification cache honours exp)", async () => {
    let now = Date.now();
    const clocked = makeApp(db.sql, {}, undefined, () => now);
    const shortLived = await token(alice.id, { ttlSeconds: 60 });
    const countAt = () => call(clocked, "GET", "/v1/coins/count", { token: shortLived });
    expect((await countAt()).status).toBe(200);
    now += 30_000;
    expect((await countAt()).status).toBe(200); // served from the cache
    now += 31_000;
    expect401(await countAt());
  });

  test("the verification cache keeps a token under its plain 'Bearer <token>' header only: padded with spaces, it is verified every time", async () => {
    const keys = { secret: new Uint8Array(testSecret), source: "AQM_JWT_SECRET" as const };
    const verify = tokenVerifier(keys);
    const plain = `Bearer ${alice.token}`;
    const padded = `Bearer   ${alice.token}  `;
    for (const header of [plain, padded]) expect((await verify(header)).userId).toBe(alice.id);
    keys.secret = new TextEncoder().encode("another-secret-another-secret-another!!"); // what verified before no longer would
    expect((await verify(plain)).userId).toBe(alice.id); // from the cache
    await expect(verify(padded)).rejects.toThrow(UnauthorizedError); // verified again: never an entry of its own
  });

  test("exp is required by default, and a lifetime past AQM_JWT_MAX_TTL_S is refused", async () => {
    const sign = (claims: Record<string, unknown>, exp?: number, iat?: number) => {
      const jwt = new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id);
      if (iat !== undefined) jwt.setIssuedAt(iat);
      if (exp !== undefined) jwt.setExpirationTime(exp);
      return jwt.sign(testSecret);
    };
    const nowS = Math.floor(Date.now() / 1000);
    const forever = await sign({});
    const res = await count(forever);
    expect401(res);
    expect(res.json.detail).toContain("no exp");
    expect((await call(makeApp(db.sql, { AQM_JWT_REQUIRE_EXP: "off" }), "GET", "/v1/coins/count", { token: forever })).status).toBe(200);
    expect401(await count(await sign({}, nowS + 86_400 + 120))); // a day (the default cap) and more from now
    expect401(await count(await sign({}, nowS + 3600, nowS - 86_400))); // issued a day ago for 25 h in all
    expect((await count(await sign({}, nowS + 86_000, nowS))).status).toBe(200);
    const capped = makeApp(db.sql, { AQM_JWT_MAX_TTL_S: "600" });
    expect((await call(capped, "GET", "/v1/coins/count", { token: await sign({}, nowS + 900) })).status).toBe(401);
    expect((await call(capped, "GET", "/v1/coins/count", { token: await sign({}, nowS + 500) })).status).toBe(200);
  });

  test("nbf in the future, claims of the wrong type and critical header parameters are refused", async () => {
    const nowS = Math.floor(Date.now() / 1000);
    const base = () => new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id).setExpirationTime(nowS + 600);
    expect401(await count(await base().setNotBefore(nowS + 300).sign(testSecret)));
    expect((await count(await base().setNotBefore(nowS - 5).sign(testSecret))).status).toBe(200);
    expect401(await count(await new SignJWT({ exp: String(nowS + 600) } as never).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id).sign(testSecret)));
    expect401(await count(await new SignJWT({ iat: "yesterday" } as never).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id).setExpirationTime(nowS + 60).sign(testSecret)));
    const [, p] = (await base().sign(testSecret)).split(".");
    const critHeader = b64url({ alg: "HS256", crit: ["x-aqm"], "x-aqm": 1 });
    const sig = createHmac("sha256", testSecret).update(`${critHeader}.${p}`).digest("base64url");
    expect401(await count(`${critHeader}.${p}.${sig}`));
  });

  test("the scheme is case-insensitive (RFC 9110)", async () => {
    for (const scheme of ["bearer", "BEARER", "Bearer"]) {
      expect((await call(app, "GET", "/v1/coins/count", { headers: { authorization: `${scheme} ${alice.token}` } })).status).toBe(200);
    }
  });

  test("a sub that is not a UUID, or none", async () => {
    const sign = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h").sign(testSecret);
    expect401(await count(await sign({ sub: "admin" })));
    expect401(await count(await sign({})));
  });

  test("a token for an RS256 key while only HS256 is configured (algorithm confusion)", async () => {
    const { privateKey } = await generateKeyPair("RS256");
    const rs = await new SignJWT({}).setProtectedHeader({ alg: "RS256" }).setSubject(alice.id).setExpirationTime("1h").sign(privateKey);
    expect401(await count(rs));
  });
});

describe("403: acting for someone else", () => {
  test("user A cannot upload as B", async () => {
    const res = await call(app, "POST", "/v1/coins/upload", { token: mallory.token, body: { user_id: alice.id, coins: makeCoins(2) } });
    expect(res.status).toBe(403);
    expect(await aliceCount()).toBe(5);
  });

  test("user A cannot fetch as B", async () => {
    const res = await call(app, "GET", "/v1/coins/fetch", {
      token: mallory.token, query: { target_user_id: alice.id, coin_category: "BRONZE", count: 1, requester_id: alice.id },
    });
    expect(res.status).toBe(403);
    expect(await aliceCount()).toBe(5);
  });

  test("admin routes need the admin scope", async () => {
    for (const path of ["/v1/admin/purge-stale", "/v1/admin/hard-delete"]) {
      expect((await call(app, "POST", path, { token: mallory.token, body: {} })).status).toBe(403);
      expect401(await call(app, "POST", path, { body: {} }));
    }
    const scoped = await new SignJWT({ scope: "user administrator" }).setProtectedHeader({ alg: "HS256" }).setSubject(mallory.id).setExpirationTime("1h").sign(testSecret);
    expect((await call(app, "POST", "/v1/admin/purge-stale", { token: scoped })).status).toBe(403);
    expect((await call(app, "POST", "/v1/admin/purge-stale", { token: await token(mallory.id, { admin: true }) })).status).toBe(200);
  });
});

describe("asymmetric keys from an identity service", () => {
  for (const alg of ["EdDSA", "ES256", "RS256"] as const) {
    test(`${alg}: tokens signed by the service are accepted, others refused`, async () => {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
      const keys = await loadAuthKeys(testConfig({ AQM_JWT_PUBLIC_KEY: await exportSPKI(publicKey) }));
      const service = makeApp(db.sql, {}, keys);
      const good = await new SignJWT({}).setProtectedHeader({ alg }).setSubject(alice.id).setExpirationTime("5m").sign(privateKey);
      expect((await call(service, "GET", "/v1/coins/count", { token: good })).status).toBe(200);
      expect401(await call(service, "GET", "/v1/coins/count", { token: alice.token })); // HS256 not configured there
      const { privateKey: other } = await generateKeyPair(alg);
      const bad = await new SignJWT({}).setProtectedHeader({ alg }).setSubject(alice.id).setExpirationTime("1h").sign(other);
      expect401(await call(service, "GET", "/v1/coins/count", { token: bad }));
    });
  }

  test("issuer and audience are enforced when configured", async () => {
    const keys = await loadAuthKeys(testConfig({ AQM_JWT_SECRET: new TextDecoder().decode(testSecret), AQM_JWT_ISSUER: "https://id.example", AQM_JWT_AUDIENCE: "aqm" }));
    const strict = makeApp(db.sql, {}, keys);
    const sign = (iss: string, aud: string) => new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id).setIssuer(iss).setAudience(aud).setExpirationTime("1h").sign(testSecret);
    expect((await call(strict, "GET", "/v1/coins/count", { token: await sign("https://id.example", "aqm") })).status).toBe(200);
    const audiences = await new SignJWT({ aud: ["other", "aqm"] }).setProtectedHeader({ alg: "HS256" }).setSubject(alice.id).setIssuer("https://id.example").setExpirationTime("1h").sign(testSecret);
    expect((await call(strict, "GET", "/v1/coins/count", { token: audiences })).status).toBe(200);
    expect401(await call(strict, "GET", "/v1/coins/count", { token: await sign("https://evil.example", "aqm") }));
    expect401(await call(strict, "GET", "/v1/coins/count", { token: await sign("https://id.example", "other") }));
  });
});

describe("key configuration", () => {
  test("production without a key refuses to start", async () => {
    await expect(loadAuthKeys(testConfig({ NODE_ENV: "production" }))).rejects.toBeInstanceOf(ConfigError);
  });

  test("the hash secret: required in production, created once for development, the previous one kept for a rotation", () => {
    expect(() => loadHashSecrets(testConfig({ NODE_ENV: "production", AQM_JWT_SECRET: "x".repeat(32) }))).toThrow(ConfigError);
    expect(() => testConfig({ AQM_HASH_SECRET: "short" })).toThrow(ConfigError);
    const given = loadHashSecrets(testConfig({ NODE_ENV: "production", AQM_HASH_SECRET: "h".repeat(32), AQM_HASH_SECRET_PREVIOUS: "p".repeat(32) }));
    expect(new TextDecoder().decode(given.current)).toBe("h".repeat(32));
    expect(new TextDecoder().decode(given.previous)).toBe("p".repeat(32));
    const dir = mkdtempSync(join(tmpdir(), "aqm-hash-"));
    try {
      const a = loadHashSecrets(testConfig({ AQM_DATA_DIR: dir }));
      const b = loadHashSecrets(testConfig({ AQM_DATA_DIR: dir }));
      expect(a.current.length).toBeGreaterThanOrEqual(32);
      expect(Buffer.from(a.current).equals(Buffer.from(b.current))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a short secret or an unreadable public key is a configuration error", async () => {
    expect(() => testConfig({ AQM_JWT_SECRET: "short" })).toThrow(ConfigError);
    await expect(loadAuthKeys(testConfig({ AQM_JWT_PUBLIC_KEY: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----" }))).rejects.toBeInstanceOf(ConfigError);
  });

  test("development: a random secret is created once in the data directory and reused", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aqm-keys-"));
    try {
      const a = await loadAuthKeys(testConfig({ AQM_DATA_DIR: dir }));
      const b = await loadAuthKeys(testConfig({ AQM_DATA_DIR: dir }));
      expect(a.source).toBe("development secret");
      expect(a.secret!.length).toBeGreaterThanOrEqual(32);
      expect(Buffer.from(a.secret!).equals(Buffer.from(b.secret!))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("bun run token prints a token the server accepts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aqm-token-"));
    try {
      const user = randomUUID();
      const proc = Bun.spawnSync(["bun", "run", "token", user, "--admin"], { env: { ...process.env, AQM_DATA_DIR: dir, AQM_JWT_SECRET: "" }, cwd: join(import.meta.dir, "..") });
      expect(proc.exitCode).toBe(0);
      const printed = proc.stdout.toString().trim();
      const devApp = makeApp(db.sql, {}, await loadAuthKeys(testConfig({ AQM_DATA_DIR: dir })));
      expect((await call(devApp, "POST", "/v1/admin/hard-delete", { token: printed })).status).toBe(200);
      expect(Bun.spawnSync(["bun", "run", "token", "not-a-uuid"], { cwd: join(import.meta.dir, "..") }).exitCode).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30000);
});
