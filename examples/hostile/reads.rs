//! Read-side attacks: data an exporter may send that made reading it crash the server, grow its
//! memory with what was stored, or hold up the async threads. Each stores its data first
//! ([`prepare`]), then reads it as a person or a client would, over and over, concurrently,
//! while the innocent client exports ([`read`]).

use std::{
    io::Write,
    net::SocketAddr,
    time::{Duration, Instant},
};

use flate2::{write::GzEncoder, Compression};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value, AnyValue, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point, ExponentialHistogram,
        ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    },
    resource::v1::Resource,
    trace::v1::{span::Event, span::Link, ResourceSpans, ScopeSpans, Span},
};
use prost::Message;

/// The read attacks, by name.
pub const ATTACKS: [&str; 4] = ["chart", "answers", "legend", "links"];

/// The trace of 256 spans that each carry a 1 MiB value.
const BIG_TRACE: &str = "b16b16b16b16b16b16b16b16b16b16b1";
/// The trace of 20,000 small spans that [`LINKER`]'s links point to.
const WIDE_TRACE: &str = "a1de00000000000000000000000000a1";
/// The span with 20 links to [`WIDE_TRACE`], and its trace.
const LINKER: (&str, &str) = ("11c0000000000000000000000000011c", "11c000000000011c");
/// The span with 200,000 events, and its trace.
const EVENTFUL: (&str, &str) = ("e7e7000000000000000000000000e7e7", "e7e700000000e7e7");

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or(0)).collect()
}

/// POSTs an OTLP request gzipped to `/v1/{signal}`; panics unless it is stored.
async fn export(http: SocketAddr, signal: &str, message: &impl Message) {
    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    gzip.write_all(&message.encode_to_vec()).expect("gzip");
    let body = gzip.finish().expect("gzip");
    let answer = reqwest::Client::new()
        .post(format!("http://{http}/v1/{signal}"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .timeout(Duration::from_secs(120))
        .body(body)
        .send()
        .await
        .expect("the export is answered");
    assert!(answer.status().is_success(), "storing the attack's data: HTTP {}", answer.status());
}

fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn metrics(metric: Metric) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn span(trace: &[u8], id: u64, at: u64) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: format!("span {id}"),
        start_time_unix_nano: at,
        end_time_unix_nano: at + 1_000_000,
        ..Default::default()
    }
}

