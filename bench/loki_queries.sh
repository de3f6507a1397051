#!/usr/bin/env bash
# Times Loki's query_range and friends, five runs each, against a server whose database holds the
# log records bench/loki_logs.sql makes (:records over the last 24 hours, 200 services), that
# database named second (psql finds the trace's time in it):
#   bench/loki_queries.sh http://127.0.0.1:24318 otelephant_loki_bench
# Prints each request's times in seconds and its answer's size.
set -euo pipefail
base=${1:-http://127.0.0.1:4318}/loki/api/v1
now=$(date +%s%N)
hour=$((now - 3600000000000))
day=$((now - 86400000000000))
# A trace id of the records (bench/loki_logs.sql: md5('trace' || i / 8) on even i): the one of
# records 800000..800007, about two hours ago at 10M records.
trace=$(printf 'trace%d' 100000 | md5sum | cut -c1-32)
# Grafana asks for a span's logs a minute either side of it (the deploy kit's trace-to-logs).
at=$(psql -h 127.0.0.1 -U postgres -d "${2:-otelephant_loki_bench}" -Atc \
  "SELECT min(timestamp_unix_nano) FROM logs WHERE trace_id = decode('$trace', 'hex')")
span_start=$((at - 60000000000))
span_end=$((at + 60000000000))
run() { # name path query start [more curl arguments]
  local name=$1 path=$2 query=$3 start=$4 times=""
  shift 4
  for _ in 1 2 3 4 5; do
    times="$times $(curl -s -G -o /tmp/loki_answer.json -w "%{time_total}" "$base/$path" \
      --data-urlencode "query=$query" --data-urlencode "start=$start" --data-urlencode "end=$now" "$@")"
  done
  printf "%-58s %s  (%s bytes)\n" "$name" "$times" "$(wc -c < /tmp/loki_answer.json)"
}
svc='{service_name="svc-7"}'
run "a service's last hour, 100 lines" query_range "$svc" $hour --data-urlencode limit=100
run "a service's last hour, 1000 lines" query_range "$svc" $hour --data-urlencode limit=1000
run "a service's last hour, line filter |= \"status=503\"" query_range "$svc |= \"status=503\"" $hour
run "a service's 24 h, line filter |= \"status=503\"" query_range "$svc |= \"status=503\"" $day
run "a service's last hour, logfmt | status >= 500" query_range "$svc | logfmt | status >= 500" $hour
run "all services' last hour, |~ \"items/42\\\\b\"" query_range '{deployment_environment="prod"} |~ "items/42\\b"' $hour
run "a trace id over 24 h, all services (| trace_id=)" query_range "{deployment_environment=\"prod\"} | trace_id=\"$trace\"" $day
to_logs="{service_name=\"svc-1\"} | label_format log_line_contains_trace_id=\`{{ contains \"$trace\" __line__  }}\` | log_line_contains_trace_id=\"true\" OR trace_id=\"$trace\""
run "trace-to-logs, by trace id, one service, span +-1 min" query_range "$to_logs" $span_start --data-urlencode end=$span_end
run "trace-to-logs, by trace id, one service, 24 h" query_range "$to_logs" $day
run "volume, a service's last hour, step 1m" query_range \
  "sum by (level, detected_level) (count_over_time($svc | drop __error__ [1m]))" $hour --data-urlencode step=60000ms
run "volume, all services, last hour, step 1m" query_range \
  'sum by (level, detected_level) (count_over_time({deployment_environment="prod"} | drop __error__ [1m]))' $hour --data-urlencode step=60000ms
run "volume, a service's 24 h, step 5m" query_range \
  "sum by (level, detected_level) (count_over_time($svc | drop __error__ [5m]))" $day --data-urlencode step=300000ms
run "volume, all services, 24 h, step 5m" query_range \
  'sum by (level, detected_level) (count_over_time({deployment_environment="prod"} | drop __error__ [5m]))' $day --data-urlencode step=300000ms
run "sum by level of count_over_time, all, 24 h, step 5m" query_range \
  'sum by (detected_level) (count_over_time({deployment_environment="prod"}[5m]))' $day --data-urlencode step=300000ms
run "rate of 503s by service, last hour, step 1m" query_range \
  'sum by (service_name) (rate({deployment_environment="prod"} |= "status=503" [1m]))' $hour --data-urlencode step=60000ms
run "index/stats, a service, 24 h" index/stats "$svc" $day
