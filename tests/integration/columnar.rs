//! Columnar storage for closed days, where PostgreSQL has the `citus_columnar` extension: a
//! day's partitions are rewritten once its day is `storage.columnar_after` behind, hand back
//! exactly what they held, keep answering lookups through their indexes, take late records,
//! and go with retention like any other partition. A conversion that cannot get its lock gives
//! up until the next pass, and ingest into today never waits for one.
//!
//! The tests use a database of their own (`otelephant_columnar_test`), so that the extension
//! reaches no other test's maintenance. Without the extension they are skipped with one line.

use std::{
    io::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::trace::v1::TracesData;
use otelephant::{
    config::{ColumnarAfter, StorageConfig},
    query::proto::{query_service_client::QueryServiceClient, GetTraceRequest},
    store::maintenance::{self, Report},
};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

use crate::common::{
    fixtures::{
        logs, metrics,
        query::{flatten, one_trace, TRACE},
    },
    *,
};

const DATABASE: &str = "otelephant_columnar_test";
const DAY: u64 = 86_400_000_000_000;

/// The URL of the test database with `citus_columnar` in it, made once; `None`, after saying
/// why, when PostgreSQL does not have the extension.
async fn columnar_database() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        let on_server = |database: &str| {
            database_url().rsplit_once('/').map(|(server, _)| format!("{server}/{database}")).expect("url")
        };
        let admin = connect(&on_server("postgres")).await;
        let available = admin
            .query_opt("SELECT 1 FROM pg_available_extensions WHERE name = 'citus_columnar'", &[])
            .await
            .expect("extensions")
            .is_some();
        if !available {
            // Straight to standard error, past the test harness's capture, so that the skip shows.
            let _ = writeln!(
                std::io::stderr(),
                "columnar tests skipped: PostgreSQL has no citus_columnar extension (README: Columnar storage for closed days)"
            );
            return None;
        }
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .await
            .expect("databases")
            .is_some();
        if !exists {
            admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await.expect("create database");
        }
        let url = on_server(DATABASE);
        connect(&url).await.batch_execute("CREATE EXTENSION IF NOT EXISTS citus_columnar").await.expect("extension");
        Some(url)
    })
    .await
    .clone()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

fn today() -> u64 {
    nanos_now() / DAY
}

/// Day `day` (since the epoch) as its partitions name it: `YYYYMMDD`.
fn date(day: u64) -> String {
    humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(day * 86_400)).to_string()[..10]
        .replace('-', "")
}

