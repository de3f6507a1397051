//! The rollups written with the spans and log records: they count exactly what committed, over
//! every transport, with refused records, two servers writing at once and a batch written
//! again after its transaction failed; folding and rebuilding keep the figures; percentiles
//! are within the sketch's 1%; the calls between services are paired, late parents included;
//! and trace search, which reads newest first until its page is full, pages through the same
//! traces as a full scan, and says so when it stops early.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value::Value, AnyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span, Status as SpanStatus},
};
use otelephant::query::proto::{
    query_service_client::QueryServiceClient, CountLogsRequest, ListServiceDependenciesRequest,
    ListServiceStatsRequest, ScatterTracesRequest, SearchLogsRequest, SearchTracesRequest, TimeRange,
};
use prost::Message;
use tonic::transport::Channel;

use crate::common::{fixtures::query::resource, s as s_, *};

const MS: u64 = 1_000_000;
const MINUTE: u64 = 60_000_000_000;

async fn query(t: &TestServer) -> QueryServiceClient<Channel> {
    QueryServiceClient::connect(t.endpoint()).await.expect("connect")
}

/// A span of trace `trace`; `parent` of the same trace when given.
fn span(
    trace: u32,
    id: u32,
    parent: Option<u32>,
    name: &str,
    kind: SpanKind,
    start: u64,
    nanos: u64,
) -> Span {
    let ids = |n: u32| [trace.to_be_bytes(), n.to_be_bytes()].concat();
    Span {
        trace_id: [trace.to_be_bytes(); 4].concat(),
        span_id: ids(id),
        parent_span_id: parent.map(ids).unwrap_or_default(),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + nanos,
        ..Default::default()
    }
}

fn trace_hex(trace: u32) -> String {
    hex::encode([trace.to_be_bytes(); 4].concat())
}

fn request(groups: Vec<(&str, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// Spans of a few services over the last minutes, with skewed durations (most fast, a long
/// tail), some failed, of several kinds.
fn spans_over_minutes(seed: u32, now: u64, n: u32) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&str, Vec<Span>)> = vec![("api", vec![]), ("db", vec![]), ("worker", vec![])];
    for i in 0..n {
        // splitmix64 of (seed, i): every field below varies independently.
        let mut z = (u64::from(seed) << 32 | u64::from(i)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let x = ((z ^ (z >> 31)) >> 16) as u32;
        let start = now - u64::from(x % 5) * MINUTE - u64::from(x % 59_000) * MS;
        // Skewed: 1-5 ms mostly, one in ten 50-500 ms, one in a hundred seconds.
        let nanos = match x % 100 {
            0 => u64::from(x % 3_000 + 1_000) * MS,
            1..=10 => u64::from(x % 450 + 50) * MS,
            _ => u64::from(x % 4_000 + 1_000) * 1_000,
        };
        let kind =
            [SpanKind::Server, SpanKind::Client, SpanKind::Internal, SpanKind::Consumer][(x % 4) as usize];
        let mut s = span(
            seed * 100_000 + i,
            1,
            None,
            ["GET /a", "GET /b", "work"][(x % 3) as usize],
            kind,
            start,
            nanos,
        );
        if kind == SpanKind::Client {
            // What it calls: a database, a queue, a host, a host named by a number (no peer),
            // or nothing said.
            s.attributes = match x / 4 % 5 {
                0 => vec![
                    kv("db.system", s_("postgresql")),
                    kv("db.name", s_(["shop", "audit"][(x % 2) as usize])),
                ],
                1 => {
                    vec![kv("messaging.system", s_("kafka")), kv("messaging.destination.name", s_("orders"))]
                }
                2 => vec![kv("server.address", s_(["pay.example", "mail.example"][(x % 2) as usize]))],
                3 => vec![kv("server.address", Value::IntValue(10))],
                _ => vec![],
            };
        }
        if x.is_multiple_of(17) {
            s.status = Some(SpanStatus { code: 2, message: "failed".into() });
        } else if x.is_multiple_of(5) {
            s.status = Some(SpanStatus { code: 1, message: String::new() });
        }
        groups[(x % 3) as usize].1.push(s);
    }
    request(groups)
}

/// The rollup's figures and the raw spans' per (minute, resource, name, kind, status): equal.
async fn assert_rollup_counts_the_spans(t: &TestServer) {
    let per_key = |table: &str| {
        format!(
            "SELECT {minute}, resource_id, name, kind, {status}, {count} FROM {table} GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
            minute = if table == "spans" { "start_time_unix_nano - start_time_unix_nano % 60000000000" } else { "minute_unix_nano" },
            status = if table == "spans" { "coalesce(status_code, 0)" } else { "status_code" },
            count = if table == "spans" { "count(*)" } else { "sum(spans)::bigint" },
        )
    };
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, i64, String, i32, i32, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect()
    };
    let raw = rows(t.sql.query(&per_key("spans"), &[]).await.expect("raw"));
    let rolled = rows(t.sql.query(&per_key("span_rollup"), &[]).await.expect("rollup"));
    assert!(!raw.is_empty());
    assert_eq!(rolled, raw, "the rollup counts exactly the stored spans");
}

