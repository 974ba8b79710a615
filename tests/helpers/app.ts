import { afterAll } from "bun:test";
import { randomUUID } from "node:crypto";
import { createApp } from "../../src/app.ts";
import { signToken } from "../../src/auth/jwt.ts";
import type { AuthKeys, HashSecrets } from "../../src/auth/keys.ts";
import { loadConfig, type Config } from "../../src/config.ts";
import type { Sql } from "../../src/db/pool.ts";
import { sessionFor } from "./db.ts";

export const testSecret = new TextEncoder().encode("test-secret-test-secret-test-secret-0123");
export const testKeys: AuthKeys = { secret: testSecret, source: "AQM_JWT_SECRET" };
export const testHashSecrets: HashSecrets = { current: new TextEncoder().encode("test-hash-secret-test-hash-secret-0123") };

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({ AQM_LOG: "off", ...env });
}

export type TestApp = ReturnType<typeof createApp>;

const apps: TestApp[] = [];
afterAll(async () => {
  await Promise.all(apps.splice(0).map((app) => app.decorator.aqm.close()));
});

/** An app on the test database; its notification listener (if a test waits) is closed after the file. */
export function makeApp(sql: Sql, env: Record<string, string> = {}, keys: AuthKeys = testKeys, now?: () => number,
  hashSecrets: HashSecrets = testHashSecrets): TestApp {
  const app = createApp({ sql, session: sessionFor(sql), config: testConfig(env), keys, hashSecrets, now });
  apps.push(app);
  return app;
}

export const token = (userId: string, opts: { admin?: boolean; ttlSeconds?: number; device?: number } = {}) => signToken(testSecret, userId, opts);

/** The same user acting as another of its devices (a token with that `dev` claim). */
export const asDevice = async (user: User, device: number): Promise<User> => ({ id: user.id, token: await token(user.id, { device }) });

export interface User {
  id: string;
  token: string;
}

export async function newUser(opts: { admin?: boolean } = {}): Promise<User> {
  const id = randomUUID();
  return { id, token: await token(id, opts) };
}

export interface CallOptions {
  token?: string;
  body?: unknown;
  rawBody?: string | Uint8Array | ReadableStream;
  query?: Record<string, string | number>;
  headers?: Record<string, string>;
}

/** A metric's value from the app's /metrics (its first sample without labels), read with an admin's token. */
export async function metricValue(app: TestApp, adminToken: string, name: string): Promise<number> {
  const { text } = await call(app, "GET", "/metrics", { token: adminToken });
  return Number(text.match(new RegExp(`^${name} (\\S+)`, "m"))?.[1]);
}

export async function call(app: TestApp, method: string, path: string, opts: CallOptions = {}) {
  const url = new URL(`http://localhost${path}`);
  for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | Uint8Array | ReadableStream | undefined = opts.rawBody;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await app.handle(new Request(url.toString(), { method, headers, body }));
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}
