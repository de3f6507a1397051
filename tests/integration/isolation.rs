//! Reads cannot hold up writes: the query service has connections of its own, a statement
//! timeout, cancellation when its client goes away, and limits on what one request may ask for
//! and get back.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value::Value, AnyValue},
    metrics::v1::{
        metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    },
};
use otelephant::query::proto::{
    query_service_client::QueryServiceClient, AttributeFilter, GetTraceRequest, QueryMetricsRequest,
    SearchLogsRequest, SearchTracesRequest, TimeRange,
};
use tonic::{transport::Channel, Code};

use crate::common::*;

async fn query(t: &TestServer) -> QueryServiceClient<Channel> {
    QueryServiceClient::connect(t.endpoint()).await.expect("connect")
}

fn metrics_request(name: &str) -> QueryMetricsRequest {
    QueryMetricsRequest { name: name.into(), ..Default::default() }
}

/// Holds an ACCESS EXCLUSIVE lock on `table` in an open transaction until dropped, so that
/// every query reading it waits, as a slow query would, while ingest (which does not read it)
/// goes on. Returns the locking backend's pid.
async fn lock(t: &TestServer, table: &str) -> (tokio_postgres::Client, i32) {
    let mut pg: tokio_postgres::Config = database_url().parse().expect("test database url");
    pg.options(format!("-c search_path={}", t.config.postgres.schema));
    let (sql, connection) = pg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    // Should a test fail while holding it, the server ends the transaction, so that the schema's
    // clean-up does not wait behind the lock for ever.
    let begin = format!(
        "SET idle_in_transaction_session_timeout = '15s'; BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    );
    sql.batch_execute(&begin).await.expect("lock");
    let pid: i32 = sql.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    (sql, pid)
}

/// How many backends wait behind the lock that `pid` holds.
async fn waiting_behind(t: &TestServer, pid: i32) -> i64 {
    t.sql
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))", &[&pid])
        .await
        .expect("pg_stat_activity")
        .get(0)
}

