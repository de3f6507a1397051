//! Test harness: each test gets its own PostgreSQL schema in the test database (so tests run in
//! parallel), an in-process server on port 0, a SQL client, and cleanup when it ends.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::logs_service_client::LogsServiceClient,
        metrics::v1::metrics_service_client::MetricsServiceClient,
        trace::v1::trace_service_client::TraceServiceClient,
    },
    common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList},
};
use otelephant::{config::Config, server::Server};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_postgres::{Client, NoTls};
use tonic::transport::Channel;

/// The database the tests use; created if missing. Override with OTELEPHANT_TEST_DATABASE_URL.
pub fn database_url() -> String {
    std::env::var("OTELEPHANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/otelephant_test".into())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A schema of its own in the test database, dropped when this is dropped.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self { name: format!("test_{}_{n}", std::process::id()) }
    }

    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.postgres.url = database_url();
        config.postgres.schema = self.name.clone();
        config.postgres.pool_size = 4;
        config.otlp.grpc_addr = ([127, 0, 0, 1], 0).into();
        config.admin.addr = ([127, 0, 0, 1], 0).into();
        config.otlp.http_addr = ([127, 0, 0, 1], 0).into();
        config.pipeline.linger_ms = 5;
        config
    }

    /// A SQL client whose search_path is this schema.
    pub async fn sql(&self) -> Client {
        let mut pg: tokio_postgres::Config = database_url().parse().expect("test database url");
        pg.options(format!("-c search_path={}", self.name));
        let (client, connection) = pg.connect(NoTls).await.expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async {
                    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls).await?;
                    tokio::spawn(connection);
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await
                })
                .map_err(std::io::Error::other)
        })
        .join();
    }
}

/// A running server on its own schema.
pub struct TestServer {
    pub server: Option<Server>,
    pub sql: Client,
    /// What the server was started with, to start it again on the same schema.
    pub config: Config,
    /// Held so the schema is dropped when the test ends.
    _schema: TestSchema,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let schema = TestSchema::new();
        let mut config = schema.config();
        adjust(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        let sql = schema.sql().await;
        Self { server: Some(server), sql, config, _schema: schema }
    }

    /// Waits until the server's first storage maintenance pass (run at start-up) is over, so
    /// that a test's own passes do not race it.
    pub async fn first_maintenance_pass(&self) {
        let mut passes = self.server.as_ref().expect("running").maintenance_passes.clone();
        passes.wait_for(|n| *n >= 1).await.expect("maintenance runs");
    }

    /// Stops the server and starts a new one on the same schema (on new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.server = Some(Server::start(self.config.clone()).await.expect("server starts again"));
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.as_ref().expect("running").grpc_addr)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint()).expect("endpoint").connect().await.expect("connects")
    }

    pub async fn traces(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await)
    }

    pub async fn metrics(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.channel().await)
    }

    pub async fn logs(&self) -> LogsServiceClient<Channel> {
        LogsServiceClient::new(self.channel().await)
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.sql.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

pub fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// One attribute of every AnyValue variant, nested ones included, plus hostile text.
pub fn every_value_attributes() -> Vec<KeyValue> {
    vec![
        kv("string", s("héllo ✓ 日本語 🐘 \"quoted\" back\\slash\nnewline\ttab\u{1}")),
        kv("empty.string", s("")),
        kv("bool.true", Value::BoolValue(true)),
        kv("bool.false", Value::BoolValue(false)),
        kv("int", Value::IntValue(-42)),
        kv("int.max", Value::IntValue(i64::MAX)),
        kv("int.min", Value::IntValue(i64::MIN)),
        kv("double", Value::DoubleValue(3.25)),
        kv("double.whole", Value::DoubleValue(42.0)),
        kv("double.tiny", Value::DoubleValue(5e-324)),
        kv("double.huge", Value::DoubleValue(1.7976931348623157e308)),
        kv("double.nan", Value::DoubleValue(f64::NAN)),
        kv("double.inf", Value::DoubleValue(f64::INFINITY)),
        kv("double.neg_inf", Value::DoubleValue(f64::NEG_INFINITY)),
        kv("double.neg_zero", Value::DoubleValue(-0.0)),
        kv("bytes", Value::BytesValue(vec![0, 1, 2, 254, 255])),
        kv("bytes.empty", Value::BytesValue(vec![])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue { value: Some(Value::IntValue(1)) },
                    AnyValue { value: Some(Value::DoubleValue(1.0)) },
                    AnyValue { value: Some(s("one")) },
                    AnyValue { value: None },
                    AnyValue { value: Some(Value::ArrayValue(ArrayValue::default())) },
                ],
            }),
        ),
        kv("array.empty", Value::ArrayValue(ArrayValue::default())),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![
                    kv(
                        "nested",
                        Value::KvlistValue(KeyValueList { values: vec![kv("deep", Value::IntValue(7))] }),
                    ),
                    kv("$bytes", s("a map key that looks like a tag")),
                ],
            }),
        ),
        kv("map.tag_lookalike", Value::KvlistValue(KeyValueList { values: vec![kv("$double", s("NaN"))] })),
        kv("map.empty", Value::KvlistValue(KeyValueList::default())),
        KeyValue { key: "empty.value".into(), value: Some(AnyValue { value: None }), ..Default::default() },
    ]
}

