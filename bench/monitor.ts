import { existsSync, readFileSync } from "node:fs";

export interface ResourceUsage {
  /** Absent when the bench did not start the server (--url). */
  serverRssMb?: number;
  serverCpuPct?: number;
  /** PostgreSQL's postmaster and all its children; absent with --url. */
  pgCpuPct?: number;
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

/** utime + stime of a process, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return 0;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from the 3rd (state) on
  return Number(fields[11]) + Number(fields[12]);
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
  return (read(`/proc/${pid}/task/${pid}/children`) ?? "").split(" ").filter(Boolean).map(Number);
}

/** CPU ticks of a process tree, remembering each pid's last value so exited processes keep their share. */
class TreeCpu {
  private last = new Map<number, number>();
  private total = 0;

  constructor(private readonly root: number) {
    this.sample();
    this.total = 0;
  }

  sample(): number {
    for (const pid of [this.root, ...children(this.root)]) {
      const ticks = cpuTicks(pid);
      this.total += Math.max(0, ticks - (this.last.get(pid) ?? 0));
      this.last.set(pid, ticks);
    }
    return this.total;
  }
}

/**
 * Samples the server's RSS (VmRSS) and CPU (utime + stime), and PostgreSQL's CPU, every 250 ms
 * until stop().
 */
export function startMonitor(serverPid?: number, postmasterPid?: number): { stop(): ResourceUsage } {
  const started = performance.now();
  const benchCpu = process.cpuUsage();
  const [steal0, total0] = machineTicks();
  const serverStart = serverPid ? cpuTicks(serverPid) : 0;
  const pg = postmasterPid && existsSync(`/proc/${postmasterPid}`) ? new TreeCpu(postmasterPid) : undefined;
  let maxRss: number | undefined;
  const tick = () => {
    const rss = serverPid ? rssMb(serverPid) : undefined;
    if (rss !== undefined) maxRss = Math.max(maxRss ?? 0, rss);
    pg?.sample();
  };
  tick();
  const timer = setInterval(tick, 250);
  return {
    stop() {
      clearInterval(timer);
      tick();
      const seconds = (performance.now() - started) / 1000;
      const round = (x: number) => Math.round(x * 10) / 10;
      const pct = (ticks: number) => round((ticks / clockTicks / seconds) * 100);
      const bench = process.cpuUsage(benchCpu);
      const [steal1, total1] = machineTicks();
      return {
        serverRssMb: maxRss === undefined ? undefined : round(maxRss),
        // a server that exited during the segment has no CPU figure (not a 0)
        serverCpuPct: serverPid && existsSync(`/proc/${serverPid}`) ? pct(cpuTicks(serverPid) - serverStart) : undefined,
        pgCpuPct: pg ? pct(pg.sample()) : undefined,
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
