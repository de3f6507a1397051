//! Front doors: the OTLP/gRPC export services and the OTLP/HTTP receiver. Each handler decodes
//! its request, encodes it into rows, submits them to the pipeline, and answers once they are
//! committed. What failed maps to a gRPC status or an HTTP status in one function each.

pub mod bound;
pub mod conn;
pub mod grpc;
pub mod http;
pub mod inflate;
pub mod json;
pub mod outcome;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use tonic::Status;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

use crate::{
    encode::{
        dims::KnownIds,
        logs,
        meter::{self, Meter},
        metrics,
        source::Unusual,
        traces, Encoded,
    },
    pipeline::{
        intake::{Intake, Room},
        Pipeline, WriteError,
    },
    telemetry::{self, Telemetry},
};
use outcome::Outcome;

/// What differs between the three export services.
pub trait Signal: Send + Sync + 'static {
    /// The gRPC service name; its one method is `Export`.
    const SERVICE: &'static str;
    /// The `signal` label of otelephant's own metrics.
    const NAME: &'static str;
    type Request: prost::Message + Default + serde::de::DeserializeOwned + json::Doubles + Send + 'static;
    type Response: prost::Message + Default + serde::Serialize + Send + 'static;
    /// Encodes a decoded request.
    fn encode(request: &Self::Request, known: &KnownIds) -> Encoded;
    /// Encodes a request straight from its protobuf bytes (see `encode::wire`).
    ///
    /// # Errors
    /// [`Unusual`] for bytes left to prost.
    fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual>;
    fn respond(refused: Option<Refused>) -> Self::Response;

    /// Encodes a request from its protobuf bytes: straight from them, unless they take the
    /// rules only prost knows.
    ///
    /// # Errors
    /// [`IngestError::Decode`] when they are not a valid request.
    fn encode_message(message: &[u8], known: &KnownIds) -> Result<Encoded, IngestError> {
        Self::encode_wire(message, known).or_else(|_unusual| decode_and_encode::<Self>(message, known))
    }
}

/// Decodes a request with prost, then encodes it; room for the structs is asked of the
/// request's meter first (see [`bound::protobuf`]).
fn decode_and_encode<S: Signal + ?Sized>(message: &[u8], known: &KnownIds) -> Result<Encoded, IngestError> {
    if meter::ask(bound::protobuf(message)) == meter::Answer::Refused {
        // The meter's owner has the reason.
        return Err(IngestError::Encode("no room to decode the request".into()));
    }
    let request = S::Request::decode(message).map_err(|e| IngestError::Decode(e.to_string()))?;
    Ok(S::encode(&request, known))
}

pub struct Traces;
pub struct Metrics;
pub struct Logs;

impl Signal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const NAME: &'static str = "traces";
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn encode(request: &Self::Request, known: &KnownIds) -> Encoded {
        traces::encode(request, known)
    }
    fn respond(refused: Option<Refused>) -> Self::Response {
        traces_response(refused)
    }
    fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual> {
        traces::encode_wire(message, known)
    }
}

impl Signal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const NAME: &'static str = "metrics";
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    fn encode(request: &Self::Request, known: &KnownIds) -> Encoded {
        metrics::encode(request, known)
    }
    fn respond(refused: Option<Refused>) -> Self::Response {
        metrics_response(refused)
    }
    fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual> {
        metrics::encode_wire(message, known)
    }
}

impl Signal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const NAME: &'static str = "logs";
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    fn encode(request: &Self::Request, known: &KnownIds) -> Encoded {
        logs::encode(request, known)
    }
    fn respond(refused: Option<Refused>) -> Self::Response {
        logs_response(refused)
    }
    fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual> {
        logs::encode_wire(message, known)
    }
}

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
    #[error("invalid protobuf: {0}")]
    Decode(String),
}

