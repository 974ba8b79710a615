import { existsSync, readdirSync, readFileSync } from "node:fs";

export interface ResourceUsage {
  /** Absent when the bench did not start the server (--url). */
  serverRssMb?: number;
  serverCpuPct?: number;
  /** PostgreSQL's postmaster and all its children; absent with --url. */
  pgCpuPct?: number;
  /**
   * CPU seconds over the segment (utime + stime, /proc/<pid>/stat at its start and end): the
   * server process (all its threads); PostgreSQL's whole process tree, exited children included
   * (through their parents' cutime + cstime). Absent: not measured (no pid: --url, or a
   * PostgreSQL-only row for the server).
   */
  serverCpuS?: number;
  pgCpuS?: number;
  /**
   * pgCpuS split by process (title in /proc/<pid>/cmdline): client backends (the servers' pools,
   * the ceilings' and seed baseline's, and the bench's own connection), autovacuum workers, the
   * other background processes, and processes that exited during the segment.
   */
  pgCpuByKindS?: { backends: number; autovacuum: number; other: number; exited: number };
  /** The bench process itself (load generator, and the client side of the SQL ceiling). */
  benchCpuPct: number;
  /** Share of the machine's CPU time taken by the hypervisor from this VM (steal), %. */
  stealPct: number;
}

const clockTicks = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined; // the process is gone
  }
}

/** CPU seconds (utime + stime) a live process has used so far. */
export const cpuSecondsOf = (pid: number): number => (ticksOf(pid)?.self ?? NaN) / clockTicks;

/** utime + stime (self) and cutime + cstime (reaped children) of a process, in clock ticks; undefined: gone. */
function ticksOf(pid: number): { self: number; children: number } | undefined {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from the 3rd (state) on
  return { self: Number(fields[11]) + Number(fields[12]), children: Number(fields[13]) + Number(fields[14]) };
}

/** undefined: the process is gone (not measured). */
function rssMb(pid: number): number | undefined {
  const kb = read(`/proc/${pid}/status`)?.match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return kb ? Number(kb) / 1024 : undefined;
}

/** [steal, total] jiffies of all CPUs, from /proc/stat. */
function machineTicks(): [number, number] {
  const fields = (read("/proc/stat") ?? "").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  return [fields[7] ?? 0, fields.reduce((a, b) => a + b, 0)];
}

function children(pid: number): number[] {
  // Every thread's children: a child is listed under the thread that forked it.
  const tasks = (() => {
    try {
      return readdirSync(`/proc/${pid}/task`);
    } catch {
      return [] as string[];
    }
  })();
  return tasks.flatMap((task) => (read(`/proc/${pid}/task/${task}/children`) ?? "").split(" ").filter(Boolean).map(Number));
}

/** What a PostgreSQL process is, from the title it sets (/proc/<pid>/cmdline). */
type PgKind = "backends" | "autovacuum" | "other";

function pgKind(pid: number): PgKind {
  const title = (read(`/proc/${pid}/cmdline`) ?? "").replaceAll("\0", " ");
  if (title.includes("autovacuum")) return "autovacuum";
  // a client backend: "postgres: <user> <database> <host>(<port>) <state>" (or [local])
  if (/^postgres: \S+ \S+ (\S+\(\d+\)|\[local\])/.test(title)) return "backends";
  return "other"; // the postmaster, checkpointer, background writer, WAL writer, launchers
}

interface TreeSnapshot {
  /** utime + stime + cutime + cstime over the whole tree. */
  total: number;
  /** Each live process: its own utime + stime, and its kind. */
  live: Map<number, { ticks: number; kind: PgKind }>;
}

/**
 * CPU ticks a process tree has used since it started: utime + stime of every live process in it,
 * plus cutime + cstime of each (the CPU of its children that exited and were reaped). A backend
 * that exits between two reads moves from the first term to its parent's cutime, so the
 * difference of two snapshots counts it in full. undefined: the root is gone.
 */
function treeSnapshot(root: number): TreeSnapshot | undefined {
  let total = 0;
  const live = new Map<number, { ticks: number; kind: PgKind }>();
  const pending = [root];
  for (let pid = pending.pop(); pid !== undefined; pid = pending.pop()) {
    const t = ticksOf(pid);
    if (!t) {
      if (pid === root) return undefined;
      continue; // exited between the listing and the read: its parent's cutime has it (or will)
    }
    total += t.self + t.children;
    live.set(pid, { ticks: t.self, kind: pgKind(pid) });
    pending.push(...children(pid));
  }
  return { total, live };
}

