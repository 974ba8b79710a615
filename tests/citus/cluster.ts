// A real Citus cluster for tests: a coordinator and N workers (default 2), each its own
// PostgreSQL 15 (Debian's binaries, Citus 13.2.2 built by .ci/citus-build.sh) on 127.0.0.1, in a
// fresh temporary directory, as the postgres user when running as root. What it is and what was
// found with it: tests/citus/README.md.
//
//   const cluster = await startCitusCluster();   // { workers: 2 }
//   const sql = postgres(cluster.url);           // the coordinator, database aqm
//   await sql`select create_distributed_table('coins', 'user_id')`;
//   const third = await cluster.addWorker();
//   ...
//   await cluster.stop();
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import postgres from "postgres";
import { alive, allPids, childrenOf, cmdline, postmasterPid, signal, sweepOnExit } from "../helpers/procs.ts";

export interface CitusNode { name: string; port: number; dataDir: string }
export interface CitusCluster {
  coordinator: CitusNode;
  workers: CitusNode[];
  /** postgres://postgres:<pw>@127.0.0.1:<coordinator port>/aqm */
  url: string;
  /** The same URL for one node ("coordinator", "worker1", …), to inspect it directly. */
  nodeUrl(name: string): string;
  /** Adds one more worker (started, citus extension created in `aqm`, citus_add_node on the coordinator). */
  addWorker(): Promise<CitusNode>;
  /** Stops every node and removes the directory. */
  stop(): Promise<void>;

  // Additions beyond the agreed shape:
  /** The temporary directory that holds everything (coordinator/, worker1/, …, *.log). */
  dir: string;
  /** The last lines of every node's log, for error messages. */
  logTail(lines?: number): string;
  /** How long startCitusCluster took, in ms. */
  startMs: number;
}

export interface CitusOptions {
  /** Number of workers (default 2). */
  workers?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

const BIN_DIR = "/usr/lib/postgresql/15/bin";
const CITUS_SO = "/usr/lib/postgresql/15/lib/citus.so";

/** Settings of every node (postgresql.conf), beyond listen address, port and socket directory. */
const NODE_SETTINGS: Record<string, string | number> = {
  shared_preload_libraries: "'citus'",
  max_connections: 200,
  // Citus commits a multi-shard write with two-phase commit on the workers
  max_prepared_transactions: 100,
  // citus_move_shard_placement / the rebalancer copy shards with logical replication
  wal_level: "logical",
  max_wal_senders: 20,
  max_replication_slots: 20,
  max_logical_replication_workers: 8,
  max_worker_processes: 32,
  // Citus, built with libcurl, would otherwise call home (no internet here)
  "citus.enable_statistics_collection": "off",
  // the node's connections to itself (rebalancer jobs, …): to 127.0.0.1, where it listens, not localhost (::1 first)
  "citus.local_hostname": "'127.0.0.1'",
  password_encryption: "'scram-sha-256'",
  // a throw-away test cluster: no crash safety needed, and disk flushes only slow it down
  fsync: "off",
  full_page_writes: "off",
  // but commits as deployed: with synchronous_commit off a shard move loses writes answered just
  // before it blocks them (tests/citus/commit.citus.ts), and the server refuses to start on it
  synchronous_commit: "on",
  log_min_messages: "warning",
  log_line_prefix: "'%m [%p] %q%a '",
  "lc_messages": "'C.UTF-8'",
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));



/** SIGKILL to every postmaster (and its children) of the cluster in `dir`, and to anything whose command line names it. Synchronous. */
function sweep(dir: string): void {
  const targets = new Set<number>();
  for (const pid of allPids()) {
    if (pid !== process.pid && cmdline(pid).includes(dir)) targets.add(pid);
  }
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    // removed already
  }
  for (const name of entries) {
    const pm = postmasterPid(join(dir, name, "data"));
    if (pm) targets.add(pm);
  }
  for (const pid of targets) {
    const children = childrenOf(pid);
    signal(pid, "SIGKILL");
    for (const child of children) signal(child, "SIGKILL");
  }
}

// ---------------------------------------------------------------------------------------------

/** Random free ports on 127.0.0.1 below the ephemeral range (32768–60999), so no outgoing connection takes one meanwhile. */
async function freePorts(count: number, taken: number[] = []): Promise<number[]> {
  const ports: number[] = [];
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 1000) throw new Error("no free ports in 20000–32000 on 127.0.0.1");
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (ports.includes(port) || taken.includes(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once("error", () => resolve(false));
      probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
    });
    if (free) ports.push(port);
  }
  return ports;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines - 1).join("\n");
  } catch {
    return "(no log)";
  }
}