/// Stores what `attack` reads.
pub async fn prepare(attack: &str, http: SocketAddr) {
    let at = now() - 60_000_000_000;
    match attack {
        "chart" => {
            // Float spacing at 1e17 is 16: an axis step of 5 leaves a running tick where it was.
            let points = [-1.000_000_000_000_000_2e17, -1e17]
                .iter()
                .enumerate()
                .map(|(i, v)| NumberDataPoint {
                    time_unix_nano: at + i as u64 * 1_000_000_000,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect();
            let gauge = Metric {
                name: "edge.gauge".into(),
                data: Some(Data::Gauge(Gauge { data_points: points })),
                ..Default::default()
            };
            export(http, "metrics", &metrics(gauge)).await;
        }
        "answers" => {
            let mib = "v".repeat(1 << 20);
            // Eight 1 MiB values a request: what a request may take in memory bounds it.
            for batch in 0..64u64 {
                let records = (0..8)
                    .map(|i| LogRecord {
                        time_unix_nano: at + batch * 8 + i,
                        body: Some(AnyValue { value: Some(Value::StringValue(mib.clone())) }),
                        ..Default::default()
                    })
                    .collect();
                let logs = ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                        ..Default::default()
                    }],
                };
                export(http, "logs", &logs).await;
            }
            for batch in 0..32u64 {
                let spans = (0..8)
                    .map(|i| {
                        let mut s = span(&hex(BIG_TRACE), batch * 8 + i + 1, at);
                        s.attributes = vec![kv("big", Value::StringValue(mib.clone()))];
                        s
                    })
                    .collect();
                export(http, "traces", &traces("big", spans)).await;
            }
            let events = (0..200_000)
                .map(|i| Event { time_unix_nano: at + i, name: format!("e{i}"), ..Default::default() })
                .collect();
            let mut eventful = span(&hex(EVENTFUL.0), 1, at);
            eventful.span_id = hex(EVENTFUL.1);
            eventful.events = events;
            export(http, "traces", &traces("events", vec![eventful])).await;
            let histogram = ExponentialHistogramDataPoint {
                start_time_unix_nano: at - 30_000_000_000,
                time_unix_nano: at,
                count: 500_000,
                scale: 20,
                positive: Some(Buckets { offset: -250_000, bucket_counts: vec![1; 500_000] }),
                ..Default::default()
            };
            let metric = Metric {
                name: "wide.histogram".into(),
                data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![histogram],
                    aggregation_temporality: 1,
                })),
                ..Default::default()
            };
            export(http, "metrics", &metrics(metric)).await;
        }
        "legend" => {
            let points = (0..50)
                .map(|series| NumberDataPoint {
                    time_unix_nano: at,
                    value: Some(number_data_point::Value::AsInt(series)),
                    attributes: (0..12_000)
                        .map(|i| {
                            kv(&format!("attribute.{i}"), Value::IntValue(if i == 0 { series } else { i }))
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
            let gauge = Metric {
                name: "wide.gauge".into(),
                data: Some(Data::Gauge(Gauge { data_points: points })),
                ..Default::default()
            };
            export(http, "metrics", &metrics(gauge)).await;
        }
        "links" => {
            for batch in 0..10u64 {
                let spans = (0..2_000).map(|i| span(&hex(WIDE_TRACE), batch * 2_000 + i + 1, at)).collect();
                export(http, "traces", &traces("wide", spans)).await;
            }
            let mut linker = span(&hex(LINKER.0), 1, at);
            linker.span_id = hex(LINKER.1);
            linker.links = (0..20)
                .map(|i| Link {
                    trace_id: hex(WIDE_TRACE),
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    ..Default::default()
                })
                .collect();
            export(http, "traces", &traces("linker", vec![linker])).await;
        }
        other => panic!("no read attack {other:?}"),
    }
}

/// The process's peak resident memory so far, as text; the peak is then reset (Linux's
/// `clear_refs` 5), so the next reading is of what comes after.
///
/// # Errors
/// The process's status cannot be read or its peak reset.
pub fn reset_peak(pid: u32) -> std::io::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?").to_owned();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let kib: f64 = peak.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok(format!("{:.1} MiB (VmHWM)", kib / 1024.0))
}

/// One read: what it asks, and how.
#[derive(Clone)]
struct Read {
    label: &'static str,
    path: String,
    /// A query service method's JSON request, POSTed; a GET when None.
    body: Option<String>,
}

fn get(label: &'static str, path: String) -> Read {
    Read { label, path, body: None }
}

fn call(label: &'static str, method: &str, body: &str) -> Read {
    Read { label, path: format!("/otelephant.query.v1.QueryService/{method}"), body: Some(body.to_owned()) }
}

fn reads(attack: &str) -> Vec<Read> {
    match attack {
        "chart" => vec![
            get("chart page", "/metric?name=edge.gauge".into()),
            get("chart page", "/metric?name=edge.gauge".into()),
        ],
        "answers" => {
            let repeated: String = (0..60).map(|_| format!("traceID={BIG_TRACE}&")).collect();
            vec![
                call("SearchLogs pageSize 1000", "SearchLogs", r#"{"pageSize": 1000}"#),
                call("SearchLogs pageSize 1000", "SearchLogs", r#"{"pageSize": 1000}"#),
                get("UI /logs", "/logs".into()),
                call("GetTrace of 256 MiB", "GetTrace", &format!(r#"{{"traceId": "{BIG_TRACE}"}}"#)),
                get("Jaeger 60 x the same traceID", format!("/jaeger/api/traces?{repeated}")),
                get("UI chart of 500k buckets", "/metric?name=wide.histogram".into()),
                get("UI span of 200k events", format!("/trace/{}?span={}", EVENTFUL.0, EVENTFUL.1)),
            ]
        }
        "legend" => vec![get("chart of 50 x 12,000 attributes", "/metric?name=wide.gauge".into()); 2],
        "links" => vec![get(
            "span details, 20 links to a 20,000-span trace",
            format!("/trace/{}/span/{}", LINKER.0, LINKER.1),
        )],
        _ => Vec::new(),
    }
}

/// What one read got: status (or error), bytes, seconds.
async fn send(http: SocketAddr, read: &Read) -> (String, usize, f64) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}{}", read.path);
    let request = match &read.body {
        Some(body) => client.post(url).header("content-type", "application/json").body(body.clone()),
        None => client.get(url),
    };
    let started = Instant::now();
    let answer = request.timeout(Duration::from_secs(120)).send().await;
    let (status, bytes) = match answer {
        Ok(answer) => {
            let status = answer.status().as_u16().to_string();
            (status, answer.bytes().await.map_or(0, |b| b.len()))
        }
        Err(err) => {
            (format!("error ({})", if err.is_timeout() { "timeout".to_owned() } else { err.to_string() }), 0)
        }
    };
    (status, bytes, started.elapsed().as_secs_f64())
}

/// Runs `attack`'s reads, all at once, round after round until `seconds` pass; what the first
/// round got and how many rounds ran.
pub async fn read(attack: &str, http: SocketAddr, seconds: Duration) -> String {
    let end = Instant::now() + seconds;
    let reads = reads(attack);
    let mut first = Vec::new();
    let mut rounds = 0;
    while Instant::now() < end {
        let answers = futures_util::future::join_all(reads.iter().map(|r| send(http, r))).await;
        if first.is_empty() {
            first = answers.clone();
        }
        rounds += 1;
        if answers.iter().all(|(status, ..)| status.starts_with("error")) {
            break;
        }
    }
    let lines: Vec<String> = reads
        .iter()
        .zip(&first)
        .map(|(r, (status, bytes, secs))| {
            format!("{}: {status}, {:.1} MB in {secs:.2} s", r.label, *bytes as f64 / 1e6)
        })
        .collect();
    format!("{rounds} rounds of {} concurrent reads; the first: {}", reads.len(), lines.join("; "))
}
