//! A load generator for otelephant (or any OTLP receiver): sends realistic requests of one
//! signal over OTLP/gRPC or OTLP/HTTP from several connections, as fast as they are accepted or
//! at a target rate, and reports accepted items per second and acknowledgement latency.
//!
//! `cargo run --release --example loadgen -- --signal traces --connections 4 --batch 1000 --duration 30`
//!
//! Requests are generated and encoded before the run (`--distinct` of them, sent in turn), so
//! the generator spends its CPU on sending, not on building messages. Each connection keeps up
//! to `--inflight` requests waiting for answers. Without `--rate` a request goes out as soon as
//! a slot frees up; with `--rate` requests go out on a fixed schedule whatever the answers do
//! (open loop), and one that finds every slot taken is counted as not sent. The last line is the
//! summary as JSON, for scripts.

mod workload;

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::{Buf, BufMut, Bytes};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::{
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
    Status,
};
use workload::Signal;

#[derive(Parser, Debug)]
struct Args {
    /// Which signal to send.
    #[arg(long, value_enum, default_value = "traces")]
    signal: Signal,
    /// `grpc` or `http` (http/protobuf).
    #[arg(long, default_value = "grpc")]
    protocol: String,
    /// Base address; the OTLP/HTTP paths are appended for `http`.
    #[arg(long)]
    endpoint: Option<String>,
    /// Connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 2)]
    inflight: usize,
    /// Items (spans, data points, log records) per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Target items per second over all connections; 0 sends as fast as requests are answered.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Distinct requests generated up front and sent in turn.
    #[arg(long, default_value_t = 64)]
    distinct: usize,
    /// Compress requests with gzip.
    #[arg(long)]
    gzip: bool,
    /// Give every request sent trace ids of its own (a trace's spans still share one), instead
    /// of sending the same `--distinct` sets of ids over and over; a day of real traffic
    /// repeats no trace id, which is what the database's `trace_id` indexes see then.
    #[arg(long, conflicts_with = "gzip")]
    fresh_trace_ids: bool,
    /// Print accepted items every second on stderr.
    #[arg(long)]
    progress: bool,
    /// Percent of the spans sent as LLM calls (OpenTelemetry GenAI chat spans).
    #[arg(long, default_value_t = 0)]
    llm_percent: usize,
}

/// Sends already-encoded protobuf messages as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// How one connection sends.
#[derive(Clone)]
enum Sender {
    Grpc { client: tonic::client::Grpc<Channel>, path: &'static str },
    Http { client: reqwest::Client, url: String, gzip: bool },
}

/// What one request came back with.
enum Outcome {
    /// Stored; the count of items the receiver refused through partial success.
    Accepted(u64),
    Failed(String),
}

impl Sender {
    async fn send(&mut self, body: Bytes) -> Outcome {
        match self {
            Sender::Grpc { client, path } => {
                if let Err(err) = client.ready().await {
                    return Outcome::Failed(format!("connection: {err}"));
                }
                let path = http::uri::PathAndQuery::from_static(path);
                match client.unary(tonic::Request::new(body), path, RawCodec).await {
                    Ok(response) => Outcome::Accepted(rejected(response.get_ref())),
                    Err(status) => Outcome::Failed(format!("{:?}", status.code())),
                }
            }
            Sender::Http { client, url, gzip } => {
                let mut request =
                    client.post(url.as_str()).header("content-type", "application/x-protobuf").body(body);
                if *gzip {
                    request = request.header("content-encoding", "gzip");
                }
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        Outcome::Accepted(response.bytes().await.map(|b| rejected(&b)).unwrap_or(0))
                    }
                    Ok(response) => Outcome::Failed(format!("HTTP {}", response.status().as_u16())),
                    Err(err) => Outcome::Failed(format!("transport: {err}")),
                }
            }
        }
    }
}

/// Items refused in an export answer. The three signals' answers share their layout
/// (partial_success = 1 { rejected_* = 1, error_message = 2 }), so one type reads them all.
fn rejected(answer: &[u8]) -> u64 {
    ExportTraceServiceResponse::decode(answer)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

fn grpc_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    }
}

fn http_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/v1/traces",
        Signal::Metrics => "/v1/metrics",
        Signal::Logs => "/v1/logs",
    }
}

fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).expect("in memory");
    Bytes::from(encoder.finish().expect("in memory"))
}

