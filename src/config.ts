import { Type as t, type Static, type TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";

/**
 * Every setting of the server, read once from the environment. The README's configuration
 * table lists exactly these variables (tests/config.test.ts checks that it does).
 */
const int = (min: number, max: number, def: number, description: string) =>
  t.Integer({ minimum: min, maximum: max, default: def, description });
const str = (def: string, description: string) => t.String({ default: def, description });
const onOff = (def: "on" | "off", description: string) =>
  t.Union([t.Literal("on"), t.Literal("off")], { default: def, description });

export const settings = {
  PORT: int(0, 65535, 3000, "HTTP port the server listens on."),
  HOST: str("0.0.0.0", "Address the server binds to."),
  NODE_ENV: str("development", "`production` makes a missing JWT key fatal at start."),
  DATABASE_URL: str("", "PostgreSQL (14+) connection URL. Empty: run the embedded PostgreSQL."),
  AQM_DATA_DIR: str(".data", "Directory for the embedded PostgreSQL cluster and the development JWT secret."),
  AQM_EMBEDDED_PG_PORT: int(1, 65535, 54329, "Port of the embedded PostgreSQL (loopback only)."),
  AQM_DB_POOL_MAX: int(1, 500, 10, "Maximum PostgreSQL connections of this server process."),
  AQM_DB_CONNECT_TIMEOUT_S: int(1, 300, 5, "Seconds to wait for a new PostgreSQL connection."),
  AQM_DB_IDLE_TIMEOUT_S: int(0, 86400, 60, "Seconds before an idle pooled connection is closed (0: never)."),
  AQM_DB_MAX_LIFETIME_S: int(0, 86400, 1800, "Seconds before a pooled connection is replaced (0: never)."),
  AQM_DB_STATEMENT_TIMEOUT_MS: int(0, 600000, 10000, "PostgreSQL statement_timeout per connection (0: none)."),
  AQM_DB_IDLE_TX_TIMEOUT_MS: int(0, 600000, 5000, "PostgreSQL idle_in_transaction_session_timeout (0: none)."),
  AQM_LOG: onOff("on", "One JSON log line per request on stdout."),
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
  if (schema.type === "integer") return `an integer from ${schema.minimum} to ${schema.maximum}`;
  if (schema.anyOf) return `one of ${schema.anyOf.map((s: TSchema) => s.const).join(", ")}`;
  return "a string";
}

/** Reads and validates every setting; a bad value throws a ConfigError naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(settings) as [SettingName, TSchema][]) {
    const raw = env[name];
    const value = raw === undefined || raw === "" ? schema.default : coerce(schema, raw);
    if (!Value.Check(schema, value)) {
      throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected ${describeAllowed(schema)}`);
    }
    out[name] = value;
  }
  return out as Config;
}
