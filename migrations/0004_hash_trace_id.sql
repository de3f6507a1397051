-- otelephant schema, version 4: hash indexes for trace ids.
--
-- Every lookup by trace id is an equality (GetTrace, a search's trace summaries, logs of a
-- trace, a span's parent). A hash index answers it from 4-byte hash codes in buckets, where the
-- btree kept 16-byte keys in order: less of PostgreSQL's CPU to insert into, on ids that arrive
-- in random order, for more bytes where a trace has many spans (BENCHMARKS.md "The database's
-- cost per item"). Both spans' and log records' indexes are rebuilt, once, on every existing
-- partition.
DROP INDEX spans_trace_id;
CREATE INDEX spans_trace_id ON spans USING hash (trace_id);
DROP INDEX logs_trace_id;
CREATE INDEX logs_trace_id ON logs USING hash (trace_id) WHERE trace_id IS NOT NULL;
