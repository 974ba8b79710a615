// A real high-availability PostgreSQL cluster for tests: one etcd 3.4 member and three Patroni 3
// nodes (PostgreSQL 15, synchronous replication in Patroni's strict synchronous mode), all on
// 127.0.0.1, in a fresh temporary directory, as the postgres user when running as root.
// Debian packages: see .ci/ha-packages.sh; what it is and why these settings: tests/ha/README.md.
//
//   const cluster = await startHaCluster();
//   const sql = postgres(cluster.url);          // multi-host, target_session_attrs=primary
//   await cluster.kill(await cluster.leader()); // SIGKILL of Patroni and PostgreSQL
//   ...
//   await cluster.stop();
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import postgres from "postgres";
import { alive, allPids, childrenOf, cmdline, postmasterPid, procStat, signal, sweepOnExit } from "../helpers/procs.ts";

export interface HaNode { name: string; pgPort: number; restPort: number; dataDir: string }
export interface HaCluster {
  nodes: HaNode[]; // 3 nodes: node1, node2, node3
  /** postgres://postgres:<pw>@127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/aqm?target_session_attrs=primary */
  url: string;
  /** the same URL for one node only (to inspect it directly) */
  nodeUrl(name: string): string;
  /** The current leader (primary) per Patroni's REST API / etcd, or null while there is none. */
  leader(): Promise<string | null>;
  /** The current synchronous standby's name (Patroni synchronous mode), or null. */
  syncStandby(): Promise<string | null>;
  /** Waits until a leader exists and `n` (default 2) replicas are streaming, one of them sync; returns the leader's name. */
  waitHealthy(timeoutMs?: number, replicas?: number): Promise<string>;
  /** Hard kill of a node: SIGKILL its Patroni process and its whole PostgreSQL (postmaster and children). Resolves once they are dead. */
  kill(name: string): Promise<void>;
  /**
   * Freezes a node as a host that vanished would look to its clients: SIGSTOP to its Patroni and its
   * whole PostgreSQL, so its sockets stay open and say nothing (the kernel still accepts
   * connections). Its leader key expires as if it were dead. kill() ends it (SIGKILL reaches stopped processes).
   */
  freeze(name: string): Promise<void>;
  /** Starts a killed node's Patroni again (it rejoins as a replica, using pg_rewind if needed). */
  start(name: string): Promise<void>;
  /** An orchestrated switchover to `candidate` (default: the sync standby) through Patroni's REST API; resolves when the REST call is accepted. */
  switchover(candidate?: string): Promise<void>;
  /** PIDs of a node's PostgreSQL processes: postmaster, and its walreceiver (null if none). */
  pids(name: string): Promise<{ postmaster: number | null; walreceiver: number | null }>;
  /** Stops everything and removes the directories. */
  stop(): Promise<void>;

  // Additions beyond the agreed shape:
  /** The temporary directory that holds everything (etcd/, node1/ … node3/, *.log). */
  dir: string;
  /** The etcd client URL (http://127.0.0.1:PORT). */
  etcdUrl: string;
  /** Patroni's `GET /cluster` from the first node that answers, or null when none does. */
  members(): Promise<HaMember[] | null>;
  /** The last lines of every log (etcd, node1 … node3), for error messages. */
  logTail(lines?: number): string;
  /** The DCS timing settings the cluster was bootstrapped with. */
  timing: { ttl: number; loopWait: number; retryTimeout: number };
}

/** One member as Patroni's REST API `GET /cluster` reports it. */
export interface HaMember {
  name: string;
  role: "leader" | "sync_standby" | "replica" | "standby_leader" | string;
  state: string;
  host?: string;
  port?: number;
  timeline?: number;
  lag?: number | "unknown";
  api_url?: string;
}

