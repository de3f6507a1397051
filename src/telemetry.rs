//! otelephant's own metrics, served in the Prometheus text format on the admin port's `/metrics`.
//!
//! Each server has its own recorder (no global one), so several servers in one process, as in
//! the tests, keep separate counts. Counters and histograms are registered by name and labels
//! when recorded; gauges that mirror other state (queue depth, pool connections) are read when
//! the metrics are scraped.

use std::sync::Arc;

use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// Items in requests that were decoded (stored or not).
pub const RECEIVED_ITEMS: &str = "otelephant_received_items_total";
/// Items committed to the database.
pub const ACCEPTED_ITEMS: &str = "otelephant_accepted_items_total";
/// Items not stored, by reason.
pub const REJECTED_ITEMS: &str = "otelephant_rejected_items_total";
/// Export requests by how they were answered.
pub const REQUESTS: &str = "otelephant_requests_total";
pub const QUEUE_BYTES: &str = "otelephant_queue_bytes";
pub const QUEUE_CAPACITY_BYTES: &str = "otelephant_queue_capacity_bytes";
pub const INTAKE_BYTES: &str = "otelephant_intake_bytes";
pub const INTAKE_CAPACITY_BYTES: &str = "otelephant_intake_capacity_bytes";
pub const BATCH_ROWS: &str = "otelephant_batch_rows";
pub const BATCH_REQUESTS: &str = "otelephant_batch_requests";
pub const COPY_SECONDS: &str = "otelephant_copy_duration_seconds";
pub const COMMIT_SECONDS: &str = "otelephant_commit_duration_seconds";
pub const DATABASE_ERRORS: &str = "otelephant_database_errors_total";
pub const BATCH_RETRIES: &str = "otelephant_batch_retries_total";
pub const POOL_CONNECTIONS: &str = "otelephant_pool_connections";
pub const POOL_MAX_CONNECTIONS: &str = "otelephant_pool_max_connections";
pub const PARTITIONS_CREATED: &str = "otelephant_partitions_created_total";
pub const PARTITIONS_DROPPED: &str = "otelephant_partitions_dropped_total";
pub const PARTITION_DROPS_FAILED: &str = "otelephant_partition_drops_failed_total";
pub const PARTITIONS_CONVERTED: &str = "otelephant_partitions_converted_total";
pub const PARTITION_CONVERSIONS_FAILED: &str = "otelephant_partition_conversions_failed_total";
pub const LLM_CONTENT_REMOVED: &str = "otelephant_llm_content_removed_total";
pub const DIMENSIONS_COLLECTED: &str = "otelephant_dimensions_collected_total";
pub const ROLLUP_ROWS_FOLDED: &str = "otelephant_rollup_rows_folded_total";
pub const ROLLUP_SPANS_PAIRED: &str = "otelephant_rollup_spans_paired_total";
pub const BUILD_INFO: &str = "otelephant_build_info";

/// The help of `otelephant_requests_total`; its labels are `receive::outcome::Outcome`'s (a
/// test holds the two together).
pub const REQUESTS_HELP: &str = "Export requests by outcome: ok, partial, invalid, too_large, too_slow, unauthenticated, overloaded, unavailable, refused, shutting_down, error.";

