//! Configuration: one struct per component, merged by figment from built-in defaults, then
//! `otelephant.toml` (or the file named by `--config`), then `OTELEPHANT_*` environment variables
//! (`__` separates nesting levels), then command-line flags. Read once at start-up and passed down.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "otelephant.toml";
/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "OTELEPHANT_";

/// A secret from the configuration (a bearer token): its `Debug` form never shows the value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub otlp: OtlpConfig,
    pub admin: AdminConfig,
    pub pipeline: PipelineConfig,
    pub partitions: PartitionConfig,
    pub rollups: RollupConfig,
    pub retention: RetentionConfig,
    pub storage: StorageConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub query: QueryConfig,
    pub ui: UiConfig,
    pub llm: LlmConfig,
}

/// LLM calls (README.md "LLM calls"): how their cost is computed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// A model price file in LiteLLM's format whose entries replace or add to the table
    /// otelephant ships; read once at start, a file that cannot be read stops start-up.
    pub price_file: Option<PathBuf>,
    /// The most bytes a string of LLM message content is stored with; longer ones are cut at
    /// a character boundary and marked with how much was cut (README.md "Message content").
    /// Unset stores content whole.
    pub max_content_bytes: Option<usize>,
}

/// The web UI on the OTLP/HTTP port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the web UI at `/` of the OTLP/HTTP port. Off leaves the port to OTLP and the JSON
    /// and Jaeger APIs.
    pub enabled: bool,
    /// Host names (with or without a port) under which the read side (the UI, the JSON and
    /// Jaeger APIs) answers, besides `localhost`, `*.localhost` and IP addresses; other names
    /// are answered 421, so that a DNS-rebinding page cannot read through a visitor's browser.
    /// `["*"]` answers any name. OTLP export answers any name.
    pub allowed_hosts: Vec<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self { enabled: true, allowed_hosts: Vec::new() }
    }
}

/// The read side: its own connections, and limits that keep one expensive query from starving
/// ingest or other readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Connections the query service may hold at once, apart from the writers' and maintenance's
    /// (`postgres.pool_size`) and the readiness check's own one, so that queries can never take a
    /// connection ingest needs. A query waits for one at most `statement_timeout_ms`.
    pub pool_size: usize,
    /// Longest a query's statement may run in PostgreSQL (its `statement_timeout`); past it the
    /// query is cancelled and answered DEADLINE_EXCEEDED. 0 leaves the database's setting.
    pub statement_timeout_ms: u64,
    /// Most attribute filters one request may carry.
    pub max_filters: usize,
    /// Longest text a filter may carry: an attribute filter's key plus its value, a body text,
    /// a name prefix (bytes).
    pub max_filter_bytes: usize,
    /// Most spans GetTrace hands back; a larger trace is answered RESOURCE_EXHAUSTED naming it.
    pub max_trace_spans: usize,
    /// Most data points (or aggregated steps) one QueryMetrics page may hold; a page that would
    /// hold more is answered RESOURCE_EXHAUSTED, asking for a narrower range or fewer series.
    pub max_points: usize,
    /// Most memory one answer may be built in (bytes): its rows as they arrive from
    /// PostgreSQL, the OTLP decoded from them (JSON members counted as decoded, not as text)
    /// and their encoding. A page that reaches it ends early with its token to go on; a trace
    /// larger than it is answered RESOURCE_EXHAUSTED.
    pub answer_bytes: usize,
    /// Memory all reads in flight share (bytes). A read that finds it taken waits up to
    /// `memory_wait_ms`, then is answered RESOURCE_EXHAUSTED (HTTP 429).
    pub memory_bytes: usize,
    /// Longest a read waits for room in `memory_bytes` (milliseconds).
    pub memory_wait_ms: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            pool_size: 4,
            statement_timeout_ms: 30_000,
            max_filters: 32,
            max_filter_bytes: 4_096,
            max_trace_spans: 20_000,
            max_points: 200_000,
            answer_bytes: 128 * 1024 * 1024,
            memory_bytes: 256 * 1024 * 1024,
            memory_wait_ms: 5_000,
        }
    }
}

impl QueryConfig {
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}

/// TLS on the gRPC and OTLP/HTTP listeners: on when both `cert_file` and `key_file` are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca_file: Option<PathBuf>,
}