impl IngestError {
    /// Whether sending the same request again may succeed.
    pub fn retryable(&self) -> bool {
        Outcome::of(self).retryable()
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
/// intake `room` until its rows are queued. What it builds (decoded structs, rows) is charged to
/// the queue's budget as it grows, added to `built` (see [`crate::encode::meter`]), so a request
/// that makes far more rows than it weighs waits for room, or is turned away, like one that
/// weighs more. Returns the records it refused, if any.
///
/// # Errors
/// When the request does not decode, finds no room for its rows, or its rows were not stored.
pub async fn ingest<S: Signal>(
    pipeline: &Pipeline,
    transport: &'static str,
    encode: impl FnOnce(&KnownIds) -> Result<Encoded, IngestError> + Send + 'static,
    room: Option<Room>,
    built: Room,
) -> Result<Option<Refused>, IngestError> {
    let known = pipeline.known.clone();
    let t = &pipeline.telemetry;
    let labels = [("signal", S::NAME), ("transport", transport)];
    let built = Arc::new(Mutex::new(built));
    let refusal = Arc::new(Mutex::new(None));
    let meter = charging(pipeline.build.clone(), built.clone(), refusal.clone());
    let encoded = tokio::task::spawn_blocking(move || meter::metered(meter, || encode(&known)).0).await;
    let refused = refusal.lock().unwrap_or_else(PoisonError::into_inner).take();
    let encoded = match refused {
        Some(err) => Err(IngestError::Write(err)),
        None => encoded.map_err(|err| IngestError::Encode(err.to_string())).and_then(|encoded| encoded),
    }
    .inspect_err(|err| count_request::<S>(t, transport, Outcome::of(err)))?;
    let built = std::mem::take(&mut *built.lock().unwrap_or_else(PoisonError::into_inner));
    let items = encoded.items() as u64;
    t.counter(telemetry::RECEIVED_ITEMS, &labels).increment(items + encoded.rejected);
    if encoded.rejected > 0 {
        let labels = [labels[0], labels[1], ("reason", Outcome::Invalid.label())];
        t.counter(telemetry::REJECTED_ITEMS, &labels).increment(encoded.rejected);
    }
    let refused = encoded
        .rejection_message()
        .map(|message| Refused { count: i64::try_from(encoded.rejected).unwrap_or(i64::MAX), message });
    if let Err(err) = pipeline.submit(encoded, room, built).await {
        let err = IngestError::from(err);
        let reason = Outcome::of(&err);
        t.counter(telemetry::REJECTED_ITEMS, &[labels[0], labels[1], ("reason", reason.label())])
            .increment(items);
        count_request::<S>(t, transport, reason);
        return Err(err);
    }
    t.counter(telemetry::ACCEPTED_ITEMS, &labels).increment(items);
    count_request::<S>(t, transport, if refused.is_some() { Outcome::Partial } else { Outcome::Ok });
    Ok(refused)
}

/// A meter that grows `room` in `budget` (the queue's, see `Pipeline::build`) from the
/// blocking thread that encodes; when it cannot, it leaves the reason in `refusal`.
fn charging(budget: Intake, room: Arc<Mutex<Room>>, refusal: Arc<Mutex<Option<WriteError>>>) -> Meter {
    let runtime = tokio::runtime::Handle::current();
    Meter::new(Box::new(move |bytes| {
        let mut room = room.lock().unwrap_or_else(PoisonError::into_inner);
        match budget.grow_blocking(&runtime, &mut room, bytes) {
            Ok(()) => true,
            Err(err) => {
                *refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
                false
            }
        }
    }))
}

/// Counts an export request by how it was answered.
pub fn count_request<S: Signal>(telemetry: &Telemetry, transport: &'static str, outcome: Outcome) {
    let labels = [("signal", S::NAME), ("transport", transport), ("outcome", outcome.label())];
    telemetry.counter(telemetry::REQUESTS, &labels).increment(1);
}

/// The gRPC status for a request whose rows were not stored: `UNAVAILABLE`, with a
/// `google.rpc.RetryInfo` delay, tells OTLP exporters to back off and send again;
/// `INVALID_ARGUMENT` that the data itself was refused.
pub fn grpc_status(err: &IngestError) -> Status {
    let outcome = Outcome::of(err);
    if outcome.retryable() {
        let details = tonic_types::ErrorDetails::with_retry_info(Some(RETRY_AFTER));
        return <Status as tonic_types::StatusExt>::with_error_details(
            outcome.grpc_code(),
            err.to_string(),
            details,
        );
    }
    Status::new(outcome.grpc_code(), err.to_string())
}

/// The HTTP status for a request whose rows were not stored: 429 when otelephant is overloaded,
/// 503 when the database is; both (with Retry-After) tell OTLP exporters to send again.
pub fn http_status(err: &IngestError) -> ::http::StatusCode {
    Outcome::of(err).http_status()
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