fn clock(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// One maintenance pass at `now` with `storage`, after the server's own first pass.
async fn pass(t: &TestServer, storage: &StorageConfig, now: SystemTime) -> Report {
    t.first_maintenance_pass().await;
    let pool = t.server.as_ref().expect("running").pool.clone();
    maintenance::run_pass(&pool, &t.config.partitions, &t.config.retention, storage, now)
        .await
        .expect("maintenance pass")
        .expect("no other pass is running")
}

const ROW_STORAGE: StorageConfig = StorageConfig { columnar_after: ColumnarAfter::Off };

/// A server whose own maintenance passes keep row storage, so that only the test's passes
/// convert, once its first pass is over.
async fn start(url: String, adjust: impl FnOnce(&mut otelephant::config::Config)) -> TestServer {
    let t = TestServer::start_in(TestSchema::in_database(url), |c| {
        c.storage = ROW_STORAGE;
        adjust(c);
    })
    .await;
    t.first_maintenance_pass().await;
    t
}

/// The default: columnar two days after a day ends.
fn columnar() -> StorageConfig {
    StorageConfig::default()
}

async fn access_method(t: &TestServer, relation: &str) -> String {
    t.sql
        .query_one("SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = $1::text::regclass", &[&relation])
        .await
        .expect("access method")
        .get(0)
}

/// Every row of `table` as text, in one order: what a partition holds, to compare before and
/// after its conversion.
async fn contents(t: &TestServer, table: &str) -> Vec<String> {
    let rows = t
        .sql
        .query(&format!("SELECT to_jsonb(r)::text FROM {table} r ORDER BY 1"), &[])
        .await
        .expect("contents");
    rows.iter().map(|row| row.get(0)).collect()
}

async fn get_trace(t: &TestServer) -> TracesData {
    QueryServiceClient::connect(t.endpoint())
        .await
        .expect("connect")
        .get_trace(GetTraceRequest { trace_id: hex::encode(TRACE) })
        .await
        .expect("trace found")
        .into_inner()
}

/// What PostgreSQL plans for `sql` (one parameter: a trace id).
async fn plan(t: &TestServer, sql: &str) -> String {
    let rows = t.sql.query(&format!("EXPLAIN {sql}"), &[&TRACE.to_vec()]).await.expect("explain");
    rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn closed_days_become_columnar_and_hand_back_what_they_held() {
    let Some(url) = columnar_database().await else { return };
    let t = start(url, |_| {}).await;
    let d = today();
    let old = d - 3;
    let at = old * DAY + 12 * 3_600_000_000_000;
    t.traces().await.export(one_trace(at)).await.expect("spans stored");
    t.logs().await.export(logs::request(at)).await.expect("log records stored");
    t.metrics().await.export(metrics::request(at)).await.expect("points stored");
    // A day's worth of spans (10 a trace) and log records to look up among, so that the
    // planner's choice between an index and a scan of the whole day is a real one.
    let day = |table: &str| format!("{table}_p{}", date(old));
    let (spans, log_records) = (day("spans"), day("logs"));
    let now = clock(nanos_now());

    // A pass in row storage gives the late day its partitions (the default, columnar after 2
    // days, would convert them in the same pass).
    let first = pass(&t, &ROW_STORAGE, now).await;
    assert!(first.created.contains(&("spans", old as i32)), "{first:?}");
    assert!(first.converted.is_empty());
    t.sql
        .batch_execute(&format!(
            "INSERT INTO spans (start_time_unix_nano, end_time_unix_nano, trace_id, span_id, trace_state, flags,
                                name, kind, resource_id, scope_id, attributes, dropped_attributes_count,
                                dropped_events_count, dropped_links_count, status_message)
             SELECT {at} + g * 1000000::bigint, {at} + g * 1000000::bigint + 500, decode(md5((g / 10)::text), 'hex'),
                    substr(decode(md5('s' || g), 'hex'), 1, 8), '', 0, 'GET /' || g % 20, 2, resource_id,
                    scope_id, jsonb_build_object('http.status_code', 200, 'n', g), 0, 0, 0, ''
             FROM (SELECT resource_id, scope_id FROM spans LIMIT 1) r, generate_series(1, 200000) g;
             INSERT INTO logs (timestamp_unix_nano, time_unix_nano, observed_time_unix_nano, severity_number,
                               severity_text, body, attributes, dropped_attributes_count, flags, trace_id,
                               span_id, event_name, resource_id, scope_id)
             SELECT {at} + g * 1000000::bigint, {at} + g * 1000000::bigint, 0, 9, 'INFO', to_jsonb('line ' || g), '{{}}', 0, 0,
                    decode(md5('l' || g), 'hex'), NULL, '', resource_id, scope_id
             FROM (SELECT resource_id, scope_id FROM logs LIMIT 1) r, generate_series(1, 200000) g"
        ))
        .await
        .expect("a day of rows");
    let tables = [
        "spans",
        "logs",
        "metric_points_number",
        "metric_points_histogram",
        "metric_points_exp_histogram",
        "metric_points_summary",
        "span_rollup",
        "log_rollup",
    ];
    let mut before = Vec::new();
    for table in tables {
        before.push(contents(&t, &day(table)).await);
    }
    let trace_before = get_trace(&t).await;
    assert_eq!(flatten(&trace_before.resource_spans), flatten(&one_trace(at).resource_spans));

    let planned = {
        let pool = t.server.as_ref().expect("running").pool.clone();
        let mut client = pool.get().await.expect("client");
        maintenance::plan(&mut client, &t.config.partitions, &t.config.retention, &columnar(), now)
            .await
            .expect("plan")
    };
    let text = planned.render(true);
    assert!(text.contains("Would convert") && text.contains(&spans), "{text}");

    // The default: columnar two days after the day ends. Day d-3 ended more than two days ago;
    // day d-2 ends less than two days before any time of today.
    let report = pass(&t, &columnar(), now).await;
    let converted: Vec<&str> = report.converted.iter().map(|p| p.name.as_str()).collect();
    for table in tables {
        assert!(converted.contains(&day(table).as_str()), "{table}: {converted:?}");
        assert_eq!(access_method(&t, &day(table)).await, "columnar");
    }
    assert!(!converted.iter().any(|name| name.ends_with(&date(d - 2))), "{converted:?}");
    assert_eq!(access_method(&t, &format!("spans_p{}", date(d))).await, "heap");

    // What the partitions hold, and what the query API hands back, did not change.
    for (table, before) in tables.iter().zip(&before) {
        assert_eq!(&contents(&t, &day(table)).await, before, "{table}");
    }
    assert_eq!(flatten(&get_trace(&t).await.resource_spans), flatten(&trace_before.resource_spans));

    // Lookups by trace id still go through the indexes on the columnar day, not a scan of it.
    for (sql, partition) in [
        ("SELECT * FROM spans WHERE trace_id = $1", &spans),
        ("SELECT * FROM logs WHERE trace_id = $1", &log_records),
    ] {
        let plan = plan(&t, sql).await;
        let line = plan.lines().find(|line| line.contains(partition.as_str())).expect("the day is planned");
        assert!(line.contains("Index Scan"), "{plan}");
    }

    // The day is laid out for lookups: 10,000-row stripes (citus_columnar prices an index lookup
    // at a stripe read for each row it fetches, so with its default 150,000 rows a day of 200,000
    // spans has two stripes and the lookups of a few traces' spans would scan the day instead),
    // and for spans 1,000-row chunk groups; log records are compressed at zstd level 9. The
    // table's options keep that layout for late rows.
    for (partition, chunk_group_rows, level) in [(&spans, 1_000, 3), (&log_records, 10_000, 9)] {
        let layout = t
            .sql
            .query_one(
                "SELECT count(*), max(s.row_count), min(s.chunk_row_count), max(s.chunk_row_count),
                        min(o.stripe_row_limit), min(o.chunk_group_row_limit), min(o.compression_level),
                        (SELECT array_agg(DISTINCT c.value_compression_level) FROM columnar.chunk c
                         WHERE c.relation = o.relation)
                 FROM columnar.stripe s JOIN columnar.options o USING (relation)
                 WHERE s.relation = $1::text::regclass GROUP BY o.relation",
                &[partition],
            )
            .await
            .expect("columnar layout");
        let stripes: i64 = layout.get(0);
        assert!(stripes >= 20, "{partition}: {stripes} stripes");
        assert_eq!(layout.get::<_, i64>(1), 10_000, "{partition}");
        assert_eq!(
            (
                layout.get::<_, i32>(2),
                layout.get::<_, i32>(3),
                layout.get::<_, i32>(4),
                layout.get::<_, i32>(5),
                layout.get::<_, i32>(6),
                layout.get::<_, Vec<i32>>(7)
            ),
            (chunk_group_rows, chunk_group_rows, 10_000, chunk_group_rows, level, vec![level]),
            "{partition}"
        );
    }
    // A search page's traces are fetched through the trace-id index too.
    let search_plan = plan(
        &t,
        &format!(
            "SELECT s.* FROM (SELECT trace_id FROM spans WHERE start_time_unix_nano >= {at} AND trace_id <> $1
                              ORDER BY start_time_unix_nano LIMIT 5) m
             JOIN spans s ON s.trace_id = m.trace_id"
        ),
    )
    .await;
    let lookup =
        search_plan.lines().skip_while(|line| !line.contains("Nested Loop")).collect::<Vec<_>>().join("\n");
    assert!(lookup.contains(&format!("Index Scan using {spans}_trace_id_idx")), "{search_plan}");

    // A late record for the converted day is still stored, in its columnar partition.
    let spans_before = t.count(&spans).await;
    let mut late = one_trace(at + 1);
    late.resource_spans[0].scope_spans[0].spans.truncate(1);
    late.resource_spans[0].scope_spans[0].spans[0].span_id = vec![7; 8];
    late.resource_spans.truncate(1);
    late.resource_spans[0].scope_spans.truncate(1);
    t.traces().await.export(late).await.expect("late span stored");
    assert_eq!(t.count(&spans).await, spans_before + 1);
    assert_eq!(access_method(&t, &spans).await, "columnar");

    // Converted once.
    assert!(pass(&t, &columnar(), now).await.converted.is_empty());

    // Retention drops columnar partitions as it drops any other, and collects what they
    // referenced.
    let later = clock(nanos_now() + 40 * DAY);
    let report = pass(&t, &columnar(), later).await;
    let dropped: Vec<&str> = report.dropped.iter().map(|p| p.name.as_str()).collect();
    assert!(dropped.contains(&spans.as_str()) && dropped.contains(&log_records.as_str()), "{dropped:?}");
}

