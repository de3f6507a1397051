//! The real `otelephant` binary, run by the tests: started on free ports and waited for until
//! ready, loaded by clients that remember what was acknowledged, signalled, and checked for
//! everything it acknowledged being stored.

use std::{
    collections::HashSet,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
};

use super::harness::{database_url, nanos_now, TestSchema};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The binary, running.
pub struct Running {
    pub child: Child,
    pub grpc: u16,
    pub http: u16,
    pub admin: u16,
    /// When stderr is piped, everything the server logs, read from the moment it starts (a
    /// pipe nobody reads fills up and stalls the server), complete once it exits.
    pub logs: Option<tokio::task::JoinHandle<String>>,
}

/// Starts the binary on the test database, in `schema`.
pub async fn start(schema: &TestSchema) -> Running {
    start_with(schema, |command| command.env("RUST_LOG", "warn")).await
}

/// Starts the binary on free ports with what `adjust` adds to its command line and environment
/// (the test database and `schema` unless it says otherwise).
pub async fn start_with(schema: &TestSchema, adjust: impl FnOnce(&mut Command) -> &mut Command) -> Running {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_otelephant"));
    command
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .env("OTELEPHANT_POSTGRES__URL", database_url())
        .env("OTELEPHANT_POSTGRES__SCHEMA", &schema.name)
        .env("OTELEPHANT_SHUTDOWN__GRACE_SECS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = adjust(&mut command).spawn().expect("start otelephant");
    let logs = child.stderr.take().map(|mut stderr| {
        tokio::spawn(async move {
            let mut output = String::new();
            stderr.read_to_string(&mut output).await.expect("read logs");
            output
        })
    });
    let running = Running { child, grpc, http, admin, logs };
    // Ready when /readyz says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // A probe that gets no answer in time counts as not ready, so a stalled server fails here.
    while !tokio::time::timeout(Duration::from_secs(5), ready(running.admin)).await.unwrap_or(false) {
        assert!(tokio::time::Instant::now() < deadline, "otelephant did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
}

async fn ready(admin: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await else { return false };
    let request = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response.starts_with("HTTP/1.1 200")
}

/// Ten spans of trace number `trace`.
pub fn request(trace: u64) -> ExportTraceServiceRequest {
    let spans = (1..=10u8)
        .map(|n| Span {
            trace_id: [trace.to_be_bytes(), 1u64.to_be_bytes()].concat(),
            span_id: vec![n, 1, 1, 1, 1, 1, 1, 1],
            name: "load".into(),
            start_time_unix_nano: nanos_now(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Clients numbered `clients` send until the server stops answering, each request a trace
/// numbered after its client; what was acknowledged goes into `acked`.
pub fn load(
    grpc: u16,
    clients: std::ops::Range<u64>,
    acked: Arc<Mutex<HashSet<u64>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    clients
        .map(|client| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let Ok(mut traces) = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await
                else {
                    return;
                };
                for n in 0..100_000u64 {
                    let trace = client << 32 | n;
                    match traces.export(request(trace)).await {
                        Ok(_) => {
                            acked.lock().expect("acked").insert(trace);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

/// Waits until at least `n` requests were acknowledged.
pub async fn acked_at_least(acked: &Arc<Mutex<HashSet<u64>>>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("acked").len() < n {
        assert!(tokio::time::Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that every acknowledged request's spans are in `sql`'s schema.
pub async fn assert_all_acknowledged_stored(sql: &tokio_postgres::Client, acked: &HashSet<u64>) {
    let ids: Vec<Vec<u8>> = acked.iter().map(|t| [t.to_be_bytes(), 1u64.to_be_bytes()].concat()).collect();
    let stored: i64 = sql
        .query_one("SELECT count(*) FROM spans WHERE trace_id = ANY($1)", &[&ids])
        .await
        .expect("count")
        .get(0);
    assert!(
        stored >= 10 * acked.len() as i64,
        "{stored} spans stored for {} acknowledged requests",
        acked.len()
    );
    let traces: i64 = sql
        .query_one("SELECT count(DISTINCT trace_id) FROM spans WHERE trace_id = ANY($1)", &[&ids])
        .await
        .expect("count")
        .get(0);
    assert_eq!(traces, acked.len() as i64, "every acknowledged request is in the database");
}

/// Sends signal `name` (`-TERM`, `-KILL`) to the process.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args([name, &pid]).status().expect("kill");
    assert!(status.success());
}
