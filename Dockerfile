# AQM coin inventory server. Build: `docker build -t aqm-coin-server .`
# Run: needs DATABASE_URL and AQM_JWT_SECRET (or AQM_JWT_PUBLIC_KEY); see compose.yaml and docs/runbook.md.
# The Bun version matches the one CI uses (.ci/run); tests/deploy.test.ts checks both stay on one major.minor.

# --- deps: production dependencies only, exactly as locked -----------------------------------
FROM oven/bun:1.4.5-slim AS deps
WORKDIR /app
COPY package.json bun.lock bunfig.toml ./
# the patched postgres.js (package.json, patchedDependencies: porsager/postgres#1208 and #1223, tests/postgres-js.test.ts)
COPY patches ./patches
# --frozen-lockfile: fail instead of resolving anything new. --production leaves out the dev
# dependencies, among them the embedded PostgreSQL (60 MB of binaries and a second driver), and
# bunfig.toml installs no peer dependency on its own (TypeScript): node_modules is ~27 MB.
RUN bun install --frozen-lockfile --production

# --- runtime ---------------------------------------------------------------------------------
FROM oven/bun:1.4.5-slim AS runtime
WORKDIR /app
# BUN_JSC_forceRAMSize: the JavaScript heap is sized for 128 MiB of RAM instead of the host's, so it
# collects garbage before it grows (server RSS 94–130 MB in the bench's claim and upload phases, 141–188 MB
# with 10,000 requests in flight: README.md, "Memory").
ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0 \
    AQM_DATA_DIR=/app/.data \
    BUN_JSC_forceRAMSize=134217728

# Code and dependencies stay owned by root: the server process cannot modify them.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json bun.lock tsconfig.json ./
COPY src ./src
# Migrations are read at start from db/migrations (relative to src/db/migrate.ts).
COPY db ./db

# The only writable path, for AQM_DATA_DIR (used only without DATABASE_URL: development).
RUN mkdir -p /app/.data && chown bun:bun /app/.data

USER bun
EXPOSE 3000

# The slim image has no curl. /v1/health/ready answers 503 while PostgreSQL is unreachable or a migration is missing.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bun", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/v1/health/ready').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"]

# SIGTERM starts the graceful shutdown (src/index.ts); the server migrates the database at start.
STOPSIGNAL SIGTERM
CMD ["bun", "src/index.ts"]
