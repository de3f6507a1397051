//! The requests several test modules send, and the comparison of what comes back, in one place.

pub mod traces {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{EntityRef, InstrumentationScope},
        resource::v1::Resource,
        trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status},
    };

    use crate::common::*;

    pub fn full_span(i: u8, now: u64) -> Span {
        Span {
            trace_id: vec![0xab, 0xcd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, i],
            span_id: vec![1, 2, 3, 4, 5, 6, 7, i],
            trace_state: "vendor=value,other=ü".into(),
            parent_span_id: if i == 0 { vec![] } else { vec![1, 2, 3, 4, 5, 6, 7, 0] },
            flags: if i == 0 { u32::MAX } else { 0x0000_0301 },
            name: format!("GET /users/{{id}} ✓ {i}"),
            kind: i32::from(i % 6),
            start_time_unix_nano: now + 123_456_789 + u64::from(i),
            end_time_unix_nano: now + 987_654_321 + u64::from(i),
            attributes: every_value_attributes(),
            dropped_attributes_count: u32::MAX,
            events: vec![
                span::Event {
                    time_unix_nano: now + 5,
                    name: "exception".into(),
                    attributes: vec![kv("exception.message", s("boom ☃"))],
                    dropped_attributes_count: 3,
                },
                span::Event {
                    time_unix_nano: u64::MAX,
                    name: String::new(),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                },
            ],
            dropped_events_count: 4,
            links: vec![span::Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "a=b".into(),
                attributes: every_value_attributes(),
                dropped_attributes_count: 1,
                flags: u32::MAX,
            }],
            dropped_links_count: 5,
            status: match i {
                0 => None,
                1 => Some(Status { message: String::new(), code: 0 }),
                _ => Some(Status { message: "it broke: ✗".into(), code: 2 }),
            },
        }
    }

    pub fn request(now: u64) -> ExportTraceServiceRequest {
        let resource = Resource {
            attributes: vec![kv("service.name", s("checkout")), kv("host.name", s("web-1"))],
            dropped_attributes_count: 2,
            entity_refs: vec![EntityRef {
                schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                description_keys: vec!["host.name".into()],
            }],
        };
        let scope = |name: &str| InstrumentationScope {
            name: name.into(),
            version: "1.2.3".into(),
            attributes: vec![kv("scope.attr", s("x"))],
            dropped_attributes_count: 6,
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(scope("lib-a")),
                            spans: vec![full_span(0, now), full_span(1, now)],
                            schema_url: "https://scope.example/a".into(),
                        },
                        ScopeSpans { scope: None, spans: vec![full_span(2, now)], schema_url: String::new() },
                    ],
                    schema_url: "https://resource.example/1".into(),
                },
                ResourceSpans {
                    resource: Some(resource),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope("lib-a")),
                        spans: vec![full_span(3, now)],
                        schema_url: "https://scope.example/a".into(),
                    }],
                    schema_url: "https://resource.example/1".into(),
                },
            ],
        }
    }
}

