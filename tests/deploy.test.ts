// Static checks of the deployment files (Dockerfile, .dockerignore, compose.yaml, docs/runbook.md).
// Docker does not run where the tests run, so these read the files and check them against the
// repository and src/config.ts: a renamed setting, a moved directory or a typo in compose.yaml
// fails here instead of at deploy time. Only the runbook's SQL uses the test database.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, normalize } from "node:path";
import { settings } from "../src/config.ts";
import { useTestDatabase } from "./helpers/db.ts";

const root = join(import.meta.dir, "..");
const read = (path: string) => readFileSync(join(root, path), "utf8");
const settingNames = new Set(Object.keys(settings));

// ---------------------------------------------------------------------------------------------
// Dockerfile: a small parser (comments, line continuations, FROM … AS stages, COPY flags).

interface Instruction {
  keyword: string;
  args: string;
  stage: number;
}
interface Stage {
  image: string;
  name?: string;
}

function parseDockerfile(text: string): { instructions: Instruction[]; stages: Stage[] } {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line) && current === "") continue;
    if (/^\s*#/.test(line)) continue; // comment lines inside a continuation are ignored too
    if (line.endsWith("\\")) {
      current += line.slice(0, -1) + " ";
      continue;
    }
    current += line;
    if (current.trim()) logical.push(current.trim());
    current = "";
  }
  if (current.trim()) logical.push(current.trim());

  const instructions: Instruction[] = [];
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword, args] = line.match(/^(\S+)\s*(.*)$/)!;
    const upper = keyword!.toUpperCase();
    if (upper === "FROM") {
      const parts = args!.split(/\s+/).filter((p) => !p.startsWith("--"));
      const as = parts.findIndex((p) => p.toLowerCase() === "as");
      stages.push({ image: parts[0]!, name: as >= 0 ? parts[as + 1] : undefined });
    }
    instructions.push({ keyword: upper, args: args!, stage: stages.length - 1 });
  }
  return { instructions, stages };
}

/** Splits `COPY [--flags] src… dest` (shell or JSON form) into flags, sources and destination. */
function copyParts(args: string): { flags: string[]; sources: string[]; dest: string } {
  const tokens = args.split(/\s+/);
  const flags = tokens.filter((t) => t.startsWith("--"));
  const rest = args.slice(flags.reduce((n, f) => args.indexOf(f, n) + f.length, 0)).trim();
  const paths: string[] = rest.startsWith("[") ? JSON.parse(rest) : rest.split(/\s+/);
  return { flags, sources: paths.slice(0, -1), dest: paths.at(-1)! };
}

/** Exec-form (JSON array) arguments, or the shell-form string as one element. */
const execForm = (args: string): string[] => (args.trim().startsWith("[") ? JSON.parse(args) : [args]);

/** Patterns of .dockerignore as a matcher: `*` within a path segment, `**` across; a match covers everything below. */
function dockerignore(text: string): (path: string) => boolean {
  const patterns = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  expect(patterns.some((p) => p.startsWith("!"))).toBe(false); // exceptions are not modelled here
  const regexes = patterns.map((p) => {
    const body = normalize(p).replace(/^\/+|\/+$/g, "")
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*\*/g, "\u0000").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]").replace(/\u0000/g, ".*");
    return new RegExp(`^${body}(/.*)?$`);
  });
  return (path) => regexes.some((r) => r.test(normalize(path).replace(/^\.\/|\/+$/g, "")));
}

