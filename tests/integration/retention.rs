//! The storage lifecycle against a real database, with the maintenance clock set by the test:
//! partitions made ahead, expired ones dropped whole, nothing younger than the retention lost,
//! late records given their day, unreferenced resources collected, two maintainers at once,
//! and `otelephant retention --dry-run`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use otelephant::{
    config::{Config, Retention},
    store::{
        maintenance::{self, Report},
        partitions,
    },
};

use crate::common::*;

const DAY: u64 = 86_400_000_000_000;

pub(crate) fn today() -> u64 {
    nanos_now() / DAY
}

/// The time `hours` into day `day` (days since the epoch).
pub(crate) fn at(day: u64, hours: u64) -> u64 {
    day * DAY + hours * 3_600_000_000_000
}

pub(crate) fn clock(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// One maintenance pass at `now`, after the server's own first pass.
pub(crate) async fn pass_at(t: &TestServer, now: SystemTime) -> Report {
    t.first_maintenance_pass().await;
    let pool = t.server.as_ref().expect("running").pool.clone();
    maintenance::run_pass(&pool, &t.config.partitions, &t.config.retention, &t.config.storage, now)
        .await
        .expect("maintenance pass")
        .expect("no other pass is running")
}

async fn partition_days(t: &TestServer, table: &'static str) -> Vec<u64> {
    let pool = t.server.as_ref().expect("running").pool.clone();
    let client = pool.get().await.expect("client");
    let list = maintenance::partitions_of(&client, table).await.expect("partitions");
    list.iter().map(|p| p.day as u64).collect()
}

/// Spans of `service` at `time`.
fn spans(
    service: &str,
    time: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let mut request = crate::common::fixtures::traces::request(time);
    for resource_spans in &mut request.resource_spans {
        resource_spans.resource.as_mut().expect("resource").attributes[0] = kv("service.name", s(service));
    }
    request
}

/// The days (since the epoch) that spans are stored for.
async fn span_days(t: &TestServer) -> Vec<u64> {
    let rows = t
        .sql
        .query("SELECT DISTINCT start_time_unix_nano / $1 FROM spans ORDER BY 1", &[&(DAY as i64)])
        .await
        .expect("span days");
    rows.iter().map(|row| row.get::<_, i64>(0) as u64).collect()
}

fn logs(time: u64) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let record = LogRecord { time_unix_nano: time, severity_number: 9, ..Default::default() };
    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records: vec![record; 3], ..Default::default() }],
            ..Default::default()
        }],
    }
}

async fn services(t: &TestServer) -> Vec<String> {
    let rows = t.sql.query("SELECT service_name FROM resources ORDER BY 1", &[]).await.expect("resources");
    rows.iter().map(|row| row.get(0)).collect()
}