/// Bearer tokens; each group of endpoints is open while neither its token nor its file is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Required by the OTLP export services (gRPC and HTTP).
    pub ingest_token: Option<Secret>,
    /// A file of ingest tokens, one per line (any of them is accepted: rotate by adding one).
    pub ingest_token_file: Option<PathBuf>,
    /// Required by the query service.
    pub query_token: Option<Secret>,
    pub query_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `otelephant=debug,warn`; `RUST_LOG`, when set, wins.
    pub level: String,
    /// `text` (for people) or `json` (one object per line, for log collectors).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT, the time allowed to finish and answer queued requests; past it the
    /// process exits anyway (unanswered requests were never acknowledged, so exporters retry).
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_secs: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Where the data goes. The database is created if it does not exist.
    pub url: String,
    /// Schema that holds otelephant's tables; created if missing. Lets several otelephant
    /// installations (or test runs) share one database.
    pub schema: String,
    /// Most connections the pool opens; writers and maintenance share them.
    pub pool_size: usize,
    /// Whether the tables are laid out over a Citus cluster: `auto` when the database has the
    /// `citus` extension, `on` (refuse a database without it), or `off`.
    pub citus: CitusMode,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@localhost:5432/otelephant".into(),
            schema: "public".into(),
            pool_size: 8,
            citus: CitusMode::Auto,
        }
    }
}

/// Whether otelephant lays its tables out for Citus (`postgres.citus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CitusMode {
    /// When the database has the `citus` extension.
    #[default]
    Auto,
    /// Always: a database without the extension is refused.
    On,
    /// Never: the tables stay where they are made, even on a Citus coordinator.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Listen address of the OTLP/gRPC receiver (and the query service).
    pub grpc_addr: SocketAddr,
    /// Listen address of the OTLP/HTTP receiver.
    pub http_addr: SocketAddr,
    /// Largest request accepted, measured after decompression; larger ones get
    /// RESOURCE_EXHAUSTED. 64 MiB is the OTLP specification's recommendation.
    pub max_request_bytes: usize,
    /// Origins (e.g. `https://app.example.com`) whose browser pages may send to the OTLP/HTTP
    /// receiver. Empty turns CORS off: no CORS headers are sent.
    pub cors_allowed_origins: Vec<String>,
    /// Most connections each of the two listeners keeps open; further ones wait in the kernel's
    /// backlog until one closes.
    pub max_connections: usize,
    /// A connection on which nothing has been read or written for this long is closed (0: never),
    /// so that idle connections, and clients that stop reading, give their place back.
    pub idle_timeout_secs: u64,
    /// The most time a request's headers may take to arrive, and the longest gap allowed between
    /// two pieces of its body; a request that takes longer is cut off.
    pub read_timeout_ms: u64,
    /// Once `read_timeout_ms` has passed since a body began, it must have arrived at least this
    /// fast on average (bytes per second; 0: no minimum), so a body trickled in to hold its intake
    /// room is cut off while an exporter on a slow link is not.
    pub min_read_bytes_per_sec: u64,
    /// Most requests at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            grpc_addr: ([0, 0, 0, 0], 4317).into(),
            http_addr: ([0, 0, 0, 0], 4318).into(),
            max_request_bytes: 64 * 1024 * 1024,
            cors_allowed_origins: Vec::new(),
            max_connections: 1024,
            idle_timeout_secs: 120,
            read_timeout_ms: 10_000,
            min_read_bytes_per_sec: 4_096,
            max_concurrent_streams: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { addr: ([0, 0, 0, 0], 9464).into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Memory that what requests build from their bytes may hold: inflated bodies, decoded
    /// structs, encoded rows (their buffers' capacity) while they are built, queued or in
    /// unfinished batches. Taken as it is built, so this bounds ingest memory.
    pub queue_bytes: usize,
    /// Bytes of requests that may be on their way in at once, taken as they arrive (a 64th of
    /// this ahead at most) and given back once the request's rows are queued.
    pub intake_bytes: usize,
    /// How long a request whose body has begun to arrive waits for intake room before it is
    /// turned away (gRPC UNAVAILABLE with RetryInfo, HTTP 429 with Retry-After). Kept short: while
    /// it waits, its first bytes hold part of the connection's HTTP/2 flow-control window, which
    /// the other requests on that connection need to make progress.
    pub intake_wait_ms: u64,
    /// Most memory one request may take on its way in: its body, what it inflates and decodes
    /// to, and its encoded rows. A request that needs more is refused (RESOURCE_EXHAUSTED / 413);
    /// one that needs more than a whole budget but not this goes through alone, when that budget
    /// is free.
    pub max_request_memory: usize,
    /// Writer tasks, each writing one batch at a time on its own connection.
    pub writers: usize,
    /// A batch is written once it holds this many rows...
    pub batch_max_rows: usize,
    /// ...or this many encoded bytes...
    pub batch_max_bytes: usize,
    /// ...or this many milliseconds after its first request arrived (sooner when another writer
    /// is free to take what comes next).
    pub linger_ms: u64,
    /// How long a request may wait for room in a full queue before it is turned away with a
    /// retryable answer (gRPC UNAVAILABLE with RetryInfo, HTTP 429 with Retry-After).
    pub queue_wait_ms: u64,
    /// While the database is unreachable, a batch is retried (with backoff) until this many
    /// milliseconds after its requests were queued; then they are answered UNAVAILABLE and the
    /// exporters retry. Keep it below the exporters' timeout (10 s by default in the SDKs).
    pub retry_deadline_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_bytes: 32 * 1024 * 1024,
            intake_bytes: 16 * 1024 * 1024,
            intake_wait_ms: 100,
            max_request_memory: 64 * 1024 * 1024,
            writers: 2,
            batch_max_rows: 50_000,
            batch_max_bytes: 16 * 1024 * 1024,
            linger_ms: 20,
            queue_wait_ms: 5_000,
            retry_deadline_ms: 5_000,
        }
    }
}

