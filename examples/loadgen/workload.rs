//! Realistic OTLP requests for load tests: what an instrumented service fleet sends.
//!
//! - Spans: traces of 10 spans under a resource with 10 attributes; each span has 10 attributes,
//!   one in five an event, one in ten a link, one in twenty an error status with an exception event.
//! - Metrics: every type (gauge, sum, histogram, exponential histogram, summary), each data point
//!   with 3 attributes; histograms with 10 buckets, exponential ones with 20 a side.
//! - Logs: bodies of 100 to 300 bytes, 4 attributes, half of them inside a trace.
//!
//! Requests are generated once and sent many times; `Items` counts what each one carries.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, summary_data_point::ValueAtQuantile,
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
        SummaryDataPoint,
    },
    resource::v1::Resource,
    trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status},
};
use prost::Message;

const SERVICES: usize = 8;
const SPANS_PER_TRACE: usize = 10;
const OPERATIONS: [&str; 8] = [
    "GET /api/users/{id}",
    "POST /api/orders",
    "SELECT orders",
    "redis GET",
    "GET /api/catalog",
    "publish order.created",
    "grpc inventory.Reserve",
    "render checkout",
];
const METRIC_NAMES: usize = 25;

/// Which signal a workload sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn unit(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        }
    }
}

/// A small deterministic generator (xorshift), so runs are repeatable and cheap.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut id = Vec::with_capacity(N);
        while id.len() < N {
            id.extend_from_slice(&self.next().to_le_bytes());
        }
        id.truncate(N);
        id
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(value: impl Into<String>) -> Value {
    Value::StringValue(value.into())
}

fn resource(service: usize) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s(format!("service-{service}"))),
            kv("service.namespace", s("shop")),
            kv("service.version", s("1.4.2")),
            kv("service.instance.id", s(format!("b1c4e0f2-{service:04}"))),
            kv("deployment.environment", s("production")),
            kv("host.name", s(format!("node-{}.eu-west-1.compute.internal", service % 3))),
            kv("host.arch", s("amd64")),
            kv("k8s.namespace.name", s("shop")),
            kv("k8s.pod.name", s(format!("service-{service}-7d9f8b6c4-x2x9q"))),
            kv("telemetry.sdk.language", s("rust")),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "otelephant.loadgen".into(), version: "1.0.0".into(), ..Default::default() }
}

fn span(rng: &mut Rng, trace_id: &[u8], parent: &[u8], now: u64) -> Span {
    let start = now - rng.below(60_000_000_000) as u64;
    let duration = 100_000 + rng.below(250_000_000) as u64;
    let status_code = 200 + 100 * (rng.below(3) as i64);
    let error = rng.chance(20);
    let mut events = Vec::new();
    if rng.chance(5) {
        events.push(span::Event {
            time_unix_nano: start + duration / 2,
            name: "cache.miss".into(),
            attributes: vec![kv("cache.key", s(format!("user:{}", rng.below(100_000))))],
            dropped_attributes_count: 0,
        });
    }
    if error {
        events.push(span::Event {
            time_unix_nano: start + duration - 1,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", s("TimeoutError")),
                kv("exception.message", s("upstream did not answer within 250 ms")),
            ],
            dropped_attributes_count: 0,
        });
    }
    let links = if rng.chance(10) {
        vec![span::Link {
            trace_id: rng.id::<16>(),
            span_id: rng.id::<8>(),
            trace_state: String::new(),
            attributes: vec![kv("messaging.operation", s("receive"))],
            dropped_attributes_count: 0,
            flags: 0x101,
        }]
    } else {
        Vec::new()
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: rng.id::<8>(),
        trace_state: String::new(),
        parent_span_id: parent.to_vec(),
        flags: 0x101,
        name: OPERATIONS[rng.below(OPERATIONS.len())].into(),
        kind: 1 + rng.below(5) as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes: vec![
            kv("http.request.method", s("GET")),
            kv("http.route", s("/api/users/{id}")),
            kv("http.response.status_code", Value::IntValue(status_code)),
            kv("url.scheme", s("https")),
            kv("server.address", s("api.shop.example")),
            kv("server.port", Value::IntValue(443)),
            kv("user_agent.original", s("Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0")),
            kv("enduser.id", s(format!("user-{}", rng.below(100_000)))),
            kv("app.cache_hit", Value::BoolValue(rng.chance(2))),
            kv("app.cart_total", Value::DoubleValue(rng.below(100_000) as f64 / 100.0)),
        ],
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status: Some(if error {
            Status { message: "upstream timeout".into(), code: status::StatusCode::Error as i32 }
        } else {
            Status { message: String::new(), code: status::StatusCode::Unset as i32 }
        }),
    }
}