export async function startCitusCluster(options: CitusOptions = {}): Promise<CitusCluster> {
  const started = Date.now();
  const workerCount = options.workers ?? 2;
  const log = options.log ?? (() => {});
  if (!Number.isInteger(workerCount) || workerCount < 0) throw new Error(`workers: a whole number >= 0, not ${workerCount}`);
  for (const binary of [join(BIN_DIR, "postgres"), join(BIN_DIR, "initdb"), "/usr/bin/setpriv"]) {
    if (!existsSync(binary)) throw new Error(`${binary} is missing: install postgresql-15 (apt-get), then run .ci/citus-build.sh as root`);
  }
  if (!existsSync(CITUS_SO)) throw new Error(`${CITUS_SO} is missing: run .ci/citus-build.sh as root (builds the vendored Citus)`);

  const root = process.getuid?.() === 0;
  const owner = root
    ? { uid: Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" })), gid: Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" })) }
    : null;
  const dir = mkdtempSync("/tmp/aqm-citus-");
  const forget = sweepOnExit(dir, sweep);
  const own = (path: string) => {
    if (owner) chownSync(path, owner.uid, owner.gid);
  };
  own(dir);
  chmodSync(dir, 0o700);

  const password = randomBytes(16).toString("hex");
  // Citus's own connections between the nodes (and its logical replication for shard moves)
  // authenticate with this file: every postmaster gets PGPASSFILE pointing at it.
  const pgpass = join(dir, "pgpass");
  // (localhost too: Citus's background jobs, e.g. the rebalancer's, connect to citus.local_hostname)
  writeFileSync(pgpass, `127.0.0.1:*:*:postgres:${password}\nlocalhost:*:*:postgres:${password}\n`, { mode: 0o600 });
  own(pgpass);
  const pwfile = join(dir, "pwfile");
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  own(pwfile);
  const env = {
    PATH: "/usr/bin:/bin:/usr/sbin:/sbin", LANG: "C.UTF-8", LC_ALL: "C.UTF-8", HOME: dir, TZ: "UTC", PGPASSFILE: pgpass,
  };
  const asPostgres = root ? ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : [];

  const nodes: CitusNode[] = [];
  const procs = new Map<string, ChildProcess>();
  const logFile = (name: string) => join(dir, `${name}.log`);
  const logTail = (lines = 30) => nodes
    .map((node) => `----- ${node.name}.log (last ${lines} lines) -----\n${tail(logFile(node.name), lines)}`).join("\n");

  /** Runs a program to completion as the cluster's user, its output appended to the node's log. */
  const run = (name: string, argv: string[]) => new Promise<void>((resolve, reject) => {
    const fd = openSync(logFile(name), "a", 0o644);
    own(logFile(name));
    const [command, ...args] = [...asPostgres, ...argv];
    const child = spawn(command!, args, { cwd: dir, env, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    child.on("error", reject);
    child.on("exit", (code, sig) => code === 0 ? resolve() : reject(new Error(`${name}: ${argv[0]} exited with ${code ?? sig}\n${tail(logFile(name), 30)}`)));
  });

  const nodeUrlFor = (node: CitusNode, database = "aqm") => `postgres://postgres:${password}@127.0.0.1:${node.port}/${database}`;
  const nodeByName = (name: string) => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name} (nodes: ${nodes.map((n) => n.name).join(", ")})`);
    return node;
  };

  /** Runs statements on one node over one short-lived connection. */
  const exec = async (node: CitusNode, database: string, statements: string[]) => {
    const sql = postgres(nodeUrlFor(node, database), { max: 1, connect_timeout: 5, onnotice: () => {} });
    try {
      for (const text of statements) await sql.unsafe(text);
    } finally {
      await sql.end({ timeout: 1 }).catch(() => {});
    }
  };

  /** initdb, the settings, start the postmaster, wait until it accepts connections, create aqm with citus. */
  const bringUp = async (node: CitusNode) => {
    const nodeDir = join(dir, node.name);
    mkdirSync(nodeDir, { mode: 0o700 });
    own(nodeDir);
    await run(node.name, [
      join(BIN_DIR, "initdb"), "-D", node.dataDir, "-U", "postgres", `--pwfile=${pwfile}`, "-E", "UTF8", "--locale=C.UTF-8",
      "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
    ]);
    const settings = {
      ...NODE_SETTINGS, listen_addresses: "'127.0.0.1'", port: node.port, unix_socket_directories: `'${nodeDir}'`,
    };
    const conf = join(node.dataDir, "postgresql.conf");
    writeFileSync(conf, `${readFileSync(conf, "utf8")}\n# tests/citus/cluster.ts\n${
      Object.entries(settings).map(([key, value]) => `${key} = ${value}`).join("\n")}\n`);
    // only 127.0.0.1, with the password (initdb's "host" lines are for 127.0.0.1/32 and ::1/128)
    const fd = openSync(logFile(node.name), "a", 0o644);
    const [command, ...args] = [...asPostgres, join(BIN_DIR, "postgres"), "-D", node.dataDir];
    // detached: its own process group, so the terminal's SIGINT does not reach it
    const child = spawn(command!, args, { cwd: dir, env, detached: true, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    child.unref();
    child.on("error", (error) => log(`${node.name}: ${error.message}`));
    procs.set(node.name, child);
    log(`${node.name}: postgres started (pid ${child.pid}, port ${node.port})`);
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await exec(node, "postgres", ["select 1"]);
        break;
      } catch (error) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`${node.name}: postgres exited (${child.exitCode ?? child.signalCode})\n${tail(logFile(node.name), 30)}`);
        }
        if (Date.now() > deadline) throw new Error(`${node.name}: no connection after 30 s (${(error as Error).message})\n${tail(logFile(node.name), 30)}`);
        await sleep(100);
      }
    }
    await exec(node, "postgres", ["create database aqm"]);
    await exec(node, "aqm", ["create extension citus"]);
    log(`${node.name}: database aqm with citus`);
  };

  const workers: CitusNode[] = [];
  const newNode = async (name: string) => {
    const [port] = await freePorts(1, nodes.map((n) => n.port));
    const node: CitusNode = { name, port: port!, dataDir: join(dir, name, "data") };
    nodes.push(node);
    return node;
  };

  const stopNode = async (node: CitusNode) => {
    const pm = postmasterPid(node.dataDir);
    if (!pm) return;
    signal(pm, "SIGQUIT"); // immediate shutdown: the data goes away anyway
    const deadline = Date.now() + 5000;
    while (alive(pm) && Date.now() < deadline) await sleep(20);
    if (alive(pm)) {
      const children = childrenOf(pm);
      signal(pm, "SIGKILL");
      for (const child of children) signal(child, "SIGKILL");
    }
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(nodes.map((node) => stopNode(node).catch((error) => log(String(error)))));
    sweep(dir);
    await sleep(50);
    rmSync(dir, { recursive: true, force: true });
    forget();
    log(`stopped; removed ${dir}`);
  };

  const coordinator = await newNode("coordinator");
  const addNodeOnCoordinator = async (worker: CitusNode) => {
    await exec(coordinator, "aqm", [`select citus_add_node('127.0.0.1', ${worker.port})`]);
    log(`${worker.name}: added to the coordinator (127.0.0.1:${worker.port})`);
  };

  const addWorker = async () => {
    if (stopped) throw new Error("the cluster is stopped");
    const worker = await newNode(`worker${workers.length + 1}`);
    workers.push(worker);
    try {
      await bringUp(worker);
      await addNodeOnCoordinator(worker);
    } catch (error) {
      throw new Error(`adding ${worker.name} failed: ${(error as Error).message}\n${logTail()}`, { cause: error });
    }
    return worker;
  };

  try {
    for (let i = 1; i <= workerCount; i++) workers.push(await newNode(`worker${i}`));
    await Promise.all(nodes.map(bringUp));
    await exec(coordinator, "aqm", [`select citus_set_coordinator_host('127.0.0.1', ${coordinator.port})`]);
    for (const worker of workers) await addNodeOnCoordinator(worker);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const withLogs = message.includes("----- ") ? message : `${message}\n${logTail()}`;
    await stop().catch(() => {});
    throw new Error(`the Citus cluster did not start: ${withLogs}`, { cause: error });
  }

  const cluster: CitusCluster = {
    coordinator,
    workers,
    url: nodeUrlFor(coordinator),
    nodeUrl: (name: string) => nodeUrlFor(nodeByName(name)),
    addWorker,
    stop,
    dir,
    logTail,
    startMs: Date.now() - started,
  };
  log(`cluster up in ${cluster.startMs} ms: coordinator :${coordinator.port}, workers ${workers.map((w) => `${w.name} :${w.port}`).join(", ")}`);
  return cluster;
}
