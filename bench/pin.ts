// --pin: PostgreSQL on CPUs of its own, the bench (its load generator and ceiling clients) and the
// servers it starts on the rest, as when the database has its own machine. Linux `taskset`.
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";

export interface Pinning {
  /** PostgreSQL's CPUs (taskset's list form, e.g. "0" or "0-3"). */
  postgres: string;
  /** Everything else: this process, the servers it starts, their threads. */
  rest: string;
}

/** Expands a CPU list ("0,2-3") to numbers; throws on anything else. */
export function cpuList(text: string): number[] {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new Error(`--pin: not a CPU list: ${JSON.stringify(text)} (e.g. 0 or 0-1 or 0,2)`);
    const [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (hi < lo) throw new Error(`--pin: empty range ${part}`);
    for (let c = lo; c <= hi; c++) out.add(c);
  }
  return [...out].sort((a, b) => a - b);
}

/** PostgreSQL on `list`, the rest on every other CPU; throws unless both sides have one. */
export function pinningOf(list: string, available = cpus().length): Pinning {
  const own = cpuList(list);
  const outside = own.filter((c) => c >= available);
  if (outside.length) throw new Error(`--pin: CPU ${outside.join(", ")} does not exist (this machine has 0-${available - 1})`);
  const rest = Array.from({ length: available }, (_, c) => c).filter((c) => !own.includes(c));
  if (rest.length === 0) throw new Error(`--pin ${list} leaves no CPU for the servers and the load generator`);
  return { postgres: own.join(","), rest: rest.join(",") };
}

/** Pins every thread of `pid` to `list`; processes it forks later inherit that. */
export function pin(pid: number, list: string): void {
  execFileSync("taskset", ["-a", "-c", "-p", list, String(pid)], { stdio: "ignore" });
}

/** The postmaster and the processes it already started (checkpointer, WAL writer, …); backends forked later inherit. */
export function pinPostgres(postmasterPid: number, list: string): void {
  pin(postmasterPid, list);
  const children = execFileSync("pgrep", ["-P", String(postmasterPid)], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const child of children) pin(Number(child), list);
}
