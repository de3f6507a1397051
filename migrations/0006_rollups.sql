-- otelephant schema, version 6: rollups, so that reads cost what they show, not what is stored.
--
-- span_rollup and log_rollup are written by the writers in the transaction of the records they
-- count (README.md "Rollups"); service_edges by maintenance, which pairs each closed minute's
-- spans with their parents once. All three are partitioned by day like the records and kept as
-- long as their signal. Rows of a key are only added, never updated: reads sum them, and
-- maintenance folds a closed minute's rows of one key into one.
--
-- Spans and log records stored before this version are not counted until they are rebuilt:
-- `otelephant rollups rebuild` (README.md "Rollups").

-- Trace search reads spans newest first, a time window at a time, until its page is full; a
-- block range index finds a window's spans in a day's partition (spans arrive about in the
-- order they start) for a few kilobytes per day. Ranges are summarized as they fill.
CREATE INDEX spans_start_time ON spans USING brin (start_time_unix_nano) WITH (autosummarize = on);

-- Spans by the minute they started, resource, name, kind and status code.
CREATE TABLE span_rollup (
    minute_unix_nano bigint  NOT NULL,
    resource_id      bigint  NOT NULL,
    name             text    NOT NULL,
    kind             integer NOT NULL,
    -- 0 for spans without a Status message.
    status_code      integer NOT NULL,
    spans            bigint  NOT NULL,
    -- Their durations, end minus start, as a DDSketch at 1% relative accuracy (src/encode/sketch.rs).
    durations        bytea   NOT NULL
) PARTITION BY RANGE (minute_unix_nano);
CREATE TABLE span_rollup_default PARTITION OF span_rollup DEFAULT;
CREATE INDEX span_rollup_time ON span_rollup (minute_unix_nano);
CREATE INDEX span_rollup_resource_time ON span_rollup (resource_id, minute_unix_nano);

-- Log records by the minute of their partition time, resource and severity number.
CREATE TABLE log_rollup (
    minute_unix_nano bigint  NOT NULL,
    resource_id      bigint  NOT NULL,
    severity_number  integer NOT NULL,
    records          bigint  NOT NULL
) PARTITION BY RANGE (minute_unix_nano);
CREATE TABLE log_rollup_default PARTITION OF log_rollup DEFAULT;
CREATE INDEX log_rollup_time ON log_rollup (minute_unix_nano);

-- Calls from a span of one service to its child span in another, by the minute the child
-- started: their count, how many children failed, and the children's durations.
CREATE TABLE service_edges (
    minute_unix_nano bigint NOT NULL,
    parent_service   text   NOT NULL,
    child_service    text   NOT NULL,
    calls            bigint NOT NULL,
    errors           bigint NOT NULL,
    durations        bytea  NOT NULL
) PARTITION BY RANGE (minute_unix_nano);
CREATE TABLE service_edges_default PARTITION OF service_edges DEFAULT;
CREATE INDEX service_edges_time ON service_edges (minute_unix_nano);

-- Minutes with new child spans to pair with their parents: a row per minute per request,
-- written with the spans, taken by maintenance when it pairs the minute.
CREATE TABLE pairing_due (
    minute_unix_nano bigint NOT NULL
);
CREATE INDEX pairing_due_minute ON pairing_due (minute_unix_nano);

-- Child spans whose parent was not stored when their minute was paired: looked for again at
-- recheck_unix_nano, then after twice as long as they have waited, until rollups.parent_wait_secs
-- after first_seen_unix_nano; when the parent turns up, the minute is paired again.
CREATE TABLE pairing_orphans (
    minute_unix_nano     bigint NOT NULL,
    trace_id             bytea  NOT NULL,
    parent_span_id       bytea  NOT NULL,
    first_seen_unix_nano bigint NOT NULL,
    recheck_unix_nano    bigint NOT NULL
);
CREATE INDEX pairing_orphans_minute ON pairing_orphans (minute_unix_nano);
CREATE INDEX pairing_orphans_recheck ON pairing_orphans (recheck_unix_nano);
