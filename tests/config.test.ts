import { expect, test } from "bun:test";
import { ConfigError, loadConfig, settings, unknownSettings } from "../src/config.ts";

test("defaults apply when nothing is set", () => {
  const config = loadConfig({});
  expect(config.PORT).toBe(3000);
  expect(config.DATABASE_URL).toBe("");
  expect(config.AQM_DB_POOL_MAX).toBe(4);
});

test("values are read and coerced", () => {
  const config = loadConfig({ PORT: "8080", AQM_DB_POOL_MAX: "25", AQM_LOG: "off" });
  expect(config.PORT).toBe(8080);
  expect(config.AQM_DB_POOL_MAX).toBe(25);
  expect(config.AQM_LOG).toBe("off");
});

test.each([
  ["PORT", "eighty", "an integer from 0 to 65535"],
  ["PORT", "70000", "an integer from 0 to 65535"],
  ["AQM_DB_POOL_MAX", "0", "an integer from 1 to 500"],
  ["AQM_DB_POOL_MAX", "1.5", "an integer"],
  ["AQM_LOG", "maybe", "one of on, off"],
])("%s=%s stops start-up with a message naming the variable", (name, value, allowed) => {
  let error: unknown;
  try {
    loadConfig({ [name]: value });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as Error).message).toContain(name);
  expect((error as Error).message).toContain(allowed);
});

test("the README's configuration table names exactly the settings that exist, with their defaults", async () => {
  const readme = await Bun.file(new URL("../README.md", import.meta.url)).text();
  const rows = [...readme.matchAll(/^\| `([A-Z_]+)` \| ([^|]*) \|/gm)];
  expect(rows.map((r) => r[1]).sort()).toEqual(Object.keys(settings).sort());
  for (const [, name, def] of rows) {
    const expected = String((settings as Record<string, { default: unknown }>)[name!]!.default);
    expect(`${name}=${def!.trim().replace(/^`|`$/g, "").replace(/^\(empty\)$/, "")}`).toBe(`${name}=${expected}`);
  }
});

test("NODE_ENV must be development, production or test: a typo such as prod stops start-up", () => {
  expect(loadConfig({ NODE_ENV: "production" }).NODE_ENV).toBe("production");
  expect(loadConfig({ NODE_ENV: "test" }).NODE_ENV).toBe("test");
  expect(() => loadConfig({ NODE_ENV: "prod" })).toThrow('NODE_ENV="prod" is invalid: expected one of development, production, test');
});

test("AQM_CORS_ORIGINS is empty (off), * or a list of origins", () => {
  expect(loadConfig({}).AQM_CORS_ORIGINS).toBe("");
  for (const ok of ["*", "https://app.example.com", "https://app.example.com, http://localhost:5173"]) expect(loadConfig({ AQM_CORS_ORIGINS: ok }).AQM_CORS_ORIGINS).toBe(ok);
  for (const bad of ["app.example.com", "https://app.example.com/", "https://a.example.com,", "ftp://x"]) {
    expect(() => loadConfig({ AQM_CORS_ORIGINS: bad })).toThrow("AQM_CORS_ORIGINS");
  }
});

test("unknown AQM_* variables are named, with the setting a typo probably meant", () => {
  expect(unknownSettings({ AQM_DB_POOL_MAXX: "8", AQM_JWT_SECERT: "x", AQM_SOMETHING_ELSE: "1", AQM_LOG: "off", PATH: "/bin", NODE_ENV: "test" })).toEqual([
    { name: "AQM_DB_POOL_MAXX", meant: "AQM_DB_POOL_MAX" },
    { name: "AQM_JWT_SECERT", meant: "AQM_JWT_SECRET" },
    { name: "AQM_SOMETHING_ELSE" },
  ]);
  expect(unknownSettings({ AQM_LOG: "on", AQM_CORS_ORIGINS: "*" })).toEqual([]);
});

test(".env.example names only settings that exist, and .env files stay out of git", async () => {
  const example = await Bun.file(new URL("../.env.example", import.meta.url)).text();
  const names = [...example.matchAll(/^#? ?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
  expect(names.length).toBeGreaterThan(3);
  for (const name of names) expect(Object.keys(settings)).toContain(name);
  const gitignore = (await Bun.file(new URL("../.gitignore", import.meta.url)).text()).split("\n");
  expect(gitignore).toContain(".env");
  expect(gitignore).toContain(".env.*");
  expect(gitignore).toContain("!.env.example");
});

test("AQM_DB_UNRESPONSIVE_S must exceed the statement timeout by a second (a healthy statement may run silent that long), or be 0", () => {
  expect(loadConfig({}).AQM_DB_UNRESPONSIVE_S).toBe(10);
  expect(loadConfig({ AQM_DB_UNRESPONSIVE_S: "3" }).AQM_DB_UNRESPONSIVE_S).toBe(3);
  expect(() => loadConfig({ AQM_DB_UNRESPONSIVE_S: "2" })).toThrow("AQM_DB_UNRESPONSIVE_S=2 is invalid");
  expect(() => loadConfig({ AQM_DB_STATEMENT_TIMEOUT_MS: "30000" })).toThrow("AQM_DB_UNRESPONSIVE_S=10 is invalid");
  expect(() => loadConfig({ AQM_DB_STATEMENT_TIMEOUT_MS: "0" })).toThrow("(none)");
  expect(loadConfig({ AQM_DB_STATEMENT_TIMEOUT_MS: "0", AQM_DB_UNRESPONSIVE_S: "0" }).AQM_DB_UNRESPONSIVE_S).toBe(0);
  expect(loadConfig({ AQM_DB_STATEMENT_TIMEOUT_MS: "30000", AQM_DB_UNRESPONSIVE_S: "31" }).AQM_DB_UNRESPONSIVE_S).toBe(31);
});
