//! U+0000 in values: PostgreSQL's text and jsonb cannot hold it, yet a value carrying it (an
//! attribute at any depth, a log body, event and link attributes, exemplar attributes, resource
//! attributes) is stored, in the mapping's `$nul` form, and comes back exactly through the query
//! API, where attribute filters find it.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        exemplar, metric::Data, number_data_point, Exemplar, Gauge, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics,
    },
    resource::v1::Resource,
    trace::v1::{span, ResourceSpans, ScopeSpans, Span},
};
use otelephant::query::proto::{
    query_service_client::QueryServiceClient, AttributeFilter, GetTraceRequest, QueryMetricsRequest,
    SearchLogsRequest, SearchTracesRequest,
};

use crate::common::{fixtures::query::flatten, *};

fn nul_values() -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    vec![
        kv("edges", s("\0a\0\0b\0")),
        kv("only", s("\0")),
        kv(
            "deep",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList { values: vec![kv("inner", s("x\0y"))] })),
                }],
            }),
        ),
        // Text that looks like the stored form is stored as itself.
        kv("lookalike", s(r#"{"$nul":["a","b"]}"#)),
        kv("map.lookalike", Value::KvlistValue(KeyValueList { values: vec![kv("$nul", s("a\0b"))] })),
    ]
}

#[tokio::test]
async fn values_with_u0000_are_stored_and_come_back_exactly() {
    let mut t = TestServer::start().await;
    let now = nanos_now() - 10_000_000_000;
    let span = Span {
        trace_id: vec![0x77; 16],
        span_id: vec![7; 8],
        name: "nul values".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000,
        attributes: nul_values(),
        events: vec![span::Event { name: "e".into(), attributes: nul_values(), ..Default::default() }],
        links: vec![span::Link {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            attributes: nul_values(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let resource = Resource {
        attributes: vec![kv("service.name", s("nul")), kv("host.note", s("a\0b"))],
        ..Default::default()
    };
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            schema_url: String::new(),
        }],
    };
    let answer = t.traces().await.export(traces.clone()).await.expect("export").into_inner();
    assert!(answer.partial_success.is_none(), "nothing refused: {:?}", answer.partial_success);

    let mut query = QueryServiceClient::connect(t.endpoint()).await.expect("connect");
    let got =
        query.get_trace(GetTraceRequest { trace_id: "77".repeat(16) }).await.expect("stored").into_inner();
    assert_eq!(flatten(&got.resource_spans), flatten(&traces.resource_spans));

    // What the jsonb holds: the pieces around each U+0000.
    let stored: serde_json::Value =
        t.sql.query_one("SELECT attributes FROM spans", &[]).await.expect("row").get(0);
    assert_eq!(stored["edges"], serde_json::json!({ "$nul": ["", "a", "", "b", ""] }));
    assert_eq!(stored["lookalike"], r#"{"$nul":["a","b"]}"#);
    assert_eq!(stored["map.lookalike"], serde_json::json!({ "$map": { "$nul": { "$nul": ["a", "b"] } } }));

    // Filters on such values find them.
    let filter = |key: &str, value: &str| AttributeFilter {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
    };
    for (key, value, found) in
        [("edges", "\0a\0\0b\0", 1), ("only", "\0", 1), ("only", "\0\0", 0), ("host.note", "a\0b", 1)]
    {
        let request = SearchTracesRequest { attributes: vec![filter(key, value)], ..Default::default() };
        let traces = query.search_traces(request).await.expect("search").into_inner().traces;
        assert_eq!(traces.len(), found, "{key} = {value:?}");
    }

    let body = |value: Value| LogRecord {
        time_unix_nano: now,
        body: Some(AnyValue { value: Some(value) }),
        attributes: nul_values(),
        trace_id: vec![0x77; 16],
        ..Default::default()
    };
    let records =
        vec![body(s("line one\0line two")), body(Value::KvlistValue(KeyValueList { values: nul_values() }))];
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs { log_records: records.clone(), ..Default::default() }],
            schema_url: String::new(),
        }],
    };
    let answer = t.logs().await.export(logs).await.expect("export").into_inner();
    assert!(answer.partial_success.is_none(), "nothing refused: {:?}", answer.partial_success);
    let found = query
        .search_logs(SearchLogsRequest { trace_id: "77".repeat(16), ..Default::default() })
        .await
        .expect("search")
        .into_inner()
        .logs
        .expect("logs");
    let mut got: Vec<(String, Vec<(String, String)>)> = found.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| (normalize_any(r.body.as_ref().expect("body")), normalize(&r.attributes)))
        .collect();
    let mut sent: Vec<(String, Vec<(String, String)>)> = records
        .iter()
        .map(|r| (normalize_any(r.body.as_ref().expect("body")), normalize(&r.attributes)))
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent);

    let point = NumberDataPoint {
        attributes: vec![kv("route", s("/b\0"))],
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(1)),
        exemplars: vec![Exemplar {
            filtered_attributes: nul_values(),
            time_unix_nano: now,
            value: Some(exemplar::Value::AsInt(5)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "nul.gauge".into(),
                    data: Some(Data::Gauge(Gauge { data_points: vec![point.clone()] })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    let answer = t.metrics().await.export(metrics).await.expect("export").into_inner();
    assert!(answer.partial_success.is_none(), "nothing refused: {:?}", answer.partial_success);
    let raw = query
        .query_metrics(QueryMetricsRequest { name: "nul.gauge".into(), ..Default::default() })
        .await
        .expect("query")
        .into_inner()
        .raw
        .expect("raw");
    let Some(Data::Gauge(gauge)) = &raw.resource_metrics[0].scope_metrics[0].metrics[0].data else {
        panic!("a gauge")
    };
    let got = &gauge.data_points[0];
    assert_eq!(normalize(&got.attributes), normalize(&point.attributes));
    assert_eq!(
        normalize(&got.exemplars[0].filtered_attributes),
        normalize(&point.exemplars[0].filtered_attributes)
    );
    t.stop().await;
}
