//! Hostile clients against a running otelephant, one attack at a time, each for a bounded time
//! against addresses on this machine only, while an innocent client exports a small trace every
//! 200 ms over gRPC and over HTTP and reports how long it waited. `bench/hostile.sh` starts a
//! fresh server for each attack and adds the server's peak memory and what was stored.
//!
//! `cargo run --release --example hostile -- ATTACK --grpc 127.0.0.1:24317 --http 127.0.0.1:24318 --seconds 30`
//!
//! Attacks: `stall` (requests that declare a large body and send a few bytes, held open),
//! `idle` (thousands of connections that send nothing), `amplify` (requests that decode or encode
//! into far more memory than they weigh), `bombs` (small compressed requests that inflate to
//! 60 MiB), `queries` (expensive concurrent queries); and on the read side (`reads`, whose data
//! is stored before the innocent client starts): `chart` (a gauge whose values once made the
//! chart's axis loop), `answers` (large records, a trace of large spans, a histogram of 500k
//! buckets and a span of 200k events, read through every surface at once, a trace id named 60
//! times), `legend` (a chart of 50 series of 12,000 attributes each), `links` (span details
//! with 20 links to a 20,000-span trace). The last line is the summary as JSON.

#[path = "hostile/reads.rs"]
mod reads;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
    common::v1::{any_value::Value, AnyValue},
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use otelephant::query::proto::{
    query_service_client::QueryServiceClient, AttributeFilter, SearchLogsRequest, TimeRange,
};
use prost::Message;
use tokio::{io::AsyncWriteExt, net::TcpStream};

#[derive(Parser, Debug)]
struct Args {
    /// stall, idle, amplify, bombs, queries, chart, answers, legend or links.
    attack: String,
    #[arg(long, default_value = "127.0.0.1:24317")]
    grpc: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:24318")]
    http: SocketAddr,
    /// How long the attack lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The server's process id: for a read attack, its peak memory is reported after the data
    /// is stored and then reset, so that the peak the caller reads afterwards is the reads'.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections (or requests) the attack uses.
    #[arg(long, default_value_t = 0)]
    count: usize,
}

/// What the innocent client saw.
#[derive(Default)]
struct Innocent {
    waits: Vec<Duration>,
    failures: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let seconds = Duration::from_secs(args.seconds);
    let innocent = Arc::new(Mutex::new(Innocent::default()));
    if reads::ATTACKS.contains(&args.attack.as_str()) {
        reads::prepare(&args.attack, args.http).await;
        if let Some(pid) = args.server_pid {
            println!("storing the data: peak resident memory {}", reads::reset_peak(pid)?);
        }
    }
    let watching = tokio::spawn(innocent_client(args.grpc, args.http, seconds, innocent.clone()));
    let attack = match args.attack.as_str() {
        read if reads::ATTACKS.contains(&read) => reads::read(read, args.http, seconds).await,
        "stall" => stall(&args, seconds).await,
        "idle" => idle(&args, seconds).await,
        "amplify" => amplify(&args).await,
        "bombs" => bombs(&args).await,
        "queries" => queries(&args, seconds).await,
        other => return Err(format!("unknown attack {other:?}").into()),
    };
    watching.await?;
    let innocent = innocent.lock().map_err(|_| "poisoned")?;
    let mut waits = innocent.waits.clone();
    waits.sort();
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "innocent client: {} exports answered, {} failed; wait p50 {:.1} ms, max {:.1} ms",
        waits.len(),
        innocent.failures.len(),
        ms(waits.get(waits.len() / 2)),
        ms(waits.last())
    );
    for failure in innocent.failures.iter().take(3) {
        println!("  failure: {failure}");
    }
    println!("attack: {attack}");
    println!(
        "{}",
        serde_json::json!({
            "attack": args.attack,
            "innocent_answered": waits.len(),
            "innocent_failed": innocent.failures.len(),
            "innocent_p50_ms": ms(waits.get(waits.len() / 2)),
            "innocent_max_ms": ms(waits.last()),
        })
    );
    Ok(())
}

