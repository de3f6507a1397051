//! Random OTLP traces round-trip: whatever is sent, GetTrace hands back, field for field.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    resource::v1::Resource,
    trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status},
};
use otelephant::query::proto::{query_service_client::QueryServiceClient, GetTraceRequest};
use proptest::{collection::vec, prelude::*};

use crate::common::*;

/// Text PostgreSQL can hold: any Unicode but U+0000, which text and jsonb refuse (how such
/// input is handled is a separate rule, tested on its own).
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        text().prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..16).prop_map(|b| Some(Value::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4)
                .prop_map(|values| AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) }),
            attributes_of(inner)
                .prop_map(|values| AnyValue { value: Some(Value::KvlistValue(KeyValueList { values })) }),
        ]
    })
}

/// Maps with unique keys, as OTLP requires.
fn attributes_of(values: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::btree_map(text(), values, 0..4).prop_map(|m| {
        m.into_iter().map(|(key, value)| KeyValue { key, value: Some(value), ..Default::default() }).collect()
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    attributes_of(any_value())
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), len)
}

fn span_strategy(trace_id: Vec<u8>) -> impl Strategy<Value = Span> {
    let event = (any::<u64>(), text(), attributes(), any::<u32>()).prop_map(
        |(time_unix_nano, name, attributes, dropped)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count: dropped,
        },
    );
    let link = (id(16), id(8), text(), attributes(), any::<u32>(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| span::Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count,
            flags,
        },
    );
    let status =
        proptest::option::of((text(), any::<i32>()).prop_map(|(message, code)| Status { message, code }));
    (
        (
            id(8),
            text(),
            prop_oneof![Just(vec![]), id(8)],
            any::<u32>(),
            text(),
            any::<i32>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (attributes(), any::<u32>(), vec(event, 0..3), any::<u32>(), vec(link, 0..2), any::<u32>(), status),
    )
        .prop_map(
            move |((span_id, trace_state, parent_span_id, flags, name, kind, start, end), rest)| {
                let (
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                ) = rest;
                Span {
                    trace_id: trace_id.clone(),
                    span_id,
                    trace_state,
                    parent_span_id,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                }
            },
        )
}

fn request_strategy(trace_id: Vec<u8>) -> impl Strategy<Value = ExportTraceServiceRequest> {
    let resource = (attributes(), any::<u32>()).prop_map(|(attributes, dropped_attributes_count)| Resource {
        attributes,
        dropped_attributes_count,
        entity_refs: vec![],
    });
    let scope =
        (text(), text(), attributes(), any::<u32>()).prop_map(|(name, version, attributes, dropped)| {
            InstrumentationScope { name, version, attributes, dropped_attributes_count: dropped }
        });
    let scope_spans = (scope, vec(span_strategy(trace_id), 1..4), text())
        .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope: Some(scope), spans, schema_url });
    let resource_spans =
        (resource, vec(scope_spans, 1..3), text()).prop_map(|(resource, scope_spans, schema_url)| {
            ResourceSpans { resource: Some(resource), scope_spans, schema_url }
        });
    vec(resource_spans, 1..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

#[test]
fn random_traces_round_trip_through_get_trace() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let t = runtime.block_on(TestServer::start());
    let endpoint = t.endpoint();
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(request in (0u64..1 << 40).prop_flat_map(|n| {
        let trace_id: Vec<u8> = [n.to_be_bytes(), 7u64.to_be_bytes()].concat();
        request_strategy(trace_id.clone()).prop_map(move |r| (trace_id.clone(), r))
    }))| {
        let (trace_id, request) = request;
        let this_case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // Span ids unique within the trace, as a real trace has them.
        let mut request = request;
        let mut n = 0u64;
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    n += 1;
                    span.span_id = (this_case << 16 | n).to_be_bytes().to_vec();
                }
            }
        }
        let got = runtime.block_on(async {
            let mut traces = t.traces().await;
            traces.export(request.clone()).await.expect("export");
            let mut query = QueryServiceClient::connect(endpoint.clone()).await.expect("connect");
            query.get_trace(GetTraceRequest { trace_id: hex::encode(&trace_id) }).await.expect("get").into_inner()
        });
        prop_assert_eq!(
            crate::query::flatten(&got.resource_spans),
            crate::query::flatten(&request.resource_spans)
        );
    });
    let mut t = t;
    runtime.block_on(t.stop());
}