/// The calls to peers, per (minute, resource, peer kind, peer): `peer_calls` and SQL's reading
/// of the client spans' attributes (those [`spans_over_minutes`] sets) agree.
async fn assert_peer_calls_count_the_spans(t: &TestServer) {
    let raw = "SELECT minute, resource_id, peer_kind, peer, count(*), count(*) FILTER (WHERE status_code = 2)
               FROM (SELECT start_time_unix_nano - start_time_unix_nano % 60000000000 AS minute, resource_id, status_code,
                            CASE WHEN attributes ? 'db.system' THEN 1 WHEN attributes ? 'messaging.system' THEN 2
                                 WHEN jsonb_typeof(attributes -> 'server.address') = 'string' THEN 3 END AS peer_kind,
                            CASE WHEN attributes ? 'db.system' THEN (attributes ->> 'db.system') || ' ' || (attributes ->> 'db.name')
                                 WHEN attributes ? 'messaging.system'
                                 THEN (attributes ->> 'messaging.system') || ' ' || (attributes ->> 'messaging.destination.name')
                                 ELSE attributes ->> 'server.address' END AS peer
                     FROM spans WHERE kind = 3) s
               WHERE peer_kind IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4";
    let rolled =
        "SELECT minute_unix_nano, resource_id, peer_kind, peer, sum(calls)::bigint, sum(errors)::bigint
                  FROM peer_calls GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4";
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, i64, i32, String, i64, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect()
    };
    let raw = rows(t.sql.query(raw, &[]).await.expect("raw"));
    let rolled = rows(t.sql.query(rolled, &[]).await.expect("rollup"));
    assert!(raw.iter().map(|r| r.2).collect::<std::collections::BTreeSet<_>>().len() == 3, "{raw:?}");
    assert_eq!(rolled, raw, "peer_calls counts exactly the stored client spans by what they call");
}

async fn assert_log_rollup_counts_the_records(t: &TestServer) {
    let raw: Vec<(i64, i64, i32, i64)> = t
        .sql
        .query(
            "SELECT timestamp_unix_nano - timestamp_unix_nano % 60000000000, resource_id, severity_number, count(*)
             FROM logs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("raw")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let rolled: Vec<(i64, i64, i32, i64)> = t
        .sql
        .query(
            "SELECT minute_unix_nano, resource_id, severity_number, sum(records)::bigint
             FROM log_rollup GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("rollup")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(!raw.is_empty());
    assert_eq!(rolled, raw, "the log rollup counts exactly the stored records");
}

fn log_records(now: u64, n: u32) -> ExportLogsServiceRequest {
    let records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: now - u64::from(i % 3) * MINUTE,
            severity_number: [9, 13, 17][(i % 3) as usize],
            body: Some(AnyValue { value: Some(Value::StringValue(format!("record {i}"))) }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("api"),
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test]
async fn rollups_count_exactly_what_committed_over_grpc_and_http_with_refused_spans() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    t.traces().await.export(spans_over_minutes(1, now, 300)).await.expect("gRPC export");
    // Over HTTP, protobuf and JSON, each with a span refused (a trace id of 3 bytes): partial
    // success, the other spans stored and counted, the refused one in neither.
    for (i, content_type) in ["application/x-protobuf", "application/json"].into_iter().enumerate() {
        let mut sent = spans_over_minutes(2 + i as u32, now, 200);
        sent.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
        let body = match content_type {
            "application/json" => serde_json::to_vec(&sent).expect("json"),
            _ => sent.encode_to_vec(),
        };
        let answer = clients::post(&t, "/v1/traces", content_type, None, body).await;
        assert_eq!(answer.status(), 200);
        let text = answer.text().await.expect("body");
        assert!(text.contains("rejected") || text.contains("rejectedSpans"), "partial success: {text}");
    }
    assert_eq!(t.count("spans").await, 300 + 199 + 199);
    assert_rollup_counts_the_spans(&t).await;
    assert_peer_calls_count_the_spans(&t).await;
    t.logs().await.export(log_records(now, 50)).await.expect("logs");
    assert_log_rollup_counts_the_records(&t).await;

    // Folding leaves one row per key of each closed minute, and the same figures.
    let rows_before = t.count("span_rollup").await + t.count("peer_calls").await;
    let report = t.rollup_pass().await;
    assert!(report.folded > 0, "{report:?}");
    assert_eq!(
        t.count("span_rollup").await + t.count("peer_calls").await,
        rows_before - report.folded as i64
    );
    let duplicates: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM span_rollup
             GROUP BY minute_unix_nano, resource_id, name, kind, status_code HAVING count(*) > 1) d",
            &[],
        )
        .await
        .expect("duplicates")
        .get(0);
    assert_eq!(duplicates, 0);
    let duplicates: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM peer_calls
             GROUP BY minute_unix_nano, resource_id, peer_kind, peer HAVING count(*) > 1) d",
            &[],
        )
        .await
        .expect("duplicates")
        .get(0);
    assert_eq!(duplicates, 0);
    assert_rollup_counts_the_spans(&t).await;
    assert_peer_calls_count_the_spans(&t).await;
    assert_log_rollup_counts_the_records(&t).await;

    // Rebuilt from the spans, as for data stored before the rollups existed: the same again.
    t.sql
        .batch_execute("DELETE FROM span_rollup; DELETE FROM log_rollup; DELETE FROM peer_calls")
        .await
        .expect("forget");
    let pool = &t.server.as_ref().expect("running").pool;
    let rebuilt =
        otelephant::store::rollups::rebuild(pool, (now - 10 * MINUTE) as i64, (now + MINUTE) as i64)
            .await
            .expect("rebuild");
    assert!(rebuilt.span_rows > 0 && rebuilt.log_rows > 0, "{rebuilt:?}");
    assert_rollup_counts_the_spans(&t).await;
    assert_peer_calls_count_the_spans(&t).await;
    assert_log_rollup_counts_the_records(&t).await;
    t.stop().await;
}

