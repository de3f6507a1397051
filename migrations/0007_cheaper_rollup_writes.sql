-- otelephant schema, version 7: rollups that cost ingest less (BENCHMARKS.md "Ingest with the
-- rollups"): block range indexes on their minutes, and calls between services paired from
-- candidates written with the spans.

-- Every writer adds rows of the current minute at once; in a btree on the minute they all land
-- on one leaf page, which cost PostgreSQL about 2 µs of CPU per span stored. The rows arrive in
-- the order of their minutes, which is what a block range index needs, and reads and folding
-- select by minute.
DROP INDEX span_rollup_time;
DROP INDEX span_rollup_resource_time;
CREATE INDEX span_rollup_time ON span_rollup USING brin (minute_unix_nano) WITH (autosummarize = on);
DROP INDEX log_rollup_time;
CREATE INDEX log_rollup_time ON log_rollup USING brin (minute_unix_nano) WITH (autosummarize = on);

-- Version 6 marked each minute holding child spans and paired the minute by looking up the
-- parent of every server, consumer and unspecified-kind child span in it, again whenever a late
-- child marked it. Now the writers write a candidate for each such child whose parent is not in
-- the same request under the same resource (a call from another service is always one; most
-- children within a service are not), maintenance looks up the candidates' parents only, and
-- service_edges rows are added, like span_rollup's, and folded (README.md "Rollups").

CREATE TABLE pairing_candidates (
    -- The minute the child started, which its call is counted in.
    minute_unix_nano bigint  NOT NULL,
    trace_id         bytea   NOT NULL,
    parent_span_id   bytea   NOT NULL,
    -- The child's resource, status code (0 without a Status message) and duration.
    resource_id      bigint  NOT NULL,
    status_code      integer NOT NULL,
    duration_nanos   bigint  NOT NULL,
    stored_unix_nano bigint  NOT NULL
        DEFAULT (extract(epoch FROM statement_timestamp()) * 1000000000)::bigint,
    -- When to look for the parent: 10 s after it was stored (exporters send a span within
    -- seconds of its end), then later each time it is not found.
    due_unix_nano    bigint  NOT NULL
        DEFAULT (extract(epoch FROM statement_timestamp()) * 1000000000)::bigint + 10000000000
);
CREATE INDEX pairing_candidates_due ON pairing_candidates (due_unix_nano);

-- The minutes version 6 still had to pair, or to pair again for a waiting child, are paired
-- afresh: their calls are counted again from candidates for all their child spans.
DO $$
DECLARE
    minute bigint;
BEGIN
    FOR minute IN SELECT minute_unix_nano FROM pairing_due
                  UNION SELECT minute_unix_nano FROM pairing_orphans LOOP
        DELETE FROM service_edges WHERE minute_unix_nano = minute;
        INSERT INTO pairing_candidates
            (minute_unix_nano, trace_id, parent_span_id, resource_id, status_code, duration_nanos)
        SELECT minute, s.trace_id, s.parent_span_id, s.resource_id, coalesce(s.status_code, 0),
               -- end minus start as the writers compute it: u64 times, wrapping.
               CASE WHEN (s.start_time_unix_nano < 0) = (s.end_time_unix_nano < 0)
                    THEN s.end_time_unix_nano - s.start_time_unix_nano
                    ELSE ((((s.end_time_unix_nano::numeric - s.start_time_unix_nano::numeric)
                            + 9223372036854775808) % 18446744073709551616 + 18446744073709551616)
                          % 18446744073709551616 - 9223372036854775808)::bigint END
        FROM spans s
        WHERE s.start_time_unix_nano >= minute AND s.start_time_unix_nano < minute + 60000000000
          AND s.parent_span_id IS NOT NULL AND s.kind IN (0, 2, 5);
    END LOOP;
END
$$;

DROP TABLE pairing_due;
DROP TABLE pairing_orphans;
