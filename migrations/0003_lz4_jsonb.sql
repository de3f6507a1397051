-- otelephant schema, version 3: lz4 for the large jsonb values of the record tables.
--
-- PostgreSQL compresses a value only when its row passes about 2 kB (typical spans, log records
-- and points are smaller and are stored as they are), so this applies to the large ones: stack
-- traces, SQL statements, big log bodies. For those, lz4 compressed 4 kB JSON values about three
-- times faster than the default pglz and read them back about a third faster, for values 14% larger
-- (BENCHMARKS.md "Storage"). A server built without lz4 keeps pglz.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT c.oid::regclass AS rel, a.attname
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = current_schema()::regnamespace
          AND a.atttypid = 'jsonb'::regtype AND a.attnum > 0 AND NOT a.attisdropped
          AND (c.relname IN ('spans', 'logs', 'metric_points_number', 'metric_points_histogram',
                             'metric_points_exp_histogram')
               OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent IN
                              ('spans'::regclass, 'logs'::regclass, 'metric_points_number'::regclass,
                               'metric_points_histogram'::regclass, 'metric_points_exp_histogram'::regclass)))
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET COMPRESSION lz4', col.rel, col.attname);
    END LOOP;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4; jsonb values stay pglz-compressed';
END
$$;

-- A partition made for rows already in the catch-all is built with LIKE, which copies the
-- columns' compression only when asked to.
-- Creates the daily partition of `parent` for `day` (UTC), keyed on `key`, unless it exists.
-- Rows that already landed in the default partition for that day move into the new partition,
-- so late or early data never blocks partition creation. Returns whether it created one.
CREATE OR REPLACE FUNCTION otel_create_daily_partition(parent text, key text, day date) RETURNS boolean
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
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMPRESSION)',
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
