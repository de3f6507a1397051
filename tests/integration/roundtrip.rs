//! Random OTLP traces, hostile text and extreme numbers included, round-trip: whatever is
//! accepted, GetTrace hands back field for field, and what is refused (text PostgreSQL cannot
//! hold) is exactly what the answer's partial_success counts.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    resource::v1::Resource,
    trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status},
};
use otelephant::query::proto::{query_service_client::QueryServiceClient, GetTraceRequest};
use proptest::{collection::vec, prelude::*};

use crate::common::*;

/// Any Unicode, and now and then text chosen to break a storage layer: U+0000 (which
/// PostgreSQL's text and jsonb refuse: in a value it must come back exactly, in a key or a name
/// its record must be refused alone), the escapes and tags the jsonb mapping uses, SQL, JSON,
/// byte-order marks, the last code point, long text.
fn text() -> impl Strategy<Value = String> {
    let hostile = prop_oneof![
        Just(String::new()),
        Just("\0".to_string()),
        Just("a\0b".to_string()),
        Just("\\u0000".to_string()),
        Just("$double".to_string()),
        Just("$bytes".to_string()),
        Just("$map".to_string()),
        Just("$nul".to_string()),
        Just(r#"{"$nul":["a","b"]}"#.to_string()),
        Just(r#"{"$double":"NaN"}"#.to_string()),
        Just("'; DROP TABLE spans; --".to_string()),
        Just("\\\"\u{8}\u{c}\r\n\t\u{7f}".to_string()),
        Just("\u{feff}\u{202e}\u{10ffff}\u{1d11e}".to_string()),
        Just("x".repeat(20_000)),
    ];
    let with_nul = (any::<String>(), any::<prop::sample::Index>()).prop_map(|(s, at)| {
        let chars: Vec<char> = s.chars().collect();
        let at = at.index(chars.len() + 1);
        chars[..at].iter().chain(['\0'].iter()).chain(&chars[at..]).collect()
    });
    prop_oneof![16 => any::<String>(), 2 => hostile, 1 => with_nul]
}

fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// Whether a map key inside `value` holds U+0000 (string values may hold it).
fn value_has_nul_key(value: &AnyValue) -> bool {
    match &value.value {
        Some(Value::ArrayValue(a)) => a.values.iter().any(value_has_nul_key),
        Some(Value::KvlistValue(l)) => attributes_have_nul(&l.values),
        _ => false,
    }
}

/// Whether a key of `attributes`, at any depth, holds U+0000.
fn attributes_have_nul(attributes: &[KeyValue]) -> bool {
    attributes.iter().any(|kv| has_nul(&kv.key) || kv.value.as_ref().is_some_and(value_has_nul_key))
}

fn span_has_nul(span: &Span) -> bool {
    has_nul(&span.name)
        || has_nul(&span.trace_state)
        || attributes_have_nul(&span.attributes)
        || span.events.iter().any(|e| has_nul(&e.name) || attributes_have_nul(&e.attributes))
        || span.links.iter().any(|l| has_nul(&l.trace_state) || attributes_have_nul(&l.attributes))
        || span.status.as_ref().is_some_and(|s| has_nul(&s.message))
}

/// What otelephant should store of `request`, and how many spans it should refuse: a span with
/// U+0000 in a name, a trace state, a status message or a key, and every span under a resource
/// or scope with it there. U+0000 in values is stored.
fn acceptable(request: &ExportTraceServiceRequest) -> (Vec<ResourceSpans>, i64) {
    let mut refused = 0;
    let mut kept = Vec::new();
    for rs in &request.resource_spans {
        let resource_bad = has_nul(&rs.schema_url)
            || rs.resource.as_ref().is_some_and(|r| attributes_have_nul(&r.attributes));
        let mut scope_spans = Vec::new();
        for ss in &rs.scope_spans {
            let scope_bad = resource_bad
                || has_nul(&ss.schema_url)
                || ss.scope.as_ref().is_some_and(|s| {
                    has_nul(&s.name) || has_nul(&s.version) || attributes_have_nul(&s.attributes)
                });
            let (bad, good): (Vec<_>, Vec<_>) =
                ss.spans.iter().cloned().partition(|span| scope_bad || span_has_nul(span));
            refused += bad.len() as i64;
            if !good.is_empty() {
                scope_spans.push(ScopeSpans { spans: good, ..ss.clone() });
            }
        }
        if !scope_spans.is_empty() {
            kept.push(ResourceSpans { scope_spans, ..rs.clone() });
        }
    }
    (kept, refused)
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
fn random_traces_with_hostile_text_round_trip_or_are_refused_alone() {
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
        let (expected, refused) = acceptable(&request);
        let (answer, got) = runtime.block_on(async {
            let mut traces = t.traces().await;
            let answer = traces.export(request.clone()).await.expect("export").into_inner();
            let mut query = QueryServiceClient::connect(endpoint.clone()).await.expect("connect");
            let got = query.get_trace(GetTraceRequest { trace_id: hex::encode(&trace_id) }).await;
            (answer, got)
        });
        let counted = answer.partial_success.as_ref().map_or(0, |p| p.rejected_spans);
        prop_assert_eq!(counted, refused, "{:?}", answer.partial_success);
        if refused > 0 {
            let message = answer.partial_success.map(|p| p.error_message).unwrap_or_default();
            prop_assert!(message.contains("U+0000"), "{}", message);
        }
        match got {
            Ok(got) => prop_assert_eq!(
                crate::common::fixtures::query::flatten(&got.into_inner().resource_spans),
                crate::common::fixtures::query::flatten(&expected)
            ),
            Err(status) => {
                prop_assert_eq!(status.code(), tonic::Code::NotFound);
                prop_assert!(expected.is_empty(), "accepted spans are missing");
            }
        }
    });
    let mut t = t;
    runtime.block_on(t.stop());
}
