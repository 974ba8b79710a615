const marker = "AQM_BENCH_CHILD";

/**
 * Bun's fetch sends at most BUN_CONFIG_MAX_HTTP_REQUESTS (default 256) requests at once and reads
 * that variable only at start, and the burst needs thousands of sockets; so the bench re-runs
 * itself once with the variable set and the open-files soft limit raised to the hard limit.
 * Returns only in the re-run process.
 */
export async function relaunchWithSocketLimits(): Promise<void> {
  if (process.env[marker]) return;
  const raiseAndRun = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"';
  const child = Bun.spawn(["/bin/sh", "-c", raiseAndRun, "sh", process.execPath, ...process.argv.slice(1)], {
    env: { ...process.env, [marker]: "1", BUN_CONFIG_MAX_HTTP_REQUESTS: "65535" },
    stdio: ["inherit", "inherit", "inherit"],
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => child.kill(signal));
  process.exit(await child.exited);
}

/** The soft limit on open files of this process (after the relaunch). */
export async function openFilesLimit(): Promise<number> {
  const limits = await Bun.file("/proc/self/limits").text().catch(() => "");
  const soft = limits.match(/^Max open files\s+(\S+)/m)?.[1];
  return soft === undefined || soft === "unlimited" ? Infinity : Number(soft);
}