/// Runs `otelephant retention` with `args` against the test's schema; returns what it printed.
async fn retention_command(config: &Config, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_otelephant"))
        .arg("retention")
        .args(args)
        .args(["--postgres-url", &config.postgres.url, "--postgres-schema", &config.postgres.schema])
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn short_traces(c: &mut Config) {
    c.retention.traces = Retention::days(2);
}

#[tokio::test]
async fn expired_partitions_are_dropped_whole_and_nothing_younger_is_lost() {
    let mut t = TestServer::start_with(short_traces).await;
    t.first_maintenance_pass().await;
    let d = today();
    // Start-up made today's partitions and days_ahead (3) more, and days_behind (1) back.
    assert_eq!(partition_days(&t, "spans").await, (d - 1..=d + 3).collect::<Vec<_>>());
    let mut traces = t.traces().await;
    for day in [d, d + 1, d + 2] {
        traces.export(spans("checkout", at(day, 12))).await.expect("stored");
    }
    t.logs().await.export(logs(at(d, 12))).await.expect("logs stored");
    let logs_before = t.count("logs").await;

    // Three days on, at 13:00: the retention (2 days) reaches back to day d+1, 13:00. Days d-1
    // and d hold nothing younger and go; day d+1 still can, so it stays whole, even its span
    // from 12:00, which is already older than the retention.
    let now = at(d + 3, 13);
    let report = pass_at(&t, clock(now)).await;
    let dropped: Vec<(&str, u64)> = report.dropped.iter().map(|p| (p.table, p.day as u64)).collect();
    // The spans' rollups, calls between services and to peers, and LLM calls go with their days.
    assert_eq!(
        dropped,
        [
            ("spans", d - 1),
            ("spans", d),
            ("span_rollup", d - 1),
            ("span_rollup", d),
            ("service_edges", d - 1),
            ("service_edges", d),
            ("peer_calls", d - 1),
            ("peer_calls", d),
            ("llm_calls", d - 1),
            ("llm_calls", d)
        ]
    );
    assert!(report.drop_failed.is_empty());
    assert_eq!(span_days(&t).await, [d + 1, d + 2]);
    assert_eq!(t.count("spans").await, 8);
    let counted: i64 =
        t.sql.query_one("SELECT sum(spans)::bigint FROM span_rollup", &[]).await.expect("rollup").get(0);
    assert_eq!(counted, 8, "the rollups count the spans kept, no more");
    // Partitions are ready three days ahead of the new today; the other signals keep theirs.
    assert_eq!(partition_days(&t, "spans").await, (d + 1..=d + 6).collect::<Vec<_>>());
    assert!(report.created.contains(&("logs", (d + 6) as i32)));
    assert_eq!(t.count("logs").await, logs_before, "logs are kept for 7 days");
    assert!(partition_days(&t, "logs").await.contains(&(d - 1)));
    // The days that ended were analyzed, and the parent tables with them.
    assert!(report.analyzed.contains(&"spans".to_owned()), "{:?}", report.analyzed);
    let analyzed: bool = t
        .sql
        .query_one(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables \
             WHERE schemaname = current_schema() AND relname = 'spans_p' || to_char(date '1970-01-01' + $1::integer, 'YYYYMMDD')",
            &[&((d + 1) as i32)],
        )
        .await
        .expect("stats")
        .get(0);
    assert!(analyzed);

    // A second pass at the same time has nothing left to do.
    let again = pass_at(&t, clock(now)).await;
    assert!(again.dropped.is_empty() && again.created.is_empty(), "{again:?}");

    // The server counts what its own passes did; a pass run here is reported by its caller.
    let scrape = reqwest::get(format!("http://{}/metrics", t.server.as_ref().expect("running").admin_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(scrape.contains("otelephant_partitions_dropped_total"), "{scrape}");
    t.stop().await;
}

#[tokio::test]
async fn late_records_get_their_day_and_records_outside_the_window_stay_in_the_catch_all() {
    let mut t = TestServer::start().await;
    t.first_maintenance_pass().await;
    let d = today();
    let mut traces = t.traces().await;
    // Three days late: no partition is ready for it (days_behind is 1), but the retention (7
    // days) still covers it. Forty days late: outside the retention, so outside the window.
    traces.export(spans("late", at(d - 3, 6))).await.expect("stored");
    traces.export(spans("ancient", at(d - 40, 6))).await.expect("stored");
    assert_eq!(t.count("spans_default").await, 8);

    let report = pass_at(&t, SystemTime::now()).await;
    assert!(report.created.contains(&("spans", (d - 3) as i32)), "{:?}", report.created);
    assert!(partition_days(&t, "spans").await.contains(&(d - 3)));
    assert!(!partition_days(&t, "spans").await.contains(&(d - 40)));
    let in_catch_all: Vec<i64> = t
        .sql
        .query("SELECT DISTINCT start_time_unix_nano / $1 FROM spans_default", &[&(DAY as i64)])
        .await
        .expect("catch-all")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(in_catch_all, [(d - 40) as i64]);
    assert_eq!(t.count("spans").await, 8, "moving lost nothing");
    t.stop().await;
}

#[tokio::test]
async fn resources_no_record_references_are_collected_after_a_drop() {
    let mut t = TestServer::start_with(|c| c.retention.traces = Retention::days(1)).await;
    t.first_maintenance_pass().await;
    let d = today();
    let mut traces = t.traces().await;
    traces.export(spans("gone", at(d, 12))).await.expect("stored");
    traces.export(spans("staying", at(d + 2, 12))).await.expect("stored");
    assert_eq!(services(&t).await, ["gone", "staying"]);

    // Day d+2: day d's partition expires, and with it every span of "gone". But its row was
    // written two days ago, within the grace a replica may still trust it, so it stays.
    let report = pass_at(&t, clock(at(d + 2, 13))).await;
    let dropped: Vec<u64> =
        report.dropped.iter().filter(|p| p.table == "spans").map(|p| p.day as u64).collect();
    assert_eq!(dropped, [d - 1, d]);
    assert_eq!(report.collected, maintenance::Collected::default());
    assert_eq!(services(&t).await, ["gone", "staying"]);

    // Day d+3: "gone" is unreferenced and unseen for three days, and goes. "staying" and the
    // scopes still have spans (day d+2).
    let report = pass_at(&t, clock(at(d + 3, 13))).await;
    assert_eq!(report.dropped.iter().filter(|p| p.table == "spans").count(), 1, "{report:?}");
    assert_eq!(report.collected, maintenance::Collected { series: 0, resources: 1, scopes: 0 });
    assert_eq!(services(&t).await, ["staying"]);
    assert_eq!(t.count("scopes").await, 2);

    // A resource seen again after collection is written again, and one the writers have not
    // sent today is sent again, moving its last_seen on.
    t.sql.batch_execute("UPDATE resources SET last_seen = last_seen - 3").await.expect("age the row");
    t.restart().await;
    t.traces().await.export(spans("gone", at(d + 2, 13))).await.expect("stored");
    t.traces().await.export(spans("staying", at(d + 2, 14))).await.expect("stored");
    assert_eq!(services(&t).await, ["gone", "staying"]);
    let fresh: Vec<bool> = t
        .sql
        .query(
            "SELECT last_seen = (now() AT TIME ZONE 'UTC')::date FROM resources ORDER BY service_name",
            &[],
        )
        .await
        .expect("last_seen")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(fresh, [true, true], "re-sent rows are stamped with today");
    let orphans: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM spans s \
             WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.resource_id = s.resource_id)",
            &[],
        )
        .await
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0, "every span's resource is stored");
    t.stop().await;
}

