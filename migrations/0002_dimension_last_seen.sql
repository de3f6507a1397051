-- otelephant schema, version 2: the day each resource, scope and series row was last written.
--
-- Writers send a dimension row again on the first request of each UTC day that references it,
-- moving last_seen on; maintenance garbage-collects rows that no record references and that
-- were not seen for a few days (see README.md "Retention").
ALTER TABLE resources ADD COLUMN last_seen date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date;
ALTER TABLE scopes ADD COLUMN last_seen date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date;
ALTER TABLE metric_series ADD COLUMN last_seen date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date;
