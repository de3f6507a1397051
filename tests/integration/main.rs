//! Integration tests against the real PostgreSQL at 127.0.0.1:5432 (see `common`), one binary
//! so they build once and run in parallel, each in a schema of its own.

mod admin;
mod auth;
mod browser;
mod citus;
mod columnar;
mod common;
mod content;
mod deploy;
mod e2e;
mod grpc;
mod hostile_reads;
mod http;
mod isolation;
mod llm;
mod logs;
mod loki;
mod metrics;
mod nul;
mod outage;
mod overload;
mod pg_tls;
mod poison;
mod process;
mod query;
mod read_api;
mod retention;
mod rollups;
mod roundtrip;
mod storage;
mod tls;
mod traces;