async fn connect(args: &Args) -> anyhow::Result<Sender> {
    Ok(match args.protocol.as_str() {
        "grpc" => {
            let endpoint = args.endpoint.clone().unwrap_or_else(|| "http://127.0.0.1:4317".into());
            let channel = Channel::from_shared(endpoint)?.tcp_nodelay(true).connect().await?;
            let mut client = tonic::client::Grpc::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(256 << 20);
            if args.gzip {
                client = client.send_compressed(CompressionEncoding::Gzip);
            }
            Sender::Grpc { client, path: grpc_path(args.signal) }
        }
        "http" => {
            let endpoint = args.endpoint.clone().unwrap_or_else(|| "http://127.0.0.1:4318".into());
            let client =
                reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(args.inflight).build()?;
            Sender::Http {
                client,
                url: format!("{}{}", endpoint.trim_end_matches('/'), http_path(args.signal)),
                gzip: args.gzip,
            }
        }
        other => anyhow::bail!("unknown protocol {other:?}: use grpc or http"),
    })
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    accepted_items: u64,
    refused_items: u64,
    /// Items not sent at a target rate because every slot was waiting for an answer.
    unsent_items: u64,
    failures: BTreeMap<String, u64>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos() as u64;
    let mut bodies =
        workload::requests_with_llm_calls(args.signal, args.distinct, args.batch, 1, now, args.llm_percent);
    let plain_bytes: usize = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len().max(1);
    let id_offsets: Vec<Vec<usize>> = match args.fresh_trace_ids {
        true => bodies.iter().map(|b| workload::trace_id_offsets(args.signal, b, b)).collect(),
        false => Vec::new(),
    };
    if args.gzip && args.protocol == "http" {
        bodies = bodies.iter().map(|b| gzip(b)).collect();
    }
    let bodies = Arc::new(bodies);
    let id_offsets = Arc::new(id_offsets);
    let rounds = Arc::new(AtomicU64::new(0));
    // Time between one connection's requests, to keep to the target rate over all connections.
    let period = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 * args.batch as f64 / args.rate as f64));
    eprintln!(
        "loadgen: {} {} per request ({} bytes of protobuf), {} connections x {} in flight, {}",
        args.batch,
        args.signal.unit(),
        plain_bytes,
        args.connections,
        args.inflight,
        match args.rate {
            0 => "as fast as accepted".to_string(),
            rate => format!("target {rate} {}/s", args.signal.unit()),
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut connections = Vec::new();
    for connection in 0..args.connections {
        let sender = connect(&args).await?;
        let (bodies, stop, accepted, tally) = (bodies.clone(), stop.clone(), accepted.clone(), tally.clone());
        let (id_offsets, rounds) = (id_offsets.clone(), rounds.clone());
        let (inflight, items, count) = (args.inflight, args.batch as u64, args.connections);
        connections.push(tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(inflight));
            // Connections start spread over one period so they do not send in lockstep.
            let offset = period.map_or(Duration::ZERO, |p| p.mul_f64(connection as f64 / count as f64));
            let mut next = Instant::now() + offset;
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let slot = match period {
                    // At a target rate a request goes out on schedule if a slot is free; when
                    // all are taken it is not sent, as an exporter with a full queue drops it.
                    Some(period) => {
                        tokio::time::sleep_until(next.into()).await;
                        next += period;
                        match slots.clone().try_acquire_owned() {
                            Ok(slot) => slot,
                            Err(_) => {
                                tally.lock().expect("tally").unsent_items += items;
                                continue;
                            }
                        }
                    }
                    None => slots.clone().acquire_owned().await.expect("never closed"),
                };
                let which = (connection + sent * count) % bodies.len();
                let body = match id_offsets.get(which) {
                    Some(offsets) => {
                        let mut body = bodies[which].to_vec();
                        workload::refresh_trace_ids(
                            &mut body,
                            offsets,
                            rounds.fetch_add(1, Ordering::Relaxed),
                        );
                        Bytes::from(body)
                    }
                    None => bodies[which].clone(),
                };
                sent += 1;
                let (mut sender, accepted, tally) = (sender.clone(), accepted.clone(), tally.clone());
                tokio::spawn(async move {
                    let begun = Instant::now();
                    let outcome = sender.send(body).await;
                    let latency = begun.elapsed();
                    let mut tally = tally.lock().expect("tally");
                    tally.latencies.push(latency);
                    match outcome {
                        Outcome::Accepted(refused) => {
                            tally.accepted_items += items - refused;
                            tally.refused_items += refused;
                            accepted.fetch_add(items - refused, Ordering::Relaxed);
                        }
                        Outcome::Failed(reason) => *tally.failures.entry(reason).or_default() += 1,
                    }
                    drop(slot);
                });
            }
            // Waits for the answers still on their way.
            let _ = slots.acquire_many(inflight as u32).await;
        }));
    }

    let deadline = started + Duration::from_secs(args.duration);
    let mut last = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        if args.progress {
            let total = accepted.load(Ordering::Relaxed);
            eprintln!(
                "{:>6.1} s  {:>10} {}/s",
                started.elapsed().as_secs_f64(),
                total - last,
                args.signal.unit()
            );
            last = total;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for connection in connections {
        connection.await?;
    }
    let mut tally = std::mem::take(&mut *tally.lock().expect("tally"));
    let elapsed = started.elapsed().as_secs_f64();
    tally.latencies.sort();
    let failed: u64 = tally.failures.values().sum();
    let rate = tally.accepted_items as f64 / elapsed;
    println!(
        "{} {}: {} accepted in {:.1} s = {:.0}/s ({} not sent); requests {} ({} failed {:?}); ack p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        args.protocol,
        args.signal.unit(),
        tally.accepted_items,
        elapsed,
        rate,
        tally.unsent_items,
        tally.latencies.len(),
        failed,
        tally.failures,
        percentile(&tally.latencies, 0.5),
        percentile(&tally.latencies, 0.99),
        percentile(&tally.latencies, 1.0),
    );
    println!(
        "{}",
        serde_json::json!({
            "signal": format!("{:?}", args.signal).to_lowercase(),
            "protocol": args.protocol,
            "accepted_items": tally.accepted_items,
            "refused_items": tally.refused_items,
            "unsent_items": tally.unsent_items,
            "seconds": elapsed,
            "items_per_second": rate,
            "requests": tally.latencies.len(),
            "failed_requests": failed,
            "failures": tally.failures,
            "p50_ms": percentile(&tally.latencies, 0.5),
            "p99_ms": percentile(&tally.latencies, 0.99),
            "max_ms": percentile(&tally.latencies, 1.0),
        })
    );
    Ok(())
}
