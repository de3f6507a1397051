//! One client cannot hold the receivers hostage: a request takes intake room as its bytes
//! arrive (and as they inflate), so bodies still on their way in count against the memory bound
//! while a stalled one holds only what it sent; slow headers and bodies are cut off; idle
//! connections are closed and their number bounded; over both HTTP and gRPC.

use std::time::Duration;

use prost::Message;
use reqwest::{header, StatusCode};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::common::{
    clients::{post, PROTOBUF},
    *,
};

/// The whole intake budget; the stalled requests below declare exactly this much.
const INTAKE: usize = 100_000;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.pipeline.intake_bytes = INTAKE;
    })
    .await
}

/// A client that sends the head of a request declaring `INTAKE` bytes, then only a few.
async fn stalled_http(addr: std::net::SocketAddr, chunked: bool) -> TcpStream {
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let length =
        if chunked { "transfer-encoding: chunked".to_owned() } else { format!("content-length: {INTAKE}") };
    let head =
        format!("POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {PROTOBUF}\r\n{length}\r\n\r\n");
    slow.write_all(head.as_bytes()).await.expect("send head");
    let first: &[u8] =
        if chunked { b"a\r\n\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\r\n" } else { &[0x0a; 10] };
    slow.write_all(first).await.expect("send the first bytes");
    slow
}

#[tokio::test]
async fn a_stalled_http_body_holds_only_what_it_sent_and_is_cut_off() {
    let mut t = TestServer::start_with(|c| {
        c.pipeline.intake_bytes = INTAKE;
        c.otlp.read_timeout_ms = 1_500;
    })
    .await;
    let addr = t.server.as_ref().expect("running").http_addr;
    for chunked in [false, true] {
        // A client declares a body as large as the whole budget (or none) and sends 10 bytes: it
        // holds a step of room ahead of them (a 64th of the budget), no more.
        let mut slow = stalled_http(addr, chunked).await;
        room_held(&t, INTAKE / 64).await;

        // Another client's export is stored meanwhile.
        let body = crate::common::fixtures::traces::request(nanos_now()).encode_to_vec();
        let stored = post(&t, "/v1/traces", PROTOBUF, None, body).await;
        assert_eq!(stored.status(), StatusCode::OK);

        // The stalled body is cut off after otlp.read_timeout_ms, and its room comes back.
        let started = std::time::Instant::now();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut slow, &mut answer).await.expect("answered and closed");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("otlp.read_timeout_ms"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "cut after {:?}", started.elapsed());
        room_held(&t, 0).await;
    }
    assert_eq!(t.count("spans").await, 8);
    t.stop().await;
}

#[tokio::test]
async fn a_trickled_http_body_is_cut_off_by_the_minimum_rate() {
    let mut t = TestServer::start_with(|c| {
        c.otlp.read_timeout_ms = 1_000;
        c.otlp.min_read_bytes_per_sec = 1_000;
    })
    .await;
    let addr = t.server.as_ref().expect("running").http_addr;
    let mut slow = stalled_http(addr, false).await;
    // A byte every 300 ms keeps every gap short, but falls behind 1,000 bytes a second.
    let started = std::time::Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(&[0x0a]).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    assert!(started.elapsed() < Duration::from_secs(5), "still trickling after {:?}", started.elapsed());
    t.stop().await;
}

#[tokio::test]
async fn headers_trickled_in_are_cut_off() {
    let mut t = TestServer::start_with(|c| c.otlp.read_timeout_ms = 1_000).await;
    let addr = t.server.as_ref().expect("running").http_addr;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"POST /v1/traces HTTP/1.1\r\n").await.expect("request line");
    let started = std::time::Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    assert!(started.elapsed() < Duration::from_secs(5), "still open after {:?}", started.elapsed());
    t.stop().await;
}

