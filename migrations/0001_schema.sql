-- otelephant schema, version 1.
--
-- Times are unsigned 64-bit nanoseconds since the Unix epoch, stored in bigint columns named
-- *_unix_nano (a value above 2^63-1, which would be after the year 2262, is stored with its bits
-- reinterpreted as a negative number). uint32 fields (flags, dropped counts) are bigint so that
-- every one of their 32 bits reads back as sent. uint64 counts are bigint with the same
-- reinterpretation as times. Enums are integer, so values a newer OTLP version adds survive.
-- Attribute maps and AnyValues are jsonb; README.md "Attribute mapping" describes the encoding.

-- Nanoseconds since the epoch as timestamptz (microsecond precision, the finest PostgreSQL has).
CREATE FUNCTION otel_ns_to_timestamptz(ns bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN timestamptz 'epoch' + (ns / 1000) * interval '1 microsecond';

-- Resources are stored once, keyed by a stable hash of their content.
CREATE TABLE resources (
    resource_id              bigint PRIMARY KEY,
    attributes               jsonb  NOT NULL,
    dropped_attributes_count bigint NOT NULL,
    -- Resource.entity_refs as a jsonb array; NULL when there are none.
    entity_refs              jsonb,
    -- The schema_url of the ResourceSpans/ResourceMetrics/ResourceLogs that carried the resource.
    schema_url               text   NOT NULL,
    service_name             text GENERATED ALWAYS AS (attributes ->> 'service.name') STORED,
    first_seen               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resources_service_name ON resources (service_name);

-- Instrumentation scopes, stored once, keyed by a stable hash of their content.
CREATE TABLE scopes (
    scope_id                 bigint PRIMARY KEY,
    name                     text   NOT NULL,
    version                  text   NOT NULL,
    attributes               jsonb  NOT NULL,
    dropped_attributes_count bigint NOT NULL,
    -- The schema_url of the ScopeSpans/ScopeMetrics/ScopeLogs that carried the scope.
    schema_url               text   NOT NULL,
    first_seen               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE spans (
    start_time_unix_nano     bigint   NOT NULL,
    end_time_unix_nano       bigint   NOT NULL,
    trace_id                 bytea    NOT NULL,
    span_id                  bytea    NOT NULL,
    -- NULL for a root span (OTLP sends an empty parent_span_id).
    parent_span_id           bytea,
    trace_state              text     NOT NULL,
    flags                    bigint   NOT NULL,
    name                     text     NOT NULL,
    kind                     integer  NOT NULL,
    resource_id              bigint   NOT NULL,
    scope_id                 bigint   NOT NULL,
    attributes               jsonb    NOT NULL,
    dropped_attributes_count bigint   NOT NULL,
    -- [{"time_unix_nano", "name", "attributes"?, "dropped_attributes_count"?}]; NULL when none.
    events                   jsonb,
    dropped_events_count     bigint   NOT NULL,
    -- [{"trace_id", "span_id", "trace_state"?, "flags"?, "attributes"?, "dropped_attributes_count"?}].
    links                    jsonb,
    dropped_links_count      bigint   NOT NULL,
    -- NULL when the span carried no Status message.
    status_code              integer,
    status_message           text     NOT NULL
) PARTITION BY RANGE (start_time_unix_nano);
CREATE TABLE spans_default PARTITION OF spans DEFAULT;
CREATE INDEX spans_trace_id ON spans (trace_id);
CREATE INDEX spans_resource_time ON spans (resource_id, start_time_unix_nano);

CREATE TABLE logs (
    -- Partition key: time_unix_nano, or observed_time_unix_nano when that is unset (0), or the
    -- time otelephant received the record when both are unset.
    timestamp_unix_nano      bigint  NOT NULL,
    time_unix_nano           bigint  NOT NULL,
    observed_time_unix_nano  bigint  NOT NULL,
    severity_number          integer NOT NULL,
    severity_text            text    NOT NULL,
    -- The body AnyValue; SQL NULL when the record has no body, JSON null for an empty AnyValue.
    body                     jsonb,
    attributes               jsonb   NOT NULL,
    dropped_attributes_count bigint  NOT NULL,
    flags                    bigint  NOT NULL,
    -- NULL when the record carries no trace/span context.
    trace_id                 bytea,
    span_id                  bytea,
    event_name               text    NOT NULL,
    resource_id              bigint  NOT NULL,
    scope_id                 bigint  NOT NULL
) PARTITION BY RANGE (timestamp_unix_nano);
CREATE TABLE logs_default PARTITION OF logs DEFAULT;
CREATE INDEX logs_time ON logs USING brin (timestamp_unix_nano);
CREATE INDEX logs_trace_id ON logs (trace_id) WHERE trace_id IS NOT NULL;

-- A metric series: the metric's identity, one set of point attributes, a resource and a scope.
-- Points reference it instead of repeating all of that on every point.
CREATE TABLE metric_series (
    series_id                bigint PRIMARY KEY,
    metric_name              text    NOT NULL,
    metric_type              text    NOT NULL
        CHECK (metric_type IN ('gauge', 'sum', 'histogram', 'exponential_histogram', 'summary')),
    description              text    NOT NULL,
    unit                     text    NOT NULL,
    -- NULL for gauges and summaries, which have no temporality.
    aggregation_temporality  integer,
    -- NULL except for sums.
    is_monotonic             boolean,
    -- Metric.metadata, an attribute map.
    metadata                 jsonb   NOT NULL,
    attributes               jsonb   NOT NULL,
    resource_id              bigint  NOT NULL,
    scope_id                 bigint  NOT NULL,
    first_seen               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX metric_series_name ON metric_series (metric_name);

-- Gauge and sum points.
CREATE TABLE metric_points_number (
    time_unix_nano           bigint NOT NULL,
    start_time_unix_nano     bigint NOT NULL,
    series_id                bigint NOT NULL,
    -- At most one of value_int and value_double is set; both NULL when the point has no value.
    value_int                bigint,
    value_double             double precision,
    flags                    bigint NOT NULL,
    -- [{"time_unix_nano", "as_int"|"as_double", "span_id"?, "trace_id"?, "filtered_attributes"?}].
    exemplars                jsonb
) PARTITION BY RANGE (time_unix_nano);
CREATE TABLE metric_points_number_default PARTITION OF metric_points_number DEFAULT;
CREATE INDEX metric_points_number_series_time ON metric_points_number (series_id, time_unix_nano);

CREATE TABLE metric_points_histogram (
    time_unix_nano           bigint NOT NULL,
    start_time_unix_nano     bigint NOT NULL,
    series_id                bigint NOT NULL,
    count                    bigint NOT NULL,
    sum                      double precision,
    min                      double precision,
    max                      double precision,
    bucket_counts            bigint[] NOT NULL,
    explicit_bounds          double precision[] NOT NULL,
    flags                    bigint NOT NULL,
    exemplars                jsonb
) PARTITION BY RANGE (time_unix_nano);
CREATE TABLE metric_points_histogram_default PARTITION OF metric_points_histogram DEFAULT;
CREATE INDEX metric_points_histogram_series_time ON metric_points_histogram (series_id, time_unix_nano);

CREATE TABLE metric_points_exp_histogram (
    time_unix_nano           bigint  NOT NULL,
    start_time_unix_nano     bigint  NOT NULL,
    series_id                bigint  NOT NULL,
    count                    bigint  NOT NULL,
    sum                      double precision,
    min                      double precision,
    max                      double precision,
    scale                    integer NOT NULL,
    zero_count               bigint  NOT NULL,
    zero_threshold           double precision NOT NULL,
    -- The offsets are NULL when the point carried no positive (negative) buckets message.
    positive_offset          integer,
    positive_bucket_counts   bigint[] NOT NULL,
    negative_offset          integer,
    negative_bucket_counts   bigint[] NOT NULL,
    flags                    bigint  NOT NULL,
    exemplars                jsonb
) PARTITION BY RANGE (time_unix_nano);
CREATE TABLE metric_points_exp_histogram_default PARTITION OF metric_points_exp_histogram DEFAULT;
CREATE INDEX metric_points_exp_histogram_series_time ON metric_points_exp_histogram (series_id, time_unix_nano);

CREATE TABLE metric_points_summary (
    time_unix_nano           bigint NOT NULL,
    start_time_unix_nano     bigint NOT NULL,
    series_id                bigint NOT NULL,
    count                    bigint NOT NULL,
    sum                      double precision NOT NULL,
    -- quantile_values[i] is the value at quantiles[i].
    quantiles                double precision[] NOT NULL,
    quantile_values          double precision[] NOT NULL,
    flags                    bigint NOT NULL
) PARTITION BY RANGE (time_unix_nano);
CREATE TABLE metric_points_summary_default PARTITION OF metric_points_summary DEFAULT;
CREATE INDEX metric_points_summary_series_time ON metric_points_summary (series_id, time_unix_nano);

-- Creates the daily partition of `parent` for `day` (UTC), keyed on `key`, unless it exists.
-- Rows that already landed in the default partition for that day move into the new partition,
-- so late or early data never blocks partition creation. Returns whether it created one.
CREATE FUNCTION otel_create_daily_partition(parent text, key text, day date) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    lo   bigint := (extract(epoch FROM day::timestamp) * 1000000000)::bigint;
    hi   bigint := lo + 86400 * 1000000000::bigint;
    part text   := parent || '_p' || to_char(day, 'YYYYMMDD');
    dflt text   := parent || '_default';
    stray boolean;
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Writers take ROW EXCLUSIVE; this waits for them and keeps new rows out until commit.
    EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)', dflt, key, key)
        INTO stray USING lo, hi;
    IF NOT stray THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                       part, parent, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       part, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', dflt, key, key, part)
            USING lo, hi;
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       parent, part, lo, hi);
    END IF;
    RETURN true;
END
$$;

-- Views for people and Grafana: timestamptz columns, hex ids, service_name. Filter on the
-- *_unix_nano columns (Grafana: $__unixEpochNanoFilter) to let PostgreSQL skip partitions.
CREATE VIEW spans_view AS
SELECT otel_ns_to_timestamptz(s.start_time_unix_nano) AS start_time,
       otel_ns_to_timestamptz(s.end_time_unix_nano) AS end_time,
       (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6 AS duration_ms,
       r.service_name,
       encode(s.trace_id, 'hex') AS trace_id,
       encode(s.span_id, 'hex') AS span_id,
       encode(s.parent_span_id, 'hex') AS parent_span_id,
       s.name,
       CASE s.kind WHEN 0 THEN 'unspecified' WHEN 1 THEN 'internal' WHEN 2 THEN 'server'
                   WHEN 3 THEN 'client' WHEN 4 THEN 'producer' WHEN 5 THEN 'consumer'
                   ELSE s.kind::text END AS kind,
       CASE s.status_code WHEN 1 THEN 'ok' WHEN 2 THEN 'error' ELSE 'unset' END AS status,
       s.status_message,
       s.attributes,
       s.events,
       s.links,
       r.attributes AS resource_attributes,
       sc.name AS scope_name,
       sc.version AS scope_version,
       s.start_time_unix_nano,
       s.end_time_unix_nano
FROM spans s
LEFT JOIN resources r USING (resource_id)
LEFT JOIN scopes sc USING (scope_id);

CREATE VIEW logs_view AS
SELECT otel_ns_to_timestamptz(l.timestamp_unix_nano) AS time,
       r.service_name,
       l.severity_number,
       l.severity_text,
       CASE jsonb_typeof(l.body) WHEN 'string' THEN l.body #>> '{}' ELSE l.body::text END AS body,
       l.attributes,
       encode(l.trace_id, 'hex') AS trace_id,
       encode(l.span_id, 'hex') AS span_id,
       l.event_name,
       r.attributes AS resource_attributes,
       sc.name AS scope_name,
       l.timestamp_unix_nano
FROM logs l
LEFT JOIN resources r USING (resource_id)
LEFT JOIN scopes sc USING (scope_id);

CREATE VIEW metric_points_view AS
SELECT otel_ns_to_timestamptz(p.time_unix_nano) AS time,
       r.service_name,
       m.metric_name,
       m.metric_type,
       m.unit,
       coalesce(p.value_double, p.value_int::double precision) AS value,
       m.attributes,
       r.attributes AS resource_attributes,
       p.series_id,
       p.time_unix_nano
FROM metric_points_number p
JOIN metric_series m USING (series_id)
LEFT JOIN resources r USING (resource_id);

CREATE VIEW metric_histograms_view AS
SELECT otel_ns_to_timestamptz(p.time_unix_nano) AS time,
       r.service_name,
       m.metric_name,
       m.unit,
       p.count,
       p.sum,
       p.min,
       p.max,
       p.bucket_counts,
       p.explicit_bounds,
       m.attributes,
       p.series_id,
       p.time_unix_nano
FROM metric_points_histogram p
JOIN metric_series m USING (series_id)
LEFT JOIN resources r USING (resource_id);
