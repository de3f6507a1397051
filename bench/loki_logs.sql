-- Log records for the Loki API's benchmark (bench/loki_queries.sh): :records records over the
-- last 24 hours, in time order as they arrive, from 200 services (each its own resource with
-- service.name, deployment.environment and k8s.pod.name): logfmt request lines
-- ("method=GET path=/api/v1/items/N status=200 took=12ms"), a 503 in every 199 (spread over
-- the services), plain "cache warm" lines; severities INFO, WARN (the 503s), DEBUG; a trace
-- context on every other record (a trace id shared by 4 records, of 4 services), two
-- attributes. log_rollup holds what the writers would have counted. Run in a database otelephant has migrated:
--   psql -d otelephant_loki_bench -v records=10000000 -f bench/loki_logs.sql
TRUNCATE logs, log_rollup;
INSERT INTO resources (resource_id, attributes, dropped_attributes_count, schema_url)
SELECT 9000 + i, jsonb_build_object('service.name', 'svc-' || i, 'deployment.environment', 'prod',
                                    'k8s.pod.name', 'pod-' || i, 'telemetry.sdk.name', 'opentelemetry'), 0, ''
FROM generate_series(1, 200) i
ON CONFLICT DO NOTHING;
INSERT INTO scopes (scope_id, name, version, attributes, dropped_attributes_count, schema_url)
VALUES (9000, 'bench.logger', '1.0', '{}', 0, '') ON CONFLICT DO NOTHING;
\set now '(extract(epoch FROM now()) * 1e9)::bigint'
INSERT INTO logs (timestamp_unix_nano, time_unix_nano, observed_time_unix_nano, severity_number, severity_text,
                  body, attributes, dropped_attributes_count, flags, trace_id, span_id, event_name, resource_id, scope_id)
SELECT t, t, t + 1000, sev, CASE sev WHEN 9 THEN 'INFO' WHEN 13 THEN 'WARN' ELSE 'DEBUG' END,
       to_jsonb(CASE WHEN i % 10 = 9 THEN 'cache warm shard=' || (i % 64)
                     ELSE 'method=' || (ARRAY['GET', 'POST', 'PUT'])[1 + i % 3] || ' path=/api/v1/items/' || (i % 5000)
                          || ' status=' || CASE WHEN i % 199 = 7 THEN 503 ELSE 200 END || ' took=' || (i % 900) || 'ms' END),
       jsonb_build_object('thread', 'worker-' || (i % 16), 'http.route', '/api/v1/items/{id}'),
       0, CASE WHEN i % 2 = 0 THEN 1 ELSE 0 END,
       CASE WHEN i % 2 = 0 THEN decode(md5('trace' || (i / 8)), 'hex') END,
       CASE WHEN i % 2 = 0 THEN substr(decode(md5('span' || i), 'hex'), 1, 8) END,
       '', 9000 + 1 + i % 200, 9000
FROM (SELECT i, :now - 86400000000000 + (i::numeric * 86400000000000 / :records)::bigint AS t,
             CASE WHEN i % 199 = 7 AND i % 10 <> 9 THEN 13 WHEN i % 10 = 9 THEN 5 ELSE 9 END AS sev
      FROM generate_series(0::bigint, :records - 1) i) g;
INSERT INTO log_rollup (minute_unix_nano, resource_id, severity_number, records)
SELECT timestamp_unix_nano / 60000000000 * 60000000000, resource_id, severity_number, count(*)
FROM logs GROUP BY 1, 2, 3;
VACUUM ANALYZE logs;
VACUUM ANALYZE log_rollup;
SELECT (SELECT count(*) FROM logs) AS records,
       (SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'logs'::regclass) AS logs_size;