#[tokio::test]
async fn log_counts_per_step_and_severity_range_are_sqls_from_the_rollup_and_from_the_records() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let mut sent = log_records(now, 60);
    // Every range's edges, an unset severity and one past FATAL's last number.
    for (i, number) in [0, 1, 4, 5, 8, 12, 16, 20, 21, 24, 30, -3].into_iter().enumerate() {
        sent.resource_logs[0].scope_logs[0].log_records[i].severity_number = number;
    }
    t.logs().await.export(sent).await.expect("logs");
    let start = now - now % MINUTE - 5 * MINUTE;
    let range = TimeRange { start_unix_nano: start, end_unix_nano: now + MINUTE };
    let exact: Vec<(i64, i32, i64)> = t
        .sql
        .query(
            "SELECT (timestamp_unix_nano - $1) / 60000000000,
                    CASE WHEN severity_number < 1 THEN 0 WHEN severity_number > 24 THEN 6
                         ELSE (severity_number - 1) / 4 + 1 END, count(*)
             FROM logs GROUP BY 1, 2 ORDER BY 1, 2",
            &[&(start as i64)],
        )
        .await
        .expect("exact")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(exact.len() > 7, "several steps and ranges: {exact:?}");
    // From the rollup (service alone), and from the records (a body filter every record passes).
    for (filters, from_records) in [
        (SearchLogsRequest { service: "api".into(), ..Default::default() }, false),
        (SearchLogsRequest { body_contains: "record".into(), ..Default::default() }, true),
    ] {
        let filters = SearchLogsRequest { time_range: Some(range), ..filters };
        let counted = query(&t)
            .await
            .count_logs(CountLogsRequest { filters: Some(filters), step_nanos: MINUTE })
            .await
            .expect("count")
            .into_inner();
        assert_eq!(counted.from_records, from_records);
        let mut got = Vec::new();
        for (i, step) in counted.steps.iter().enumerate() {
            assert_eq!(step.by_severity.len(), 7);
            assert_eq!(step.by_severity.iter().sum::<u64>(), step.records, "the ranges add up");
            assert_eq!(step.errors, step.by_severity[5] + step.by_severity[6], "ERROR and FATAL are errors");
            for (range, &n) in step.by_severity.iter().enumerate() {
                if n > 0 {
                    got.push((i as i64, range as i32, n as i64));
                }
            }
        }
        assert_eq!(got, exact, "from records: {from_records}");
    }
    t.stop().await;
}