#[tokio::test]
async fn a_conversion_waits_for_no_one_and_no_one_waits_for_it_but_its_day() {
    let Some(url) = columnar_database().await else { return };
    let t = start(url.clone(), |c| c.partitions.drop_lock_timeout_ms = 200).await;
    let d = today();
    let old = (d - 3) * DAY + 12 * 3_600_000_000_000;
    t.traces().await.export(one_trace(old)).await.expect("spans stored");
    pass(&t, &ROW_STORAGE, clock(nanos_now())).await;
    let spans = format!("spans_p{}", date(d - 3));

    // A long report reading the day holds its lock: the conversion gives up at the lock
    // timeout and leaves the day as it was.
    let mut reader = connect(&url).await;
    let spans = format!("{}.{spans}", t.config.postgres.schema);
    let report_tx = reader.transaction().await.expect("begin");
    report_tx.batch_execute(&format!("LOCK TABLE {spans} IN ACCESS SHARE MODE")).await.expect("lock");
    let report = pass(&t, &columnar(), clock(nanos_now())).await;
    let failed: Vec<String> =
        report.convert_failed.iter().map(|p| format!("{}.{}", t.config.postgres.schema, p.name)).collect();
    report_tx.rollback().await.expect("end the report");
    assert_eq!(failed, std::slice::from_ref(&spans), "{report:?}");
    assert_eq!(access_method(&t, &spans).await, "heap");

    // While a day's partition is locked as a conversion locks it, today's spans are stored.
    let converting = reader.transaction().await.expect("begin");
    converting.batch_execute(&format!("LOCK TABLE {spans} IN ACCESS EXCLUSIVE MODE")).await.expect("lock");
    let mut today_spans = one_trace(nanos_now());
    today_spans.resource_spans.truncate(1);
    let stored = tokio::time::timeout(Duration::from_secs(10), t.traces().await.export(today_spans)).await;
    converting.rollback().await.expect("end");
    stored.expect("today's spans do not wait for the converting day").expect("stored");

    // At the next pass, with the lock free, the day is converted.
    let report = pass(&t, &columnar(), clock(nanos_now())).await;
    assert!(report.converted.iter().any(|p| spans.ends_with(&p.name)), "{report:?}");
    assert_eq!(access_method(&t, &spans).await, "columnar");
}

