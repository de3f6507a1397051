-- Loki's /labels, /label/<name>/values and /series at volume: the log_rollup rows that 10M log records
-- over the last 24 hours from 200 services (each its own resource with service.name,
-- deployment.environment and k8s.pod.name), in five severities, leave: one row per minute,
-- resource and severity (1.44M rows). The two reads are timed as the endpoints run them, over
-- the default range (six hours) and a whole day. Run in a database otelephant has migrated:
--   PGOPTIONS='-c search_path=content_bench' psql -d otelephant_content_bench -f bench/loki_labels.sql
TRUNCATE log_rollup;
INSERT INTO resources (resource_id, attributes, dropped_attributes_count, schema_url)
SELECT 7000 + i, jsonb_build_object('service.name', 'svc-' || i, 'deployment.environment', 'prod',
                                    'k8s.pod.name', 'pod-' || i, 'telemetry.sdk.name', 'opentelemetry'), 0, ''
FROM generate_series(1, 200) i
ON CONFLICT DO NOTHING;
INSERT INTO log_rollup (minute_unix_nano, resource_id, severity_number, records)
SELECT ((extract(epoch FROM now())::bigint / 60 - m) * 60) * 1000000000, 7000 + r, s, 7
FROM generate_series(0, 1439) m, generate_series(1, 200) r, unnest(ARRAY[5, 9, 13, 17, 21]) s;
VACUUM ANALYZE log_rollup;
VACUUM ANALYZE resources;
SELECT count(*) AS rollup_rows, sum(records) AS records FROM log_rollup;
\set now '(extract(epoch FROM now()) * 1e9)::bigint'
\timing on
-- /labels, six hours
SELECT DISTINCT k FROM resources r, jsonb_object_keys(r.attributes) AS k
WHERE r.resource_id IN (SELECT DISTINCT resource_id FROM log_rollup
      WHERE minute_unix_nano >= (:now - 21600000000000) - (((:now - 21600000000000) % 60000000000) + 60000000000) % 60000000000
        AND minute_unix_nano < :now)
  AND k = ANY(ARRAY['service.name', 'deployment.environment', 'k8s.pod.name']);
-- /label/service_name/values, six hours
SELECT count(*) FROM (SELECT DISTINCT CASE jsonb_typeof(r.attributes -> k) WHEN 'string' THEN r.attributes ->> k
                                ELSE (r.attributes -> k)::text END
FROM resources r, unnest(ARRAY['service.name']) AS k
WHERE r.resource_id IN (SELECT DISTINCT resource_id FROM log_rollup
      WHERE minute_unix_nano >= (:now - 21600000000000) - (((:now - 21600000000000) % 60000000000) + 60000000000) % 60000000000
        AND minute_unix_nano < :now)
  AND r.attributes ? k) v;
-- /label/service_name/values, 24 hours
SELECT count(*) FROM (SELECT DISTINCT r.attributes ->> k
FROM resources r, unnest(ARRAY['service.name']) AS k
WHERE r.resource_id IN (SELECT DISTINCT resource_id FROM log_rollup
      WHERE minute_unix_nano >= :now - 86400000000000 AND minute_unix_nano < :now)
  AND r.attributes ? k) v;
-- /series, six hours: the resources' attributes, matched in otelephant.
SELECT count(*) FROM (SELECT r.attributes FROM resources r WHERE r.resource_id IN (SELECT DISTINCT resource_id FROM log_rollup
      WHERE minute_unix_nano >= (:now - 21600000000000) - (((:now - 21600000000000) % 60000000000) + 60000000000) % 60000000000
        AND minute_unix_nano < :now)) s;