export interface HaOptions {
  /** Leader key TTL in seconds (default 20; Patroni's documented minimum). */
  ttl?: number;
  /** Seconds between Patroni's HA cycles (default 1, the minimum). */
  loopWait?: number;
  /** DCS and PostgreSQL retry timeout in seconds (default 5). loop_wait + 2 × retry_timeout must be <= ttl. */
  retryTimeout?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

const BIN_DIR = "/usr/lib/postgresql/15/bin";
const PATRONI = "/usr/bin/patroni";
const ETCD = "/usr/bin/etcd";
const NODE_NAMES = ["node1", "node2", "node3"] as const;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));



/**
 * SIGKILL to every process that belongs to the cluster in `dir`: any process whose command line
 * names the directory (etcd, Patroni, the postmasters started with -D), its process group, and
 * the postmasters' children. Synchronous: usable in an "exit" handler.
 */
function sweep(dir: string): void {
  const targets = new Set<number>();
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    if (cmdline(pid).includes(dir)) targets.add(pid);
  }
  for (const name of NODE_NAMES) {
    const pm = postmasterPid(join(dir, name, "data"));
    if (pm) targets.add(pm);
  }
  for (const pid of targets) {
    const stat = procStat(pid);
    if (stat && stat.pgid === pid) signal(-pid, "SIGKILL"); // group leaders: Patroni, etcd (detached), postmasters (setsid)
    signal(pid, "SIGKILL");
    for (const child of childrenOf(pid)) signal(child, "SIGKILL");
  }
}

// ---------------------------------------------------------------------------------------------

/** Random free ports on 127.0.0.1 below the ephemeral range (32768–60999), so no outgoing connection takes one meanwhile. */
async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 1000) throw new Error("no free ports in 20000–32000 on 127.0.0.1");
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (ports.includes(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once("error", () => resolve(false));
      probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
    });
    if (free) ports.push(port);
  }
  return ports;
}

/** YAML for plain data (Patroni reads YAML; JSON is YAML, but this stays readable in the temp dir). */
function yaml(value: unknown, indent = ""): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return value.map((item) => `\n${indent}- ${yaml(item, indent + "  ").replace(/^\n\s*/, "")}`).join("");
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return "{}";
  return entries.map(([key, item]) => {
    const rendered = yaml(item, indent + "  ");
    return `\n${indent}${key}:${rendered.startsWith("\n") ? rendered : " " + rendered}`;
  }).join("");
}

function tail(file: string, lines: number): string {
  try {
    const all = readFileSync(file, "utf8").split("\n");
    return all.slice(-lines - 1).join("\n");
  } catch {
    return "(no log)";
  }
}

