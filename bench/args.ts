import { parseArgs } from "node:util";
import { pinningOf, type Pinning } from "./pin.ts";

export interface Options {
  /** Base URL of a running server; absent: start embedded PostgreSQL and a server. */
  url?: string;
  secret?: string;
  databaseUrl?: string;
  pool: number;
  concurrency: number;
  durationS: number;
  /** Open-loop arrival rates as fractions of the closed-loop peak. */
  rateFractions: number[];
  users: number;
  /** Distinct requesters; each pair (requester, target) stays far below the pair quota. */
  requesters: number;
  coinsPerTier: number;
  burst: number;
  warmupS: number;
  quick: boolean;
  soakS?: number;
  /** Soak claim rate in requests/s; absent: half of a quick peak measure. */
  rate?: number;
  /** Exit non-zero when a target is missed. */
  check: boolean;
  /** Write the results under bench/results/ (tracked) instead of bench/results/local/. */
  save: boolean;
  /** With --url: the configuration the server runs (default: rate limits and quota on). */
  mode: "default" | "off";
  /** Run only these phases (claim, hot, multi, devices, wait, upload, verify, count, burst); empty: all. */
  only: string[];
  /** Start the `default` server with Bun's CPU profiler; the profile is saved next to the result file. */
  profile: boolean;
  /** --pin: PostgreSQL on these CPUs, the bench and its servers on the others; absent: all share every CPU. */
  pin?: Pinning;
}

export const phaseNames = ["claim", "hot", "multi", "devices", "wait", "upload", "verify", "count", "burst"] as const;

export const usage = `bun bench/run.ts [options]

  --url <base>           target a running server instead of starting one (needs --secret, --database-url)
  --secret <s>           the server's AQM_JWT_SECRET (with --url)
  --database-url <url>   the server's database, for seeding and the SQL ceiling (with --url)
  --pool <n>             server pool size (AQM_DB_POOL_MAX), and the pool of the seed baseline and coalesced ceiling (4)
  --concurrency <n>      closed-loop connections (32)
  --duration <s>         seconds per measured segment (10)
  --rates <list>         open-loop rates, % of the closed-loop peak (25,50,75)
  --users <n>            target users (200)
  --requesters <n>       distinct requesters (10000; quick: 2000)
  --coins <n>            coins seeded per user and tier before the first phase (200)
  --burst <n>            requests in the burst (10000)
  --quick                ~2½ minute smoke run (3 s segments, 50 % rate only, 50 users)
  --soak <s>             soak mode: steady claims + uploads for <s> seconds, a report per minute
  --rate <req/s>         soak claim rate (default: 50 % of a quick peak measure)
  --check                exit 3 when a target is missed or the claim ratio fell > 15 % below bench/results/baseline.json
  --save                 write the results to bench/results/ (tracked) instead of bench/results/local/
  --mode default|off     with --url: the configuration that server runs (labels its rows)
  --only <list>          run only these phases: claim,hot,multi,devices,wait,upload,verify,count,burst
                         (devices: all-devices claims vs device 1; verify: uploads verified vs unverified per tier)
                         (writes <stamp>-only-<list>.json, never latest.*)
  --profile              run the default server under Bun's CPU profiler (--cpu-prof, --cpu-prof-md);
                         writes <stamp>-default-cpu-profile.{cpuprofile,md} and a per-segment summary
                         (<stamp>-default-cpu-profile-segments.md) next to the result file
  --pin <cpus>           PostgreSQL on these CPUs (taskset list: 0, 0-1, 0,2), the bench, its load generator
                         and its servers on the others, as when the database has a machine of its own
                         (writes <stamp>[-only-…]-pin-<cpus>.json, never latest.*; not with --check or --url)

Extra AQM_* variables in the environment are passed on to the server (e.g. AQM_DB_POOL_QUEUE_MAX).`;

function positive(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

export function parseOptions(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string" }, secret: { type: "string" }, "database-url": { type: "string" },
      pool: { type: "string" }, concurrency: { type: "string" }, duration: { type: "string" },
      rates: { type: "string" }, users: { type: "string" }, requesters: { type: "string" }, coins: { type: "string" }, burst: { type: "string" },
      quick: { type: "boolean" }, soak: { type: "string" }, rate: { type: "string" }, help: { type: "boolean", short: "h" },
      check: { type: "boolean" }, save: { type: "boolean" }, mode: { type: "string" }, only: { type: "string" },
      profile: { type: "boolean" }, pin: { type: "string" },
    },
  });
  if (values.help) return "help";
  const quick = values.quick ?? false;
  if (values.url && (!values.secret || !values["database-url"])) {
    throw new Error("--url needs --secret (the server's AQM_JWT_SECRET) and --database-url (its database)");
  }
  if (values.url && values.profile) throw new Error("--profile needs the servers the bench starts (not --url)");
  if (values.pin !== undefined && values.url) throw new Error("--pin needs the PostgreSQL and servers the bench starts (not --url)");
  if (values.pin !== undefined && values.check) throw new Error("--pin: the regression baseline was measured with every CPU shared; --check compares only such runs");
  if (values.mode !== undefined && values.mode !== "default" && values.mode !== "off") throw new Error("--mode must be default or off");
  const only = values.only?.split(",").filter(Boolean) ?? [];
  for (const name of only) if (!(phaseNames as readonly string[]).includes(name)) throw new Error(`--only: unknown phase ${name}`);
  const rates = values.rates?.split(",").map((r) => positive("rates", r, 0) / 100) ?? (quick ? [0.5] : [0.25, 0.5, 0.75]);
  return {
    url: values.url?.replace(/\/+$/, ""),
    secret: values.secret,
    databaseUrl: values["database-url"],
    pool: Math.round(positive("pool", values.pool, 4)),
    concurrency: Math.round(positive("concurrency", values.concurrency, 32)),
    durationS: positive("duration", values.duration, quick ? 3 : 10),
    rateFractions: rates,
    users: Math.round(positive("users", values.users, quick ? 50 : 200)),
    requesters: Math.round(positive("requesters", values.requesters, quick ? 2000 : 10_000)),
    coinsPerTier: Math.round(positive("coins", values.coins, quick ? 50 : 200)),
    burst: Math.round(positive("burst", values.burst, 10_000)),
    warmupS: quick ? 0.5 : 1,
    quick,
    soakS: values.soak === undefined ? undefined : positive("soak", values.soak, 0),
    rate: values.rate === undefined ? undefined : positive("rate", values.rate, 0),
    check: values.check ?? false,
    save: values.save ?? false,
    mode: (values.mode ?? "default") as "default" | "off",
    only,
    profile: values.profile ?? false,
    pin: values.pin === undefined ? undefined : pinningOf(values.pin),
  };
}

/** The options of a bench command line: `--help` prints `text` and exits 0; a bad option prints why and `text`, and exits 2. */
export function cliOptions<T>(parse: (argv: string[]) => T | "help", text: string, argv = process.argv.slice(2)): T {
  let options: T | "help";
  try {
    options = parse(argv);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${text}`);
    process.exit(2);
  }
  if (options === "help") {
    console.log(text);
    process.exit(0);
  }
  return options;
}
