//! The query service over a real gRPC client: what GetTrace hands back is what was sent.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{span, Span, TracesData},
};
use otelephant::query::proto::{
    query_service_client::QueryServiceClient, GetTraceRequest, ListOperationsRequest, ListServicesRequest,
    Operation, TimeRange,
};
use tonic::{transport::Channel, Code};

use crate::{common::*, traces};

const TRACE: [u8; 16] =
    [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c];

async fn query(t: &TestServer) -> QueryServiceClient<Channel> {
    QueryServiceClient::connect(t.endpoint()).await.expect("connect")
}

/// The spans of `traces::request`, all in one trace.
fn one_trace(now: u64) -> ExportTraceServiceRequest {
    let mut request = traces::request(now);
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.trace_id = TRACE.to_vec();
            }
        }
    }
    request
}

/// Each span with its resource and scope, in a form that compares exactly: attribute maps
/// normalized, absent resources and scopes as empty ones, sorted by span id.
fn flatten(resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> Vec<String> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let resource = rs.resource.clone().unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss.scope.clone().unwrap_or_default();
            for span in &ss.spans {
                let bare = Span {
                    attributes: vec![],
                    events: span
                        .events
                        .iter()
                        .map(|e| span::Event { attributes: vec![], ..e.clone() })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| span::Link { attributes: vec![], ..l.clone() })
                        .collect(),
                    ..span.clone()
                };
                let nested: Vec<_> = span
                    .events
                    .iter()
                    .map(|e| normalize(&e.attributes))
                    .chain(span.links.iter().map(|l| normalize(&l.attributes)))
                    .collect();
                out.push(format!(
                    "{:?}",
                    (
                        hex::encode(&span.span_id),
                        bare,
                        normalize(&span.attributes),
                        nested,
                        normalize(&resource.attributes),
                        resource.dropped_attributes_count,
                        &resource.entity_refs,
                        &rs.schema_url,
                        (
                            &scope.name,
                            &scope.version,
                            normalize(&scope.attributes),
                            scope.dropped_attributes_count
                        ),
                        &ss.schema_url,
                    )
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn get_trace_hands_back_what_was_sent_once() {
    let mut t = TestServer::start().await;
    let sent = one_trace(nanos_now());
    // The exporter retried: every span is stored twice.
    t.traces().await.export(sent.clone()).await.expect("export");
    t.traces().await.export(sent.clone()).await.expect("retried export");
    assert_eq!(t.count("spans").await, 8);

    let got: TracesData = query(&t)
        .await
        .get_trace(GetTraceRequest { trace_id: hex::encode(TRACE) })
        .await
        .expect("trace found")
        .into_inner();
    assert_eq!(flatten(&got.resource_spans), flatten(&sent.resource_spans));
    // The two ResourceSpans carried the same resource: stored once, handed back as one group,
    // with the scopes as stored.
    assert_eq!(got.resource_spans.len(), 1);
    assert_eq!(got.resource_spans[0].scope_spans.len(), 2);

    let missing = query(&t).await.get_trace(GetTraceRequest { trace_id: "00".repeat(16) }).await;
    assert_eq!(missing.expect_err("no such trace").code(), Code::NotFound);
    let bad =
        query(&t).await.get_trace(GetTraceRequest { trace_id: "xyz".into() }).await.expect_err("bad hex");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("trace_id"), "names the field: {}", bad.message());
    t.stop().await;
}

#[tokio::test]
async fn services_and_operations_over_a_time_range() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    // Ten seconds ago, so the spans lie inside the default range (the last hour).
    t.traces().await.export(one_trace(now - 10_000_000_000)).await.expect("export");

    let services = query(&t).await.list_services(ListServicesRequest::default()).await.expect("services");
    assert_eq!(services.into_inner().services, ["checkout"]);

    let long_ago = TimeRange { start_unix_nano: 1_000, end_unix_nano: 2_000 };
    let none = query(&t)
        .await
        .list_services(ListServicesRequest { time_range: Some(long_ago) })
        .await
        .expect("services then");
    assert!(none.into_inner().services.is_empty());

    let inverted = TimeRange { start_unix_nano: 2_000, end_unix_nano: 1_000 };
    let err = query(&t)
        .await
        .list_services(ListServicesRequest { time_range: Some(inverted) })
        .await
        .expect_err("inverted range");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("time_range"), "{}", err.message());

    let operations = query(&t)
        .await
        .list_operations(ListOperationsRequest { service: "checkout".into(), time_range: None })
        .await
        .expect("operations")
        .into_inner()
        .operations;
    let expected: Vec<Operation> =
        (0..4).map(|i| Operation { name: format!("GET /users/{{id}} ✓ {i}"), kind: i % 6 }).collect();
    assert_eq!(operations, expected);
    let err =
        query(&t).await.list_operations(ListOperationsRequest::default()).await.expect_err("no service");
    assert_eq!(err.code(), Code::InvalidArgument);
    t.stop().await;
}

#[tokio::test]
async fn grpc_health_is_serving_while_the_database_is_up() {
    let mut t = TestServer::start().await;
    let channel = Channel::from_shared(t.endpoint()).expect("endpoint").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    t.stop().await;
}