pub mod metrics {
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        common::v1::{any_value::Value, InstrumentationScope},
        metrics::v1::{
            exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
            summary_data_point::ValueAtQuantile, AggregationTemporality, DataPointFlags, Exemplar,
            ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
            Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        },
        resource::v1::Resource,
    };

    use crate::common::*;

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            description: format!("{name} – described"),
            unit: "ms".into(),
            metadata: vec![kv("meta", s("data"))],
            data: Some(data),
        }
    }

    fn exemplars(now: u64) -> Vec<Exemplar> {
        vec![
            Exemplar {
                filtered_attributes: vec![kv("user", s("ü")), kv("n", Value::IntValue(3))],
                time_unix_nano: now + 1,
                span_id: vec![1; 8],
                trace_id: vec![2; 16],
                value: Some(exemplar::Value::AsDouble(f64::NAN)),
            },
            Exemplar {
                filtered_attributes: vec![],
                time_unix_nano: now + 2,
                span_id: vec![],
                trace_id: vec![],
                value: Some(exemplar::Value::AsInt(-9)),
            },
        ]
    }

    pub fn request(now: u64) -> ExportMetricsServiceRequest {
        let point_attrs = |v: &str| vec![kv("route", s(v)), kv("code", Value::IntValue(200))];
        let number = |attrs, value, flags| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: now - 1_000_000_007,
            time_unix_nano: now,
            exemplars: exemplars(now),
            flags,
            value,
        };
        let metrics = vec![
            metric(
                "gauge.int",
                Data::Gauge(Gauge {
                    data_points: vec![
                        number(point_attrs("/a"), Some(number_data_point::Value::AsInt(i64::MIN)), 0),
                        number(point_attrs("/b"), None, DataPointFlags::NoRecordedValueMask as u32),
                    ],
                }),
            ),
            metric(
                "sum.double",
                Data::Sum(Sum {
                    data_points: vec![number(
                        point_attrs("/a"),
                        Some(number_data_point::Value::AsDouble(-0.0)),
                        0,
                    )],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            ),
            metric(
                "histogram",
                Data::Histogram(Histogram {
                    data_points: vec![
                        HistogramDataPoint {
                            attributes: point_attrs("/h"),
                            start_time_unix_nano: now - 10,
                            time_unix_nano: now,
                            count: u64::MAX,
                            sum: Some(12.5),
                            bucket_counts: vec![1, 0, u64::MAX],
                            explicit_bounds: vec![0.5, f64::INFINITY],
                            exemplars: exemplars(now),
                            flags: 0,
                            min: Some(-1.0),
                            max: None,
                        },
                        HistogramDataPoint {
                            attributes: vec![],
                            start_time_unix_nano: 0,
                            time_unix_nano: now,
                            count: 0,
                            sum: None,
                            bucket_counts: vec![],
                            explicit_bounds: vec![],
                            exemplars: vec![],
                            flags: 1,
                            min: None,
                            max: None,
                        },
                    ],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            ),
            metric(
                "exp_histogram",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![
                        ExponentialHistogramDataPoint {
                            attributes: point_attrs("/e"),
                            start_time_unix_nano: now - 10,
                            time_unix_nano: now,
                            count: 17,
                            sum: Some(-3.75),
                            scale: -3,
                            zero_count: 2,
                            positive: Some(Buckets { offset: -2, bucket_counts: vec![1, 2, 3] }),
                            negative: Some(Buckets { offset: 5, bucket_counts: vec![4, 0, 7] }),
                            flags: 0,
                            exemplars: exemplars(now),
                            min: Some(-9.5),
                            max: Some(8.25),
                            zero_threshold: 1e-9,
                        },
                        ExponentialHistogramDataPoint {
                            attributes: vec![],
                            time_unix_nano: now,
                            positive: None,
                            negative: Some(Buckets { offset: 0, bucket_counts: vec![] }),
                            ..Default::default()
                        },
                    ],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "summary",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        attributes: point_attrs("/s"),
                        start_time_unix_nano: now - 10,
                        time_unix_nano: now,
                        count: 100,
                        sum: 250.5,
                        quantile_values: vec![
                            ValueAtQuantile { quantile: 0.0, value: 0.1 },
                            ValueAtQuantile { quantile: 0.99, value: 9.9 },
                            ValueAtQuantile { quantile: 1.0, value: f64::NAN },
                        ],
                        flags: 0,
                    }],
                }),
            ),
            Metric { name: "no.data".into(), ..Default::default() },
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("billing"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope { name: "meter".into(), ..Default::default() }),
                    metrics,
                    schema_url: "https://scope".into(),
                }],
                schema_url: "https://resource".into(),
            }],
        }
    }
}

