#!/usr/bin/env bash
# Hostile clients: each attack of examples/hostile.rs for a bounded time against a fresh
# otelephant (default settings but ports) on a scratch database on the local PostgreSQL, while an
# innocent client exports a one-span trace every 200 ms. Prints, per attack, what the attack and
# the innocent client saw, otelephant's peak resident memory (VmHWM) and the spans and log
# records stored.
#
#   bench/hostile.sh [SECONDS] [ATTACK...]     (defaults: 30, stall idle amplify bombs queries
#                                               chart answers legend links)
#
# The read-side attacks (chart answers legend links) store their data first (its peak is
# printed, then reset), then read it through every surface while the innocent client exports:
# their VmHWM is the reads' alone.
#
# SERVER_BIN runs another build of the server (an older commit's, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
attacks=${*:-stall idle amplify bombs queries chart answers legend links}
database=otelephant_hostile
url="postgres://postgres@127.0.0.1:5432/$database"

cargo build --release --quiet --bin otelephant --example hostile --example loadgen
bin=${SERVER_BIN:-./target/release/otelephant}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
# Thousands of idle connections need as many file descriptors.
ulimit -n 65536 2>/dev/null || true

for attack in $attacks; do
  psql -qX -h 127.0.0.1 -U postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $database" >/dev/null
  "$bin" --postgres-url "$url" --grpc-addr 127.0.0.1:24317 \
    --http-addr 127.0.0.1:24318 --admin-addr 127.0.0.1:29464 >"$work/otelephant.log" 2>&1 &
  pid=$!
  until curl -sf http://127.0.0.1:29464/readyz >/dev/null; do sleep 0.2; done
  if [ "$attack" = queries ]; then
    # Something for the queries to read: log records with ten attributes, for 10 s.
    ./target/release/examples/loadgen --endpoint http://127.0.0.1:24317 --signal logs \
      --duration 10 >/dev/null 2>&1
  fi
  echo "== $attack ($seconds s)"
  ./target/release/examples/hostile "$attack" --seconds "$seconds" --server-pid "$pid" | sed 's/^/   /'
  if ! kill -0 $pid 2>/dev/null; then
    echo "   otelephant is gone: $(tail -n 1 "$work/otelephant.log")"
    wait $pid 2>/dev/null && status=0 || status=$?
    echo "   exit status $status$([ $status = 137 ] && echo ' (killed: out of memory)')"
    continue
  fi
  hwm=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
  spans=$(psql -qXtA -h 127.0.0.1 -U postgres -d $database -c "SELECT count(*) FROM spans")
  logs=$(psql -qXtA -h 127.0.0.1 -U postgres -d $database -c "SELECT count(*) FROM logs")
  echo "   otelephant peak resident memory (VmHWM) $hwm MiB; stored $spans spans, $logs log records"
  kill $pid; wait $pid 2>/dev/null || true
done