impl PipelineConfig {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn intake_wait(&self) -> Duration {
        Duration::from_millis(self.intake_wait_ms)
    }

    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.queue_wait_ms)
    }

    pub fn retry_deadline(&self) -> Duration {
        Duration::from_millis(self.retry_deadline_ms)
    }
}

/// Daily partitions and the accepted time window. A record whose day (UTC, by its time) lies
/// from `days_behind` days before today to `days_ahead` days after always has its partition
/// ready; other records go to the table's catch-all `*_default` partition, and move into a daily
/// partition if their day's is created later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionConfig {
    /// Daily partitions are kept ready this many days ahead of today (UTC).
    pub days_ahead: u32,
    /// Partitions are also created this many days back, for data that arrives late. Records
    /// older than that but younger than the retention get their day's partition at the next
    /// maintenance pass.
    pub days_behind: u32,
    /// How often maintenance runs (create partitions, drop expired ones, collect unreferenced
    /// resources, scopes and series), in seconds. Replicas take turns through an advisory lock.
    pub check_interval_secs: u64,
    /// Longest a maintenance pass waits for a table lock when dropping a partition, or when
    /// converting a closed day to columnar storage (milliseconds).
    /// Writers queue behind a waiting DROP, so this bounds the stall it can cause; a drop that
    /// times out is tried again at the next pass.
    pub drop_lock_timeout_ms: u64,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self { days_ahead: 3, days_behind: 1, check_interval_secs: 3600, drop_lock_timeout_ms: 2_000 }
    }
}

/// The rollups' upkeep (README.md "Rollups"): folding each closed minute's rows of a key into
/// one, and pairing child spans with their parents into calls between services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollupConfig {
    /// How often a pass runs, in seconds; one replica at a time, through an advisory lock. A
    /// call between services shows this long (plus ten seconds) after its child span is stored.
    pub pass_interval_secs: u64,
    /// How long a child span whose parent is not stored yet is waited for, in seconds: a
    /// parent stored within this is paired with it; a later one is not.
    pub parent_wait_secs: u64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self { pass_interval_secs: 15, parent_wait_secs: 1800 }
    }
}

