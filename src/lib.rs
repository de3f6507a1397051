//! otelephant: an OpenTelemetry (OTLP) backend that stores traces, metrics and logs in
//! PostgreSQL.
//!
//! A request flows left to right through the stages below; it is answered only after the
//! transaction holding its rows has committed.
//!
//! # Layout
//! The modules, from the front door down; each uses only those listed after it (and
//! [`config`], [`time`], [`telemetry`]), never one that uses it.
//! - [`server`]: start-up, wiring (export, query, health and reflection services on the gRPC
//!   port; OTLP, the read APIs and the UI on the HTTP port), and shutdown, whose steps
//!   [`shutdown::Shutdown`] signals.
//! - [`admin`]: readiness, served as `/healthz` and `/readyz` on the admin address and followed
//!   by `grpc.health.v1.Health`, and `/metrics`.
//! - [`ui`]: the web UI on the HTTP port, pages rendered from the query service's answers;
//!   [`ui::security`] the browser-safety headers, Host allow-list and same-origin sign-in that
//!   every answer of the HTTP port passes through.
//! - [`query`]: the read API, `otelephant.query.v1.QueryService`: OTLP back out of the tables,
//!   [`query::traces`], [`query::logs`], [`query::metrics`] one signal each; on the HTTP port,
//!   [`query::http`] the same service as JSON and [`query::jaeger`] Jaeger's query API;
//!   [`query::budget`] the memory answers are built in; [`query::logql`] parses LogQL, the
//!   query language of Loki's API.
//! - [`receive`]: front doors; [`receive::grpc`] serves the OTLP/gRPC export services,
//!   [`receive::http`] the OTLP/HTTP receiver, [`receive::conn`] the connection limits, idle
//!   timeout and request body pace both listeners keep, [`receive::inflate`] decompression in
//!   charged steps, [`receive::json`] OTLP/JSON decoding, [`receive::bound`] bounds on what a
//!   request decodes into, [`receive::outcome`] how a request was answered.
//! - [`pipeline`]: the intake budget ([`pipeline::intake`]), the bounded queue,
//!   acknowledgements, and the batching writer tasks.
//! - [`store`]: the pools ([`store::connect`], one per role with [`store::connect_pools`]),
//!   [`store::migrate`], [`store::partitions`], [`store::maintenance`] (retention, late
//!   partitions, dimension garbage collection) and the COPY transaction in [`store::writer`].
//! - [`encode`]: OTLP -> binary COPY tuples, and the table layouts ([`encode::TableId`] names
//!   each table's). [`encode::copy`] is the tuple encoder, [`encode::attributes`] the
//!   AnyValue <-> jsonb mapping (both directions), [`encode::dims`] resources, scopes and the
//!   cache of known ids, [`encode::validate`] the records refused, [`encode::meter`] the memory
//!   rows may take. [`encode::traces`], [`encode::metrics`] and [`encode::logs`] hold one
//!   signal each: its tables and the one writer of each table's rows, which reads a record
//!   through [`encode::source`]'s traits, implemented by the decoded request (`decoded`) and
//!   by [`encode::wire`], which reads protobuf straight from its bytes (protobuf fields, the
//!   request walk, values and lists in place). [`encode::rollups`] tallies spans and log
//!   records for the rollups; [`encode::genai`] reads LLM calls out of spans, priced by
//!   [`encode::genai::prices`].
//! - [`auth`]: bearer tokens and the web UI's sign-in sessions; [`tls`]: TLS listeners;
//!   [`shutdown`]: the shutdown signals.
//! - [`config`]: the configuration structs and how their sources merge; [`time`]: day numbers
//!   and dates; [`telemetry`]: otelephant's own metrics.

pub mod admin;
pub mod auth;
pub mod config;
pub mod encode;
pub mod pipeline;
pub mod query;
pub mod receive;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod ui;