#[tokio::test]
async fn the_scatter_plot_gets_every_request_or_a_sample_spread_over_the_range() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    for seed in 1..=3 {
        t.traces().await.export(spans_over_minutes(seed, now, 1_000)).await.expect("export");
    }
    let range = Some(TimeRange { start_unix_nano: now - 10 * MINUTE, end_unix_nano: now + MINUTE });
    let scatter = |max_points: u32, service: &str| {
        let (t, service) = (t.endpoint(), service.to_owned());
        async move {
            let mut client = QueryServiceClient::connect(t).await.expect("connect");
            let filters = SearchTracesRequest { time_range: range, service, ..Default::default() };
            client
                .scatter_traces(ScatterTracesRequest { filters: Some(filters), max_points })
                .await
                .expect("scatter")
                .into_inner()
        }
    };
    // Every request of the service: its root, server and consumer spans, as SQL finds them.
    let expected: Vec<(String, u64, u64, bool)> = t
        .sql
        .query(
            "SELECT encode(s.trace_id, 'hex'), s.start_time_unix_nano, s.end_time_unix_nano - s.start_time_unix_nano,
                    s.status_code IS NOT DISTINCT FROM 2
             FROM spans s JOIN resources r USING (resource_id)
             WHERE r.service_name = 'api' AND (s.kind IN (2, 5) OR s.parent_span_id IS NULL) ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("requests")
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64, r.get(3)))
        .collect();
    let all = scatter(10_000, "api").await;
    assert!(!all.truncated);
    assert_eq!(all.covered_from_unix_nano, now - 10 * MINUTE, "the whole range");
    let mut got: Vec<(String, u64, u64, bool)> = all
        .points
        .iter()
        .map(|p| (p.trace_id.clone(), p.start_unix_nano, p.duration_nanos, p.error))
        .collect();
    got.sort();
    assert_eq!(got, expected, "every request, once");
    assert!(all.points.iter().all(|p| p.service == "api"));
    let body = serde_json::json!({
        "filters": {"service": "api", "timeRange": {"startUnixNano": (now - 10 * MINUTE).to_string(), "endUnixNano": (now + MINUTE).to_string()}},
        "maxPoints": 10_000,
    });
    let answer = clients::post(
        &t,
        "/otelephant.query.v1.QueryService/ScatterTraces",
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let json: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(json["points"].as_array().map(Vec::len), Some(expected.len()), "over JSON too");

    // Past max_points: a sample over the whole range, at least one request from each of 40
    // equal stretches of it that holds any (SQL's count per stretch), the points left over from
    // the empty stretches shared among the busy ones: 40 requests SQL finds, none twice.
    let sample = scatter(40, "").await;
    assert!(sample.truncated && sample.sampled, "{:?}", (sample.truncated, sample.sampled));
    assert_eq!((sample.strata, sample.per_stratum), (40, 1));
    assert_eq!(sample.covered_from_unix_nano, now - 10 * MINUTE, "the whole range");
    let start = (now - 10 * MINUTE) as i64;
    let requests: Vec<(i64, String)> = t
        .sql
        .query(
            "SELECT start_time_unix_nano, encode(trace_id, 'hex') FROM spans
             WHERE kind IN (2, 5) OR parent_span_id IS NULL",
            &[],
        )
        .await
        .expect("requests")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stretch = |at: i64| ((i128::from(at - start) * 40) / i128::from(11 * MINUTE as i64)) as i64;
    let busy: std::collections::BTreeSet<i64> = requests.iter().map(|(at, _)| stretch(*at)).collect();
    let drawn: Vec<i64> = sample.points.iter().map(|p| stretch(p.start_unix_nano as i64)).collect();
    assert_eq!(
        drawn.iter().copied().collect::<std::collections::BTreeSet<_>>(),
        busy,
        "a point in every busy stretch"
    );
    assert!(busy.len() >= 15 && busy.len() < 40, "the requests span {} stretches", busy.len());
    assert_eq!(drawn.len(), 40, "what the empty stretches left went to the busy ones");
    let distinct: std::collections::BTreeSet<(u64, &str)> =
        sample.points.iter().map(|p| (p.start_unix_nano, p.trace_id.as_str())).collect();
    assert_eq!(distinct.len(), 40, "none twice");
    for p in &sample.points {
        assert!(requests.contains(&(p.start_unix_nano as i64, p.trace_id.clone())), "{p:?} is a request");
    }
    assert!(sample.points.windows(2).all(|w| w[0].start_unix_nano >= w[1].start_unix_nano), "newest first");
    t.stop().await;
}

#[tokio::test]
async fn percentiles_from_the_rollups_are_within_one_percent_of_the_exact_ones() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    for seed in 1..=4 {
        t.traces().await.export(spans_over_minutes(seed, now, 500)).await.expect("export");
    }
    let range = Some(TimeRange { start_unix_nano: now - 10 * MINUTE, end_unix_nano: now + MINUTE });
    let stats = query(&t)
        .await
        .list_service_stats(ListServiceStatsRequest { time_range: range, step_nanos: MINUTE })
        .await
        .expect("stats")
        .into_inner()
        .services;
    let exact = t
        .sql
        .query(
            "SELECT r.service_name, count(*), count(*) FILTER (WHERE s.kind IN (2, 5)),
                    count(*) FILTER (WHERE s.kind IN (2, 5) AND s.status_code = 2),
                    percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.end_time_unix_nano - s.start_time_unix_nano)
                        FILTER (WHERE s.kind IN (2, 5))
             FROM spans s JOIN resources r USING (resource_id) GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("exact");
    assert_eq!(stats.len(), exact.len());
    for (got, row) in stats.iter().zip(&exact) {
        assert_eq!(got.service, row.get::<_, String>(0));
        let counts = (got.span_count as i64, got.request_count as i64, got.error_count as i64);
        assert_eq!(counts, (row.get(1), row.get(2), row.get(3)), "{}: counts are exact", got.service);
        let percentiles: Vec<i64> = row.get(4);
        for (reported, exact) in [got.p50_nanos, got.p95_nanos, got.p99_nanos].into_iter().zip(percentiles) {
            let error = (reported as f64 - exact as f64).abs() / exact as f64;
            assert!(error <= 0.01, "{}: {reported} vs {exact} ({:.3}%)", got.service, error * 100.0);
        }
        // Per minute too: every minute of the range, adding up to the totals; each minute's p95
        // within 1% of that minute's exact one.
        assert_eq!(got.steps.len(), 11 + usize::from(!now.is_multiple_of(MINUTE)));
        assert_eq!(got.steps.iter().map(|s| s.request_count).sum::<u64>(), got.request_count);
        assert_eq!(got.steps.iter().map(|s| s.error_count).sum::<u64>(), got.error_count);
        for step in got.steps.iter().filter(|s| s.request_count > 0) {
            let exact: i64 = t
                .sql
                .query_one(
                    "SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY s.end_time_unix_nano - s.start_time_unix_nano)
                     FROM spans s JOIN resources r USING (resource_id)
                     WHERE r.service_name = $1 AND s.kind IN (2, 5)
                       AND s.start_time_unix_nano >= $2 AND s.start_time_unix_nano < $3",
                    &[&got.service, &(step.start_unix_nano as i64), &((step.start_unix_nano + MINUTE) as i64)],
                )
                .await
                .expect("exact p95 of a minute")
                .get(0);
            let error = (step.p95_nanos as f64 - exact as f64).abs() / exact as f64;
            assert!(
                error <= 0.01,
                "{} at {}: {} vs {exact}",
                got.service,
                step.start_unix_nano,
                step.p95_nanos
            );
        }
    }
    t.stop().await;
}