describe("Dockerfile", () => {
  const { instructions, stages } = parseDockerfile(read("Dockerfile"));
  const final = stages.length - 1;
  const inFinal = (keyword: string) => instructions.filter((i) => i.keyword === keyword && i.stage === final);

  test("builds in several stages from the official Bun image, pinned to this project's Bun", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const [major, minor] = Bun.version.split(".");
    const names = new Set(stages.map((s) => s.name).filter(Boolean));
    for (const { image } of stages) {
      if (names.has(image)) continue; // FROM an earlier stage
      const match = image.match(/^oven\/bun:(\d+)\.(\d+)(?:\.(\d+))?(-[a-z]+)?$/);
      expect(match, `FROM ${image} must be oven/bun:<major.minor[.patch]>[-variant], not latest`).not.toBeNull();
      expect(`${match![1]}.${match![2]}`).toBe(`${major}.${minor}`);
    }
  });

  test("installs exactly the locked production dependencies", () => {
    const runs = instructions.filter((i) => i.keyword === "RUN").map((i) => i.args);
    const install = runs.find((r) => /\bbun install\b/.test(r));
    expect(install).toBeDefined();
    expect(install).toContain("--frozen-lockfile");
    expect(install).toContain("--production");
  });

  test("the deps stage installs with bunfig.toml, which installs no peer dependency (TypeScript) on its own", () => {
    const deps = instructions.filter((i) => i.stage === 0 && i.keyword === "COPY").flatMap((i) => copyParts(i.args).sources);
    expect(deps).toContain("bunfig.toml");
    expect(read("bunfig.toml")).toMatch(/^\[install\][^[]*^peer = false$/m);
  });

  test("every COPY from the build context names a file or directory that exists and is not .dockerignored", () => {
    const ignored = dockerignore(read(".dockerignore"));
    const copies = instructions.filter((i) => i.keyword === "COPY" || i.keyword === "ADD");
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) {
      const { flags, sources } = copyParts(copy.args);
      if (flags.some((f) => f.startsWith("--from="))) {
        const from = flags.find((f) => f.startsWith("--from="))!.slice(7);
        expect(stages.some((s) => s.name === from), `COPY --from=${from} names a stage`).toBe(true);
        continue;
      }
      for (const source of sources) {
        expect(existsSync(join(root, source)), `COPY ${source}: no such file in the repository`).toBe(true);
        expect(ignored(source), `COPY ${source}: excluded by .dockerignore`).toBe(false);
      }
    }
  });

  test("the final stage has what the server reads at runtime", () => {
    const copied = inFinal("COPY").flatMap((i) => copyParts(i.args).sources.map((s) => normalize(s).replace(/\/+$/, "")));
    for (const needed of ["src", "db", "package.json", "tsconfig.json"]) expect(copied).toContain(needed);
    // migrate.ts reads db/migrations next to src/: both must land in the same directory.
    expect(existsSync(join(root, "db/migrations"))).toBe(true);
    expect(inFinal("COPY").some((i) => /--from=/.test(i.args) && /node_modules/.test(i.args))).toBe(true);
  });

  test("runs as a non-root user", () => {
    const users = inFinal("USER");
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1)!.args.split(":")[0]!.trim();
    expect(["root", "0"]).not.toContain(user);
  });

  test("production environment, port 3000, and every ENV is a real setting", () => {
    const env = new Map<string, string>();
    for (const { args } of inFinal("ENV")) {
      for (const [, name, value] of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) env.set(name!, value!.replace(/^"|"$/g, ""));
    }
    expect(env.get("NODE_ENV")).toBe("production");
    // Bun's own runtime variables are not settings of the server; the README names the ones used.
    const runtime = new Set(["BUN_JSC_forceRAMSize"]);
    for (const name of env.keys()) expect(settingNames.has(name) || runtime.has(name), `ENV ${name} is not in src/config.ts`).toBe(true);
    expect(env.get("BUN_JSC_forceRAMSize")).toBe("134217728");
    expect(inFinal("EXPOSE").map((i) => i.args)).toContain("3000");
  });

  test("HEALTHCHECK calls /v1/health/ready with a tool the image has", () => {
    const [check] = inFinal("HEALTHCHECK");
    expect(check).toBeDefined();
    expect(check!.args).toContain("/v1/health/ready");
    expect(check!.args).not.toMatch(/\b(curl|wget)\b/); // the slim image has neither
  });

  test("CMD runs src/index.ts with Bun in exec form (so SIGTERM reaches the server)", () => {
    const cmd = inFinal("CMD").at(-1);
    expect(cmd).toBeDefined();
    const argv = execForm(cmd!.args);
    expect(argv.length).toBeGreaterThan(1); // JSON form, not a shell string
    expect(argv[0]).toBe("bun");
    expect(argv).toContain("src/index.ts");
    expect(existsSync(join(root, "src/index.ts"))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// compose.yaml

type Service = {
  image?: string;
  build?: string | { context?: string };
  environment?: Record<string, string | number | boolean | null> | string[];
  volumes?: (string | { type?: string; source?: string; target?: string })[];
  healthcheck?: { test?: string | string[] };
  depends_on?: string[] | Record<string, { condition?: string }>;
  ports?: (string | number | { target?: number; published?: number | string })[];
  stop_grace_period?: string;
  restart?: string;
};
type Compose = { services?: Record<string, Service>; volumes?: Record<string, unknown> };

function environment(service: Service): Map<string, string> {
  const env = new Map<string, string>();
  if (Array.isArray(service.environment)) {
    for (const entry of service.environment) {
      const eq = entry.indexOf("=");
      env.set(eq < 0 ? entry : entry.slice(0, eq), eq < 0 ? "" : entry.slice(eq + 1));
    }
  } else {
    for (const [k, v] of Object.entries(service.environment ?? {})) env.set(k, v == null ? "" : String(v));
  }
  return env;
}

const testCommand = (service: Service) => {
  const t = service.healthcheck?.test;
  return Array.isArray(t) ? t.join(" ") : (t ?? "");
};

/** Compose durations: "20s", "1m30s", "500ms". */
function durationMs(value: string): number {
  let ms = 0;
  for (const [, n, unit] of value.matchAll(/(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)/g)) {
    ms += Number(n) * { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 1e-3, ns: 1e-6 }[unit as "h"];
  }
  return ms;
}

/** Replaces every `${…}` interpolation with a placeholder, so the value can be parsed. */
const uninterpolated = (value: string) => value.replace(/\$\{[^}]*\}/g, "x");

describe("compose.yaml", () => {
  const text = read("compose.yaml");
  const compose = Bun.YAML.parse(text) as Compose;
  const db = compose.services?.db;
  const app = compose.services?.app;

  test("has the services db and app", () => {
    expect(db).toBeDefined();
    expect(app).toBeDefined();
  });

  test("every interpolation is well-formed and literal dollars are escaped", () => {
    // `$NAME` without braces would be interpolated on the host; `$$` keeps a literal `$`.
    const values = text.split("\n").filter((line) => !/^\s*#/.test(line)).join("\n"); // comments are not interpolated
    const stripped = values.replace(/\$\$/g, "").replace(/\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}/g, "");
    expect(stripped).not.toContain("$");
  });

  test("db: PostgreSQL 16 on a named volume, password from the environment, healthchecked with pg_isready", () => {
    expect(db!.image).toMatch(/^postgres:16(\b|$)/);
    const data = (db!.volumes ?? []).map((v) => (typeof v === "string" ? { source: v.split(":")[0], target: v.split(":")[1] } : v))
      .find((v) => v.target === "/var/lib/postgresql/data");
    expect(data).toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(data!.source!);
    const env = environment(db!);
    expect(env.get("POSTGRES_DB")).toBe("aqm");
    expect(env.get("POSTGRES_PASSWORD")).toMatch(/^\$\{POSTGRES_PASSWORD:\?[^}]*\}$/);
    expect(testCommand(db!)).toContain("pg_isready");
    expect(testCommand(db!)).toContain("-d aqm");
  });

  test("app: built from this directory, starts after db is healthy, publishes 3000", () => {
    const context = typeof app!.build === "string" ? app!.build : app!.build?.context;
    expect(context).toBe(".");
    const dependsOn = app!.depends_on as Record<string, { condition?: string }>;
    expect(Array.isArray(dependsOn)).toBe(false);
    expect(dependsOn.db?.condition).toBe("service_healthy");
    const published = (app!.ports ?? []).map((p) => (typeof p === "object" ? String(p.target) : String(p).split(":").at(-1)!.split("/")[0]));
    expect(published).toContain("3000");
    expect(app!.restart).toBe("unless-stopped");
  });

  test("app: environment points at db, runs in production, takes its secrets from the environment", () => {
    const env = environment(app!);
    const url = new URL(uninterpolated(env.get("DATABASE_URL") ?? ""));
    expect(url.protocol).toMatch(/^postgres(ql)?:$/);
    expect(url.hostname).toBe("db");
    expect(url.pathname).toBe("/aqm");
    expect(env.get("NODE_ENV")).toBe("production");
    // A reference, never a literal secret in the file; `:?` makes compose refuse to start without it.
    expect(env.get("AQM_JWT_SECRET")).toMatch(/^\$\{AQM_JWT_SECRET:\?[^}]*\}$/);
    expect(env.get("AQM_HASH_SECRET")).toMatch(/^\$\{AQM_HASH_SECRET:\?[^}]*\}$/);
    for (const name of ["AQM_METRICS_TOKEN", "AQM_JWT_PUBLIC_KEY"]) {
      if (env.has(name)) expect(env.get(name)).toMatch(new RegExp(`^\\$\\{${name}(:?[-?][^}]*)?\\}$`));
    }
  });

  test("app: every setting it passes exists in src/config.ts", () => {
    const names = [...environment(app!).keys()].filter((n) => n.startsWith("AQM_") || ["DATABASE_URL", "NODE_ENV", "PORT", "HOST"].includes(n));
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect(settingNames.has(name), `${name} is not a setting in src/config.ts`).toBe(true);
  });

  test("app: healthchecked on /v1/health/ready, and given time to drain on stop", () => {
    expect(testCommand(app!)).toContain("/v1/health/ready");
    expect(testCommand(app!)).not.toMatch(/\b(curl|wget)\b/);
    // Drain in-flight requests, then close the pool (up to 5 s) before Docker's SIGKILL.
    const drain = (settings.AQM_SHUTDOWN_DRAIN_MS as { default: number }).default;
    expect(durationMs(app!.stop_grace_period ?? "10s")).toBeGreaterThan(drain + 5000);
  });
});