/// How long each signal's records are kept. Enforced by dropping whole daily partitions, once
/// every record a partition can hold is older than the retention; never by DELETE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Spans, e.g. `"7d"`, `"36h"`, or `"forever"`.
    pub traces: Retention,
    /// Log records.
    pub logs: Retention,
    /// Metric data points (all five point tables).
    pub metrics: Retention,
    /// LLM message content (prompts, completions, tool arguments and results) in spans and log
    /// records: once a day is older than this, its content values are replaced with a mark and
    /// the rest of each record is kept (README.md "Message content"). `"forever"` keeps content
    /// as long as its records.
    pub llm_content: Retention,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            traces: Retention::days(7),
            logs: Retention::days(7),
            metrics: Retention::days(30),
            llm_content: Retention::Forever,
        }
    }
}

/// A retention period: a duration (`"7d"`, `"12h"`, `"2w"`) or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Forever,
    For(Duration),
}

impl Retention {
    pub const fn days(days: u64) -> Self {
        Retention::For(Duration::from_secs(days * 86_400))
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Forever => f.write_str("forever"),
            Retention::For(period) => write!(f, "{}", humantime::format_duration(*period)),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "forever" {
            return Ok(Retention::Forever);
        }
        match humantime::parse_duration(text.trim()) {
            Ok(period) if !period.is_zero() => Ok(Retention::For(period)),
            Ok(_) => Err("a retention of 0 would drop everything; use \"forever\" to keep all".into()),
            Err(err) => {
                Err(format!("{text:?} is not a retention (like \"7d\", \"12h\" or \"forever\"): {err}"))
            }
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How closed days are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How long after its day ends a daily partition is converted to columnar storage, where
    /// the database has the `columnar` access method (the `citus_columnar` extension); `"off"`
    /// keeps every day in row storage.
    pub columnar_after: ColumnarAfter,
}

impl Default for StorageConfig {
    fn default() -> Self {
        // Two days: late records (exporters retrying, clocks behind, uploads of buffered data)
        // mostly arrive within hours and then go into row storage, which takes them cheaply;
        // the last two days, the ones read most, keep row storage's fastest lookups.
        Self { columnar_after: ColumnarAfter::After(Duration::from_secs(2 * 86_400)) }
    }
}

/// A delay after a day's end (`"2d"`, `"36h"`, `"0s"`: as soon as it ends) or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnarAfter {
    Off,
    After(Duration),
}

impl std::fmt::Display for ColumnarAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnarAfter::Off => f.write_str("off"),
            ColumnarAfter::After(delay) => write!(f, "{}", humantime::format_duration(*delay)),
        }
    }
}

impl std::str::FromStr for ColumnarAfter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "off" {
            return Ok(ColumnarAfter::Off);
        }
        humantime::parse_duration(text.trim())
            .map(ColumnarAfter::After)
            .map_err(|err| format!("{text:?} is not a delay (like \"2d\", \"36h\") or \"off\": {err}"))
    }
}