/// A comparable form of an attribute map: sorted by key at every level, doubles by their bits
/// (so NaN equals NaN and -0 differs from 0), an absent value the same as an empty one.
pub fn normalize(attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        attributes.iter().map(|kv| (kv.key.clone(), normalize_value(kv.value.as_ref()))).collect();
    out.sort();
    out
}

fn normalize_value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => "empty".into(),
        Some(Value::DoubleValue(d)) => format!("double:{:x}", d.to_bits()),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| normalize_value(Some(v))).collect();
            format!("array:[{}]", items.join(","))
        }
        Some(Value::KvlistValue(l)) => format!("map:{:?}", normalize(&l.values)),
        Some(other) => format!("{other:?}"),
    }
}

pub fn normalize_any(value: &AnyValue) -> String {
    normalize_value(Some(value))
}

/// Reads a stored attribute map back into OTLP.
pub fn attributes(json: &serde_json::Value) -> Vec<KeyValue> {
    otelephant::encode::attributes::attributes_from_json(json).expect("stored attributes follow the mapping")
}

pub fn nanos_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// A TCP proxy to the test database that a test can cut, or pause (bytes stop flowing, the
/// connections stay open, like a database that hangs).
pub struct Proxy {
    port: u16,
    /// The forwarding tasks of open connections.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Mutex<Option<JoinHandle<()>>>,
    flowing: tokio::sync::watch::Sender<bool>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    /// Connections turned away while refusing.
    refused: tokio::sync::watch::Sender<usize>,
    /// Set by [`Self::cut_mid_copy`]: the next large CopyData message is cut in its middle.
    copy_cut: Arc<CopyCut>,
}

/// A one-shot cut in the middle of a COPY, armed with the size of CopyData message to cut.
#[derive(Default)]
struct CopyCut {
    armed_at: std::sync::atomic::AtomicUsize,
    happened: std::sync::atomic::AtomicBool,
}

/// Follows the messages a client sends to PostgreSQL (a length-prefixed startup message, then
/// a type byte and a length per message), to find CopyData ('d') messages in the byte stream.
#[derive(Default)]
struct FrontendMessages {
    started: bool,
    header: Vec<u8>,
    /// Bytes of the current message's body still to come.
    left: usize,
    /// Whether the current message is CopyData, and how long its body is.
    copy_data: Option<usize>,
}