// ---------------------------------------------------------------------------------------------
// docs/runbook.md

describe("docs/runbook.md", () => {
  test("names only settings that exist", () => {
    const runbook = read("docs/runbook.md");
    // Names, or patterns such as AQM_RATE_*_PER_MIN that must match at least one setting.
    const names = new Set([...runbook.matchAll(/\bAQM_[A-Z0-9_*]*[A-Z0-9]/g)].map((m) => m[0]));
    expect(names.size).toBeGreaterThan(0);
    for (const name of names) {
      const pattern = new RegExp(`^${name.replace(/\*/g, "[A-Z0-9_]+")}$`);
      expect([...settingNames].some((s) => pattern.test(s)), `runbook mentions ${name}, which src/config.ts does not define`).toBe(true);
    }
  });

  describe("its SQL runs against the real schema", () => {
    // Every ```sql block, each statement in a transaction that is rolled back: a renamed column
    // or a typo in the runbook fails here, not in an operator's terminal during an incident.
    // (```sql citus blocks need the Citus extension; the runbook's database `aqm` is the test's own.)
    const db = useTestDatabase({ AQM_DB_POOL_MAX: 1 });
    const blocks = [...read("docs/runbook.md").matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1]!);
    const statements = blocks.flatMap((block) =>
      block.split(/;\s*(?:\n|$)/).map((s) => s.replace(/^\s*--.*$/gm, "").trim()).filter(Boolean));

    test("there are monitoring queries for coin_inventory, claim_quota, dead tuples and pg_stat_statements", () => {
      const all = statements.join("\n");
      for (const needle of ["FROM coin_inventory", "FROM claim_quota", "n_dead_tup", "pg_stat_statements", "ALTER TABLE coin_inventory"]) {
        expect(all).toContain(needle);
      }
    });

    test("each statement executes, the pg_stat_statements ones included (the test cluster preloads it)", async () => {
      expect(statements.length).toBeGreaterThan(5);
      const rollback = new Error("rollback");
      const [row] = await db.session<{ preload: string }[]>`SELECT current_setting('shared_preload_libraries') AS preload`;
      if (!/\bpg_stat_statements\b/.test(row!.preload)) {
        throw new Error(`the PostgreSQL under TEST_DATABASE_URL does not preload pg_stat_statements (shared_preload_libraries = '${row!.preload}'), `
          + "so the runbook's queries of it cannot run: start it with shared_preload_libraries=pg_stat_statements "
          + "(tests/setup.ts and .ci/databases.ts do)");
      }
      // What the runbook's Deploy section has operators run once: the view, in this database.
      await db.session`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`;
      const ran: string[] = [];
      for (const statement of statements) {
        try {
          await db.sql.begin(async (tx) => {
            const rows = await tx.unsafe(statement.replace(/\bIN DATABASE aqm\b/g, `IN DATABASE "${db.name}"`));
            // this database's statements so far (the migrations, at least) are listed
            if (/\bFROM pg_stat_statements\b/.test(statement)) expect(rows.length, statement).toBeGreaterThan(0);
            ran.push(statement);
            throw rollback;
          });
        } catch (error) {
          if (error !== rollback) throw new Error(`runbook SQL failed: ${(error as Error).message}\n${statement}`);
        }
      }
      expect(ran).toEqual(statements);
      expect(ran.some((s) => /\bFROM pg_stat_statements\b/.test(s))).toBe(true);
    });
  });
});
