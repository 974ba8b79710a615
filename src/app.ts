import { Elysia } from "elysia";
import type { Config } from "./config.ts";
import type { Sql } from "./db/pool.ts";
import { healthController } from "./health/controller.ts";

export interface AppDeps {
  sql: Sql;
  config: Config;
}

/**
 * Builds the whole HTTP application. Runtime-neutral: serve `app.fetch` with Bun, or with
 * `Deno.serve(app.fetch)`; Bun-only concerns (embedded PostgreSQL, signals) live in index.ts.
 */
export function createApp({ sql }: AppDeps) {
  return new Elysia()
    .use(healthController(sql));
}

export type App = ReturnType<typeof createApp>;
