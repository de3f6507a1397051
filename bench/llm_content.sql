-- retention.llm_content at volume: 1,000,000 spans of yesterday, a fifth of them model calls
-- carrying their messages (about 2.5 KB of JSON text each), then the UPDATE the maintenance
-- pass runs on that day's partition (src/store/content.rs `statement`, its parameters written
-- out: the pattern is genai::content::key_pattern()). Run in a database otelephant has
-- migrated, with the schema on the path:
--   PGOPTIONS='-c search_path=content_bench' psql -d otelephant_content_bench -f bench/llm_content.sql
\set day_start '(extract(epoch FROM date_trunc(''day'', now()) - interval ''1 day'') * 1e9)::bigint'
TRUNCATE spans;
INSERT INTO spans (start_time_unix_nano, end_time_unix_nano, trace_id, span_id, trace_state, flags, name, kind,
                   resource_id, scope_id, attributes, dropped_attributes_count, dropped_events_count,
                   dropped_links_count, status_message)
SELECT :day_start + i::bigint * 86400, :day_start + i::bigint * 86400 + 1000000, decode(md5(i::text), 'hex'),
       decode(substr(md5('s' || i), 1, 16), 'hex'), '', 0,
       CASE WHEN i % 5 = 0 THEN 'chat gpt-4o-mini' ELSE 'GET /api/items' END, 3, 1, 1,
       CASE WHEN i % 5 = 0 THEN jsonb_build_object(
                'gen_ai.operation.name', 'chat', 'gen_ai.request.model', 'gpt-4o-mini',
                'gen_ai.usage.input_tokens', 1200, 'gen_ai.usage.output_tokens', 300,
                'gen_ai.input.messages', jsonb_build_array(
                    jsonb_build_object('role', 'system', 'parts', jsonb_build_array(jsonb_build_object('type', 'text', 'content', repeat('Be terse. ', 20)))),
                    jsonb_build_object('role', 'user', 'parts', jsonb_build_array(jsonb_build_object('type', 'text', 'content', repeat('question ' || i || ' ', 200)))))::text,
                'gen_ai.output.messages', jsonb_build_array(
                    jsonb_build_object('role', 'assistant', 'parts', jsonb_build_array(jsonb_build_object('type', 'text', 'content', repeat('answer ', 40)))))::text)
            ELSE jsonb_build_object('http.request.method', 'GET', 'url.path', '/api/items/' || i, 'http.response.status_code', 200)
       END, 0, 0, 0, ''
FROM generate_series(1::bigint, 1000000) i;
VACUUM ANALYZE spans;
SELECT pg_size_pretty(pg_total_relation_size(format('spans_p%s', to_char(now() - interval '1 day', 'YYYYMMDD'))::regclass)) AS before;
\timing on
SELECT format('UPDATE spans_p%s SET attributes = llm_content_stripped(attributes, %L, %L::jsonb), '
              'events = llm_content_stripped_events(events, %L, %L::jsonb) '
              'WHERE attributes @? %L::jsonpath OR events @? %L::jsonpath',
              to_char(now() - interval '1 day', 'YYYYMMDD'), p, m, p, m,
              format('$.keyvalue() ? (@.key like_regex "%s")', replace(p, '\', '\\')),
              format('$[*].attributes.keyvalue() ? (@.key like_regex "%s")', replace(p, '\', '\\'))) AS remove
FROM (SELECT '^(gen_ai\.input\.messages|gen_ai\.output\.messages|gen_ai\.system_instructions|gen_ai\.prompt|gen_ai\.completion|gen_ai\.tool\.call\.arguments|gen_ai\.tool\.call\.result|input\.value|output\.value|llm\.prompts|traceloop\.entity\.input|traceloop\.entity\.output|(llm\.input_messages\.|llm\.output_messages\.|gen_ai\.prompt\.|gen_ai\.completion\.|retrieval\.documents\.|embedding\.embeddings\.).+(\.content|\.arguments|\.text|\.url))$'::text AS p,
             '"[content removed after 3days]"'::text AS m) x \gset
:remove;
\timing off
VACUUM spans;
SELECT pg_size_pretty(pg_total_relation_size(format('spans_p%s', to_char(now() - interval '1 day', 'YYYYMMDD'))::regclass)) AS after_vacuum;
SELECT count(*) FILTER (WHERE attributes->>'gen_ai.input.messages' = '[content removed after 3days]') AS marked,
       count(*) FILTER (WHERE attributes ? 'gen_ai.request.model') AS calls FROM spans;
