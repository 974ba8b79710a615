// Entry point for Bun (`bun run start`, and `bun run build`'s executable): Bun.serve. Opening the
// database, the app and the shutdown are shared with the Deno entry (start.ts).
import { start } from "./start.ts";

await start("bun", (app, config) => {
  // The app answers 413 for bodies over 1 MiB itself; this is Bun's backstop for anything larger.
  // Every request is answered within AQM_DB_POOL_WAIT_MS (plus a margin) or its claim queue limit;
  // the idle timeout sits above that, and requests that wait on purpose (wait_ms) extend their own.
  const server = Bun.serve({
    port: config.PORT, hostname: config.HOST, fetch: app.fetch, maxRequestBodySize: 2 * 1024 * 1024,
    idleTimeout: Math.min(255, Math.ceil(Math.max(config.AQM_DB_POOL_WAIT_MS, config.AQM_CLAIM_QUEUE_MAX_MS) / 1000) + 5),
  });
  return {
    url: `http://${server.hostname}:${server.port}`,
    drain: () => server.stop(false),
    close: () => server.stop(true),
    holdOpen: (request, seconds) => server.timeout(request, seconds),
  };
});