async fn wait_for_waiting(t: &TestServer, pid: i32, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_behind(t, pid).await != n {
        assert!(
            Instant::now() < deadline,
            "{} backends wait behind the lock, expected {n}",
            waiting_behind(t, pid).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn queries_stuck_in_the_database_hold_up_neither_ingest_nor_readiness() {
    let mut t = TestServer::start_with(|c| c.query.pool_size = 3).await;
    let (locker, pid) = lock(&t, "metric_series").await;

    // Twelve queries: three hold every query connection, stuck behind the lock; nine wait for one.
    let stuck: Vec<_> = (0..12)
        .map(|_| {
            let endpoint = t.endpoint();
            tokio::spawn(async move {
                let mut client = QueryServiceClient::connect(endpoint).await.expect("connect");
                client.query_metrics(metrics_request("any")).await
            })
        })
        .collect();
    wait_for_waiting(&t, pid, 3).await;

    // Ingest and readiness go on meanwhile.
    let started = Instant::now();
    t.traces().await.export(crate::common::fixtures::traces::request(nanos_now())).await.expect("stored");
    let export = started.elapsed();
    assert_eq!(t.count("spans").await, 4);
    let admin = t.server.as_ref().expect("running").admin_addr;
    let started = Instant::now();
    let ready = reqwest::get(format!("http://{admin}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    println!("with 12 queries stuck: export answered in {export:?}, /readyz in {:?}", started.elapsed());
    assert!(export < Duration::from_secs(5), "the export waited {export:?}");

    drop(locker);
    for query in stuck {
        query.await.expect("joins").expect("answered once the lock is gone");
    }
    t.stop().await;
}

#[tokio::test]
async fn a_query_whose_client_gave_up_is_cancelled_in_the_database() {
    let mut t = TestServer::start().await;
    let (locker, pid) = lock(&t, "metric_series").await;
    let mut client = query(&t).await;
    let mut request = tonic::Request::new(metrics_request("any"));
    request.set_timeout(Duration::from_millis(300));
    let err = client.query_metrics(request).await.expect_err("the client gives up");
    assert!(matches!(err.code(), Code::Cancelled | Code::DeadlineExceeded), "{err:?}");
    // The statement no longer waits in PostgreSQL, though the lock is still held.
    wait_for_waiting(&t, pid, 0).await;

    // The next query gets a working connection.
    drop(locker);
    let answer = client.query_metrics(metrics_request("any")).await.expect("answered");
    assert!(answer.get_ref().raw.as_ref().is_some_and(|raw| raw.resource_metrics.is_empty()));
    t.stop().await;
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_answered_deadline_exceeded() {
    let mut t = TestServer::start_with(|c| c.query.statement_timeout_ms = 300).await;
    let (locker, pid) = lock(&t, "metric_series").await;
    let started = Instant::now();
    let err = query(&t).await.query_metrics(metrics_request("any")).await.expect_err("times out");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("query.statement_timeout_ms (300 ms)"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_for_waiting(&t, pid, 0).await;
    drop(locker);
    t.stop().await;
}

#[tokio::test]
async fn query_sessions_run_without_jit() {
    let mut t = TestServer::start().await;
    let pool = t.server.as_ref().expect("running").pool.clone();
    let jit: String =
        pool.get().await.expect("connection").query_one("SHOW jit", &[]).await.expect("show").get(0);
    assert_eq!(jit, "off");
    t.stop().await;
}

#[tokio::test]
async fn filters_past_their_limits_are_refused_naming_the_limit() {
    let mut t = TestServer::start_with(|c| {
        c.query.max_filters = 2;
        c.query.max_filter_bytes = 64;
    })
    .await;
    let mut client = query(&t).await;
    let filter = |key: &str, value: &str| AttributeFilter {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
    };
    let three = vec![filter("a", "1"), filter("b", "2"), filter("c", "3")];
    let err = client
        .search_traces(SearchTracesRequest { attributes: three.clone(), ..Default::default() })
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("query.max_filters"), "{err:?}");
    let err = client
        .search_logs(SearchLogsRequest { attributes: three.clone(), ..Default::default() })
        .await
        .expect_err("too many");
    assert!(err.message().contains("query.max_filters"), "{err:?}");
    let err = client
        .query_metrics(QueryMetricsRequest { attributes: three, ..metrics_request("m") })
        .await
        .expect_err("too many");
    assert!(err.message().contains("query.max_filters"), "{err:?}");

    let long = "x".repeat(100);
    let err = client
        .search_traces(SearchTracesRequest { attributes: vec![filter("k", &long)], ..Default::default() })
        .await
        .expect_err("too long");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("attributes[0]") && err.message().contains("query.max_filter_bytes"),
        "{err:?}"
    );
    let err = client
        .search_logs(SearchLogsRequest { body_contains: long, ..Default::default() })
        .await
        .expect_err("too long");
    assert!(
        err.message().contains("body_contains") && err.message().contains("query.max_filter_bytes"),
        "{err:?}"
    );

    // Two filters of allowed length are fine.
    client
        .search_traces(SearchTracesRequest {
            attributes: vec![filter("a", "1"), filter("b", "2")],
            ..Default::default()
        })
        .await
        .expect("answered");
    t.stop().await;
}

#[tokio::test]
async fn bad_filters_and_tokens_are_invalid_arguments_not_database_errors() {
    let mut t = TestServer::start().await;
    let mut client = query(&t).await;
    // A key with U+0000 is never stored; a value with it is (see the jsonb mapping).
    let nul = |key: &str, value: &str| AttributeFilter {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
    };
    let err = client
        .search_logs(SearchLogsRequest { attributes: vec![nul("k\0", "a")], ..Default::default() })
        .await
        .expect_err("U+0000");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let found = client
        .search_logs(SearchLogsRequest { attributes: vec![nul("k", "a\0b")], ..Default::default() })
        .await
        .expect("a value may hold U+0000");
    assert!(found.into_inner().logs.is_none_or(|l| l.resource_logs.is_empty()));
    let err = client
        .search_traces(SearchTracesRequest { service: "a\0b".into(), ..Default::default() })
        .await
        .expect_err("U+0000");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    use base64::Engine;
    for forged in ["1:2:(99999999999,1)", "1:2:(1,70000)", "1:99999999999999999999:(1,1)", "x\0y"] {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
        let err = client
            .search_logs(SearchLogsRequest { page_token: token, ..Default::default() })
            .await
            .expect_err("forged");
        assert_eq!(err.code(), Code::InvalidArgument, "{forged:?}: {err:?}");
    }

    // An invalid trace id of any length comes back only in part.
    let huge = "z".repeat(1_000_000);
    let err = client.get_trace(GetTraceRequest { trace_id: huge }).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().len() < 200, "{} bytes of message", err.message().len());
    assert!(err.message().contains("1000000 bytes"), "{err:?}");
    t.stop().await;
}

#[tokio::test]
async fn a_trace_larger_than_the_limit_is_refused_naming_the_limit() {
    let mut t = TestServer::start_with(|c| c.query.max_trace_spans = 3).await;
    let now = nanos_now();
    let mut request = crate::common::fixtures::traces::request(now);
    let trace_id = vec![7u8; 16];
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.trace_id = trace_id.clone();
            }
        }
    }
    t.traces().await.export(request).await.expect("stored");
    let mut client = query(&t).await;
    let err =
        client.get_trace(GetTraceRequest { trace_id: hex::encode(&trace_id) }).await.expect_err("4 > 3");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("more than 3 spans") && err.message().contains("query.max_trace_spans"),
        "{err:?}"
    );
    t.stop().await;

    let mut t = TestServer::start_with(|c| c.query.max_trace_spans = 4).await;
    let mut request = crate::common::fixtures::traces::request(now);
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.trace_id = trace_id.clone();
            }
        }
    }
    t.traces().await.export(request).await.expect("stored");
    let trace =
        query(&t).await.get_trace(GetTraceRequest { trace_id: hex::encode(&trace_id) }).await.expect("4 fit");
    let spans: usize =
        trace.get_ref().resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
    assert_eq!(spans, 4);
    t.stop().await;
}

