-- Large jsonb values (4 kB stack traces, 20,000 rows, twice) inserted under pglz and lz4:
-- insert time, bytes per value, and a scan that reads them back.
--     psql -h 127.0.0.1 -U postgres -d postgres -f bench/jsonb_compression.sql
DROP DATABASE IF EXISTS otelephant_jsonb_bench;
CREATE DATABASE otelephant_jsonb_bench;
\c otelephant_jsonb_bench
CREATE FUNCTION gen() RETURNS TABLE (g int, body jsonb) LANGUAGE sql AS $$
    SELECT g, jsonb_build_object(
        'stacktrace', (SELECT string_agg('at com.example.service.Handler' || (g * 7 + i) % 97
                                         || '.process(Handler.java:' || i || ')', E'\n')
                       FROM generate_series(1, 60) i),
        'thread', 'worker-' || g % 16, 'n', g)
    FROM generate_series(1, 20000) g
$$;
CREATE TABLE with_pglz (g int, body jsonb COMPRESSION pglz);
CREATE TABLE with_lz4 (g int, body jsonb COMPRESSION lz4);
\timing on
INSERT INTO with_pglz SELECT * FROM gen();
INSERT INTO with_lz4 SELECT * FROM gen();
INSERT INTO with_pglz SELECT * FROM gen();
INSERT INTO with_lz4 SELECT * FROM gen();
SELECT count(*) FROM with_pglz WHERE body->>'thread' = 'worker-3';
SELECT count(*) FROM with_lz4 WHERE body->>'thread' = 'worker-3';
SELECT count(*) FROM with_pglz WHERE body->>'thread' = 'worker-3';
SELECT count(*) FROM with_lz4 WHERE body->>'thread' = 'worker-3';
\timing off
SELECT 'pglz' AS method, avg(pg_column_size(body))::int AS bytes_per_value FROM with_pglz
UNION ALL
SELECT 'lz4', avg(pg_column_size(body))::int FROM with_lz4;
SELECT 'generating the rows alone' AS baseline;
\timing on
SELECT count(*) FROM gen();
\c postgres
DROP DATABASE otelephant_jsonb_bench;
