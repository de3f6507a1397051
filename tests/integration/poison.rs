//! Bad records are refused one by one, through OTLP partial success, and never cost the other
//! records of their request anything.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value, AnyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    },
    resource::v1::Resource,
    trace::v1::{span, ResourceSpans, ScopeSpans, Span},
};
use prost::Message;

use crate::common::*;

fn good_span(n: u8) -> Span {
    Span {
        trace_id: vec![0x42; 16],
        span_id: vec![n, 1, 1, 1, 1, 1, 1, 1],
        name: format!("good {n}"),
        start_time_unix_nano: nanos_now(),
        ..Default::default()
    }
}

fn mixed_traces() -> ExportTraceServiceRequest {
    let bad = vec![
        Span { trace_id: vec![1, 2, 3], ..good_span(10) },
        Span { span_id: vec![0; 8], ..good_span(11) },
        Span { name: "nul\0in name".into(), ..good_span(12) },
        Span {
            attributes: vec![kv(
                "deep",
                Value::KvlistValue(KeyValueList { values: vec![kv("inner key \0 deep inside", s("x"))] }),
            )],
            ..good_span(13)
        },
        Span { events: vec![span::Event { name: "\0".into(), ..Default::default() }], ..good_span(14) },
    ];
    let mut spans = vec![good_span(1)];
    spans.extend(bad);
    spans.push(good_span(2));
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("ok"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("bad")), kv("key\0", s("x"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![good_span(20), good_span(21)],
                    ..Default::default()
                }],
                schema_url: String::new(),
            },
        ],
    }
}

#[tokio::test]
async fn bad_spans_are_refused_and_the_rest_stored() {
    let mut t = TestServer::start().await;
    let response = t.traces().await.export(mixed_traces()).await.expect("the request succeeds").into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 7);
    assert!(partial.error_message.contains("trace_id must be 16 bytes"), "{}", partial.error_message);
    let names: Vec<String> = t
        .sql
        .query("SELECT name FROM spans ORDER BY name", &[])
        .await
        .expect("spans")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["good 1", "good 2"]);
    assert_eq!(t.count("resources").await, 1, "the refused resource was not stored");

    // The same over HTTP/JSON: the partial success comes back in JSON.
    let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "00000000000000000000000000000000", "spanId": "0102030405060708", "name": "zero trace"},
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "name": "fine"}
    ]}]}]});
    let url = format!("http://{}/v1/traces", t.server.as_ref().expect("running").http_addr);
    let response = reqwest::Client::new().post(url).json(&body).send().await.expect("answered");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"].to_string().trim_matches('"'), "1");
    assert!(
        answer["partialSuccess"]["errorMessage"].as_str().unwrap_or_default().contains("all zero"),
        "{answer}"
    );
    assert_eq!(t.count("spans").await, 3);
    t.stop().await;
}

#[tokio::test]
async fn bad_log_records_and_data_points_are_refused_and_the_rest_stored() {
    let mut t = TestServer::start().await;
    let record = |body: &str, trace_id: Vec<u8>| LogRecord {
        body: Some(AnyValue { value: Some(Value::StringValue(body.into())) }),
        trace_id,
        ..Default::default()
    };
    let nul_key_body = LogRecord {
        body: Some(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList { values: vec![kv("nul \0 key", s("x"))] })),
        }),
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    record("kept", vec![]),
                    nul_key_body,
                    record("short trace id", vec![1; 4]),
                    record("kept too", vec![9; 16]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let partial =
        t.logs().await.export(logs).await.expect("succeeds").into_inner().partial_success.expect("partial");
    assert_eq!(partial.rejected_log_records, 2);
    assert!(partial.error_message.contains("a key in body contains U+0000"), "{}", partial.error_message);
    assert_eq!(t.count("logs").await, 2);

    let point = |route: &str| NumberDataPoint {
        // A U+0000 in the key is refused ("/b" below); in a value it would be stored.
        attributes: vec![kv(if route == "/b" { "ro\0ute" } else { "route" }, s(route))],
        time_unix_nano: nanos_now(),
        value: Some(number_data_point::Value::AsInt(1)),
        ..Default::default()
    };
    let gauge = |name: &str, points| Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge { data_points: points })),
        ..Default::default()
    };
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge("ok", vec![point("/a"), point("/b"), point("/c")]),
                    gauge("bad\0name", vec![point("/a"), point("/b")]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let partial = t
        .metrics()
        .await
        .export(metrics.clone())
        .await
        .expect("succeeds")
        .into_inner()
        .partial_success
        .expect("partial");
    assert_eq!(partial.rejected_data_points, 3);
    assert_eq!(t.count("metric_points_number").await, 2);

    // A request whose every record is refused still succeeds, storing nothing.
    let only_bad = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metrics.resource_metrics[0].scope_metrics[0].metrics[1].clone()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let url = format!("http://{}/v1/metrics", t.server.as_ref().expect("running").http_addr);
    let response = reqwest::Client::new()
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(only_bad.encode_to_vec())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answer = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
        response.bytes().await.expect("body"),
    )
    .expect("answer");
    assert_eq!(answer.partial_success.expect("partial").rejected_data_points, 2);
    assert_eq!(t.count("metric_points_number").await, 2);
    t.stop().await;
}

#[tokio::test]
async fn a_request_the_database_refuses_fails_alone_and_the_rest_of_its_batch_commits() {
    // Requests linger together in one batch; a constraint stands in for any value the
    // database would refuse that the checks before encoding do not catch.
    let mut t = TestServer::start_with(|c| c.pipeline.linger_ms = 300).await;
    t.sql
        .batch_execute("ALTER TABLE spans ADD CONSTRAINT no_poison CHECK (name <> 'poison')")
        .await
        .expect("constraint");
    let request = |name: &str, n: u8| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { name: name.into(), ..good_span(n) }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (mut a, mut b, mut c) = (t.traces().await, t.traces().await, t.traces().await);
    let (first, poison, last) = tokio::join!(
        a.export(request("fine 1", 1)),
        b.export(request("poison", 2)),
        c.export(request("fine 2", 3)),
    );
    first.expect("a good request in the batch is stored");
    last.expect("another good request in the batch is stored");
    let err = poison.expect_err("the refused request fails");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "not retryable: {err}");
    assert!(err.message().contains("no_poison"), "names the cause: {}", err.message());
    let names: Vec<String> = t
        .sql
        .query("SELECT name FROM spans ORDER BY name", &[])
        .await
        .expect("spans")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["fine 1", "fine 2"]);
    t.stop().await;
}