#[tokio::test]
async fn metric_pages_past_the_point_limit_are_refused_naming_the_limit() {
    let mut t = TestServer::start_with(|c| c.query.max_points = 3).await;
    let now = nanos_now();
    let point = |i: u64| NumberDataPoint {
        time_unix_nano: now - 10_000_000_000 + i * 1_000_000_000,
        value: Some(number_data_point::Value::AsInt(i as i64)),
        ..Default::default()
    };
    let gauge = |name: &str, n: u64| Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge { data_points: (0..n).map(point).collect() })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![gauge("four", 4), gauge("three", 3)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.metrics().await.export(request).await.expect("stored");
    let mut client = query(&t).await;
    let range = Some(TimeRange { start_unix_nano: now - 60_000_000_000, end_unix_nano: now });

    let err = client
        .query_metrics(QueryMetricsRequest { time_range: range, ..metrics_request("four") })
        .await
        .expect_err("4 > 3");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("query.max_points"), "{err:?}");
    let three = client
        .query_metrics(QueryMetricsRequest { time_range: range, ..metrics_request("three") })
        .await
        .expect("3 fit");
    assert_eq!(three.get_ref().raw.as_ref().map(|r| r.resource_metrics.len()), Some(1));

    // 60 steps of a second are more than 3; 2 steps of 30 s are not.
    let steps = |step_nanos| QueryMetricsRequest {
        time_range: range,
        step_nanos,
        aggregation: "avg".into(),
        ..metrics_request("three")
    };
    let err = client.query_metrics(steps(1_000_000_000)).await.expect_err("60 steps");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("60 steps") && err.message().contains("query.max_points"), "{err:?}");
    client.query_metrics(steps(30_000_000_000)).await.expect("2 steps fit");
    t.stop().await;
}
