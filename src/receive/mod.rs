//! Front doors: the OTLP/gRPC export services and the OTLP/HTTP receiver. Each handler decodes
//! its request, encodes it into rows, submits them to the pipeline, and answers once they are
//! committed. What failed maps to a gRPC status or an HTTP status in one function each.

pub mod grpc;
pub mod http;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use tonic::Status;

use crate::{
    encode::{dims::KnownIds, Encoded},
    pipeline::{intake::Room, Pipeline, WriteError},
};

/// How long a client is asked to wait before retrying a request that could not be stored.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why an export was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("encoding the request failed: {0}")]
    Encode(String),
    /// The request is not a valid protobuf message of its kind.
    #[error("failed to decode Protobuf message: {0}")]
    Decode(String),
}

impl IngestError {
    /// Whether sending the same request again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            IngestError::Write(
                WriteError::Database(_) | WriteError::ShuttingDown | WriteError::Overloaded(_),
            ) => true,
            IngestError::Write(WriteError::Refused(_)) | IngestError::Encode(_) | IngestError::Decode(_) => {
                false
            }
        }
    }
}

/// Records of a stored request that were refused, for the answer's OTLP `partial_success`.
#[derive(Debug, Default, PartialEq)]
pub struct Refused {
    pub count: i64,
    pub message: String,
}

/// Runs `encode` (decoding too, where the request is still bytes) off the async threads, since a
/// request may be tens of megabytes, and waits for its rows to commit, holding the request's
/// intake `room` until its rows are queued. Returns the records it refused, if any.
///
/// # Errors
/// When the request does not decode or its rows were not stored.
pub async fn ingest(
    pipeline: &Pipeline,
    encode: impl FnOnce(&KnownIds) -> Result<Encoded, IngestError> + Send + 'static,
    room: Option<Room>,
) -> Result<Option<Refused>, IngestError> {
    let known = pipeline.known.clone();
    let encoded = tokio::task::spawn_blocking(move || encode(&known))
        .await
        .map_err(|err| IngestError::Encode(err.to_string()))??;
    let refused = encoded
        .rejection_message()
        .map(|message| Refused { count: i64::try_from(encoded.rejected).unwrap_or(i64::MAX), message });
    pipeline.submit(encoded, room).await?;
    Ok(refused)
}

/// The gRPC status for a request whose rows were not stored: `UNAVAILABLE`, with a
/// `google.rpc.RetryInfo` delay, tells OTLP exporters to back off and send again;
/// `INVALID_ARGUMENT` that the data itself was refused.
pub fn grpc_status(err: &IngestError) -> Status {
    match err {
        IngestError::Write(WriteError::Refused(_)) | IngestError::Decode(_) => {
            Status::invalid_argument(err.to_string())
        }
        _ if err.retryable() => {
            let details = tonic_types::ErrorDetails::with_retry_info(Some(RETRY_AFTER));
            <Status as tonic_types::StatusExt>::with_error_details(
                tonic::Code::Unavailable,
                err.to_string(),
                details,
            )
        }
        _ => Status::internal(err.to_string()),
    }
}

/// The HTTP status for a request whose rows were not stored: 429 when otelephant is overloaded,
/// 503 when the database is; both (with Retry-After) tell OTLP exporters to send again.
pub fn http_status(err: &IngestError) -> ::http::StatusCode {
    match err {
        IngestError::Write(WriteError::Overloaded(_)) => ::http::StatusCode::TOO_MANY_REQUESTS,
        IngestError::Write(WriteError::Refused(_)) | IngestError::Decode(_) => {
            ::http::StatusCode::BAD_REQUEST
        }
        _ if err.retryable() => ::http::StatusCode::SERVICE_UNAVAILABLE,
        _ => ::http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The export answers, with `partial_success` set when records were refused.
pub fn traces_response(refused: Option<Refused>) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: refused
            .map(|r| ExportTracePartialSuccess { rejected_spans: r.count, error_message: r.message }),
    }
}

pub fn metrics_response(refused: Option<Refused>) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: refused
            .map(|r| ExportMetricsPartialSuccess { rejected_data_points: r.count, error_message: r.message }),
    }
}

pub fn logs_response(refused: Option<Refused>) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: refused
            .map(|r| ExportLogsPartialSuccess { rejected_log_records: r.count, error_message: r.message }),
    }
}