/**
 * PostgreSQL's CPU ticks between two snapshots, split by kind of process: what the processes
 * alive at the end used since the start (or since they started), and `exited`: the rest (the
 * processes that exited in between, whatever they were: mostly autovacuum workers here, as the
 * servers' backends are pooled).
 */
function treeDelta(a: TreeSnapshot, b: TreeSnapshot): { total: number; byKind: Record<PgKind | "exited", number> } {
  const byKind = { backends: 0, autovacuum: 0, other: 0, exited: 0 };
  for (const [pid, { ticks, kind }] of b.live) byKind[kind] += Math.max(0, ticks - (a.live.get(pid)?.ticks ?? 0));
  const total = b.total - a.total;
  byKind.exited = Math.max(0, total - byKind.backends - byKind.autovacuum - byKind.other);
  return { total, byKind };
}

/**
 * Samples the server's RSS (VmRSS) every 250 ms until stop(); reads the server's CPU (utime +
 * stime) and PostgreSQL's (its whole process tree, see treeSnapshot) at the start and at stop().
 */
export function startMonitor(serverPid?: number, postmasterPid?: number): { stop(): ResourceUsage } {
  const started = performance.now();
  const benchCpu = process.cpuUsage();
  const [steal0, total0] = machineTicks();
  const serverStart = serverPid ? ticksOf(serverPid)?.self : undefined;
  const pgStart = postmasterPid && existsSync(`/proc/${postmasterPid}`) ? treeSnapshot(postmasterPid) : undefined;
  let maxRss: number | undefined;
  const tick = () => {
    const rss = serverPid ? rssMb(serverPid) : undefined;
    if (rss !== undefined) maxRss = Math.max(maxRss ?? 0, rss);
  };
  tick();
  const timer = setInterval(tick, 250);
  return {
    stop() {
      clearInterval(timer);
      tick();
      const seconds = (performance.now() - started) / 1000;
      // a process that exited during the segment has no CPU figure (not a 0)
      const serverEnd = serverPid && serverStart !== undefined ? ticksOf(serverPid)?.self : undefined;
      const pgEnd = postmasterPid && pgStart !== undefined ? treeSnapshot(postmasterPid) : undefined;
      const serverTicks = serverEnd === undefined ? undefined : serverEnd - serverStart!;
      const pg = pgEnd === undefined ? undefined : treeDelta(pgStart!, pgEnd);
      const pgTicks = pg?.total;
      const round = (x: number) => Math.round(x * 10) / 10;
      const cpuS = (ticks: number | undefined) => (ticks === undefined ? undefined : Math.round((ticks / clockTicks) * 100) / 100);
      const pct = (ticks: number | undefined) => (ticks === undefined ? undefined : round((ticks / clockTicks / seconds) * 100));
      const bench = process.cpuUsage(benchCpu);
      const [steal1, total1] = machineTicks();
      return {
        serverRssMb: maxRss === undefined ? undefined : round(maxRss),
        serverCpuPct: pct(serverTicks),
        pgCpuPct: pct(pgTicks),
        serverCpuS: cpuS(serverTicks),
        pgCpuS: cpuS(pgTicks),
        pgCpuByKindS: pg && {
          backends: cpuS(pg.byKind.backends)!, autovacuum: cpuS(pg.byKind.autovacuum)!, other: cpuS(pg.byKind.other)!, exited: cpuS(pg.byKind.exited)!,
        },
        benchCpuPct: round(((bench.user + bench.system) / 1e6 / seconds) * 100),
        stealPct: round(((steal1 - steal0) / Math.max(1, total1 - total0)) * 100),
      };
    },
  };
}

/** Established TCP connections from this host to `port` (client side), from /proc/net/tcp{,6}. */
export function connectionsTo(port: number): number {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  let n = 0;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of (read(file) ?? "").split("\n")) {
      const [, , remote, state] = line.trim().split(/\s+/);
      if (state === "01" && remote?.endsWith(hexPort)) n++;
    }
  }
  return n;
}
