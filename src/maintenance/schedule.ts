import { cron } from "@elysiajs/cron";
import { Elysia } from "elysia";
import { Cron } from "croner";
import { jobNames, jobs } from "./jobs.ts";
import { runTick, type JobDeps } from "./run.ts";

/** The tick a trigger belongs to: its second. Instances fire within milliseconds of each other. */
const tickOf = (at: Date) => new Date(Math.floor(at.getTime() / 1000) * 1000);

/** Half the gap between the pattern's next two runs: the least distance between two real ticks. */
function halfPeriodMs(pattern: string): number {
  const probe = new Cron(pattern, { paused: true, timezone: "Etc/UTC" });
  const [a, b] = probe.nextRuns(2);
  probe.stop();
  return a && b ? (b.getTime() - a.getTime()) / 2 : 500;
}

/**
 * The maintenance schedule as an Elysia plugin (@elysiajs/cron). The plugin starts its jobs as
 * soon as it is registered and app.stop() does not stop them: call `stopMaintenance(app)`.
 */
export function maintenanceSchedule(deps: JobDeps) {
  let app = new Elysia({ name: "maintenance" });
  for (const job of jobNames) {
    const pattern = String(deps.config[jobs[job].schedule]);
    const minGapMs = halfPeriodMs(pattern);
    app = app.use(cron({
      name: job,
      pattern,
      timezone: "Etc/UTC",
      protect: true, // a slow run is never started twice in one process
      run: () => runTick(deps, job, tickOf(new Date()), minGapMs),
    })) as unknown as Elysia<"", { decorator: {}; store: {}; derive: {}; resolve: {} }>;
  }
  return app;
}

/** Stops every cron job registered on `app` (and its plugins). */
export function stopMaintenance(app: { store: unknown }): void {
  const jobs = (app.store as { cron?: Record<string, Cron> }).cron ?? {};
  for (const job of Object.values(jobs)) job.stop();
}
