-- otelephant schema, version 10: LLM message content kept for less time than its records
-- (retention.llm_content; README.md "Message content").
--
-- The partitions whose content the maintenance pass has removed, so that each is done once.
CREATE TABLE llm_content_removed (
    partition   text        PRIMARY KEY,
    records     bigint      NOT NULL,
    removed_at  timestamptz NOT NULL DEFAULT now()
);

-- An attribute map with the value of every key matching `pattern` (the content keys,
-- src/encode/genai/content.rs) replaced by `mark`. Functions, so that on a Citus cluster each
-- worker runs them over its own shards (the UPDATE's subqueries could not be pushed down);
-- IMMUTABLE, as Citus requires of what an UPDATE calls, which they are: the same maps in, the
-- same map out.
CREATE FUNCTION llm_content_stripped(map jsonb, pattern text, mark jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(map) = 'object' THEN coalesce(
        (SELECT jsonb_object_agg(k, CASE WHEN k ~ pattern THEN mark ELSE v END) FROM jsonb_each(map) AS e(k, v)),
        map)
    ELSE map END
$$;

-- A span's events with the attributes of each stripped as above (the same subquery: a
-- function's body finds no other function of this schema on a worker's search path).
CREATE FUNCTION llm_content_stripped_events(events jsonb, pattern text, mark jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(events) = 'array' THEN coalesce(
        (SELECT jsonb_agg(
             CASE WHEN jsonb_typeof(x.ev->'attributes') = 'object' THEN jsonb_set(x.ev, '{attributes}', coalesce(
                 (SELECT jsonb_object_agg(k, CASE WHEN k ~ pattern THEN mark ELSE v END)
                  FROM jsonb_each(x.ev->'attributes') AS e(k, v)),
                 x.ev->'attributes'))
             ELSE x.ev END ORDER BY x.i)
         FROM jsonb_array_elements(events) WITH ORDINALITY AS x(ev, i)),
        events)
    ELSE events END
$$;