export async function startHaCluster(options: HaOptions = {}): Promise<HaCluster> {
  const ttl = options.ttl ?? 20;
  const loopWait = options.loopWait ?? 1;
  const retryTimeout = options.retryTimeout ?? 5;
  const log = options.log ?? (() => {});
  if (loopWait < 1 || retryTimeout < 3 || loopWait + 2 * retryTimeout > ttl) {
    throw new Error(`Patroni timing: loop_wait (${loopWait}) >= 1, retry_timeout (${retryTimeout}) >= 3 and `
      + `loop_wait + 2 × retry_timeout <= ttl (${ttl}) are required`);
  }
  for (const binary of [PATRONI, ETCD, join(BIN_DIR, "postgres"), "/usr/bin/setpriv"]) {
    if (!existsSync(binary)) throw new Error(`${binary} is missing: run .ci/ha-packages.sh as root (apt-get install patroni python3-etcd etcd-server)`);
  }

  const root = process.getuid?.() === 0;
  const owner = root ? { uid: Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" })), gid: Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" })) } : null;
  const dir = mkdtempSync("/tmp/aqm-ha-");
  const forget = sweepOnExit(dir, sweep);
  const own = (path: string) => {
    if (owner) chownSync(path, owner.uid, owner.gid);
  };
  own(dir);
  chmodSync(dir, 0o700);

  const [etcdClient, etcdPeer, ...nodePorts] = await freePorts(2 + 2 * NODE_NAMES.length);
  const nodes: HaNode[] = NODE_NAMES.map((name, i) => ({
    name, pgPort: nodePorts[2 * i]!, restPort: nodePorts[2 * i + 1]!, dataDir: join(dir, name, "data"),
  }));
  const etcdUrl = `http://127.0.0.1:${etcdClient}`;
  const token = randomBytes(6).toString("hex");
  const superPassword = randomBytes(16).toString("hex");
  const replPassword = randomBytes(16).toString("hex");
  const scope = `aqm-ha-${token}`;

  // --- processes ------------------------------------------------------------------------------
  const procs = new Map<string, ChildProcess>(); // "etcd", "node1", …
  const env = {
    PATH: "/usr/bin:/bin:/usr/sbin:/sbin", LANG: "C.UTF-8", LC_ALL: "C.UTF-8", HOME: dir, TZ: "UTC", PYTHONUNBUFFERED: "1",
  };
  const logFile = (name: string) => join(dir, `${name}.log`);
  const launch = (name: string, argv: string[]) => {
    const fd = openSync(logFile(name), "a", 0o644);
    own(logFile(name));
    const asPostgres = root ? ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : [];
    const [command, ...args] = [...asPostgres, ...argv];
    // detached: its own session and process group, so the terminal's SIGINT does not reach it
    // and kill(-pid) reaches whatever it started in its group (Patroni's pg_basebackup, …)
    const child = spawn(command!, args, { cwd: dir, env, detached: true, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    child.unref();
    child.on("error", (error) => log(`${name}: ${error.message}`));
    procs.set(name, child);
    log(`${name}: started (pid ${child.pid})`);
    return child;
  };
  const logTail = (lines = 30) => ["etcd", ...NODE_NAMES]
    .map((name) => `----- ${name}.log (last ${lines} lines) -----\n${tail(logFile(name), lines)}`).join("\n");

  // --- etcd -------------------------------------------------------------------------------------
  mkdirSync(join(dir, "etcd"), { mode: 0o700 });
  own(join(dir, "etcd"));
  launch("etcd", [
    ETCD, "--name", "etcd1", "--data-dir", join(dir, "etcd"),
    "--listen-client-urls", etcdUrl, "--advertise-client-urls", etcdUrl,
    "--listen-peer-urls", `http://127.0.0.1:${etcdPeer}`, "--initial-advertise-peer-urls", `http://127.0.0.1:${etcdPeer}`,
    "--initial-cluster", `etcd1=http://127.0.0.1:${etcdPeer}`, "--initial-cluster-state", "new",
    "--initial-cluster-token", scope, "--log-level", "warn", "--logger", "zap",
  ]);

  // --- Patroni configs --------------------------------------------------------------------------
  const configFile = (name: string) => join(dir, name, "patroni.yml");
  for (const node of nodes) {
    const nodeDir = join(dir, node.name);
    mkdirSync(node.dataDir, { recursive: true, mode: 0o700 });
    chmodSync(nodeDir, 0o700);
    chmodSync(node.dataDir, 0o700);
    own(nodeDir);
    own(node.dataDir);
    const config = {
      scope,
      namespace: "/aqm-ha/",
      name: node.name,
      log: { level: "INFO", format: "%(asctime)s %(levelname)s: %(message)s" },
      restapi: { listen: `127.0.0.1:${node.restPort}`, connect_address: `127.0.0.1:${node.restPort}` },
      etcd3: { hosts: [`127.0.0.1:${etcdClient}`] },
      bootstrap: {
        dcs: {
          ttl,
          loop_wait: loopWait,
          retry_timeout: retryTimeout,
          // a replica more than 1 MB behind may not be promoted (with strict synchronous mode
          // only the sync standby, which lags by nothing committed, is promoted anyway)
          maximum_lag_on_failover: 1048576,
          synchronous_mode: true,
          synchronous_mode_strict: true,
          synchronous_node_count: 1,
          // a crashed primary is failed over at once rather than recovered in place
          primary_start_timeout: 0,
          postgresql: {
            use_pg_rewind: true,
            use_slots: true,
            parameters: {
              max_connections: 200,
              wal_level: "replica",
              hot_standby: "on",
              wal_log_hints: "on",
              wal_keep_size: "256MB",
              max_wal_senders: 10,
              max_replication_slots: 10,
              synchronous_commit: "on",
              wal_receiver_status_interval: "1s",
              // a standby whose primary went away retries after this (default 5 s): a new leader
              // waits for its synchronous standby to connect before any commit returns
              wal_retrieve_retry_interval: "500ms",
              wal_sender_timeout: "10s",
              wal_receiver_timeout: "10s",
            },
          },
        },
        initdb: [{ encoding: "UTF8" }, { locale: "C.UTF-8" }, "data-checksums"],
      },
      postgresql: {
        listen: `127.0.0.1:${node.pgPort}`,
        connect_address: `127.0.0.1:${node.pgPort}`,
        data_dir: node.dataDir,
        bin_dir: BIN_DIR,
        pgpass: join(nodeDir, "pgpass"),
        authentication: {
          superuser: { username: "postgres", password: superPassword },
          replication: { username: "replicator", password: replPassword },
        },
        parameters: { unix_socket_directories: nodeDir, password_encryption: "scram-sha-256" },
        pg_hba: [
          "local all all trust",
          "host replication replicator 127.0.0.1/32 scram-sha-256",
          "host all all 127.0.0.1/32 scram-sha-256",
        ],
        // if pg_rewind cannot bring a node back, clone it again rather than leave it out
        remove_data_directory_on_rewind_failure: true,
      },
      watchdog: { mode: "off" },
      tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false },
    };
    writeFileSync(configFile(node.name), `# written by tests/ha/cluster.ts${yaml(config)}\n`, { mode: 0o600 });
    own(configFile(node.name));
  }

  const startNode = (name: string) => launch(name, [PATRONI, configFile(name)]);

  // --- queries ----------------------------------------------------------------------------------
  const nodeByName = (name: string) => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name} (nodes: ${NODE_NAMES.join(", ")})`);
    return node;
  };
  const pgUrl = (ports: number[], database: string) =>
    `postgres://postgres:${superPassword}@${ports.map((p) => `127.0.0.1:${p}`).join(",")}/${database}`;
  const nodeUrl = (name: string) => pgUrl([nodeByName(name).pgPort], "aqm");
  const url = `${pgUrl(nodes.map((n) => n.pgPort), "aqm")}?target_session_attrs=primary`;

  const rest = async (node: HaNode, path: string, init?: RequestInit & { timeoutMs?: number }) => {
    const response = await fetch(`http://127.0.0.1:${node.restPort}${path}`, {
      ...init, signal: AbortSignal.timeout(init?.timeoutMs ?? 1500),
    });
    return { status: response.status, text: await response.text() };
  };
  const members = async (): Promise<HaMember[] | null> => {
    for (const node of nodes) {
      try {
        const { status, text } = await rest(node, "/cluster");
        if (status === 200) return (JSON.parse(text) as { members: HaMember[] }).members;
      } catch {
        // not answering (killed, starting): try the next
      }
    }
    return null;
  };
  const leader = async () => (await members())?.find((m) => m.role === "leader")?.name ?? null;
  const syncStandby = async () => (await members())?.find((m) => m.role === "sync_standby")?.name ?? null;

  /** One short-lived connection to one node (superuser), or null if it does not answer. */
  const query = async <T extends Record<string, unknown>>(name: string, database: string, text: string): Promise<T[] | null> => {
    const sql = postgres(pgUrl([nodeByName(name).pgPort], database), { max: 1, connect_timeout: 2, idle_timeout: 1, onnotice: () => {} });
    try {
      return (await Promise.race([sql.unsafe(text), sleep(3000).then(() => null)])) as T[] | null;
    } catch {
      return null;
    } finally {
      void sql.end({ timeout: 0 }).catch(() => {});
    }
  };

  let lastObservation = "nothing observed yet";
  const waitHealthy = async (timeoutMs = 90_000, replicas = 2): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const list = await members();
      const lead = list?.find((m) => m.role === "leader");
      const sync = list?.find((m) => m.role === "sync_standby");
      if (!list) lastObservation = "no Patroni REST API answers";
      else if (!lead) lastObservation = `no leader: ${JSON.stringify(list)}`;
      else if (lead.state !== "running") lastObservation = `leader ${lead.name} is ${lead.state}`;
      else if (!sync) lastObservation = `leader ${lead.name}, no sync standby yet: ${JSON.stringify(list)}`;
      else {
        const rows = await query<{ application_name: string; state: string; sync_state: string; recovery: boolean }>(lead.name, "postgres",
          "select application_name, state, sync_state, pg_is_in_recovery() as recovery from pg_stat_replication");
        const recovery = await query<{ r: boolean }>(lead.name, "postgres", "select pg_is_in_recovery() as r");
        if (!rows || !recovery) lastObservation = `leader ${lead.name} does not answer queries`;
        else if (recovery[0]?.r !== false) lastObservation = `leader ${lead.name} is still in recovery`;
        else {
          const streaming = rows.filter((r) => r.state === "streaming");
          const syncRow = streaming.find((r) => r.sync_state === "sync" && r.application_name === sync.name);
          lastObservation = `leader ${lead.name}, sync standby ${sync.name}, pg_stat_replication: ${JSON.stringify(rows)}`;
          if (streaming.length >= replicas && syncRow) return lead.name;
        }
      }
      await sleep(250);
    }
    throw new Error(`the HA cluster did not become healthy (a leader, ${replicas} streaming replicas, one sync) `
      + `within ${timeoutMs} ms; last: ${lastObservation}\n${logTail()}`);
  };

  const kill = async (name: string) => {
    const node = nodeByName(name);
    const patroni = procs.get(name);
    const waits: number[] = [];
    if (patroni?.pid && patroni.exitCode === null && patroni.signalCode === null) {
      const exited = new Promise<void>((resolve) => patroni.once("exit", () => resolve()));
      signal(-patroni.pid, "SIGKILL"); // Patroni and what it runs in its group (pg_basebackup, pg_rewind, …)
      signal(patroni.pid, "SIGKILL");
      await Promise.race([exited, sleep(5000)]);
      waits.push(patroni.pid);
    }
    const pm = postmasterPid(node.dataDir);
    if (pm) {
      const children = childrenOf(pm);
      signal(-pm, "SIGKILL"); // the postmaster leads its own group (Patroni starts it with setsid)
      signal(pm, "SIGKILL");
      for (const child of children) signal(child, "SIGKILL");
      waits.push(pm, ...children);
    }
    const deadline = Date.now() + 10_000;
    while (waits.some(alive)) {
      if (Date.now() > deadline) throw new Error(`${name}: processes ${waits.filter(alive).join(", ")} survive SIGKILL`);
      await sleep(20);
    }
    log(`${name}: killed (patroni ${patroni?.pid ?? "-"}, postmaster ${pm ?? "-"})`);
  };

  const freeze = async (name: string) => {
    const patroni = procs.get(name);
    if (patroni?.pid) signal(-patroni.pid, "SIGSTOP");
    const pm = postmasterPid(nodeByName(name).dataDir);
    // the postmaster first, its children listed after: once it is stopped it forks no backend that
    // would escape the freeze
    if (pm) {
      signal(pm, "SIGSTOP");
      for (const pid of childrenOf(pm)) signal(pid, "SIGSTOP");
    }
    log(`${name}: frozen (patroni ${patroni?.pid ?? "-"}, postmaster ${pm ?? "-"})`);
  };

  const start = async (name: string) => {
    nodeByName(name);
    const running = procs.get(name);
    if (running && running.exitCode === null && running.signalCode === null && running.pid && alive(running.pid)) {
      throw new Error(`${name}: its Patroni is running (pid ${running.pid}); kill it first`);
    }
    startNode(name);
  };

  const switchover = async (candidate?: string) => {
    const list = await members();
    const lead = list?.find((m) => m.role === "leader");
    if (!lead) throw new Error(`switchover: no leader now (${JSON.stringify(list)})`);
    const target = candidate ?? list?.find((m) => m.role === "sync_standby")?.name;
    if (!target) throw new Error(`switchover: no sync standby to switch over to (${JSON.stringify(list)})`);
    // Patroni answers once the candidate holds the leader key (it polls up to max(10, loop_wait) s)
    const { status, text } = await rest(nodeByName(lead.name), "/switchover", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ leader: lead.name, candidate: target }), timeoutMs: 60_000,
    });
    if (status !== 200) throw new Error(`switchover ${lead.name} → ${target}: HTTP ${status}: ${text}`);
    log(`switchover ${lead.name} → ${target}: ${text}`);
  };

  const pids = async (name: string) => {
    const postmaster = postmasterPid(nodeByName(name).dataDir);
    let walreceiver: number | null = null;
    if (postmaster) {
      for (const child of childrenOf(postmaster)) {
        if (alive(child) && /walreceiver/.test(cmdline(child))) walreceiver = child;
      }
    }
    return { postmaster, walreceiver };
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // Patroni first (it would restart PostgreSQL), then PostgreSQL, then etcd
    for (const name of NODE_NAMES) await kill(name).catch((error) => log(String(error)));
    const etcd = procs.get("etcd");
    if (etcd?.pid) {
      signal(-etcd.pid, "SIGKILL");
      const deadline = Date.now() + 5000;
      while (alive(etcd.pid) && Date.now() < deadline) await sleep(20);
    }
    sweep(dir);
    await sleep(50);
    rmSync(dir, { recursive: true, force: true });
    forget();
    log(`stopped; removed ${dir}`);
  };

  const cluster: HaCluster = {
    nodes, url, nodeUrl, leader, syncStandby, waitHealthy, kill, freeze, start, switchover, pids, stop,
    dir, etcdUrl, members, logTail, timing: { ttl, loopWait, retryTimeout },
  };

  // --- bring it up ------------------------------------------------------------------------------
  try {
    const etcdDeadline = Date.now() + 20_000;
    for (;;) {
      try {
        const response = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(1000) });
        if (response.ok && (await response.json() as { health?: string }).health === "true") break;
      } catch {
        // not yet listening
      }
      if (procs.get("etcd")?.exitCode !== null) throw new Error(`etcd exited (${procs.get("etcd")?.exitCode})`);
      if (Date.now() > etcdDeadline) throw new Error("etcd is not healthy after 20 s");
      await sleep(100);
    }
    log(`etcd: healthy at ${etcdUrl}`);
    // node1 first: it bootstraps (initdb) while the others wait to clone it with pg_basebackup
    startNode("node1");
    const first = await waitLeader(leader, 60_000, () => logTail());
    log(`${first}: leader (bootstrapped)`);
    startNode("node2");
    startNode("node3");
    const lead = await waitHealthy(120_000, 2);
    const created = await query(lead, "postgres", "create database aqm");
    if (!created) {
      // (a retry after a lost answer finds it there)
      const exists = await query<{ n: number }>(lead, "postgres", "select count(*)::int as n from pg_database where datname = 'aqm'");
      if (exists?.[0]?.n !== 1) throw new Error(`could not create the database aqm on ${lead}`);
    }
    log(`cluster healthy: leader ${lead}, sync standby ${await syncStandby()}; database aqm created`);
    return cluster;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const withLogs = message.includes("----- etcd.log") ? message : `${message}\n${logTail()}`;
    await stop().catch(() => {});
    throw new Error(`the HA cluster did not start: ${withLogs}`, { cause: error });
  }
}

async function waitLeader(leader: () => Promise<string | null>, timeoutMs: number, logs: () => string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const name = await leader();
    if (name) return name;
    await sleep(200);
  }
  throw new Error(`no Patroni leader after ${timeoutMs} ms\n${logs()}`);
}