fn small_trace(i: u64) -> ExportTraceServiceRequest {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut trace_id = [0x11u8; 16];
    trace_id[..8].copy_from_slice(&i.to_be_bytes());
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id.to_vec(),
                    span_id: vec![1; 8],
                    name: "innocent".into(),
                    start_time_unix_nano: now,
                    end_time_unix_nano: now + 1000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Exports a one-span trace every 200 ms, alternating gRPC and HTTP, each on a new connection
/// (as an exporter that reconnects would), and records how long each took.
async fn innocent_client(grpc: SocketAddr, http: SocketAddr, seconds: Duration, seen: Arc<Mutex<Innocent>>) {
    let end = Instant::now() + seconds;
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let started = Instant::now();
        let result = if i.is_multiple_of(2) {
            let export = async {
                let mut client =
                    TraceServiceClient::connect(format!("http://{grpc}")).await.map_err(|e| e.to_string())?;
                client.export(small_trace(i)).await.map(|_| ()).map_err(|e| e.to_string())
            };
            tokio::time::timeout(Duration::from_secs(30), export)
                .await
                .unwrap_or_else(|_| Err("no answer in 30 s".into()))
        } else {
            let export = reqwest::Client::new()
                .post(format!("http://{http}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .timeout(Duration::from_secs(30))
                .body(small_trace(i).encode_to_vec())
                .send();
            match export.await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(err) => Err(err.to_string()),
            }
        };
        if let Ok(mut seen) = seen.lock() {
            match result {
                Ok(()) => seen.waits.push(started.elapsed()),
                Err(err) => seen.failures.push(err),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests that declare a large body (16 MiB over HTTP, 64 MiB in a gRPC prefix) and then send
/// a byte every 2 s, held until the server cuts them off or the time is up.
async fn stall(args: &Args, seconds: Duration) -> String {
    let count = if args.count == 0 { 20 } else { args.count };
    let end = Instant::now() + seconds;
    let mut tasks = Vec::new();
    for _ in 0..count {
        let http = args.http;
        tasks.push(tokio::spawn(async move {
            let Ok(mut tcp) = TcpStream::connect(http).await else { return (false, Duration::ZERO) };
            let head = format!(
                "POST /v1/traces HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                16 << 20
            );
            let started = Instant::now();
            let _ = tcp.write_all(head.as_bytes()).await;
            while Instant::now() < end {
                if tcp.write_all(&[0x0a]).await.is_err() {
                    return (true, started.elapsed());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            (false, started.elapsed())
        }));
        let grpc = args.grpc;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let Ok(tcp) = TcpStream::connect(grpc).await else { return (false, Duration::ZERO) };
            let Ok((client, connection)) = h2::client::handshake(tcp).await else {
                return (false, Duration::ZERO);
            };
            tokio::spawn(connection);
            let Ok(mut client) = client.ready().await else { return (false, Duration::ZERO) };
            let request = http::Request::post(format!(
                "http://{grpc}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a request");
            let Ok((response, mut stream)) = client.send_request(request, false) else {
                return (false, Duration::ZERO);
            };
            let mut prefix = vec![0u8];
            prefix.extend_from_slice(&(64u32 << 20).to_be_bytes());
            let _ = stream.send_data(Bytes::from(prefix), false);
            let trickle = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if stream.send_data(Bytes::from_static(&[0x0a]), false).is_err() {
                        break;
                    }
                }
            };
            let until = tokio::time::sleep_until(end.into());
            tokio::select! {
                _ = response => (true, started.elapsed()),
                () = trickle => (true, started.elapsed()),
                () = until => (false, started.elapsed()),
            }
        }));
    }
    let mut cut = Vec::new();
    for task in tasks {
        if let Ok((true, after)) = task.await {
            cut.push(after);
        }
    }
    cut.sort();
    format!(
        "{} stalled requests (half HTTP, half gRPC); {} ended by the server (answered or closed), the last after {:.1} s; {} still open at the end",
        count * 2,
        cut.len(),
        cut.last().map_or(0.0, Duration::as_secs_f64),
        count * 2 - cut.len()
    )
}

/// Connections that send nothing, `count` per port, held for the whole time.
async fn idle(args: &Args, seconds: Duration) -> String {
    let count = if args.count == 0 { 2000 } else { args.count };
    let mut held = Vec::new();
    for _ in 0..count {
        for addr in [args.http, args.grpc] {
            if let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
            {
                held.push(tcp);
            }
        }
    }
    let opened = held.len();
    tokio::time::sleep(seconds).await;
    let mut closed = 0;
    for mut tcp in held {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(1), async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        });
        if read.await.unwrap_or(false) {
            closed += 1;
        }
    }
    format!("{opened} idle connections opened; {closed} closed by the server by the end")
}

/// A log export request of `records` empty log records, encoded: 2 bytes a record on the wire.
/// Written as bytes: as structs they would take 184 bytes each.
fn empty_records(records: usize) -> Vec<u8> {
    let mut scope_logs = Vec::with_capacity(2 * records);
    for _ in 0..records {
        scope_logs.extend_from_slice(&[0x12, 0x00]); // ScopeLogs.log_records: an empty LogRecord
    }
    let wrap = |tag: u8, inner: Vec<u8>| {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(&inner);
        out
    };
    // ExportLogsServiceRequest.resource_logs { ResourceLogs.scope_logs { ... } }
    wrap(0x0a, wrap(0x12, scope_logs))
}

/// Requests built to take far more memory decoded or encoded than on the wire: 4 MiB of empty
/// log records (protobuf, gRPC and HTTP), 4 MiB of empty spans, 4 MiB of OTLP/JSON `{}` log
/// records; four of each at once.
async fn amplify(args: &Args) -> String {
    let records = (4 << 20) / 2;
    let logs = Bytes::from(empty_records(records));
    let spans = Bytes::from(
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default(); records], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    );
    let json = Bytes::from(format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}{{}}]}}]}}]}}"#,
        "{},".repeat((4 << 20) / 3)
    ));
    let mut outcomes = Vec::new();
    for (name, path, content_type, body) in [
        ("http protobuf empty log records", "/v1/logs", "application/x-protobuf", logs.clone()),
        ("http protobuf empty spans", "/v1/traces", "application/x-protobuf", spans.clone()),
        ("http json empty log records", "/v1/logs", "application/json", json),
    ] {
        let sends = (0..4).map(|_| post(args.http, path, content_type, None, body.clone()));
        outcomes.push(format!("{name}: {}", futures_util::future::join_all(sends).await.join(", ")));
    }
    for (name, service, body) in [
        ("grpc empty log records", "opentelemetry.proto.collector.logs.v1.LogsService", logs),
        ("grpc empty spans", "opentelemetry.proto.collector.trace.v1.TraceService", spans),
    ] {
        let sends = (0..4).map(|_| grpc_call(args.grpc, service, None, body.clone()));
        outcomes.push(format!("{name}: {}", futures_util::future::join_all(sends).await.join(", ")));
    }
    outcomes.join("; ")
}

