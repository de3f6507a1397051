#!/usr/bin/env bash
# The read side at volume (examples/read_bench.rs): at 1M and then 10M spans spread over the last
# 24 hours, every default read of the web UI, the JSON API and the Jaeger API, timed against this
# build and against an earlier one (by default the commit before the rollups) on the same data.
#
#   bench/reads.sh [BASE_REV] [SPANS...]
#
# BASE_REV "none" times this build alone.
#
# After each load the database is vacuumed and analyzed, so that the timings are of a settled
# server, not of autovacuum working through the new rows.
#
# The earlier build reads the same schema: its migrations are a prefix of this build's. Needs
# the local PostgreSQL at 127.0.0.1:5432; uses the database otelephant_read_bench.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-4fa7a8c}
shift || true
VOLUMES=("${@:-1000000 10000000}")
DATABASE=otelephant_read_bench
URL="postgres://postgres@127.0.0.1:5432/$DATABASE"
ROOT=$PWD
BIN="$ROOT/target/read-bench"
mkdir -p "$BIN"

psql -qXtA -h 127.0.0.1 -U postgres -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1 ||
  psql -qX -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $DATABASE"

# The earlier build, in a worktree sharing this checkout's target directory (the dependencies
# build once), then this one.
if [ "$BASE" != none ] && [ ! -x "$BIN/otelephant-base" ]; then
  git worktree add --force --detach "$ROOT/target/read-bench-base" "$BASE" >/dev/null
  (cd "$ROOT/target/read-bench-base" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --quiet --bin otelephant)
  cp "$ROOT/target/release/otelephant" "$BIN/otelephant-base"
  git worktree remove --force "$ROOT/target/read-bench-base"
fi
cargo build --release --quiet --bin otelephant --example read_bench
cp target/release/otelephant "$BIN/otelephant-head"

serve() { # binary label runs
  OTELEPHANT_POSTGRES__URL="$URL" OTELEPHANT_POSTGRES__SCHEMA=read_bench \
  OTELEPHANT_OTLP__GRPC_ADDR=127.0.0.1:44317 OTELEPHANT_OTLP__HTTP_ADDR=127.0.0.1:44318 \
  OTELEPHANT_ADMIN__ADDR=127.0.0.1:49464 OTELEPHANT_LOG__LEVEL=warn "$1" &
  local pid=$!
  for _ in $(seq 120); do curl -fs http://127.0.0.1:49464/readyz >/dev/null && break; sleep 0.5; done
  # Past the start-up passes (partitions, rollups) before timing.
  sleep 5
  target/release/examples/read_bench time http://127.0.0.1:44318 "$2" "$3"
  kill -TERM "$pid"; wait "$pid" || true
}

for spans in ${VOLUMES[*]}; do
  echo "== $spans spans over the last 24 hours"
  target/release/examples/read_bench load "$spans" "$URL" read_bench
  # Settled, as a server is between loads: what autovacuum would do after the load, done before
  # timing rather than during it.
  psql -qX -h 127.0.0.1 -U postgres -d "$DATABASE" -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
  psql -qXtA -h 127.0.0.1 -U postgres -d "$DATABASE" -c "SELECT 'spans on disk: ' || pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'read_bench.spans'::regclass"
  serve "$BIN/otelephant-head" "this build ($(git rev-parse --short HEAD)), $spans spans" 15
  if [ "$BASE" != none ]; then
    serve "$BIN/otelephant-base" "$BASE (before the rollups), $spans spans" 3
  fi
done