/// Makes `span` a chat model call as OpenTelemetry's GenAI instrumentations describe one (the
/// conventions' older and newer names mixed as instrumentations send them): its HTTP
/// attributes give way to the operation, provider, models, tokens, finish reasons and
/// conversation.
pub fn make_llm_call(rng: &mut Rng, span: &mut Span) {
    const MODELS: [(&str, &str); 3] = [
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("gpt-4o", "gpt-4o-2024-08-06"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ];
    let (request, response) = MODELS[rng.below(MODELS.len())];
    let provider = if request.starts_with("claude") { "anthropic" } else { "openai" };
    span.name = format!("chat {request}");
    span.kind = 3;
    span.attributes = vec![
        kv("gen_ai.operation.name", s("chat")),
        kv("gen_ai.provider.name", s(provider)),
        kv("gen_ai.request.model", s(request)),
        kv("gen_ai.response.model", s(response)),
        kv("gen_ai.response.id", s(format!("chatcmpl-{}", rng.below(1_000_000_000)))),
        kv("gen_ai.usage.input_tokens", Value::IntValue(100 + rng.below(4000) as i64)),
        kv("gen_ai.usage.output_tokens", Value::IntValue(10 + rng.below(800) as i64)),
        kv("gen_ai.usage.cache_read.input_tokens", Value::IntValue(rng.below(100) as i64)),
        kv(
            "gen_ai.response.finish_reasons",
            Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(s("stop")) }],
            }),
        ),
        kv("gen_ai.conversation.id", s(format!("conv-{}", rng.below(100_000)))),
    ];
}

