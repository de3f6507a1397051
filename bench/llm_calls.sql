-- 1,000,000 LLM calls over the last 24 hours from 20 services, 12 models of 3 providers, for
-- bench/llm_reads.sh. Run in a database otelephant has migrated, with the schema on the path:
--   PGOPTIONS='-c search_path=llm_bench' psql -d otelephant_llm_bench -f bench/llm_calls.sql
INSERT INTO resources (resource_id, attributes, dropped_attributes_count, schema_url)
SELECT 9000 + i, jsonb_build_object('service.name', 'llm-app-' || i), 0, '' FROM generate_series(1, 20) i
ON CONFLICT DO NOTHING;
-- 1,000,000 calls spread over the last 24 hours.
INSERT INTO llm_calls
SELECT t, t + d, decode(md5(i::text), 'hex'), decode(substr(md5('s' || i), 1, 16), 'hex'), 9001 + i % 20,
       k, CASE k WHEN 'llm' THEN 'chat' WHEN 'embedding' THEN 'embeddings' ELSE 'execute_tool' END,
       (ARRAY['openai', 'anthropic', 'gcp.gemini'])[1 + m % 3],
       'model-' || m, 'model-' || m || '-2025-01-01',
       CASE WHEN k IN ('llm', 'embedding') THEN inp END, CASE WHEN k = 'llm' THEN outp END,
       CASE WHEN k IN ('llm', 'embedding') THEN inp + outp END,
       CASE WHEN k = 'llm' THEN inp / 2 END, NULL, CASE WHEN k = 'llm' THEN outp / 10 END,
       CASE WHEN k IN ('llm', 'embedding') AND m < 11 THEN (inp * 1.5e-7 + outp * 6e-7) * (1 + m) END,
       CASE WHEN k IN ('llm', 'embedding') AND m < 11 THEN 2 END,
       CASE WHEN k IN ('llm', 'embedding') AND m < 11 THEN 'model-' || m END,
       CASE WHEN i % 7 = 0 THEN d / 5 END, 'stop',
       CASE WHEN i % 50 = 0 THEN 'rate_limited' END,
       'conv-' || (i % 50000), 'user-' || (i % 5000), NULL, CASE WHEN k = 'tool' THEN 'search' END
FROM (
  SELECT i,
         (extract(epoch FROM now()) * 1e9)::bigint - (i::bigint * 86400000) AS t,
         (200000000 + (i * 7919) % 3000000000)::bigint AS d,
         (i * 31) % 12 AS m,
         CASE WHEN i % 20 = 0 THEN 'embedding' WHEN i % 10 = 1 THEN 'tool' ELSE 'llm' END AS k,
         (100 + (i * 13) % 4000)::bigint AS inp, (10 + (i * 17) % 800)::bigint AS outp
  FROM generate_series(1::bigint, 1000000) i
) g;
ANALYZE llm_calls;
SELECT count(*) FROM llm_calls;