pub mod logs {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{any_value::Value, AnyValue},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };

    use crate::common::*;

    /// Fifty log records from `now` on, one nanosecond apart, every other one with a trace id.
    pub fn request(now: u64) -> ExportLogsServiceRequest {
        let records = (0..50u8)
            .map(|i| LogRecord {
                time_unix_nano: now + u64::from(i),
                body: Some(AnyValue { value: Some(Value::StringValue(format!("record {i}"))) }),
                trace_id: if i % 2 == 0 { vec![i + 1; 16] } else { vec![] },
                ..Default::default()
            })
            .collect();
        one_scope(records)
    }

    /// `records` under one resource and scope, both empty.
    fn one_scope(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    /// An export request of log records with 1 KB bodies, encoded, of about `bytes` bytes.
    pub fn many_records(bytes: usize) -> Vec<u8> {
        use prost::Message;
        let now = nanos_now();
        let records = (0..bytes / 1_030)
            .map(|i| LogRecord {
                time_unix_nano: now + i as u64,
                body: Some(AnyValue { value: Some(Value::StringValue(format!("{i:>1024}"))) }),
                ..Default::default()
            })
            .collect();
        one_scope(records).encode_to_vec()
    }
}

pub mod query {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::any_value::Value,
        resource::v1::Resource,
        trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status as SpanStatus},
    };

    use super::traces;
    use crate::common::*;

    pub const TRACE: [u8; 16] =
        [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c];

    /// The spans of `traces::request`, all in one trace.
    pub fn one_trace(now: u64) -> ExportTraceServiceRequest {
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
    pub fn flatten(resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> Vec<String> {
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

    pub const SECOND: u64 = 1_000_000_000;

    pub fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", s(service)), kv("host.name", s(&format!("{service}-host")))],
            ..Default::default()
        })
    }

    pub struct SpanSpec {
        trace: u8,
        id: u8,
        parent: Option<u8>,
        name: &'static str,
        start: u64,
        duration: u64,
        error: bool,
        code: Value,
    }

    pub fn span(spec: &SpanSpec) -> Span {
        Span {
            trace_id: vec![spec.trace; 16],
            span_id: vec![spec.trace, spec.id, 0, 0, 0, 0, 0, 1],
            parent_span_id: spec.parent.map(|p| vec![spec.trace, p, 0, 0, 0, 0, 0, 1]).unwrap_or_default(),
            name: spec.name.into(),
            start_time_unix_nano: spec.start,
            end_time_unix_nano: spec.start + spec.duration,
            attributes: vec![kv("http.response.status_code", spec.code.clone())],
            status: spec.error.then(|| SpanStatus { code: 2, message: "failed".into() }),
            ..Default::default()
        }
    }

    /// Three traces, 30 s, 20 s and 10 s ago: checkout calling billing (with an error), a
    /// billing-only trace, and a checkout trace with a double status code.
    pub fn traces(now: u64) -> ExportTraceServiceRequest {
        let (t1, t2, t3) = (now - 30 * SECOND, now - 20 * SECOND, now - 10 * SECOND);
        let checkout = vec![
            SpanSpec {
                trace: 1,
                id: 1,
                parent: None,
                name: "GET /cart",
                start: t1,
                duration: 900_000_000,
                error: false,
                code: Value::IntValue(200),
            },
            SpanSpec {
                trace: 3,
                id: 1,
                parent: None,
                name: "GET /cart",
                start: t3,
                duration: 5_000_000,
                error: false,
                code: Value::DoubleValue(200.0),
            },
        ];
        let billing = vec![
            SpanSpec {
                trace: 1,
                id: 2,
                parent: Some(1),
                name: "charge",
                start: t1 + SECOND / 10,
                duration: 400_000_000,
                error: true,
                code: Value::IntValue(500),
            },
            SpanSpec {
                trace: 2,
                id: 1,
                parent: None,
                name: "refund",
                start: t2,
                duration: 50_000_000,
                error: false,
                code: Value::IntValue(200),
            },
        ];
        let group = |service: &str, specs: &[SpanSpec]| ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans { spans: specs.iter().map(span).collect(), ..Default::default() }],
            schema_url: String::new(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![group("checkout", &checkout), group("billing", &billing)],
        }
    }
}
