#!/usr/bin/env bash
# The peak memory of single reads: stores the data of the `answers` read attack
# (examples/hostile/reads.rs) into a fresh otelephant (default settings but ports) on a scratch
# database, then, for each read, waits for the allocator to settle, resets the server's peak
# resident memory (/proc/PID/clear_refs) and runs N copies of the read at once, and prints
# how far the peak rose above the resident memory before it.
#
#   bench/read_peaks.sh [N]      (default 1)
#
# SERVER_BIN runs another build of the server.
set -euo pipefail
cd "$(dirname "$0")/.."

copies=${1:-1}
database=otelephant_read_peaks
cargo build --release --quiet --bin otelephant --example hostile
bin=${SERVER_BIN:-./target/release/otelephant}
psql -qX -h 127.0.0.1 -U postgres -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $database" >/dev/null
"$bin" --postgres-url "postgres://postgres@127.0.0.1:5432/$database" --grpc-addr 127.0.0.1:25317 \
  --http-addr 127.0.0.1:25318 --admin-addr 127.0.0.1:25464 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:25464/readyz >/dev/null; do sleep 0.2; done
./target/release/examples/hostile answers --grpc 127.0.0.1:25317 --http 127.0.0.1:25318 --seconds 0 >/dev/null

http=http://127.0.0.1:25318
query=$http/otelephant.query.v1.QueryService
mib() { awk -v f="$1" '$1 == f":" {printf "%.0f", $2 / 1024}' "/proc/$pid/status"; }
peak() {
  local label=$1; shift
  sleep 12
  local before; before=$(mib VmRSS)
  echo 5 >"/proc/$pid/clear_refs"
  local readers=()
  for _ in $(seq "$copies"); do "$@" >/dev/null 2>&1 & readers+=($!); done
  wait "${readers[@]}"
  echo "$label, $copies at once: peak $(mib VmHWM) MiB from $before MiB resident (+$(( $(mib VmHWM) - before )) MiB)"
}
big=b16b16b16b16b16b16b16b16b16b16b1
peak "SearchLogs pageSize 1000" curl -s "$query/SearchLogs" -H 'content-type: application/json' -d '{"pageSize": 1000}'
peak "UI /logs" curl -s "$http/logs"
peak "GetTrace of the 256 MiB trace" curl -s "$query/GetTrace" -H 'content-type: application/json' -d "{\"traceId\": \"$big\"}"
peak "Jaeger, one trace named 60 times" curl -s "$http/jaeger/api/traces?$(for _ in $(seq 60); do printf 'traceID=%s&' $big; done)"
peak "UI chart of 500,000 buckets" curl -s "$http/metric?name=wide.histogram"
peak "UI trace page of 200,000 events" curl -s "$http/trace/e7e7000000000000000000000000e7e7?span=e7e700000000e7e7"
