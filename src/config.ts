import { Type as t, type Static, type TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { Cron } from "croner";

/**
 * Every setting of the server, read once from the environment. The README's configuration
 * table lists exactly these variables (tests/config.test.ts checks that it does).
 */
const int = (min: number, max: number, def: number, description: string) =>
  t.Integer({ minimum: min, maximum: max, default: def, description });
const str = (def: string, description: string) => t.String({ default: def, description });
const oneOf = <T extends string>(values: readonly T[], def: T, description: string) =>
  t.Union(values.map((v) => t.Literal(v)), { default: def, description });
const onOff = (def: "on" | "off", description: string) => oneOf(["on", "off"], def, description);
const cron = (def: string, description: string) =>
  t.String({ default: def, description, allowed: "a cron pattern with 5 or 6 fields, e.g. \"0 5 * * * *\"", cron: true });
const secret = (description: string, allowed: string, minLength = 1) =>
  t.Union([t.Literal(""), t.String({ minLength })], { default: "", description, allowed });

export const settings = {
  PORT: int(0, 65535, 3000, "HTTP port the server listens on."),
  HOST: str("0.0.0.0", "Address the server binds to."),
  NODE_ENV: oneOf(["development", "production", "test"], "development", "`development`, `production` or `test`: `production` makes a missing JWT key, hash secret or DATABASE_URL fatal at start (`bun test` sets `test`)."),
  DATABASE_URL: str("", "PostgreSQL (14+) connection URL. Empty: run the embedded PostgreSQL (see AQM_EMBEDDED)."),
  AQM_DATABASE_DIRECT_URL: str("", "A session connection to the same database, not through a transaction-mode pooler: migrations, the maintenance lock and LISTEN use it. Empty: DATABASE_URL."),
  AQM_DB_POOLER: oneOf(["none", "transaction"], "none", "`transaction`: DATABASE_URL is a transaction-mode pooler (PgBouncer, a hosted pooler): no prepared statements, no startup parameters (give the role the timeouts), and AQM_DATABASE_DIRECT_URL is required."),
  AQM_EMBEDDED: oneOf(["auto", "on", "off"], "auto", "The embedded PostgreSQL, used when DATABASE_URL is empty. `auto`: outside production only (NODE_ENV=production without DATABASE_URL refuses to start); `on`: in production too; `off`: never (DATABASE_URL is required)."),
  AQM_DATA_DIR: str(".data", "Directory for the embedded PostgreSQL cluster and the development JWT secret."),
  AQM_EMBEDDED_PG_PORT: int(1, 65535, 54329, "Port of the embedded PostgreSQL (loopback only)."),
  AQM_DB_POOL_MAX: int(1, 500, 4, "Maximum PostgreSQL connections of this server process (4 measured best on 2 cores with PostgreSQL on the same box; see bench/README.md)."),
  AQM_DB_CONNECT_TIMEOUT_S: int(1, 300, 1, "Seconds to wait for a new PostgreSQL connection: for a host to answer, and in all across the hosts that refuse or close it and the retries; past it a request gets 503."),
  AQM_DB_IDLE_TIMEOUT_S: int(0, 86400, 0, "Seconds before an idle pooled connection is closed (0: never, the default: a burst after a quiet spell would open them under load)."),
  AQM_DB_MAX_LIFETIME_S: int(0, 86400, 1800, "Seconds before a pooled connection is replaced (0: never)."),
  AQM_DB_STATEMENT_TIMEOUT_MS: int(0, 600000, 2000, "PostgreSQL statement_timeout of request statements (0: none): PostgreSQL cancels a statement itself past it, even when the server's cancel cannot reach it (never a commit's wait for a synchronous standby: PostgreSQL disables it before the commit)."),
  AQM_DB_IDLE_TX_TIMEOUT_MS: int(0, 600000, 5000, "PostgreSQL idle_in_transaction_session_timeout (0: none)."),
  AQM_DB_UNRESPONSIVE_S: int(0, 3600, 10, "Seconds a request connection with statements outstanding may hear nothing from PostgreSQL before it is given up (its statements answered 503, the connection opened again: the next host of several). A host that froze or vanished keeps its connections open and silent; without this they stay stuck for many minutes (TCP), or for good. Must exceed AQM_DB_STATEMENT_TIMEOUT_MS by a second or more; 0: never. The request connections, and the LISTEN connection (asked a SELECT 1 that often); the session connections of migrations and maintenance are left to TCP."),
  AQM_LOG: onOff("on", "One JSON log line per request on stdout."),
  AQM_JWT_SECRET: secret("HS256 secret for bearer tokens (at least 32 bytes).", "empty or at least 32 characters", 32),
  AQM_JWT_PUBLIC_KEY: secret("PEM public key (EdDSA, ES256 or RS256) of an identity service that signs tokens.", "empty or a PEM public key"),
  AQM_JWT_ISSUER: str("", "When set, tokens must carry this `iss`."),
  AQM_JWT_AUDIENCE: str("", "When set, tokens must carry this `aud`."),
  AQM_JWT_REQUIRE_EXP: onOff("on", "`on`: tokens without `exp` are refused."),
  AQM_JWT_MAX_TTL_S: int(60, 31_536_000, 86_400, "Tokens that live longer than this (from `iat`, or from now) are refused."),
  AQM_HASH_SECRET: secret("Key of the keyed hashes that stand for requester–target pairs and Idempotency-Keys in the database (at least 32 bytes; required in production).", "empty or at least 32 characters", 32),
  AQM_HASH_SECRET_PREVIOUS: secret("The previous AQM_HASH_SECRET during a rotation: still read, never written (keep it 25 h).", "empty or at least 32 characters", 32),
  AQM_COUNT_VISIBILITY: oneOf(["any", "self"], "any", "`any`: every authenticated user may read any user's counts; `self`: only one's own."),
  AQM_RATE_LIMITS: onOff("on", "`off` disables per-user rate limits and the pair quota (benchmarks only)."),
  AQM_RATE_UPLOAD_PER_MIN: int(1, 1000000, 30, "Uploads per user per minute (token bucket; burst = one minute's worth)."),
  AQM_RATE_FETCH_PER_MIN: int(1, 1000000, 300, "Fetches per user per minute."),
  AQM_RATE_COUNT_PER_MIN: int(1, 1000000, 300, "Count reads per user per minute."),
  AQM_RATE_ADMIN_PER_MIN: int(1, 1000000, 30, "Admin calls per user per minute."),
  AQM_PAIR_QUOTA: int(1, 1000000, 100, "Coins one requester may claim of one target per rolling 24 h."),
  AQM_MAX_DEVICES: int(1, 127, 10, "Devices one user may have (ids 1–127); a new device past it is refused (409)."),
  AQM_VERIFY_SIGNATURES: oneOf(["registered", "required", "off"], "registered", "Coin signatures checked against the device's identity keys at upload. `registered`: for devices that registered keys (PUT /v1/devices/{id}); `required`: a device without keys cannot upload (409); `off`: never."),
  AQM_TIER_SIZES: oneOf(["strict", "loose"], "strict", "`strict`: a coin's key and signature must have its tier's exact sizes; `loose`: up to 2,048 / 5,120 bytes."),
  AQM_DB_POOL_WAIT_MS: int(1, 60000, 2000, "Deadline of each database statement, from when it asks for a connection: past it the statement is cancelled (nothing commits) and the request gets 503."),
  AQM_CLAIM_OVERLAP_MS: int(0, 60000, 50, "One PostgreSQL: a second claim statement leaves only once the one in flight has run this long; the claims arriving meanwhile leave together in the next. One batch of B costs PostgreSQL less than two of B/2 (bench/README.md, issue 21), and a statement that waits on a lock or a standby holds the others up no longer than this. 0: at once. Not on Citus (one statement per shard)."),
  AQM_CLAIM_QUEUE_MAX_MS: int(1, 600000, 10000, "Longest a claim may wait for its turn while the database keeps answering; when it stops answering, claims get 503 after AQM_DB_POOL_WAIT_MS."),
  AQM_DB_POOL_QUEUE_MAX: int(0, 100000, 2000, "Requests that may wait for a connection at once; beyond that, 503 at once."),
  AQM_CRON: onOff("on", "Run the maintenance schedule in this process (one instance runs each tick)."),
  AQM_CRON_PURGE_STALE: cron("0 30 3 * * *", "When to purge unclaimed coins (cron with seconds; default daily 03:30:00 UTC)."),
  AQM_CRON_HARD_DELETE: cron("0 5 * * * *", "When to hard-delete claimed coins and expired quota rows (default hourly at :05:00)."),
  AQM_PURGE_MAX_AGE_DAYS: int(1, 3650, 30, "Unclaimed coins older than this many days are purged."),
  AQM_HARD_DELETE_GRACE_HOURS: int(0, 8760, 1, "Claimed coins older than this many hours are deleted, with who claimed them."),
  AQM_SHUTDOWN_DRAIN_MS: int(0, 600000, 10000, "On SIGTERM/SIGINT, how long in-flight requests may take before connections are closed."),
  AQM_CORS_ORIGINS: t.String({
    default: "", pattern: "^(\\*|https?://[^,/\\s]+(\\s*,\\s*https?://[^,/\\s]+)*)?$", allowed: "empty, * or comma-separated origins such as https://app.example.com",
    description: "Browser origins allowed to call the API (CORS), comma-separated, or `*` for any; empty: no CORS headers (off).",
  }),
  AQM_METRICS_TOKEN: secret("Bearer token that may read GET /metrics (admin-scoped JWTs may too).", "empty or at least 16 characters", 16),
};

export const ConfigSchema = t.Object(settings);
export type Config = Static<typeof ConfigSchema>;
export type SettingName = keyof typeof settings;

export class ConfigError extends Error {
  override name = "ConfigError";
}

function coerce(schema: TSchema, raw: string): unknown {
  if (schema.type === "integer") return /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
  return raw;
}

function describeAllowed(schema: TSchema): string {
  if (schema.allowed) return schema.allowed;
  if (schema.type === "integer") return `an integer from ${schema.minimum} to ${schema.maximum}`;
  if (schema.anyOf) return `one of ${schema.anyOf.map((s: TSchema) => s.const).join(", ")}`;
  return "a string";
}

function isCronPattern(pattern: string): boolean {
  try {
    new Cron(pattern, { paused: true }).stop();
    return true;
  } catch {
    return false;
  }
}

/** Edits that turn `a` into `b` (Levenshtein distance). */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * AQM_* variables in `env` that are no setting (a typo is otherwise silently ignored), each with
 * the setting it probably meant, when one is close.
 */
export function unknownSettings(env: Record<string, string | undefined>): { name: string; meant?: SettingName }[] {
  const names = Object.keys(settings) as SettingName[];
  return Object.keys(env).filter((name) => name.startsWith("AQM_") && !(name in settings)).sort().map((name) => {
    const [meant, edits] = names.map((s) => [s, distance(name, s)] as const).sort((a, b) => a[1] - b[1])[0]!;
    return edits <= 2 && edits * 4 <= name.length ? { name, meant } : { name };
  });
}

/** Reads and validates every setting; a bad value throws a ConfigError naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(settings) as [SettingName, TSchema][]) {
    const raw = env[name];
    const value = raw === undefined || raw === "" ? schema.default : coerce(schema, raw);
    if (!Value.Check(schema, value) || (schema.cron && !isCronPattern(value as string))) {
      const shown = name.includes("SECRET") ? "(hidden)" : JSON.stringify(raw);
      throw new ConfigError(`${name}=${shown} is invalid: expected ${describeAllowed(schema)}`);
    }
    out[name] = value;
  }
  const config = out as Config;
  const unresponsiveMs = config.AQM_DB_UNRESPONSIVE_S * 1000;
  if (unresponsiveMs > 0 && (config.AQM_DB_STATEMENT_TIMEOUT_MS === 0 || unresponsiveMs < config.AQM_DB_STATEMENT_TIMEOUT_MS + 1000)) {
    throw new ConfigError(`AQM_DB_UNRESPONSIVE_S=${config.AQM_DB_UNRESPONSIVE_S} is invalid: a healthy statement may run silent for AQM_DB_STATEMENT_TIMEOUT_MS `
      + `(${config.AQM_DB_STATEMENT_TIMEOUT_MS || "none"}); give up on a connection at least a second later, or set 0`);
  }
  return config;
}