#[tokio::test]
async fn bodies_still_arriving_count_against_the_budget() {
    let mut t = server().await;
    let addr = t.server.as_ref().expect("running").http_addr;
    // A client sends 70% of the budget and stops short of the end of its body.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {PROTOBUF}\r\ncontent-length: {INTAKE}\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.expect("send head");
    slow.write_all(&vec![0x0a; INTAKE * 7 / 10]).await.expect("send most of the body");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let intake = t.server.as_ref().expect("running").intake.clone();
    while intake.in_use() < INTAKE / 2 {
        assert!(std::time::Instant::now() < deadline, "{} bytes held", intake.in_use());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A request of 40% of the budget finds no room and is turned away to retry.
    let large = crate::common::fixtures::logs::many_records(INTAKE * 4 / 10);
    let turned_away = post(&t, "/v1/logs", PROTOBUF, None, large.clone()).await;
    assert_eq!(turned_away.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(turned_away.headers()[header::RETRY_AFTER], "1");

    // The slow client goes away; its room comes back and the same requests are stored.
    drop(slow);
    room_held(&t, 0).await;
    assert_eq!(post(&t, "/v1/logs", PROTOBUF, None, large).await.status(), StatusCode::OK);
    room_held(&t, 0).await;
    t.stop().await;
}

/// An HTTP/2 trace Export call opened on a connection of its own, its body still to send.
async fn export_call(
    addr: std::net::SocketAddr,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    export_call_to(addr, "trace.v1.TraceService", None).await
}

/// An HTTP/2 Export call of `service` (after `opentelemetry.proto.collector.`), its messages
/// compressed with `encoding` if given.
async fn export_call_to(
    addr: std::net::SocketAddr,
    service: &str,
    encoding: Option<&str>,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let mut request =
        http::Request::post(format!("http://{addr}/opentelemetry.proto.collector.{service}/Export"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    client.send_request(request.body(()).expect("request"), false).expect("stream opens")
}

/// An HTTP/2 Export call whose message prefix declares the whole budget, with a few bytes of
/// the message sent.
async fn stalled_grpc(
    addr: std::net::SocketAddr,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let (response, mut stream) = export_call(addr).await;
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&u32::try_from(INTAKE).expect("fits").to_be_bytes());
    prefix.extend_from_slice(&[0x0a; 10]);
    stream.send_data(prefix.into(), false).expect("send the first bytes");
    (response, stream)
}

/// The grpc-status of an answer, from its headers or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> (String, String) {
    let response = response.await.expect("answered");
    let status = |headers: &http::HeaderMap| {
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (get("grpc-status"), get("grpc-message"))
    };
    let in_headers = status(response.headers());
    if !in_headers.0.is_empty() {
        return in_headers;
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    status(&body.trailers().await.expect("trailers").expect("some"))
}

#[tokio::test]
async fn a_stalled_grpc_message_holds_only_what_it_sent_and_is_cut_off() {
    let mut t = TestServer::start_with(|c| {
        c.pipeline.intake_bytes = INTAKE;
        c.otlp.read_timeout_ms = 1_500;
    })
    .await;
    let addr = t.server.as_ref().expect("running").grpc_addr;
    let (response, _stream) = stalled_grpc(addr).await;
    room_held(&t, INTAKE / 64).await;

    // A complete export is stored meanwhile.
    t.traces().await.export(crate::common::fixtures::traces::request(nanos_now())).await.expect("stored");
    assert_eq!(t.count("spans").await, 4);

    // The stalled call is answered DEADLINE_EXCEEDED after otlp.read_timeout_ms; its room comes back.
    let started = std::time::Instant::now();
    let (code, message) = grpc_status(response).await;
    assert_eq!(code, "4", "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "cut after {:?}", started.elapsed());
    room_held(&t, 0).await;
    assert!(metrics(&t)
        .await
        .contains(r#"otelephant_requests_total{signal="traces",transport="grpc",outcome="too_slow"} 1"#));
    t.stop().await;
}

#[tokio::test]
async fn an_export_call_carrying_two_messages_is_refused() {
    let mut t = TestServer::start().await;
    let (response, mut stream) = export_call(t.server.as_ref().expect("running").grpc_addr).await;
    let message = crate::common::fixtures::traces::request(nanos_now()).encode_to_vec();
    let mut body = Vec::new();
    for _ in 0..2 {
        body.push(0u8);
        body.extend_from_slice(&u32::try_from(message.len()).expect("fits").to_be_bytes());
        body.extend_from_slice(&message);
    }
    stream.send_data(body.into(), true).expect("send");
    let (code, message) = grpc_status(response).await;
    assert_eq!(code, "3", "{message}");
    assert!(message.contains("exactly%20one%20message"), "{message}");
    assert_eq!(t.count("spans").await, 0);
    t.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_their_number_is_bounded() {
    let mut t = TestServer::start_with(|c| {
        c.otlp.idle_timeout_secs = 1;
        c.otlp.max_connections = 2;
    })
    .await;
    let server = t.server.as_ref().expect("running");
    for addr in [server.http_addr, server.grpc_addr] {
        // Two idle connections take every place; a third waits unanswered.
        let idle = [
            TcpStream::connect(addr).await.expect("connect"),
            TcpStream::connect(addr).await.expect("connect"),
        ];
        let started = std::time::Instant::now();
        let mut third = TcpStream::connect(addr).await.expect("the kernel accepts it");
        third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
        let mut answer = [0u8; 12];
        let read = tokio::io::AsyncReadExt::read(&mut third, &mut answer);
        let answer =
            tokio::time::timeout(Duration::from_secs(10), read).await.expect("answered").expect("read");
        // It is served only once the idle ones have been closed, after about a second.
        assert!(answer > 0);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{addr}: {waited:?}"
        );
        // They were closed: whatever the server sent first (HTTP/2 settings), then the end.
        for mut connection in idle {
            let mut rest = Vec::new();
            let closed = tokio::io::AsyncReadExt::read_to_end(&mut connection, &mut rest);
            tokio::time::timeout(Duration::from_secs(1), closed).await.expect("closed").ok();
        }
    }
    t.stop().await;
}

/// The server's own metrics, as Prometheus scrapes them.
async fn metrics(t: &TestServer) -> String {
    let admin = t.server.as_ref().expect("running").admin_addr;
    reqwest::get(format!("http://{admin}/metrics")).await.expect("scraped").text().await.expect("text")
}

/// Waits until requests hold `bytes` of the intake budget.
async fn room_held(t: &TestServer, bytes: usize) {
    let intake = &t.server.as_ref().expect("running").intake;
    for _ in 0..1000 {
        if intake.in_use() == bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} bytes of room in use, expected {bytes}", intake.in_use());
}

/// An export request of `n` empty log records: two bytes each on the wire, a row of about a
/// hundred bytes each once encoded. Written as bytes: as structs they would take 184 bytes each.
fn empty_records(n: usize) -> Vec<u8> {
    let mut scope_logs = Vec::with_capacity(2 * n);
    for _ in 0..n {
        scope_logs.extend_from_slice(&[0x12, 0x00]); // ScopeLogs.log_records: an empty LogRecord
    }
    let wrap = |tag: u8, inner: Vec<u8>| {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(&inner);
        out
    };
    // ExportLogsServiceRequest.resource_logs { ResourceLogs.scope_logs { ... } }
    wrap(0x0a, wrap(0x12, scope_logs))
}

/// What one request may take in all, in the tests below.
const REQUEST_MEMORY: usize = 4 << 20;

async fn small_budgets() -> TestServer {
    TestServer::start_with(|c| {
        c.pipeline.intake_bytes = 1 << 20;
        c.pipeline.max_request_memory = REQUEST_MEMORY;
    })
    .await
}

#[tokio::test]
async fn requests_that_become_far_more_than_they_weigh_are_charged_for_it() {
    let mut t = small_budgets().await;
    // 100,000 empty records: 200 KB on the wire, about 10 MB of rows: refused on every path.
    let heavy = empty_records(100_000);
    assert!(heavy.len() < 250_000);
    let mut logs = t.logs().await;
    let request =
        <opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest as Message>::decode(
            &heavy[..],
        )
        .expect("decodes");
    let err = logs.export(request).await.expect_err("too much memory");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("pipeline.max_request_memory"), "{err:?}");
    let response = post(&t, "/v1/logs", PROTOBUF, None, heavy).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let counted = metrics(&t).await;
    for transport in ["grpc", "http"] {
        let line = format!(
            r#"otelephant_requests_total{{signal="logs",transport="{transport}",outcome="too_large"}} 1"#
        );
        assert!(counted.contains(&line), "{line}");
    }
    // As OTLP/JSON, 70,000 `{}` records (210 KB) would be far more as structs.
    let json =
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}{{}}]}}]}}]}}"#, "{},".repeat(70_000));
    let response = post(&t, "/v1/logs", "application/json", None, json.into_bytes()).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    room_held(&t, 0).await;

    // 10,000 of them (about 1 MB of rows) go through, alone if need be.
    let light = empty_records(10_000);
    let response = post(&t, "/v1/logs", PROTOBUF, None, light).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t.count("logs").await, 10_000);
    room_held(&t, 0).await;
    t.stop().await;
}