impl FrontendMessages {
    /// Where in `chunk` to cut, if it carries the middle of a CopyData message of at least
    /// `min_len` bytes.
    fn cut_point(&mut self, chunk: &[u8], min_len: usize) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.left == 0 {
                let need = if self.started { 5 } else { 4 };
                let take = (need - self.header.len()).min(chunk.len() - i);
                self.header.extend_from_slice(&chunk[i..i + take]);
                i += take;
                if self.header.len() < need {
                    break;
                }
                let (kind, len) = match self.started {
                    true => (self.header[0], &self.header[1..5]),
                    false => (0, &self.header[0..4]),
                };
                let body = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize - 4;
                self.left = body;
                self.copy_data = (kind == b'd').then_some(body);
                self.started = true;
                self.header.clear();
                continue;
            }
            let take = self.left.min(chunk.len() - i);
            if self.copy_data.is_some_and(|len| len >= min_len) && take >= 2 {
                return Some(i + take / 2);
            }
            self.left -= take;
            i += take;
        }
        None
    }
}

/// Copies `from` to `to`, holding each chunk while the gate is closed. Given `copy_cut` (the
/// client's direction), it ends the connection in the middle of a CopyData message when armed.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: tokio::sync::watch::Receiver<bool>,
    copy_cut: Option<Arc<CopyCut>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let mut messages = copy_cut.as_ref().map(|_| FrontendMessages::default());
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        if let Some(cut) = &copy_cut {
            let min_len = cut.armed_at.load(Ordering::SeqCst);
            let threshold = if min_len == 0 { usize::MAX } else { min_len };
            let cut_at = messages.as_mut().and_then(|m| m.cut_point(&buf[..n], threshold));
            if let Some(at) = cut_at {
                if cut.armed_at.compare_exchange(min_len, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    let _ = to.write_all(&buf[..at]).await;
                    cut.happened.store(true, Ordering::SeqCst);
                    return;
                }
            }
            if cut_at.is_some() {
                // Another connection took the cut; this one's messages are no longer followed.
                messages = None;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (flowing, gate) = tokio::sync::watch::channel(true);
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (refused, _) = tokio::sync::watch::channel(0usize);
        let registry = tasks.clone();
        let (is_refusing, count) = (refusing.clone(), refused.clone());
        let copy_cut = Arc::new(CopyCut::default());
        let cut = copy_cut.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if is_refusing.load(Ordering::SeqCst) {
                    drop(inbound);
                    count.send_modify(|n| *n += 1);
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else { continue };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                let up = tokio::spawn(forward(in_read, out_write, gate.clone(), Some(cut.clone())));
                let down = tokio::spawn(forward(out_read, in_write, gate.clone(), None));
                registry.lock().expect("registry").extend([up, down]);
            }
        });
        Self { port, tasks, accept: Mutex::new(Some(accept)), flowing, refusing, refused, copy_cut }
    }

    /// The database URL through this proxy, with TLS off: the proxy reads the protocol in
    /// the clear to find COPY messages.
    pub fn url(&self) -> String {
        let url = database_url().replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port));
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}sslmode=disable")
    }

    /// Drops every connection and stops listening: the database is gone for good.
    pub fn cut(&self) {
        if let Some(accept) = self.accept.lock().expect("accept").take() {
            accept.abort();
        }
        self.drop_connections();
    }

    fn drop_connections(&self) {
        for task in self.tasks.lock().expect("registry").drain(..) {
            task.abort();
        }
    }

    /// An outage: drops every connection and turns new ones away until [`Self::heal`].
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    pub fn heal(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Resolves once `n` connections in all have been turned away.
    pub async fn refused_at_least(&self, n: usize) {
        let mut refused = self.refused.subscribe();
        refused.wait_for(|count| *count >= n).await.expect("the proxy is alive");
    }

    /// Arms a one-shot cut: the next CopyData message of at least `min_len` bytes is forwarded
    /// only half-way, and its connection is closed there.
    pub fn cut_mid_copy(&self, min_len: usize) {
        self.copy_cut.armed_at.store(min_len.max(1), Ordering::SeqCst);
    }

    /// Whether the armed cut has happened.
    pub fn copy_was_cut(&self) -> bool {
        self.copy_cut.happened.load(Ordering::SeqCst)
    }

    /// Holds all traffic until [`Self::resume`].
    pub fn pause(&self) {
        self.flowing.send_replace(false);
    }

    pub fn resume(&self) {
        self.flowing.send_replace(true);
    }
}
