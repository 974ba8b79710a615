import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

// /proc helpers for the test clusters that run detached PostgreSQL processes (tests/ha, tests/citus).

export interface ProcInfo { pid: number; ppid: number; pgid: number; state: string }

export function procStat(pid: number): ProcInfo | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses: split after the last ')'
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { pid, state: rest[0] ?? "?", ppid: Number(rest[1]), pgid: Number(rest[2]) };
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim();
  } catch {
    return "";
  }
}

/** Alive, and not a zombie waiting for its parent. */
export function alive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== null && stat.state !== "Z" && stat.state !== "X";
}

export function allPids(): number[] {
  return readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).map(Number);
}

export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const p of allPids()) if (procStat(p)?.ppid === pid) out.push(p);
  return out;
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** The postmaster's pid from postmaster.pid when that process is alive, else null. */
export function postmasterPid(dataDir: string): number | null {
  let first: string | undefined;
  try {
    first = readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0];
  } catch {
    return null;
  }
  const pid = Number(first);
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return null;
  // a stale file whose pid now belongs to something else
  if (!/postgres/.test(cmdline(pid)) && !/postgres/.test(readFileSync(`/proc/${pid}/comm`, "utf8"))) return null;
  return pid;
}

/** Every directory of every cluster this process started, with how to kill what runs in it. */
const liveDirs = new Map<string, (dir: string) => void>();

/**
 * Kills (with `sweep`, synchronously) and removes `dir` when this process exits without stopping
 * its cluster; the returned function forgets it (after a normal stop).
 */
export function sweepOnExit(dir: string, sweep: (dir: string) => void): () => void {
  if (!hookInstalled) installExitHook();
  liveDirs.set(dir, sweep);
  return () => void liveDirs.delete(dir);
}

let hookInstalled = false;

function installExitHook(): void {
  hookInstalled = true;
  process.on("exit", () => {
    for (const [dir, sweep] of liveDirs) {
      sweep(dir);
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // a process still writing into it: nothing more to do at exit
      }
    }
  });
  // Without a listener, SIGINT/SIGTERM end the process without the "exit" event: the detached
  // processes would outlive it. With one, exit explicitly (as the default would) after the sweep.
  for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    if (process.listenerCount(sig) > 0) continue; // someone else decides how this process ends
    process.once(sig, () => process.exit(code));
  }
}