/// What each metric means, for the exposition's `# HELP` lines.
const DESCRIPTIONS: &[(&str, Option<Unit>, &str)] = &[
    (RECEIVED_ITEMS, None, "Spans, metric data points or log records in export requests that could be decoded."),
    (ACCEPTED_ITEMS, None, "Items committed to the database and acknowledged."),
    (
        REJECTED_ITEMS,
        None,
        "Items not stored: invalid (refused by rule, reported as partial success), refused (by the database), overloaded, unavailable (database unreachable), shutting_down.",
    ),
    (REQUESTS, None, REQUESTS_HELP),
    (QUEUE_BYTES, Some(Unit::Bytes), "Memory held by encoded rows waiting in the queue or in unfinished batches."),
    (QUEUE_CAPACITY_BYTES, Some(Unit::Bytes), "pipeline.queue_bytes."),
    (INTAKE_BYTES, Some(Unit::Bytes), "Room reserved by requests on their way in (received, decoded, encoded, not yet queued)."),
    (INTAKE_CAPACITY_BYTES, Some(Unit::Bytes), "pipeline.intake_bytes."),
    (BATCH_ROWS, None, "Rows per committed batch (all tables)."),
    (BATCH_REQUESTS, None, "Export requests per committed batch."),
    (COPY_SECONDS, Some(Unit::Seconds), "Time to stream a batch's rows through COPY (all tables), before the commit."),
    (COMMIT_SECONDS, Some(Unit::Seconds), "Time to commit a batch's transaction."),
    (DATABASE_ERRORS, None, "Failed batch writes by kind: connection (no connection or it broke), refused (the data), other."),
    (BATCH_RETRIES, None, "Batches written again after a failure."),
    (POOL_CONNECTIONS, None, "Database connections in the pool, by state (in_use, idle)."),
    (POOL_MAX_CONNECTIONS, None, "postgres.pool_size."),
    (PARTITIONS_CREATED, None, "Daily partitions created."),
    (PARTITIONS_DROPPED, None, "Expired daily partitions dropped by retention."),
    (PARTITION_DROPS_FAILED, None, "Drops of expired partitions that timed out waiting for their lock (retried)."),
    (PARTITIONS_CONVERTED, None, "Closed days' partitions rewritten in columnar storage."),
    (PARTITION_CONVERSIONS_FAILED, None, "Columnar conversions that timed out waiting for their lock (retried)."),
    (LLM_CONTENT_REMOVED, None, "Spans and log records whose LLM message content retention.llm_content replaced with a mark."),
    (DIMENSIONS_COLLECTED, None, "Unreferenced resource, scope and series rows deleted, by kind."),
    (ROLLUP_ROWS_FOLDED, None, "Rollup rows of closed minutes folded into one per key (rows before minus rows after)."),
    (ROLLUP_SPANS_PAIRED, None, "Child spans paired with their parents (those of another service counted as calls between services)."),
    (BUILD_INFO, None, "Always 1; the labels name the build."),
];

/// Bucket bounds for the duration histograms, in seconds.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bucket bounds for the batch size histograms.
const SIZE_BUCKETS: &[f64] =
    &[1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0, 250_000.0];

/// A server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let buckets = |builder: PrometheusBuilder, name: &str, bounds: &[f64]| {
            builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)
                .expect("bucket bounds are not empty")
        };
        let mut builder = PrometheusBuilder::new();
        for name in [COPY_SECONDS, COMMIT_SECONDS] {
            builder = buckets(builder, name, SECONDS_BUCKETS);
        }
        for name in [BATCH_ROWS, BATCH_REQUESTS] {
            builder = buckets(builder, name, SIZE_BUCKETS);
        }
        let recorder = builder.build_recorder();
        for &(name, unit, help) in DESCRIPTIONS {
            let kind = name.rsplit('_').next();
            let key = name.into();
            match kind {
                Some("total") => recorder.describe_counter(key, unit, help.into()),
                _ if [COPY_SECONDS, COMMIT_SECONDS, BATCH_ROWS, BATCH_REQUESTS].contains(&name) => {
                    recorder.describe_histogram(key, unit, help.into());
                }
                _ => recorder.describe_gauge(key, unit, help.into()),
            }
        }
        let handle = recorder.handle();
        let telemetry = Self { inner: Arc::new(Inner { recorder, handle }) };
        telemetry.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        telemetry
    }

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        Key::from_parts(name, labels.iter().map(|&(k, v)| Label::new(k, v)).collect::<Vec<_>>())
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.inner.recorder.register_counter(&Self::key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Histogram {
        self.inner.recorder.register_histogram(&Self::key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)], value: f64) {
        self.inner.recorder.register_gauge(&Self::key(name, labels), &METADATA).set(value);
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.inner.handle.run_upkeep();
        self.inner.handle.render()
    }
}
