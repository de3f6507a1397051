-- otelephant schema, version 11: log_rollup by resource, then minute.
--
-- Loki's API (README.md "Logs in Grafana") starts every read from the resources with records
-- in its range. With a service named, that is a resource or a few: this index answers whether
-- each has records in the range by a probe, where the time index made it read the range's
-- rows of every resource.
CREATE INDEX log_rollup_resource_time ON log_rollup (resource_id, minute_unix_nano);
