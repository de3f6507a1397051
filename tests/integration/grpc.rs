//! The OTLP/gRPC front door: compression, size limits, undecodable and empty requests, and the
//! answer when the database is away.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    trace::v1::{ResourceSpans, ScopeSpans},
};
use tonic::{codec::CompressionEncoding, Code};

use crate::common::{fixtures::traces::full_span, *};

fn spans(n: u8) -> ExportTraceServiceRequest {
    let now = nanos_now();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n).map(|i| full_span(i, now)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn gzip_and_zstd_requests_are_accepted() {
    let mut t = TestServer::start().await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = t.traces().await.send_compressed(encoding);
        client.export(spans(3)).await.unwrap_or_else(|e| panic!("{encoding:?} export failed: {e}"));
    }
    assert_eq!(t.count("spans").await, 6);
    t.stop().await;
}

#[tokio::test]
async fn oversized_requests_get_resource_exhausted() {
    let mut t = TestServer::start_with(|c| c.otlp.max_request_bytes = 16 * 1024).await;
    let big = spans(40);
    for encoding in [None, Some(CompressionEncoding::Gzip)] {
        let mut client = t.traces().await;
        if let Some(encoding) = encoding {
            client = client.send_compressed(encoding);
        }
        let err = client.export(big.clone()).await.expect_err("over the limit");
        assert_eq!(err.code(), Code::ResourceExhausted, "{encoding:?}: {err}");
        assert!(err.message().contains("16384"), "the message names the limit: {}", err.message());
    }
    // A request under the limit still goes through.
    t.traces().await.export(spans(1)).await.expect("small request");
    assert_eq!(t.count("spans").await, 1);
    t.stop().await;
}

#[tokio::test]
async fn undecodable_requests_get_invalid_argument() {
    let mut t = TestServer::start().await;
    // A gRPC frame whose protobuf is truncated: field 1 (resource_spans) claims 100 bytes.
    let body: Vec<u8> = [&[0u8][..], &5u32.to_be_bytes(), &[0x0a, 100, 1, 2, 3]].concat();
    let response =
        http_post_grpc(&t.endpoint(), "/opentelemetry.proto.collector.trace.v1.TraceService/Export", body)
            .await;
    assert_eq!(response.0, Code::InvalidArgument as i32, "status: {response:?}");
    assert!(response.1.contains("decode"), "message explains: {}", response.1);
    assert_eq!(t.count("spans").await, 0);
    t.stop().await;
}

/// A span named `name`, whose attribute `deep` nests arrays `depth` levels down.
pub fn hostile_request(name: &str, depth: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};
    let mut deep = AnyValue { value: Some(Value::IntValue(1)) };
    for _ in 0..depth {
        deep = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![deep] })) };
    }
    let mut request = spans(1);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.name = name.into();
    span.attributes.push(KeyValue { key: "deep".into(), value: Some(deep), ..Default::default() });
    request
}

#[tokio::test]
async fn invalid_utf8_and_absurd_nesting_get_invalid_argument_and_cost_no_one_else() {
    use prost::Message;
    let mut t = TestServer::start().await;
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let frame = |message: Vec<u8>| [&[0u8][..], &(message.len() as u32).to_be_bytes(), &message].concat();

    // A span name that is not UTF-8: protobuf strings must be.
    let mut bytes = hostile_request("NAME", 1).encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"NAME").expect("the name is in the message");
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    let (code, message) = http_post_grpc(&t.endpoint(), path, frame(bytes)).await;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("UTF-8"), "the message says why: {message}");

    // An attribute value nested 1,000 levels deep.
    let bytes = hostile_request("deep", 1000).encode_to_vec();
    let (code, message) = http_post_grpc(&t.endpoint(), path, frame(bytes)).await;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("recursion"), "the message says why: {message}");

    // The server goes on storing everyone else's requests, a reasonably nested value included.
    t.traces().await.export(hostile_request("fine", 20)).await.expect("stored");
    assert_eq!(t.count("spans").await, 1);
    let depth: i32 = t
        .sql
        .query_one("SELECT jsonb_array_length(attributes->'deep') FROM spans", &[])
        .await
        .expect("stored nested value")
        .get(0);
    assert_eq!(depth, 1);
    t.stop().await;
}

/// Sends one raw gRPC request over HTTP/2 and returns (grpc-status, grpc-message).
async fn http_post_grpc(endpoint: &str, path: &'static str, body: Vec<u8>) -> (i32, String) {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_maybe_shared(path).expect("path");
    // Skip the 5-byte frame header: the codec adds its own.
    let request = tonic::Request::new(bytes::Bytes::from(body[5..].to_vec()));
    match grpc.unary::<_, bytes::Bytes, _>(request, path, RawCodec).await {
        Ok(_) => (0, String::new()),
        Err(status) => (status.code() as i32, status.message().to_owned()),
    }
}

/// Passes bytes through untouched, so a test can send protobuf that does not decode.
#[derive(Default, Clone)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[tokio::test]
async fn empty_requests_succeed() {
    let mut t = TestServer::start().await;
    t.traces().await.export(ExportTraceServiceRequest::default()).await.expect("empty traces");
    t.metrics().await.export(ExportMetricsServiceRequest::default()).await.expect("empty metrics");
    t.logs().await.export(ExportLogsServiceRequest::default()).await.expect("empty logs");
    // Resources with no records are fine too, and store nothing.
    let hollow = ExportTraceServiceRequest { resource_spans: vec![ResourceSpans::default()] };
    t.traces().await.export(hollow).await.expect("hollow request");
    assert_eq!(t.count("spans").await, 0);
    t.stop().await;
}

#[tokio::test]
async fn database_failure_is_unavailable_never_success() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 300;
    })
    .await;
    t.traces().await.export(spans(2)).await.expect("stored while the database is up");
    proxy.cut();
    let err = t.traces().await.export(spans(2)).await.expect_err("no success without a commit");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(t.count("spans").await, 2, "nothing more was stored");
    t.stop().await;
}