/// Eight zstd gRPC messages and eight gzip HTTP bodies of a few KB each that inflate to 60 MiB of
/// empty log records, all at once.
async fn bombs(args: &Args) -> String {
    let inflated = empty_records((60 << 20) / 2);
    let zstd = Bytes::from(zstd::encode_all(&inflated[..], 19).expect("zstd"));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gzip, &inflated).expect("gzip");
    let gzip = Bytes::from(gzip.finish().expect("gzip"));
    let grpc = (0..8).map(|_| {
        grpc_call(args.grpc, "opentelemetry.proto.collector.logs.v1.LogsService", Some("zstd"), zstd.clone())
    });
    let http =
        (0..8).map(|_| post(args.http, "/v1/logs", "application/x-protobuf", Some("gzip"), gzip.clone()));
    let (grpc, http) =
        tokio::join!(futures_util::future::join_all(grpc), futures_util::future::join_all(http));
    format!(
        "zstd {} bytes and gzip {} bytes, each inflating to {} bytes; grpc: {}; http: {}",
        zstd.len(),
        gzip.len(),
        inflated.len(),
        grpc.join(", "),
        http.join(", ")
    )
}

/// Twelve clients each sending SearchLogs with ten attribute filters over all time, again and
/// again.
async fn queries(args: &Args, seconds: Duration) -> String {
    let end = Instant::now() + seconds;
    let tasks = (0..12).map(|n| {
        let grpc = args.grpc;
        tokio::spawn(async move {
            let mut answered = (0, 0);
            let Ok(mut client) = QueryServiceClient::connect(format!("http://{grpc}")).await else {
                return answered;
            };
            while Instant::now() < end {
                let filters = (0..10)
                    .map(|i| AttributeFilter {
                        key: format!("attribute.{i}"),
                        value: Some(AnyValue { value: Some(Value::StringValue(format!("value {n} {i}"))) }),
                    })
                    .collect();
                let request = SearchLogsRequest {
                    attributes: filters,
                    time_range: Some(TimeRange { start_unix_nano: 1, end_unix_nano: u64::MAX >> 1 }),
                    ..Default::default()
                };
                match client.search_logs(request).await {
                    Ok(_) => answered.0 += 1,
                    Err(_) => answered.1 += 1,
                }
            }
            answered
        })
    });
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        if let Ok((o, f)) = task.await {
            ok += o;
            failed += f;
        }
    }
    format!("12 clients of SearchLogs with 10 filters over all time: {ok} answered, {failed} failed")
}