#[tokio::test]
async fn two_maintainers_at_once_do_not_collide() {
    let mut t = TestServer::start_with(short_traces).await;
    t.first_maintenance_pass().await;
    let d = today();
    t.traces().await.export(spans("checkout", at(d, 12))).await.expect("stored");
    t.first_maintenance_pass().await;
    let pool = t.server.as_ref().expect("running").pool.clone();
    let now = clock(at(d + 3, 13));
    // Both start together; one runs the pass, the other sees the lock taken and skips, or runs
    // after the first has finished and finds nothing left to do. Neither fails.
    let (a, b) = tokio::join!(
        maintenance::run_pass(&pool, &t.config.partitions, &t.config.retention, &t.config.storage, now),
        maintenance::run_pass(&pool, &t.config.partitions, &t.config.retention, &t.config.storage, now),
    );
    let reports: Vec<Report> = [a, b].into_iter().filter_map(|r| r.expect("no maintainer fails")).collect();
    let dropped: usize = reports.iter().map(|r| r.dropped.len()).sum();
    // Two days of spans, of their rollups, of the calls between services and to peers, of LLM
    // calls.
    assert_eq!(dropped, 5 * 2, "between them, both expired days went once: {reports:?}");
    let report = pass_at(&t, now).await;
    assert!(report.dropped.is_empty(), "everything expired is gone: {report:?}");
    assert_eq!(t.count("spans").await, 0);
    assert_eq!(partition_days(&t, "spans").await, (d + 1..=d + 6).collect::<Vec<_>>());
    t.stop().await;
}

#[tokio::test]
async fn retention_dry_run_shows_what_would_go_and_changes_nothing() {
    let mut t = TestServer::start().await;
    let d = today();
    t.first_maintenance_pass().await;
    // A partition from 30 days ago, made by hand as if it were left from long ago.
    {
        let pool = t.server.as_ref().expect("running").pool.clone();
        let mut client = pool.get().await.expect("client");
        let (table, key) = partitions::PARTITIONED[0];
        assert!(partitions::create(&mut client, table, key, (d - 30) as i32).await.expect("created"));
    }
    t.traces().await.export(spans("old", at(d - 30, 1))).await.expect("stored");
    t.traces().await.export(spans("ancient", 1)).await.expect("stored");
    let old_partition: String = t
        .sql
        .query_one(
            "SELECT 'spans_p' || to_char(date '1970-01-01' + $1::integer, 'YYYYMMDD')",
            &[&((d - 30) as i32)],
        )
        .await
        .expect("name")
        .get(0);
    let stdout = retention_command(&t.config, &["--dry-run"]).await;
    assert!(stdout.contains("Retention: traces 7days, logs 7days, metrics 30days"), "{stdout}");
    assert!(stdout.contains("Would drop 1 expired partition(s)"), "{stdout}");
    assert!(stdout.contains(&old_partition), "{stdout}");
    assert!(stdout.contains("spans_default: 4 row(s), times 1970-01-01T00:00:00Z"), "{stdout}");
    assert_eq!(t.count(&old_partition).await, 4, "a dry run drops nothing");

    // Without --dry-run it does it.
    let stdout = retention_command(&t.config, &[]).await;
    assert!(stdout.contains("Dropped 1 expired partition(s)"), "{stdout}");
    assert!(!partition_days(&t, "spans").await.contains(&(d - 30)));
    assert_eq!(t.count("spans").await, 4, "the catch-all keeps what is outside the window");
    t.stop().await;
}
