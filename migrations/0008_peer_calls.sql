-- otelephant schema, version 8: what services call that sends no spans of its own, so that the
-- service map can draw databases, queues and remote hosts as leaf nodes (README.md "Rollups").
--
-- Spans stored before this version are not counted until they are rebuilt:
-- `otelephant rollups rebuild` (README.md "Rollups").

-- Calls of client and producer spans by the minute they started, the caller's resource and
-- what the span's attributes name as its peer (src/encode/rollups.rs, `Peer`): written by the
-- writers with the spans, like span_rollup, and folded like it.
CREATE TABLE peer_calls (
    minute_unix_nano bigint  NOT NULL,
    resource_id      bigint  NOT NULL,
    -- 1 a database, 2 a queue, 3 a remote service or host.
    peer_kind        integer NOT NULL,
    peer             text    NOT NULL,
    calls            bigint  NOT NULL,
    errors           bigint  NOT NULL,
    -- Their durations, as a DDSketch at 1% relative accuracy (src/encode/sketch.rs).
    durations        bytea   NOT NULL
) PARTITION BY RANGE (minute_unix_nano);
CREATE TABLE peer_calls_default PARTITION OF peer_calls DEFAULT;
CREATE INDEX peer_calls_time ON peer_calls USING brin (minute_unix_nano) WITH (autosummarize = on);

-- Peers found to be services: pairing saw a span of `service` called by a client or producer
-- span of `caller_service` that named `peer`. Calls to these are drawn as the calls between
-- the services (service_edges), not as a leaf. One row per pair, its last sighting updated.
CREATE TABLE peer_services (
    caller_service      text    NOT NULL,
    peer_kind           integer NOT NULL,
    peer                text    NOT NULL,
    service             text    NOT NULL,
    last_seen_unix_nano bigint  NOT NULL,
    PRIMARY KEY (caller_service, peer_kind, peer, service)
);