impl Serialize for ColumnarAfter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ColumnarAfter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Merges the configuration sources in order of precedence. `file` is `--config`;
    /// `overrides` are the command-line flags, already in the shape of this struct.
    ///
    /// # Errors
    /// A missing `--config` file, unknown keys and values of the wrong type, each named by key.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        Self::figment(file)?.merge(overrides).extract().map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.display().to_string())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.pipeline;
        let checks = [
            ("pipeline.writers", p.writers == 0),
            ("pipeline.queue_bytes", p.queue_bytes == 0),
            ("pipeline.intake_bytes", p.intake_bytes == 0),
            ("pipeline.max_request_memory", p.max_request_memory == 0),
            ("pipeline.batch_max_rows", p.batch_max_rows == 0),
            ("pipeline.batch_max_bytes", p.batch_max_bytes == 0),
            ("postgres.pool_size", self.postgres.pool_size == 0),
            ("query.pool_size", self.query.pool_size == 0),
            ("query.max_trace_spans", self.query.max_trace_spans == 0),
            ("query.max_points", self.query.max_points == 0),
            ("query.answer_bytes", self.query.answer_bytes == 0),
            ("otlp.max_request_bytes", self.otlp.max_request_bytes == 0),
            ("otlp.max_connections", self.otlp.max_connections == 0),
            ("otlp.read_timeout_ms", self.otlp.read_timeout_ms == 0),
            ("otlp.max_concurrent_streams", self.otlp.max_concurrent_streams == 0),
            ("partitions.check_interval_secs", self.partitions.check_interval_secs == 0),
            ("rollups.pass_interval_secs", self.rollups.pass_interval_secs == 0),
        ];
        if let Some((key, _)) = checks.iter().find(|(_, bad)| *bad) {
            return Err(ConfigError::Zero(key));
        }
        if let Some(limit) =
            self.llm.max_content_bytes.filter(|&l| l < crate::encode::genai::content::MIN_LIMIT)
        {
            return Err(ConfigError::ContentLimitTooSmall(limit));
        }
        if self.query.memory_bytes < self.query.answer_bytes {
            return Err(ConfigError::ReadMemoryTooSmall {
                memory: self.query.memory_bytes,
                answer: self.query.answer_bytes,
            });
        }
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(ConfigError::Tls("tls.cert_file and tls.key_file go together"));
        }
        if tls.client_ca_file.is_some() && tls.cert_file.is_none() {
            return Err(ConfigError::Tls("tls.client_ca_file needs tls.cert_file and tls.key_file"));
        }
        if self.postgres.pool_size < p.writers + 1 {
            return Err(ConfigError::PoolTooSmall { pool: self.postgres.pool_size, writers: p.writers });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(#[source] Box<figment::Error>),
    #[error("invalid configuration: {0} must be greater than 0")]
    Zero(&'static str),
    #[error("invalid configuration: postgres.pool_size ({pool}) must exceed pipeline.writers ({writers}) so maintenance can get a connection")]
    PoolTooSmall { pool: usize, writers: usize },
    #[error("invalid configuration: query.memory_bytes ({memory}) must be at least query.answer_bytes ({answer}), or no answer could be built whole")]
    ReadMemoryTooSmall { memory: usize, answer: usize },
    #[error("invalid configuration: {0}")]
    Tls(&'static str),
    #[error("invalid configuration: llm.max_content_bytes ({0}) must be at least 64")]
    ContentLimitTooSmall(usize),
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error.
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn sources_merge_in_order_of_precedence() {
        Jail::expect_with(|jail| {
            jail.create_file(
                DEFAULT_CONFIG_FILE,
                r#"
                [postgres]
                url = "postgres://file@db/file"
                schema = "from_file"
                [pipeline]
                writers = 3
                "#,
            )?;
            jail.set_env("OTELEPHANT_POSTGRES__SCHEMA", "from_env");
            jail.set_env("OTELEPHANT_PIPELINE__LINGER_MS", "7");
            let flags = Figment::new().merge(Serialized::default("postgres.url", "postgres://flag@db/flag"));
            let config = Config::load(None, flags).expect("loads");
            assert_eq!(config.postgres.url, "postgres://flag@db/flag");
            assert_eq!(config.postgres.schema, "from_env");
            assert_eq!(config.pipeline.writers, 3);
            assert_eq!(config.pipeline.linger_ms, 7);
            assert_eq!(config.otlp, OtlpConfig::default());
            Ok(())
        });
    }

    #[test]
    fn the_price_file_is_read_from_the_file_and_the_environment() {
        Jail::expect_with(|jail| {
            assert_eq!(Config::default().llm.price_file, None);
            jail.create_file(DEFAULT_CONFIG_FILE, "[llm]\nprice_file = \"prices.json\"\n")?;
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.llm.price_file, Some(PathBuf::from("prices.json")));
            jail.set_env("OTELEPHANT_LLM__PRICE_FILE", "/etc/otelephant/prices.json");
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.llm.price_file, Some(PathBuf::from("/etc/otelephant/prices.json")));
            Ok(())
        });
    }

    #[test]
    fn the_rollups_upkeep_reads_its_settings() {
        Jail::expect_with(|jail| {
            assert_eq!(
                Config::default().rollups,
                RollupConfig { pass_interval_secs: 15, parent_wait_secs: 1800 }
            );
            jail.create_file(DEFAULT_CONFIG_FILE, "[rollups]\npass_interval_secs = 5\n")?;
            jail.set_env("OTELEPHANT_ROLLUPS__PARENT_WAIT_SECS", "600");
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.rollups, RollupConfig { pass_interval_secs: 5, parent_wait_secs: 600 });
            let mut zero = config;
            zero.rollups.pass_interval_secs = 0;
            assert!(zero.validate().unwrap_err().to_string().contains("rollups.pass_interval_secs"));
            Ok(())
        });
    }

    #[test]
    fn defaults_need_no_file() {
        Jail::expect_with(|_| {
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config, Config::default());
            assert_eq!(config.postgres.url, "postgres://postgres@localhost:5432/otelephant");
            assert_eq!(config.otlp.grpc_addr.to_string(), "0.0.0.0:4317");
            assert_eq!(config.otlp.http_addr.to_string(), "0.0.0.0:4318");
            assert_eq!(config.admin.addr.to_string(), "0.0.0.0:9464");
            config.validate().expect("defaults are valid");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[postgres]\nurl = \"x\"\nturbo = true\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), Figment::new()).unwrap_err();
            assert!(err.to_string().contains("turbo"), "{err}");

            jail.create_file("bad2.toml", "[pipeline]\nwriters = \"many\"\n")?;
            let err = Config::load(Some(Path::new("bad2.toml")), Figment::new()).unwrap_err();
            assert!(err.to_string().contains("writers"), "{err}");

            jail.set_env("OTELEPHANT_OTLP__GRPC_ADDR", "not an address");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("otlp.grpc_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        Jail::expect_with(|_| {
            let err = Config::load(Some(Path::new("nope.toml")), Figment::new()).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)));
            Ok(())
        });
    }

    #[test]
    fn retention_reads_durations_and_forever() {
        Jail::expect_with(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "[retention]\ntraces = \"36h\"\nlogs = \"forever\"\n")?;
            jail.set_env("OTELEPHANT_RETENTION__METRICS", "2w");
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.retention.traces, Retention::For(Duration::from_secs(36 * 3600)));
            assert_eq!(config.retention.logs, Retention::Forever);
            assert_eq!(config.retention.metrics, Retention::days(14));

            jail.set_env("OTELEPHANT_RETENTION__METRICS", "0s");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.to_string().contains("forever"), "{err}");
            jail.set_env("OTELEPHANT_RETENTION__METRICS", "a week");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("retention.metrics"), "{err}");
            Ok(())
        });
        assert_eq!(Retention::days(7).to_string(), "7days");
        assert_eq!("7days".parse::<Retention>(), Ok(Retention::days(7)));
    }

    #[test]
    fn columnar_storage_reads_a_delay_or_off() {
        Jail::expect_with(|jail| {
            assert_eq!(
                Config::default().storage.columnar_after,
                ColumnarAfter::After(Duration::from_secs(2 * 86_400))
            );
            jail.create_file(DEFAULT_CONFIG_FILE, "[storage]\ncolumnar_after = \"36h\"\n")?;
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.storage.columnar_after, ColumnarAfter::After(Duration::from_secs(36 * 3600)));
            jail.set_env("OTELEPHANT_STORAGE__COLUMNAR_AFTER", "off");
            assert_eq!(
                Config::load(None, Figment::new()).expect("loads").storage.columnar_after,
                ColumnarAfter::Off
            );
            jail.set_env("OTELEPHANT_STORAGE__COLUMNAR_AFTER", "soon");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("storage.columnar_after"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn zero_sizes_are_rejected() {
        let mut config = Config::default();
        config.pipeline.writers = 0;
        assert!(config.validate().unwrap_err().to_string().contains("pipeline.writers"));
    }

    #[test]
    fn the_read_side_limits_read_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("OTELEPHANT_UI__ALLOWED_HOSTS", r#"["otelephant", "obs.example.com:443"]"#);
            jail.set_env("OTELEPHANT_QUERY__ANSWER_BYTES", "1048576");
            jail.set_env("OTELEPHANT_QUERY__MEMORY_BYTES", "8388608");
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.ui.allowed_hosts, ["otelephant", "obs.example.com:443"]);
            assert_eq!((config.query.answer_bytes, config.query.memory_bytes), (1 << 20, 8 << 20));
            config.validate().expect("valid");
            jail.set_env("OTELEPHANT_QUERY__MEMORY_BYTES", "1000");
            let small = Config::load(None, Figment::new()).expect("loads");
            let err = small.validate().expect_err("less read memory than one answer");
            assert!(err.to_string().contains("query.memory_bytes"), "{err}");
            Ok(())
        });
    }
}
