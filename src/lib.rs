//! otelephant: an OpenTelemetry (OTLP) backend that stores traces, metrics and logs in
//! PostgreSQL.
//!
//! A request flows left to right through the stages below; it is answered only after the
//! transaction holding its rows has committed.
//!
//! # Layout
//! - [`config`]: the configuration structs and how their sources merge.
//! - [`receive`]: front doors; [`receive::grpc`] serves the OTLP/gRPC export services,
//!   [`receive::http`] the OTLP/HTTP receiver, [`receive::conn`] the connection limits, idle
//!   timeout and request body pace both listeners keep, [`receive::inflate`] decompression in
//!   charged steps, [`receive::json`] OTLP/JSON decoding, [`receive::bound`] bounds on what a
//!   request decodes into.
//! - [`encode`]: OTLP -> binary COPY tuples. [`encode::copy`] is the tuple encoder,
//!   [`encode::attributes`] the AnyValue <-> jsonb mapping (both directions),
//!   [`encode::dims`] resources, scopes and the cache of known ids,
//!   [`encode::validate`] the records refused, [`encode::meter`] the memory rows may take, [`encode::wire`] reading protobuf straight from
//!   its bytes (spans, log records and most metric data points skip prost's structs), and
//!   [`encode::traces`], [`encode::metrics`], [`encode::logs`] one signal each.
//! - [`pipeline`]: the intake budget ([`pipeline::intake`]), the bounded queue,
//!   acknowledgements, and the batching writer tasks.
//! - [`store`]: the pools ([`store::connect`], one per role with [`store::connect_pools`]), [`store::migrate`], [`store::partitions`],
//!   [`store::maintenance`] (retention, late partitions, dimension garbage collection) and the
//!   COPY transaction in [`store::writer`].
//! - [`query`]: the read API, `otelephant.query.v1.QueryService`: OTLP back out of the tables,
//!   [`query::traces`], [`query::logs`], [`query::metrics`] one signal each; on the HTTP port,
//!   [`query::http`] the same service as JSON and [`query::jaeger`] Jaeger's query API.
//! - [`ui`]: the web UI on the HTTP port, pages rendered from the query service's answers.
//! - [`time`]: calendar dates of day numbers and timestamps, for log lines and pages.
//! - [`admin`]: readiness, served as `/healthz` and `/readyz` on the admin address and followed
//!   by `grpc.health.v1.Health`.
//! - [`server`]: start-up, wiring (export, query, health and reflection services on the gRPC
//!   port), and shutdown, whose steps [`shutdown::Shutdown`] signals.

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
