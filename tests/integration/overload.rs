//! The intake budget: a request holds room from its first bytes, before its body is read,
//! decoded or encoded, so bodies still on their way in count against the memory bound, over
//! both HTTP and gRPC.

use std::time::Duration;

use prost::Message;
use reqwest::{header, StatusCode};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tonic_types::StatusExt;

use crate::{
    common::*,
    http::{post, PROTOBUF},
};

/// The whole intake budget; the stalled requests below declare exactly this much.
const INTAKE: usize = 100_000;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.pipeline.intake_bytes = INTAKE;
    })
    .await
}

#[tokio::test]
async fn an_http_body_still_arriving_holds_its_room_until_it_is_done() {
    let mut t = server().await;
    let addr = t.server.as_ref().expect("running").http_addr;

    // A client declares a body as large as the whole budget and sends only its first bytes.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {PROTOBUF}\r\ncontent-length: {INTAKE}\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.expect("send head");
    slow.write_all(&[0x0a; 10]).await.expect("send the first bytes");
    room_held(&t, INTAKE).await;

    // Its room is taken: a complete request waits for room, then is turned away to retry.
    let body = crate::traces::request(nanos_now()).encode_to_vec();
    let turned_away = post(&t, "/v1/traces", PROTOBUF, None, body.clone()).await;
    assert_eq!(turned_away.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(turned_away.headers()[header::RETRY_AFTER], "1");

    // The slow client goes away; its room comes back and the same request is stored.
    drop(slow);
    room_held(&t, 0).await;
    let stored = post(&t, "/v1/traces", PROTOBUF, None, body).await;
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(t.count("spans").await, 4);
    t.stop().await;
}

#[tokio::test]
async fn a_grpc_message_still_arriving_holds_its_room_until_it_is_done() {
    let mut t = server().await;
    let addr = t.server.as_ref().expect("running").grpc_addr;

    // An HTTP/2 client opens an Export call whose message prefix declares the whole budget,
    // and sends a few bytes of the message.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (_response, mut stream) = client.send_request(request, false).expect("stream opens");
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&u32::try_from(INTAKE).expect("fits").to_be_bytes());
    prefix.extend_from_slice(&[0x0a; 10]);
    stream.send_data(prefix.into(), false).expect("send the first bytes");
    room_held(&t, INTAKE).await;

    // A complete export waits for room, then gets UNAVAILABLE with a RetryInfo delay.
    let mut traces = t.traces().await;
    let err = traces.export(crate::traces::request(nanos_now())).await.expect_err("no room");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("overloaded"), "{err:?}");
    assert_eq!(err.get_details_retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(1)));

    // The slow call is cancelled; its room comes back and the export is stored.
    stream.send_reset(h2::Reason::CANCEL);
    room_held(&t, 0).await;
    traces.export(crate::traces::request(nanos_now())).await.expect("stored");
    assert_eq!(t.count("spans").await, 4);
    t.stop().await;
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
