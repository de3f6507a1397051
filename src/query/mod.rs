//! The read API: `otelephant.query.v1.QueryService` on the gRPC port, handing stored data back
//! as OTLP, with every field decoded by the same mappings that encoded it.

pub mod traces;

use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tonic::Status;

use crate::encode::attributes::MappingError;

/// The generated service and messages of `proto/otelephant/query/v1/query.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("otelephant.query.v1");
}

/// Descriptors of the query service and the OTLP export services, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// A time range's length when the request leaves its start unset.
pub const DEFAULT_RANGE_NANOS: u64 = 3_600 * 1_000_000_000;

/// The query service: a handle on the pool.
#[derive(Clone)]
pub struct Query {
    pool: Pool,
}

impl Query {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn server(self) -> proto::query_service_server::QueryServiceServer<Self> {
        proto::query_service_server::QueryServiceServer::new(self)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Status> {
        self.pool.get().await.map_err(|e| Status::unavailable(format!("no database connection: {e}")))
    }
}

/// `[start, end)` in nanoseconds as the bigint the tables hold.
///
/// # Errors
/// INVALID_ARGUMENT naming the field when the range is inverted or empty.
pub fn resolve_range(range: Option<&proto::TimeRange>, field: &str) -> Result<(i64, i64), Status> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let range = range.copied().unwrap_or_default();
    let end = if range.end_unix_nano == 0 { now } else { range.end_unix_nano };
    let start = if range.start_unix_nano == 0 {
        end.saturating_sub(DEFAULT_RANGE_NANOS)
    } else {
        range.start_unix_nano
    };
    if start >= end {
        return Err(Status::invalid_argument(format!(
            "{field}: start_unix_nano ({start}) must be before end_unix_nano ({end})"
        )));
    }
    let clamp = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    Ok((clamp(start), clamp(end)))
}

fn database_error(err: tokio_postgres::Error) -> Status {
    Status::unavailable(format!("database error: {err}"))
}

/// Stored data that does not follow the mapping: a bug or a hand-edited row, not the caller's fault.
fn corrupt(err: MappingError) -> Status {
    Status::internal(format!("stored data does not decode: {err}"))
}