#[tokio::test]
async fn two_servers_writing_at_once_add_up() {
    let mut a = TestServer::start().await;
    let b = otelephant::server::Server::start(a.config.clone()).await.expect("a second server");
    let b_endpoint = format!("http://{}", b.grpc_addr);
    let now = nanos_now();
    let send = |endpoint: String, seed: u32| async move {
        let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(endpoint)
            .await
            .expect("connect");
        for round in 0..10 {
            client.export(spans_over_minutes(seed * 100 + round, now, 100)).await.expect("export");
        }
    };
    tokio::join!(send(a.endpoint(), 1), send(b_endpoint, 2));
    assert_eq!(a.count("spans").await, 2 * 10 * 100);
    assert_rollup_counts_the_spans(&a).await;
    a.rollup_pass().await;
    assert_rollup_counts_the_spans(&a).await;
    b.shutdown().await.expect("second server stops");
    a.stop().await;
}

#[tokio::test]
async fn a_batch_written_again_after_its_transaction_failed_counts_once() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 30_000;
    })
    .await;
    let now = nanos_now();
    t.traces().await.export(spans_over_minutes(1, now, 100)).await.expect("before the cut");
    // Enough spans for a COPY of several hundred kilobytes, cut half-way through.
    proxy.cut_mid_copy(256 * 1024);
    t.traces().await.export(spans_over_minutes(2, now, 4_000)).await.expect("stored once written again");
    assert!(proxy.copy_was_cut(), "the connection was cut in the middle of a COPY");
    assert_eq!(t.count("spans").await, 4_100);
    assert_rollup_counts_the_spans(&t).await;
    t.stop().await;
}