async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Bytes,
) -> String {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .timeout(Duration::from_secs(120))
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    match request.send().await {
        Ok(response) => response.status().as_u16().to_string(),
        Err(err) => format!("error ({err})"),
    }
}

/// One Export call with `message` as its body, sent as it is (`encoding` names its compression).
async fn grpc_call(addr: SocketAddr, service: &str, encoding: Option<&str>, message: Bytes) -> String {
    let call = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (client, connection) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut request = http::Request::post(format!("http://{addr}/{service}/Export"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(encoding) = encoding {
            request = request.header("grpc-encoding", encoding);
        }
        let (response, mut stream) = client
            .send_request(request.body(()).map_err(|e| e.to_string())?, false)
            .map_err(|e| e.to_string())?;
        let mut body = vec![u8::from(encoding.is_some())];
        body.extend_from_slice(&u32::try_from(message.len()).map_err(|e| e.to_string())?.to_be_bytes());
        body.extend_from_slice(&message);
        let mut body = Bytes::from(body);
        // Sent as flow control allows.
        while !body.is_empty() {
            stream.reserve_capacity(body.len());
            let capacity = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .ok_or("stream closed")?
                .map_err(|e| e.to_string())?;
            let chunk = body.split_to(capacity.min(body.len()));
            stream.send_data(chunk, body.is_empty()).map_err(|e| e.to_string())?;
        }
        let response = response.await.map_err(|e| e.to_string())?;
        let status = |headers: &http::HeaderMap| {
            headers.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        if let Some(code) = status(response.headers()) {
            return Ok::<_, String>(format!("grpc-status {code}"));
        }
        let mut body = response.into_body();
        while body.data().await.is_some() {}
        let trailers = body.trailers().await.map_err(|e| e.to_string())?.unwrap_or_default();
        Ok(format!("grpc-status {}", status(&trailers).unwrap_or_default()))
    };
    match tokio::time::timeout(Duration::from_secs(120), call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => format!("error ({err})"),
        Err(_) => "no answer in 120 s".into(),
    }
}
