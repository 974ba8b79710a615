// Entry point for Deno (`deno task start`, see deno.json): Deno.serve. Opening the database, the
// app and the shutdown are shared with the Bun entry (start.ts). Deno's server has no request idle
// timeout, so requests that wait on purpose need no extension, and no body size limit of its own:
// the app answers 413 past 1 MiB itself.
import { start } from "./start.ts";

await start("deno", (app, config) => {
  const server = Deno.serve({
    port: config.PORT, hostname: config.HOST,
    onListen: () => {}, // start.ts logs the JSON "listening" line
  }, (request) => app.fetch(request));
  const { hostname, port } = server.addr;
  return {
    url: `http://${hostname}:${port}`,
    drain: () => server.shutdown(),
    // Deno's server cannot be closed harder once shutdown() began: the connections still open
    // end with the process, after the pool is closed.
    close: async () => {},
  };
});
