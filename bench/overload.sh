#!/usr/bin/env bash
# Overload: what otelephant's memory does when three times more is offered than the database
# takes, for a sustained minute, and whether it recovers when the load drops.
#
#   bench/overload.sh [SIGNAL] [SECONDS]      (defaults: traces 60)
#
# 1. capacity: the load generator sends as fast as requests are answered (closed loop, 64 in
#    flight) for 20 s; what it gets acknowledged per second is what the database takes;
# 2. overload: 3 x that rate, open loop (requests go out on schedule whatever the answers), for
#    SECONDS, sampling otelephant's resident memory every half second;
# 3. recovery: 20 s idle, then half the capacity for 10 s: every request should succeed.
# Finally the rows in the database are counted against the acknowledged items.
#
# otelephant runs with its default settings (but ports, to stay out of the way of a running
# one) against a scratch database on the local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

signal=${1:-traces}
seconds=${2:-60}
database=otelephant_overload
url="postgres://postgres@127.0.0.1:5432/$database"
case "$signal" in
  traces) table=spans ;;
  logs) table=logs ;;
  metrics) table="(SELECT 1 FROM metric_points_number UNION ALL SELECT 1 FROM metric_points_histogram
                   UNION ALL SELECT 1 FROM metric_points_exp_histogram UNION ALL SELECT 1 FROM metric_points_summary) p" ;;
  *) echo "SIGNAL is traces, metrics or logs" >&2; exit 2 ;;
esac

cargo build --release --quiet --bin otelephant --example loadgen
psql -qX -h 127.0.0.1 -U postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $database" >/dev/null

work=$(mktemp -d)
./target/release/otelephant --postgres-url "$url" --grpc-addr 127.0.0.1:24317 \
  --http-addr 127.0.0.1:24318 --admin-addr 127.0.0.1:29464 >"$work/otelephant.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
until curl -sf http://127.0.0.1:29464/readyz >/dev/null; do sleep 0.2; done

rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }
load() { ./target/release/examples/loadgen --endpoint http://127.0.0.1:24317 --signal "$signal" "$@" 2>/dev/null | tail -n 1; }

echo "== capacity: closed loop, 16 connections x 4 in flight, 20 s"
capacity=$(load --connections 16 --inflight 4 --duration 20)
rate=$(python3 -c "print(int(float('$(field "$capacity" items_per_second)')))")
echo "   $rate $signal items/s acknowledged"

offered=$((rate * 3))
echo "== overload: $offered items/s offered (3x), open loop, 16 connections x 64 in flight, $seconds s"
(
  while kill -0 $pid 2>/dev/null; do echo "$(date +%s.%N) $(rss_mib)"; sleep 0.5; done
) >"$work/rss" &
sampler=$!
overload=$(load --connections 16 --inflight 64 --rate "$offered" --duration "$seconds")
kill $sampler
peak=$(sort -k2 -n "$work/rss" | tail -n 1 | cut -d' ' -f2)
hwm=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
echo "   acknowledged $(field "$overload" items_per_second | cut -d. -f1) items/s;" \
  "requests $(field "$overload" requests), turned away $(field "$overload" failed_requests)" \
  "$(field "$overload" failures); ack p50 $(field "$overload" p50_ms | cut -c1-7) ms" \
  "p99 $(field "$overload" p99_ms | cut -c1-7) ms"
echo "   resident memory: sampled peak $peak MiB, VmHWM $hwm MiB"

sleep 20
echo "== recovery: after 20 s idle, resident memory $(rss_mib) MiB"
recovery=$(load --connections 4 --inflight 4 --rate $((rate / 2)) --duration 10)
echo "   half capacity for 10 s: $(field "$recovery" items_per_second | cut -d. -f1) items/s," \
  "$(field "$recovery" failed_requests) failed, ack p99 $(field "$recovery" p99_ms | cut -c1-7) ms;" \
  "resident memory $(rss_mib) MiB"

acknowledged=$(python3 -c "import json,sys; print(sum(json.loads(a)['accepted_items'] for a in sys.argv[1:]))" \
  "$capacity" "$overload" "$recovery")
stored=$(psql -qXtA -h 127.0.0.1 -U postgres -d $database -c "SELECT count(*) FROM $table")
echo "== acknowledged $acknowledged items, $stored rows in the database"
[ "$stored" -ge "$acknowledged" ] || { echo "acknowledged items are missing" >&2; exit 1; }