#[tokio::test]
async fn compressed_messages_are_charged_for_what_they_inflate_to() {
    let mut t = small_budgets().await;
    // 8 MiB of empty records in a few KB of zstd, over gRPC: refused while it inflates.
    let bomb = zstd::encode_all(&empty_records(4 << 20)[..], 3).expect("zstd");
    assert!(bomb.len() < 10_000, "{} bytes", bomb.len());
    let addr = t.server.as_ref().expect("running").grpc_addr;
    let (response, mut stream) = export_call_to(addr, "logs.v1.LogsService", Some("zstd")).await;
    let mut body = vec![1u8];
    body.extend_from_slice(&u32::try_from(bomb.len()).expect("fits").to_be_bytes());
    body.extend_from_slice(&bomb);
    stream.send_data(body.into(), true).expect("send");
    let (code, message) = grpc_status(response).await;
    assert_eq!(code, "8", "{message}");
    // The same over HTTP with gzip.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gzip, &empty_records(4 << 20)).expect("gzip");
    let gzip = gzip.finish().expect("gzip");
    let response = post(&t, "/v1/logs", PROTOBUF, Some("gzip"), gzip).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    room_held(&t, 0).await;

    // A compressed message of ordinary size is stored, over both.
    let ordinary =
        zstd::encode_all(&crate::common::fixtures::logs::many_records(100_000)[..], 3).expect("zstd");
    let (response, mut stream) = export_call_to(addr, "logs.v1.LogsService", Some("zstd")).await;
    let mut body = vec![1u8];
    body.extend_from_slice(&u32::try_from(ordinary.len()).expect("fits").to_be_bytes());
    body.extend_from_slice(&ordinary);
    stream.send_data(body.into(), true).expect("send");
    let (code, message) = grpc_status(response).await;
    assert_eq!(code, "0", "{message}");
    assert_eq!(t.count("logs").await, 97);
    room_held(&t, 0).await;
    t.stop().await;
}
