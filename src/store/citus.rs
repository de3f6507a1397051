//! Citus: whether the database is a Citus cluster, and laying otelephant's tables out over it
//! once the migrations have made them. Resources and scopes become reference tables (a copy on
//! every node, so every record's join to them stays on its node); spans are distributed by
//! `trace_id`, so that a trace lives on one shard; metric series and their points by
//! `series_id`, co-located; log records by `timestamp_unix_nano`; the rollups by their minute;
//! LLM calls by `trace_id`, co-located with their spans (see [`LAYOUT`]). Daily partitions of a
//! distributed table are distributed as they are created.

use deadpool_postgres::Object;

use super::StoreError;
use crate::config::CitusMode;

/// How each table is laid out on a Citus cluster: reference tables, then distributed ones with
/// their distribution column and the table they are co-located with.
///
/// A log record may have no trace id, and a distribution column cannot be NULL; its own time,
/// in nanoseconds, is never NULL and is as good as unique, so records spread evenly over the
/// shards. Log searches are by time range and service, which read every shard either way.
const LAYOUT: &[(&str, Placement)] = &[
    ("resources", Placement::Reference),
    ("scopes", Placement::Reference),
    ("spans", Placement::Distributed { column: "trace_id", colocate_with: None }),
    ("logs", Placement::Distributed { column: "timestamp_unix_nano", colocate_with: None }),
    ("metric_series", Placement::Distributed { column: "series_id", colocate_with: None }),
    (
        "metric_points_number",
        Placement::Distributed { column: "series_id", colocate_with: Some("metric_series") },
    ),
    (
        "metric_points_histogram",
        Placement::Distributed { column: "series_id", colocate_with: Some("metric_series") },
    ),
    (
        "metric_points_exp_histogram",
        Placement::Distributed { column: "series_id", colocate_with: Some("metric_series") },
    ),
    (
        "metric_points_summary",
        Placement::Distributed { column: "series_id", colocate_with: Some("metric_series") },
    ),
    ("span_rollup", Placement::Distributed { column: "minute_unix_nano", colocate_with: None }),
    ("log_rollup", Placement::Distributed { column: "minute_unix_nano", colocate_with: Some("span_rollup") }),
    (
        "service_edges",
        Placement::Distributed { column: "minute_unix_nano", colocate_with: Some("span_rollup") },
    ),
    ("peer_calls", Placement::Distributed { column: "minute_unix_nano", colocate_with: Some("span_rollup") }),
    ("llm_calls", Placement::Distributed { column: "trace_id", colocate_with: Some("spans") }),
    ("pairing_candidates", Placement::Coordinator),
    ("peer_services", Placement::Coordinator),
    ("llm_content_removed", Placement::Coordinator),
];

/// Functions that statements on distributed tables call, so made on every worker too.
const FUNCTIONS: &[&str] =
    &["llm_content_stripped(jsonb, text, jsonb)", "llm_content_stripped_events(jsonb, text, jsonb)"];

enum Placement {
    Reference,
    /// A plain table of the coordinator's: maintenance's own bookkeeping.
    Coordinator,
    Distributed {
        column: &'static str,
        colocate_with: Option<&'static str>,
    },
}

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('otelephant citus ' || current_schema()))";

/// How the tables are laid out, for the few queries that are written differently for Citus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// On one PostgreSQL server.
    #[default]
    SingleNode,
    /// Over a Citus cluster (see [`LAYOUT`]).
    Citus,
}

/// What a Citus cluster looks like to otelephant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The extension's version.
    pub version: String,
    /// Worker nodes registered in this database.
    pub workers: i64,
}

/// Finds out whether the database is one otelephant lays out for Citus, as `mode` says.
///
/// # Errors
/// [`StoreError::Citus`] when `mode` is `on` and the database lacks the extension, or when
/// the server runs Citus but this database was left without it or without worker nodes (its
/// shards would all stay on the coordinator); database errors.
pub async fn detect(client: &Object, mode: CitusMode) -> Result<Option<Cluster>, StoreError> {
    if mode == CitusMode::Off {
        return Ok(None);
    }
    let database: String = client.query_one("SELECT current_database()", &[]).await?.get(0);
    let version: Option<String> = client
        .query_opt("SELECT extversion FROM pg_extension WHERE extname = 'citus'", &[])
        .await?
        .map(|row| row.get(0));
    let Some(version) = version else {
        let preloaded: bool = client
            .query_one("SELECT current_setting('shared_preload_libraries') ~ '(^|[ ,])citus([ ,]|$)'", &[])
            .await?
            .get(0);
        return match (mode, preloaded) {
            (CitusMode::Auto, false) => Ok(None),
            _ => Err(StoreError::Citus(format!(
                "database {database} has no citus extension{}: run CREATE EXTENSION citus in it on every node \
                 and register the workers with citus_add_node on the coordinator (README: Scaling out with \
                 Citus), or set postgres.citus = \"off\" to store it on this server alone",
                if preloaded { " although the server runs Citus" } else { "" }
            ))),
        };
    };
    let workers: i64 = client
        .query_one("SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0", &[])
        .await?
        .get(0);
    if workers == 0 {
        return Err(StoreError::Citus(format!(
            "database {database} has the citus extension but no worker nodes: every shard would stay on the \
             coordinator. Register the workers in this database with citus_add_node on the coordinator \
             (README: Scaling out with Citus), or set postgres.citus = \"off\""
        )));
    }
    Ok(Some(Cluster { version, workers }))
}

/// Makes the tables of [`LAYOUT`] reference or distributed tables, those that are not yet,
/// under a lock so that replicas starting together take turns. Returns how many it laid out.
///
/// # Errors
/// Database errors.
pub async fn lay_out(client: &mut Object) -> Result<usize, StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(LOCK).await?;
    let mut laid_out = 0;
    for (table, placement) in LAYOUT {
        if matches!(placement, Placement::Coordinator) {
            continue;
        }
        let done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1))",
                &[table],
            )
            .await?
            .get(0);
        if done {
            continue;
        }
        match placement {
            Placement::Reference => {
                tx.execute("SELECT create_reference_table($1::text::regclass)", &[table]).await?;
            }
            Placement::Coordinator => {}
            Placement::Distributed { column, colocate_with } => {
                tx.execute(
                    "SELECT create_distributed_table($1::text::regclass, $2, colocate_with => $3)",
                    &[table, column, &colocate_with.unwrap_or("default")],
                )
                .await?;
            }
        }
        laid_out += 1;
    }
    for function in FUNCTIONS {
        let done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_dist_object \
                 WHERE classid = 'pg_proc'::regclass AND objid = $1::text::regprocedure)",
                &[function],
            )
            .await?
            .get(0);
        if !done {
            tx.execute("SELECT create_distributed_function($1::text::regprocedure)", &[function]).await?;
            laid_out += 1;
        }
    }
    tx.commit().await?;
    Ok(laid_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_place_on_citus() {
        let mut laid_out: Vec<&str> = LAYOUT.iter().map(|(table, _)| *table).collect();
        let mut tables: Vec<&str> = crate::encode::TABLES.iter().map(|table| table.name).collect();
        // Maintenance's own, never copied into by a writer.
        tables.extend(["peer_services", "llm_content_removed"]);
        laid_out.sort_unstable();
        tables.sort_unstable();
        assert_eq!(laid_out, tables);
    }
}
