// The server's ordinary API test files, unchanged, on a real Citus cluster:
//
//   bun tests/citus/suite.ts                                  # the default list below
//   bun tests/citus/suite.ts tests/api.claim.test.ts [more…]  # these files instead
//   bun tests/citus/suite.ts tests/citus/harness.citus.ts     # the harness's own proof
//   bun tests/citus/suite.ts --bail --timeout=20000 tests/api.wait.test.ts   # arguments starting with - go
//                                                             # to bun test (a value joined by "=")
//
// Starts a coordinator and two workers (tests/citus/cluster.ts), then runs `bun test <files>` with
// TEST_DATABASE_URL = the coordinator (database aqm, the admin database) and TEST_CITUS_WORKERS =
// the workers: every test file's useTestDatabase() then gets a database of its own on every node,
// with the citus extension and the workers known to the coordinator's copy (tests/helpers/db.ts),
// and the server's migrations distribute the tables there. bun test's output is streamed; the
// cluster is stopped when it ends, fails or this runner is interrupted; the exit code is bun
// test's (128 + the signal's number when interrupted). CITUS_VERBOSE=1 prints the cluster's progress.
//
// The cluster lives in this process, not in bun test's: bun test kills the processes a test file
// spawned when a test times out, and would take the cluster's postmasters with them.
import { existsSync } from "node:fs";
import { isAbsolute, join, relative } from "node:path";
import { constants } from "node:os";
import { startCitusCluster, type CitusCluster } from "./cluster.ts";

/**
 * The files run by default: the API and claim tests whose statements the server routes on Citus
 * (claims, last-resort coins, long polls and the notifications that wake them, uploads,
 * concurrency, batches, quotas), the returns of unanswered claims, clients that leave,
 * maintenance (retention, one runner per tick) and the shard routing. Paths from the checkout's root.
 */
const DEFAULT_FILES = [
  "tests/api.claim.test.ts",
  "tests/api.last-resort.test.ts",
  "tests/api.wait.test.ts",
  "tests/stock-events.test.ts",
  "tests/api.coins.test.ts",
  "tests/api.concurrency.test.ts",
  "tests/claim-batch.test.ts",
  "tests/concurrency.test.ts",
  "tests/api.rate-limits.test.ts",
  "tests/claim-returns.test.ts",
  "tests/reliability.test.ts",
  "tests/retention.test.ts",
  "tests/maintenance.test.ts",
  "tests/coins.service.test.ts",
  "tests/routing.test.ts",
  "tests/api.claim-devices.test.ts",
  "tests/api.devices.test.ts",
  "tests/devices.race.test.ts",
  "tests/api.verified-upload.test.ts",
];

const root = join(import.meta.dir, "..", "..");
const say = (line: string) => console.error(`citus suite: ${line}`);

const args = process.argv.slice(2);
const flags = args.filter((arg) => arg.startsWith("-"));
const named = args.filter((arg) => !arg.startsWith("-"));
// "./" keeps bun test from reading a path as a name filter, and lets it run files not named *.test.ts
const files = (named.length > 0 ? named : DEFAULT_FILES).map((file) => {
  const absolute = isAbsolute(file) ? file : join(process.cwd(), file);
  if (!existsSync(absolute)) {
    say(`no such file: ${file}`);
    process.exit(2);
  }
  return `./${relative(root, absolute)}`;
});

let cluster: CitusCluster | undefined;
let child: ReturnType<typeof Bun.spawn> | undefined;
let interrupted: NodeJS.Signals | undefined;

const stopCluster = async () => {
  if (!cluster) return;
  const c = cluster;
  cluster = undefined;
  await c.stop().catch((error) => say(`stopping the cluster: ${(error as Error).message}`));
};

// Our own handlers (cluster.ts's exit hook then leaves SIGINT/SIGTERM to us, and still kills the
// cluster's processes at exit): the first signal ends bun test, then the cluster, then this
// process; a second one exits at once (the exit hook still kills the cluster).
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    const code = 128 + constants.signals[sig];
    if (interrupted) process.exit(code);
    interrupted = sig;
    say(`${sig}: stopping bun test and the cluster`);
    if (child && child.exitCode === null) {
      child.kill(sig);
      // bun test ends at once on SIGINT/SIGTERM; should it not, it gets SIGKILL
      setTimeout(() => child?.exitCode === null && child.kill("SIGKILL"), 10_000).unref();
    } else void stopCluster().then(() => process.exit(code));
  });
}

let status = 1;
try {
  const started = Date.now();
  cluster = await startCitusCluster({ workers: 2, log: process.env.CITUS_VERBOSE ? (line) => say(line) : undefined });
  if (interrupted) throw new Error(`interrupted (${interrupted})`);
  const workers = cluster.workers.map((worker) => cluster!.nodeUrl(worker.name));
  say(`cluster up in ${Date.now() - started} ms: coordinator :${cluster.coordinator.port}, workers ${
    cluster.workers.map((w) => `:${w.port}`).join(", ")}; running ${files.length} file(s)`);
  const env: Record<string, string | undefined> = {
    ...process.env, TEST_DATABASE_URL: cluster.url, TEST_CITUS_WORKERS: workers.join(","),
  };
  // a pooler set up for another server (.ci/pooler.sh) would lead the pools elsewhere
  delete env.TEST_POOLER_URL;
  child = Bun.spawn([process.execPath, "test", ...flags, ...files], {
    cwd: root, env, stdin: "inherit", stdout: "inherit", stderr: "inherit",
  });
  const code = await child.exited;
  status = child.signalCode ? 128 + constants.signals[child.signalCode as NodeJS.Signals] : code;
  say(`bun test exited with ${child.signalCode ?? code} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  say(`${(error as Error).message}`);
  status = interrupted ? 128 + constants.signals[interrupted] : 1;
} finally {
  await stopCluster();
}
process.exit(interrupted ? 128 + constants.signals[interrupted] : status);
