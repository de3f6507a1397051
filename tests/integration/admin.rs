//! The admin endpoints, over real HTTP.

use otelephant::admin::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// GETs `path` and returns the status code and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_database() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| c.postgres.url = proxy.url()).await;
    let admin = t.server.as_ref().expect("running").admin_addr;
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".into()));

    proxy.cut();
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("database"), "says why: {body}");
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive without the database");
    assert_eq!(get(admin, "/nope").await.0, 404);
    t.stop().await;
}

#[tokio::test]
async fn not_ready_once_shutting_down() {
    let t = TestServer::start().await;
    let shutdown = otelephant::shutdown::Shutdown::new();
    let health = Health::new(t.server.as_ref().expect("running").pool.clone(), shutdown.clone());
    assert_eq!(health.check().await, Ok(()));
    shutdown.begin();
    assert_eq!(health.check().await, Err("shutting down".into()));
}

/// The value of the exposition line `series` (name and labels exactly as rendered), if any.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_what_was_received_stored_and_refused() {
    let mut t = TestServer::start().await;
    let server = t.server.as_ref().expect("running");
    let (admin, http) = (server.admin_addr, server.http_addr);

    // Four spans over gRPC, one of them with a trace id of the wrong length.
    let mut request = crate::common::fixtures::traces::request(nanos_now());
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    t.traces().await.export(request).await.expect("stored");
    // A body that is not protobuf over HTTP.
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff_u8; 7])
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 400);

    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    let traces = r#"signal="traces",transport="grpc""#;
    assert_eq!(value(&format!("otelephant_received_items_total{{{traces}}}")), 4.0);
    assert_eq!(value(&format!("otelephant_accepted_items_total{{{traces}}}")), 3.0);
    assert_eq!(value(&format!(r#"otelephant_rejected_items_total{{{traces},reason="invalid"}}"#)), 1.0);
    assert_eq!(value(&format!(r#"otelephant_requests_total{{{traces},outcome="partial"}}"#)), 1.0);
    assert_eq!(value(r#"otelephant_requests_total{signal="logs",transport="http",outcome="invalid"}"#), 1.0);
    assert_eq!(t.count("spans").await, 3, "the metrics agree with the database");
    assert_eq!(value("otelephant_batch_rows_count"), 1.0);
    // One batch: the resource, the scopes and three spans.
    assert!(value("otelephant_batch_rows_sum") >= 3.0);
    assert_eq!(value("otelephant_commit_duration_seconds_count"), 1.0);
    assert_eq!(value("otelephant_copy_duration_seconds_count"), 1.0);
    assert_eq!(value("otelephant_queue_bytes"), 0.0);
    assert_eq!(value("otelephant_queue_capacity_bytes"), 33_554_432.0);
    assert_eq!(value("otelephant_intake_capacity_bytes"), 16_777_216.0);
    assert!(value("otelephant_partitions_created_total") > 0.0, "a new schema gets its partitions");
    assert!(value(r#"otelephant_pool_connections{state="idle"}"#) >= 1.0);
    assert_eq!(value(&format!(r#"otelephant_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))), 1.0);
    assert!(text.contains("# TYPE otelephant_copy_duration_seconds histogram"), "{text}");
    assert!(text.contains("# HELP otelephant_accepted_items_total"), "{text}");
    t.stop().await;
}

#[tokio::test]
async fn metrics_count_database_errors_and_retries() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 300;
    })
    .await;
    let admin = t.server.as_ref().expect("running").admin_addr;
    proxy.refuse();
    let err = t
        .traces()
        .await
        .export(crate::common::fixtures::traces::request(nanos_now()))
        .await
        .expect_err("database down");
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let (_, text) = get(admin, "/metrics").await;
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    let traces = r#"signal="traces",transport="grpc""#;
    assert!(value(r#"otelephant_database_errors_total{kind="connection"}"#) >= 1.0);
    assert!(value("otelephant_batch_retries_total") >= 1.0);
    assert_eq!(value(&format!(r#"otelephant_rejected_items_total{{{traces},reason="unavailable"}}"#)), 4.0);
    assert_eq!(value(&format!(r#"otelephant_requests_total{{{traces},outcome="unavailable"}}"#)), 1.0);
    proxy.heal();
    t.stop().await;
}