#[tokio::test]
async fn the_service_graph_finds_every_call_between_services_late_parents_included() {
    let mut t = TestServer::start().await;
    let now = nanos_now() - 2 * MINUTE;
    let mut traces = t.traces().await;
    // Trace 1: web -> api -> db, sent together. Trace 2: web -> api, the api span arriving
    // first and its parent (web) only after the minute was paired. Trace 3: inside api only.
    traces
        .export(request(vec![
            ("web", vec![span(1, 1, None, "GET /", SpanKind::Server, now, 30 * MS)]),
            ("api", vec![span(1, 2, Some(1), "GET /items", SpanKind::Server, now + MS, 20 * MS)]),
            ("db", vec![span(1, 3, Some(2), "SELECT", SpanKind::Server, now + 2 * MS, 5 * MS)]),
            (
                "api",
                vec![
                    span(3, 1, None, "tick", SpanKind::Internal, now, MS),
                    span(3, 2, Some(1), "step", SpanKind::Internal, now, MS),
                ],
            ),
        ]))
        .await
        .expect("export");
    let mut late_child = span(2, 2, Some(1), "GET /items", SpanKind::Server, now + MS, 10 * MS);
    late_child.status = Some(SpanStatus { code: 2, message: "failed".into() });
    traces.export(request(vec![("api", vec![late_child])])).await.expect("the child first");

    let edges = |t: &TestServer| {
        let t = t.endpoint();
        async move {
            let mut client = QueryServiceClient::connect(t).await.expect("connect");
            let mut edges: Vec<(String, String, u64)> = client
                .list_service_dependencies(ListServiceDependenciesRequest::default())
                .await
                .expect("dependencies")
                .into_inner()
                .dependencies
                .into_iter()
                .map(|d| (d.parent, d.child, d.call_count))
                .collect();
            edges.sort();
            edges
        }
    };
    assert!(edges(&t).await.is_empty(), "nothing before the minute is paired");
    let report = t.rollup_pass().await;
    // Two children found their parents (api's and db's in trace 1); trace 2's waits for its.
    assert_eq!((report.paired, report.waiting), (2, 1), "{report:?}");
    let pair = |parent: &str, child: &str, calls: u64| (parent.to_owned(), child.to_owned(), calls);
    assert_eq!(edges(&t).await, [pair("api", "db", 1), pair("web", "api", 1)]);

    // The parent arrives late; the next pass that looks for it pairs the minute again.
    traces
        .export(request(vec![("web", vec![span(2, 1, None, "GET /", SpanKind::Server, now, 15 * MS)])]))
        .await
        .expect("the parent later");
    let pool = &t.server.as_ref().expect("running").pool;
    let later = std::time::SystemTime::now() + Duration::from_secs(10 * 60);
    let report = loop {
        if let Some(report) =
            otelephant::store::rollups::run_pass(pool, &t.config.rollups, later, false).await.expect("pass")
        {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((report.paired, report.waiting), (1, 0), "{report:?}");
    assert_eq!(edges(&t).await, [pair("api", "db", 1), pair("web", "api", 2)]);
    let errors: i64 = t
        .sql
        .query_one("SELECT sum(errors)::bigint FROM service_edges WHERE child_service = 'api'", &[])
        .await
        .expect("errors")
        .get(0);
    assert_eq!(errors, 1, "the late pair's failed child is counted");
    // The API gives each edge's errors and its children's duration percentiles (within 1%).
    let answered = query(&t)
        .await
        .list_service_dependencies(ListServiceDependenciesRequest::default())
        .await
        .expect("dependencies")
        .into_inner()
        .dependencies;
    let within = |got: u64, exact: u64| (got as f64 - exact as f64).abs() <= exact as f64 * 0.01;
    let web_api = answered.iter().find(|d| d.parent == "web" && d.child == "api").expect("web -> api");
    assert_eq!((web_api.call_count, web_api.error_count), (2, 1));
    assert!(within(web_api.p50_nanos, 10 * MS) && within(web_api.p99_nanos, 20 * MS), "{web_api:?}");
    assert!(within(web_api.p95_nanos, 20 * MS), "{web_api:?}");
    let api_db = answered.iter().find(|d| d.parent == "api" && d.child == "db").expect("api -> db");
    assert_eq!((api_db.call_count, api_db.error_count), (1, 0));
    assert!(within(api_db.p50_nanos, 5 * MS) && within(api_db.p95_nanos, 5 * MS), "{api_db:?}");
    t.stop().await;
}

#[tokio::test]
async fn leaf_nodes_are_what_services_call_that_sends_no_spans_of_its_own() {
    let mut t = TestServer::start().await;
    let now = nanos_now() - 2 * MINUTE;
    let client = |trace, id, parent, start, nanos, attributes: Vec<(&str, &str)>| {
        let mut s = span(trace, id, Some(parent), "call", SpanKind::Client, start, nanos);
        s.attributes = attributes.into_iter().map(|(k, v)| kv(k, s_(v))).collect();
        s
    };
    // web calls api (server.address "api.internal", answered by api's server span), a payment
    // provider (peer.service, failed) and nothing else; api calls PostgreSQL twice (one failed)
    // and publishes to Kafka.
    let mut stripe = client(
        1,
        3,
        1,
        now + MS,
        40 * MS,
        vec![("peer.service", "stripe"), ("server.address", "api.stripe.com")],
    );
    stripe.status = Some(SpanStatus { code: 2, message: "declined".into() });
    let mut failed_query = client(
        1,
        11,
        10,
        now + 3 * MS,
        7 * MS,
        vec![("db.system.name", "postgresql"), ("db.namespace", "orders")],
    );
    failed_query.status = Some(SpanStatus { code: 2, message: String::new() });
    let mut publish = client(
        1,
        13,
        10,
        now + 4 * MS,
        MS,
        vec![("messaging.system", "kafka"), ("messaging.destination.name", "checkout")],
    );
    publish.kind = SpanKind::Producer as i32;
    let sent = request(vec![
        (
            "web",
            vec![
                span(1, 1, None, "GET /", SpanKind::Server, now, 60 * MS),
                client(1, 2, 1, now + MS, 30 * MS, vec![("server.address", "api.internal")]),
                stripe,
            ],
        ),
        (
            "api",
            vec![
                span(1, 10, Some(2), "GET /items", SpanKind::Server, now + 2 * MS, 25 * MS),
                client(
                    1,
                    12,
                    10,
                    now + 2 * MS,
                    5 * MS,
                    vec![("db.system.name", "postgresql"), ("db.namespace", "orders")],
                ),
                failed_query,
                publish,
            ],
        ),
    ]);
    // Over gRPC (read from the protobuf bytes) and as OTLP/JSON (decoded), the same figures.
    t.traces().await.export(sent.clone()).await.expect("gRPC export");
    let answer =
        clients::post(&t, "/v1/traces", "application/json", None, serde_json::to_vec(&sent).expect("json"))
            .await;
    assert_eq!(answer.status(), 200);

    let peers = |t: &TestServer| {
        let t = t.endpoint();
        async move {
            let mut client = QueryServiceClient::connect(t).await.expect("connect");
            client
                .list_service_dependencies(ListServiceDependenciesRequest::default())
                .await
                .expect("dependencies")
                .into_inner()
                .peers
                .into_iter()
                .map(|p| (p.parent, p.kind, p.peer, p.call_count, p.error_count, p.p50_nanos, p.p99_nanos))
                .collect::<Vec<_>>()
        }
    };
    // Before pairing, api.internal is not known to be a service.
    let before = peers(&t).await;
    assert!(before.iter().any(|p| p.2 == "api.internal"), "{before:?}");
    t.rollup_pass().await;
    let within = |got: u64, exact: u64| (got as f64 - exact as f64).abs() <= exact as f64 * 0.01;
    let after = peers(&t).await;
    let named: Vec<(&str, &str, &str, u64, u64)> =
        after.iter().map(|p| (p.0.as_str(), p.1.as_str(), p.2.as_str(), p.3, p.4)).collect();
    assert_eq!(
        named,
        [
            ("api", "database", "postgresql orders", 4, 2),
            ("api", "messaging", "kafka checkout", 2, 0),
            ("web", "remote", "stripe", 2, 2),
        ],
        "api.internal answered with api's spans, so it is the web -> api edge, not a leaf"
    );
    let db = &after[0];
    assert!(within(db.5, 5 * MS) && within(db.6, 7 * MS), "{db:?}");
    let learned: Vec<(String, i32, String, String)> = t
        .sql
        .query("SELECT caller_service, peer_kind, peer, service FROM peer_services", &[])
        .await
        .expect("peer_services")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(learned, [("web".to_owned(), 3, "api.internal".to_owned(), "api".to_owned())]);

    // Jaeger's dependencies name the leaves as services.
    let jaeger: serde_json::Value = reqwest::get(clients::url(&t, "/jaeger/api/dependencies"))
        .await
        .expect("jaeger")
        .json()
        .await
        .expect("json");
    let links: Vec<(String, String, u64)> = jaeger["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|l| {
            (
                l["parent"].as_str().expect("parent").to_owned(),
                l["child"].as_str().expect("child").to_owned(),
                l["callCount"].as_u64().expect("callCount"),
            )
        })
        .collect();
    for link in [("web", "api", 2), ("api", "postgresql orders", 4), ("web", "stripe", 2)] {
        assert!(links.contains(&(link.0.to_owned(), link.1.to_owned(), link.2)), "{link:?} in {links:?}");
    }
    t.stop().await;
}

/// The trace ids of a search, page by page.
async fn search_all(t: &TestServer, request: SearchTracesRequest) -> (Vec<String>, usize) {
    let mut client = query(t).await;
    let (mut ids, mut pages) = (Vec::new(), 0);
    let mut token = String::new();
    loop {
        let page = client
            .search_traces(SearchTracesRequest { page_token: token.clone(), ..request.clone() })
            .await
            .expect("search")
            .into_inner();
        assert!(page.message.is_empty(), "{}", page.message);
        pages += 1;
        ids.extend(page.traces.into_iter().map(|t| t.trace_id));
        if page.next_page_token.is_empty() {
            return (ids, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_paged_search_finds_the_traces_a_full_scan_finds_in_the_same_order() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    // 80 traces over the last 40 minutes, some with spans minutes apart, some with the same
    // latest start; one service of three.
    let mut groups = vec![("api", vec![]), ("web", vec![])];
    for trace in 0..80u32 {
        let start = now - u64::from(trace % 40) * MINUTE - u64::from(trace % 7) * 1_000 * MS;
        groups[0].1.push(span(trace, 1, None, "GET /a", SpanKind::Server, start, 5 * MS));
        groups[(trace % 2) as usize].1.push(span(
            trace,
            2,
            Some(1),
            "child",
            SpanKind::Internal,
            start - u64::from(trace % 5) * MINUTE,
            MS,
        ));
    }
    t.traces().await.export(request(groups)).await.expect("export");
    let range = Some(TimeRange { start_unix_nano: now - 60 * MINUTE, end_unix_nano: now + MINUTE });
    for (service, span_name) in [("", ""), ("web", ""), ("api", "child")] {
        let service_filter = if service.is_empty() {
            String::new()
        } else {
            format!(
                " AND s.resource_id IN (SELECT resource_id FROM resources WHERE service_name = '{service}')"
            )
        };
        let name_filter =
            if span_name.is_empty() { String::new() } else { format!(" AND s.name = '{span_name}'") };
        let full: Vec<String> = t
            .sql
            .query(
                &format!(
                    "SELECT encode(s.trace_id, 'hex') FROM spans s WHERE true{service_filter}{name_filter}
                     GROUP BY s.trace_id ORDER BY max(s.start_time_unix_nano) DESC, s.trace_id DESC"
                ),
                &[],
            )
            .await
            .expect("full scan")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let request = SearchTracesRequest {
            time_range: range,
            service: service.into(),
            span_name: span_name.into(),
            page_size: 7,
            ..Default::default()
        };
        let (paged, pages) = search_all(&t, request).await;
        assert!(!full.is_empty());
        assert_eq!(paged, full, "service {service:?} span {span_name:?}");
        assert!(pages >= full.len() / 7, "{pages} pages");
    }
    t.stop().await;
}

#[tokio::test]
async fn sorted_searches_page_through_the_traces_in_the_order_sql_sorts_them() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    // 40 traces of 1 to 5 spans, of varied durations, some with failed spans; ties in every
    // figure, so that the trace id decides between them.
    let mut spans = Vec::new();
    for trace in 0..40u32 {
        let start = now - u64::from(trace * 7 % 30) * MINUTE;
        spans.push(span(
            trace,
            1,
            None,
            "GET /a",
            SpanKind::Server,
            start,
            u64::from(trace * 13 % 9 + 1) * MS,
        ));
        for child in 0..trace % 5 {
            let mut s = span(trace, child + 2, Some(1), "work", SpanKind::Internal, start + MS, MS / 2);
            if (trace + child) % 3 == 0 {
                s.status = Some(SpanStatus { code: 2, message: String::new() });
            }
            spans.push(s);
        }
    }
    t.traces().await.export(request(vec![("api", spans)])).await.expect("export");
    let range = Some(TimeRange { start_unix_nano: now - 60 * MINUTE, end_unix_nano: now + MINUTE });
    for (order, key) in [
        ("oldest", "min(s.start_time_unix_nano) ASC"),
        ("longest", "max(s.end_time_unix_nano - s.start_time_unix_nano) DESC"),
        ("most_spans", "count(*) DESC"),
        ("most_errors", "count(*) FILTER (WHERE s.status_code = 2) DESC"),
    ] {
        for (span_name, name_filter) in [("", ""), ("work", " AND s.name = 'work'")] {
            let full: Vec<String> = t
                .sql
                .query(
                    &format!(
                        "SELECT encode(s.trace_id, 'hex') FROM spans s WHERE true{name_filter}
                         GROUP BY s.trace_id ORDER BY {key}, s.trace_id"
                    ),
                    &[],
                )
                .await
                .expect("full scan")
                .iter()
                .map(|row| row.get(0))
                .collect();
            let request = SearchTracesRequest {
                time_range: range,
                span_name: span_name.into(),
                order: order.into(),
                page_size: 6,
                ..Default::default()
            };
            let (paged, pages) = search_all(&t, request).await;
            assert!(full.len() >= 30, "{order}: {} traces", full.len());
            assert_eq!(paged, full, "{order}, span {span_name:?}");
            assert_eq!(pages, full.len().div_ceil(6), "{order}");
        }
    }
    // The first page's summaries agree with the order: the longest trace leads.
    let longest = query(&t)
        .await
        .search_traces(SearchTracesRequest {
            time_range: range,
            order: "longest".into(),
            page_size: 3,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    let durations: Vec<u64> = longest.traces.iter().map(|t| t.duration_nanos).collect();
    assert!(durations.windows(2).all(|w| w[0] >= w[1]), "{durations:?}");
    assert_eq!(durations[0], 9 * MS);
    // An order the server does not know is refused, naming the ones it does.
    let refused = query(&t)
        .await
        .search_traces(SearchTracesRequest { order: "slowest".into(), ..Default::default() })
        .await
        .expect_err("an unknown order");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("longest"), "{}", refused.message());
    t.stop().await;
}

#[tokio::test]
async fn a_search_that_runs_out_of_time_says_how_far_it_read_and_goes_on_from_there() {
    let mut t = TestServer::start_with(|c| c.query.statement_timeout_ms = 500).await;
    t.first_maintenance_pass().await;
    let now = nanos_now();
    // Two traces now, two three days ago (before the partitions made ahead, days_behind = 1:
    // in the catch-all partition).
    let days_ago = now - 3 * 86_400 * 1_000_000_000;
    let spans = vec![
        span(1, 1, None, "GET /", SpanKind::Server, now - 2 * MINUTE, MS),
        span(2, 1, None, "GET /", SpanKind::Server, now - MINUTE, MS),
        span(3, 1, None, "GET /", SpanKind::Server, days_ago, MS),
        span(4, 1, None, "GET /", SpanKind::Server, days_ago + MINUTE, MS),
    ];
    t.traces().await.export(request(vec![("api", spans)])).await.expect("export");
    // The catch-all partition is locked: reading it waits past the statement timeout.
    t.sql.batch_execute("BEGIN; LOCK TABLE spans_default IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let range = Some(TimeRange { start_unix_nano: days_ago - MINUTE, end_unix_nano: now });
    let request = SearchTracesRequest { time_range: range, page_size: 10, ..Default::default() };
    let page = query(&t).await.search_traces(request.clone()).await.expect("a partial page").into_inner();
    let ids: Vec<String> = page.traces.into_iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, [trace_hex(2), trace_hex(1)], "today's traces, read before the lock");
    assert!(page.message.contains("query.statement_timeout_ms (500 ms)"), "{}", page.message);
    assert!(!page.next_page_token.is_empty(), "a token to go on with");
    t.sql.batch_execute("COMMIT").await.expect("unlock");
    let rest = query(&t)
        .await
        .search_traces(SearchTracesRequest { page_token: page.next_page_token, ..request })
        .await
        .expect("the rest")
        .into_inner();
    let ids: Vec<String> = rest.traces.into_iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, [trace_hex(4), trace_hex(3)]);
    assert!(rest.message.is_empty() && rest.next_page_token.is_empty());
    t.stop().await;
}