#[tokio::test]
async fn a_day_with_llm_content_becomes_columnar_once_its_content_is_removed() {
    use crate::content::{call_with_content, records_with_content, stored_span};
    let Some(url) = columnar_database().await else { return };
    let t = start(url, |c| c.retention.llm_content = otelephant::config::Retention::days(5)).await;
    let d = today();
    let old = (d - 3) * DAY + 12 * 3_600_000_000_000;
    t.traces().await.export(call_with_content(9, old)).await.expect("spans stored");
    t.logs().await.export(records_with_content(old)).await.expect("records stored");
    pass(&t, &ROW_STORAGE, clock(nanos_now())).await;
    let (spans, logs, calls) = (
        format!("spans_p{}", date(d - 3)),
        format!("logs_p{}", date(d - 3)),
        format!("llm_calls_p{}", date(d - 3)),
    );

    // Past columnar_after (two days), within the content's five: the day's spans and log
    // records stay in row storage, where their content can still be removed; the rest goes.
    let report = pass(&t, &columnar(), clock(nanos_now())).await;
    let converted: Vec<&str> = report.converted.iter().map(|p| p.name.as_str()).collect();
    assert!(converted.contains(&calls.as_str()) && !converted.contains(&spans.as_str()), "{report:?}");
    assert_eq!(access_method(&t, &spans).await, "heap");
    assert_eq!(access_method(&t, &logs).await, "heap");

    // Three days on, the content is past its retention: removed, then the day converted, in one pass.
    let later = clock(nanos_now() + 3 * DAY);
    let report = pass(&t, &columnar(), later).await;
    assert!(report.content_removed.iter().any(|(p, n)| p.name == spans && *n == Some(1)), "{report:?}");
    assert!(report.converted.iter().any(|p| p.name == spans), "{report:?}");
    assert_eq!(access_method(&t, &spans).await, "columnar");
    assert_eq!(access_method(&t, &logs).await, "columnar");
    let (attributes, _) = stored_span(&t.sql, 9).await;
    assert_eq!(attributes["gen_ai.input.messages"], "[content removed after 5days]");
    assert_eq!(attributes["gen_ai.request.model"], "gpt-4o-mini");

    // A columnar day whose content was never removed (converted before content had a
    // retention) cannot be updated: the pass says so and leaves it.
    t.sql.execute("DELETE FROM llm_content_removed WHERE partition = $1", &[&spans]).await.expect("forget");
    let report = pass(&t, &columnar(), later).await;
    let kept: Vec<&str> = report.content_kept.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(kept, [spans.as_str()], "{report:?}");
    assert!(report.render(false).contains("columnar storage cannot be updated"), "{}", report.render(false));
}