/// One trace export of `spans` spans from one service.
pub fn traces(rng: &mut Rng, spans: usize, now: u64) -> ExportTraceServiceRequest {
    let mut out = Vec::with_capacity(spans);
    let mut trace_id = rng.id::<16>();
    let mut root = Vec::new();
    for i in 0..spans {
        if i % SPANS_PER_TRACE == 0 {
            trace_id = rng.id::<16>();
            root = Vec::new();
        }
        let span = span(rng, &trace_id, &root, now);
        if root.is_empty() {
            root = span.span_id.clone();
        }
        out.push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(rng.below(SERVICES))),
            scope_spans: vec![ScopeSpans { scope: Some(scope()), spans: out, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

fn point_attributes(rng: &mut Rng) -> Vec<KeyValue> {
    vec![
        kv("http.route", s(OPERATIONS[rng.below(4)])),
        kv("http.response.status_code", Value::IntValue(200 + 100 * rng.below(3) as i64)),
        kv("region", s(["eu-west-1", "us-east-1"][rng.below(2)])),
    ]
}

fn metric(rng: &mut Rng, index: usize, points: usize, now: u64) -> Metric {
    let start = now - 3_600_000_000_000;
    let times = |i: usize| now - (i as u64) * 1_000_000;
    let data = match index % 5 {
        0 => Data::Gauge(Gauge {
            data_points: (0..points)
                .map(|i| NumberDataPoint {
                    attributes: point_attributes(rng),
                    time_unix_nano: times(i),
                    value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                        rng.below(10_000) as f64 / 7.0,
                    )),
                    ..Default::default()
                })
                .collect(),
        }),
        1 => Data::Sum(Sum {
            data_points: (0..points)
                .map(|i| NumberDataPoint {
                    attributes: point_attributes(rng),
                    start_time_unix_nano: start,
                    time_unix_nano: times(i),
                    value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(
                        rng.below(1_000_000) as i64,
                    )),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        2 => Data::Histogram(Histogram {
            data_points: (0..points)
                .map(|i| {
                    let bucket_counts: Vec<u64> = (0..11).map(|_| rng.below(500) as u64).collect();
                    HistogramDataPoint {
                        attributes: point_attributes(rng),
                        start_time_unix_nano: start,
                        time_unix_nano: times(i),
                        count: bucket_counts.iter().sum(),
                        sum: Some(rng.below(1_000_000) as f64 / 3.0),
                        bucket_counts,
                        explicit_bounds: vec![
                            5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0,
                        ],
                        min: Some(0.4),
                        max: Some(1800.0),
                        ..Default::default()
                    }
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        3 => Data::ExponentialHistogram(ExponentialHistogram {
            data_points: (0..points)
                .map(|i| {
                    let positive: Vec<u64> = (0..20).map(|_| rng.below(100) as u64).collect();
                    let negative: Vec<u64> = (0..20).map(|_| rng.below(10) as u64).collect();
                    ExponentialHistogramDataPoint {
                        attributes: point_attributes(rng),
                        start_time_unix_nano: start,
                        time_unix_nano: times(i),
                        count: positive.iter().sum::<u64>() + negative.iter().sum::<u64>() + 3,
                        sum: Some(rng.below(1_000_000) as f64 / 3.0),
                        scale: 3,
                        zero_count: 3,
                        positive: Some(Buckets { offset: 4, bucket_counts: positive }),
                        negative: Some(Buckets { offset: 1, bucket_counts: negative }),
                        min: Some(-12.5),
                        max: Some(950.0),
                        zero_threshold: 0.0,
                        ..Default::default()
                    }
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
        _ => Data::Summary(Summary {
            data_points: (0..points)
                .map(|i| SummaryDataPoint {
                    attributes: point_attributes(rng),
                    start_time_unix_nano: start,
                    time_unix_nano: times(i),
                    count: 1000 + rng.below(1000) as u64,
                    sum: rng.below(1_000_000) as f64,
                    quantile_values: [0.5, 0.9, 0.99]
                        .iter()
                        .map(|&quantile| ValueAtQuantile { quantile, value: rng.below(2000) as f64 })
                        .collect(),
                    flags: 0,
                })
                .collect(),
        }),
    };
    Metric {
        name: format!("shop.metric_{index}"),
        description: "a load-test instrument".into(),
        unit: "ms".into(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

/// One metrics export of `points` data points spread over 25 metrics of every type.
pub fn metrics(rng: &mut Rng, points: usize, now: u64) -> ExportMetricsServiceRequest {
    let per_metric = points.div_ceil(METRIC_NAMES).max(1);
    let mut left = points;
    let mut metrics = Vec::new();
    let mut index = 0;
    while left > 0 {
        let n = per_metric.min(left);
        metrics.push(metric(rng, index % METRIC_NAMES, n, now));
        left -= n;
        index += 1;
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(rng.below(SERVICES))),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

const WORDS: [&str; 16] = [
    "order",
    "accepted",
    "payment",
    "declined",
    "user",
    "session",
    "retrying",
    "upstream",
    "timeout",
    "cache",
    "warmed",
    "request",
    "completed",
    "inventory",
    "reserved",
    "shipment",
];

/// One logs export of `records` log records from one service.
pub fn logs(rng: &mut Rng, records: usize, now: u64) -> ExportLogsServiceRequest {
    let log_records = (0..records)
        .map(|_| {
            let target = 100 + rng.below(201);
            let mut body = String::with_capacity(target + 16);
            while body.len() < target {
                body.push_str(WORDS[rng.below(WORDS.len())]);
                body.push(' ');
            }
            body.truncate(target);
            let in_trace = rng.chance(2);
            let severity = [5, 9, 9, 9, 13, 17][rng.below(6)];
            let time = now - rng.below(60_000_000_000) as u64;
            LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: time + 1_000_000,
                severity_number: severity,
                severity_text: ["DEBUG", "INFO", "WARN", "ERROR"][(severity as usize - 5) / 4].into(),
                body: Some(AnyValue { value: Some(s(body)) }),
                attributes: vec![
                    kv("code.function", s("checkout::submit")),
                    kv("thread.id", Value::IntValue(rng.below(64) as i64)),
                    kv("enduser.id", s(format!("user-{}", rng.below(100_000)))),
                    kv("log.logger", s("shop.checkout")),
                ],
                dropped_attributes_count: 0,
                flags: u32::from(in_trace),
                trace_id: if in_trace { rng.id::<16>() } else { Vec::new() },
                span_id: if in_trace { rng.id::<8>() } else { Vec::new() },
                event_name: String::new(),
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(rng.below(SERVICES))),
            scope_logs: vec![ScopeLogs { scope: Some(scope()), log_records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

/// `count` distinct requests of `items` items each, encoded as protobuf.
#[allow(dead_code, reason = "loadgen sends requests_with_llm_calls; the other examples these")]
pub fn requests(signal: Signal, count: usize, items: usize, seed: u64, now: u64) -> Vec<bytes::Bytes> {
    requests_with_llm_calls(signal, count, items, seed, now, 0)
}

/// [`requests`] with `llm_percent` of the spans made LLM calls (see [`make_llm_call`]).
pub fn requests_with_llm_calls(
    signal: Signal,
    count: usize,
    items: usize,
    seed: u64,
    now: u64,
    llm_percent: usize,
) -> Vec<bytes::Bytes> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let body = match signal {
                Signal::Traces => {
                    let mut request = traces(&mut rng, items, now);
                    let spans = request.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans);
                    for span in spans.flat_map(|s| &mut s.spans) {
                        if rng.below(100) < llm_percent {
                            make_llm_call(&mut rng, span);
                        }
                    }
                    request.encode_to_vec()
                }
                Signal::Metrics => metrics(&mut rng, items, now).encode_to_vec(),
                Signal::Logs => logs(&mut rng, items, now).encode_to_vec(),
            };
            bytes::Bytes::from(body)
        })
        .collect()
}

/// Where the trace ids of a request (its spans' and log records') lie in `bytes`: the
/// request's own protobuf bytes, or rows encoded from it that carry the ids as raw bytes
/// (binary COPY). Both put the id right after a length byte of 16.
pub fn trace_id_offsets(signal: Signal, request: &[u8], bytes: &[u8]) -> Vec<usize> {
    let ids: std::collections::HashSet<Vec<u8>> = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(request)
            .expect("generated")
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|s| s.trace_id)
            .collect(),
        Signal::Logs => ExportLogsServiceRequest::decode(request)
            .expect("generated")
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .map(|l| l.trace_id)
            .filter(|id| !id.is_empty())
            .collect(),
        Signal::Metrics => Default::default(),
    };
    (0..bytes.len().saturating_sub(16))
        .filter(|&i| bytes[i] == 16 && ids.contains(&bytes[i + 1..i + 17]))
        .map(|i| i + 1)
        .collect()
}

/// Makes the trace ids at `offsets` new for sending number `round`: within one sending an id
/// stays one id (a trace's spans stay one trace), and no two sendings share ids, as a day of
/// real traffic would not.
pub fn refresh_trace_ids(bytes: &mut [u8], offsets: &[usize], round: u64) {
    let mix = (round + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
    for &offset in offsets {
        for (byte, m) in bytes[offset..offset + 8].iter_mut().zip(mix) {
            *byte ^= m;
        }
    }
}
