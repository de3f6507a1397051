#!/usr/bin/env bash
# Times the LLM reads (GetLlmOverview, ListLlmCalls over HTTP/JSON), five runs each, against a
# server whose database holds LLM calls over the last 24 hours (bench/llm_calls.sql makes 1M).
#   bench/llm_reads.sh http://127.0.0.1:24318
set -euo pipefail
q=${1:-http://127.0.0.1:4318}/otelephant.query.v1.QueryService
now=$(date +%s%N)
day=$((now - 86400000000000))
run() { # name method body
  local times=""
  for _ in 1 2 3 4 5; do
    times="$times $(curl -s -o /tmp/llm_answer.json -w "%{time_total}" "$q/$2" -H 'content-type: application/json' -d "$3")"
  done
  printf "%-48s %s  (%s bytes)\n" "$1" "$times" "$(wc -c < /tmp/llm_answer.json)"
}
range="\"timeRange\":{\"startUnixNano\":\"$day\"}"
run "overview, last hour (default)" GetLlmOverview '{}'
run "overview, last hour, 60 steps of a minute" GetLlmOverview '{"stepNanos":"60000000000"}'
run "overview, 24 h, 720 steps of 2 minutes" GetLlmOverview "{$range,\"stepNanos\":\"120000000000\"}"
run "overview, 24 h, one service, 96 steps" GetLlmOverview "{$range,\"filters\":{\"service\":\"llm-app-3\"},\"stepNanos\":\"900000000000\"}"
run "overview per user, last hour" GetLlmOverview '{"groupBy":"user"}'
run "overview per conversation, last hour" GetLlmOverview '{"groupBy":"conversation"}'
run "overview per user, 24 h" GetLlmOverview "{$range,\"groupBy\":\"user\"}"
run "calls, last hour, first page" ListLlmCalls '{}'
run "calls, 24 h, one conversation" ListLlmCalls "{$range,\"filters\":{\"conversationId\":\"conv-4242\"},\"pageSize\":100}"
run "calls, 24 h, one user, errors only" ListLlmCalls "{$range,\"filters\":{\"userId\":\"user-50\",\"errorsOnly\":true}}"
run "calls, 24 h, cost at least 0.01" ListLlmCalls "{$range,\"filters\":{\"minCost\":0.01}}"
