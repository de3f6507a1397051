//! The OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`, in binary protobuf
//! (`application/x-protobuf`) or OTLP JSON (`application/json`: hex ids, integer enums,
//! lowerCamelCase keys, 64-bit integers as strings or numbers, unknown fields ignored), with
//! gzip, deflate or zstd bodies, answering in the request's format. Status codes follow the OTLP
//! specification: 200, 400 with a `google.rpc.Status` body, 413, 415, 405, and 503 with
//! Retry-After when the rows could not be stored.

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use bytes::BytesMut;
use http_body::Body as _;
use serde::Serialize;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    validate_request::ValidateRequestHeaderLayer,
};

use super::{
    bound,
    conn::Pace,
    inflate::{self, InflateError},
};
use super::{
    count_request, http_status, ingest, outcome::Outcome, IngestError, Logs, Metrics, Signal, Traces,
    RETRY_AFTER,
};
use crate::{
    auth::Access,
    config::OtlpConfig,
    encode::dims::KnownIds,
    pipeline::{
        intake::{Intake, Room},
        Pipeline, WriteError,
    },
};

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// google.rpc.Code values used in answers.
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const INTERNAL: i32 = 13;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// The format a Content-Type names, parameters (`; charset=utf-8`) aside.
    fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = value.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            PROTOBUF | "application/protobuf" => Some(Self::Protobuf),
            JSON => Some(Self::Json),
            _ => None,
        }
    }

    fn respond<M: prost::Message + Serialize>(self, status: StatusCode, message: &M) -> Response {
        let (content_type, body) = match self {
            Format::Protobuf => (PROTOBUF, message.encode_to_vec()),
            Format::Json => (JSON, serde_json::to_vec(message).unwrap_or_default()),
        };
        (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
    }

    fn error(self, status: StatusCode, code: i32, message: String) -> Response {
        self.respond(status, &RpcStatus { code, message })
    }
}

/// What stops a body from becoming a request.
enum BodyError {
    TooLarge(usize),
    UnsupportedEncoding(String),
    Unreadable(String),
    /// It arrived more slowly than `otlp.read_timeout_ms` and `otlp.min_read_bytes_per_sec` allow.
    TooSlow(String),
    /// No intake room came free for the next of its bytes.
    NoRoom(WriteError),
}

impl From<String> for BodyError {
    /// An OTLP/JSON body that does not decode.
    fn from(why: String) -> Self {
        BodyError::Unreadable(format!("invalid OTLP JSON: {why}"))
    }
}

impl From<InflateError> for BodyError {
    fn from(err: InflateError) -> Self {
        match err {
            InflateError::TooLarge(limit) => BodyError::TooLarge(limit),
            InflateError::Unsupported(encoding) => BodyError::UnsupportedEncoding(encoding),
            InflateError::Corrupt(why) => BodyError::Unreadable(why),
            InflateError::NoRoom(err) => BodyError::NoRoom(err),
        }
    }
}

impl BodyError {
    fn respond(self, format: Format) -> Response {
        match self {
            BodyError::TooLarge(limit) => format.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                RESOURCE_EXHAUSTED,
                format!("request body exceeds the limit of {limit} bytes (after decompression)"),
            ),
            BodyError::UnsupportedEncoding(encoding) => format.error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                format!("unsupported Content-Encoding {encoding:?}; use gzip, deflate, zstd or none"),
            ),
            BodyError::Unreadable(why) => format.error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, why),
            BodyError::TooSlow(why) => {
                let mut response = format.error(StatusCode::REQUEST_TIMEOUT, DEADLINE_EXCEEDED, why);
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            BodyError::NoRoom(err) => failure(format, &IngestError::Write(err)),
        }
    }

    /// How a request answered with this is counted.
    fn outcome(&self) -> Outcome {
        match self {
            BodyError::NoRoom(WriteError::TooLarge(_)) => Outcome::TooLarge,
            BodyError::NoRoom(_) => Outcome::Overloaded,
            BodyError::TooSlow(_) => Outcome::TooSlow,
            _ => Outcome::Invalid,
        }
    }
}

/// Reads a whole request body, refusing more than `limit` bytes, taking intake room for the
/// memory it fills as it arrives (a step ahead, see [`Intake::step`]), and cutting it off when
/// it falls behind `pace`. A body that
/// arrives in one frame is kept as it is; one in many is gathered into a buffer that grows by
/// doubling (never to more than Content-Length), each growth paid for before it is made.
async fn read_body(
    body: Body,
    declared: Option<usize>,
    limit: usize,
    intake: &Intake,
    room: &mut Room,
    pace: Pace,
) -> Result<Bytes, BodyError> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut paced = pace.start();
    let declared = declared.map(|d| d.min(limit));
    loop {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
        let Ok(frame) = tokio::time::timeout_at(paced.deadline(), next).await else {
            return Err(BodyError::TooSlow(paced.too_slow()));
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyError::Unreadable(format!("cannot read the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        paced.arrived(data.len());
        let earlier = first.as_ref().map_or(0, Bytes::len);
        let received = earlier + buf.len() + data.len();
        if received > limit {
            return Err(BodyError::TooLarge(limit));
        }
        if first.is_none() && buf.is_empty() {
            let more = intake.step(room.asked(), data.len(), declared);
            intake.grow(room, more).await.map_err(BodyError::NoRoom)?;
            first = Some(data);
            continue;
        }
        if received > buf.capacity() {
            let most = declared.filter(|d| *d >= received).unwrap_or(limit);
            let grown = (buf.capacity() * 2).max(received).min(most);
            let more = intake.step(room.asked(), earlier + grown, declared);
            intake.grow(room, more).await.map_err(BodyError::NoRoom)?;
            buf.reserve(grown - buf.len());
        }
        if let Some(earlier) = first.take() {
            buf.extend_from_slice(&earlier);
        }
        buf.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

#[derive(Clone)]
struct HttpState {
    pipeline: Pipeline,
    max_request_bytes: usize,
    pace: Pace,
}

/// The receiver's routes. `cors_origins` lists the origins browsers may send from; empty means
/// no CORS headers at all.
///
/// # Errors
/// An origin that is not a valid header value.
pub fn router(
    pipeline: Pipeline,
    config: &OtlpConfig,
    access: Access,
) -> Result<Router, header::InvalidHeaderValue> {
    let telemetry = pipeline.telemetry.clone();
    let state = HttpState { pipeline, max_request_bytes: config.max_request_bytes, pace: Pace::new(config) };
    let cors_origins = &config.cors_allowed_origins;
    // The answer is the error variant, as tower-http's request validation asks for.
    #[allow(clippy::result_large_err)]
    let authenticate = move |request: &mut http::Request<Body>| {
        if access.admits_ingest(request.headers()) {
            return Ok(());
        }
        let signal = request.uri().path().strip_prefix("/v1/").unwrap_or("none");
        let signal = ["traces", "metrics", "logs"].into_iter().find(|s| *s == signal).unwrap_or("none");
        let labels =
            [("signal", signal), ("transport", "http"), ("outcome", Outcome::Unauthenticated.label())];
        telemetry.counter(crate::telemetry::REQUESTS, &labels).increment(1);
        let format = Format::of(request.headers()).unwrap_or(Format::Json);
        let message = "a valid bearer token is required (Authorization: Bearer <token>)".to_owned();
        let mut response = format.error(StatusCode::UNAUTHORIZED, UNAUTHENTICATED, message);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(response)
    };
    let router = Router::new()
        .route("/v1/traces", post(export_traces))
        .route("/v1/metrics", post(export_metrics))
        .route("/v1/logs", post(export_logs))
        .with_state(state)
        // The handlers enforce max_request_bytes themselves, after decompression.
        .layer(DefaultBodyLimit::disable())
        .layer(ValidateRequestHeaderLayer::custom(authenticate));
    if cors_origins.is_empty() {
        return Ok(router);
    }
    let origins = cors_origins.iter().map(|o| HeaderValue::from_str(o)).collect::<Result<Vec<_>, _>>()?;
    Ok(router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::CONTENT_ENCODING, header::AUTHORIZATION])
            .expose_headers([header::RETRY_AFTER]),
    ))
}

async fn export_traces(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export::<Traces>(&state, &headers, body).await
}

async fn export_metrics(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export::<Metrics>(&state, &headers, body).await
}

async fn export_logs(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export::<Logs>(&state, &headers, body).await
}

/// A request body ready to encode: protobuf stays bytes (the signal may encode straight from
/// them), JSON is decoded.
enum Decoded<R> {
    Protobuf(Bytes),
    Json(R),
}

async fn export<S: Signal>(state: &HttpState, headers: &HeaderMap, body: Body) -> Response {
    // Requests answered before they reach the pipeline are counted here; the rest by `ingest`.
    let count = |outcome| count_request::<S>(&state.pipeline.telemetry, "http", outcome);
    let Some(format) = Format::of(headers) else {
        count(Outcome::Invalid);
        let message = format!("unsupported Content-Type; use {PROTOBUF} or {JSON}");
        return Format::Json.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_ARGUMENT, message);
    };
    let limit = state.max_request_bytes;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let compressed = encoding.as_deref().is_some_and(|e| e != "identity");
    let intake = &state.pipeline.intake;
    let mut room = Room::default();
    let raw = match read_body(body, declared, limit, intake, &mut room, state.pace).await {
        Ok(raw) => raw,
        Err(err) => {
            count(err.outcome());
            return err.respond(format);
        }
    };
    let mut built = room.counting();
    let request = if format == Format::Protobuf && !compressed {
        // Nothing to do before encoding, which reads the protobuf bytes as they are.
        Decoded::Protobuf(raw)
    } else {
        // What the body inflates and decodes to is built from it: the queue's budget.
        let (build, runtime) = (state.pipeline.build.clone(), tokio::runtime::Handle::current());
        let mut building = room.counting();
        let decoded = tokio::task::spawn_blocking(move || {
            let mut charge = |bytes| build.grow_blocking(&runtime, &mut building, bytes);
            let body = inflate::decompress(encoding.as_deref(), raw, limit, &mut charge)?;
            let request = match format {
                Format::Protobuf => Decoded::Protobuf(body),
                Format::Json => {
                    // Room for the structs the body becomes, before they are made.
                    let structs = bound::json(&body);
                    build.grow_blocking(&runtime, &mut building, structs).map_err(BodyError::NoRoom)?;
                    let mut second_pass =
                        || build.grow_blocking(&runtime, &mut building, structs).map_err(BodyError::NoRoom);
                    Decoded::Json(super::json::decode(&body, &mut second_pass)?)
                }
            };
            Ok::<_, BodyError>((request, building))
        })
        .await;
        match decoded {
            Ok(Ok((request, held))) => {
                built = held;
                request
            }
            Ok(Err(err)) => {
                count(err.outcome());
                return err.respond(format);
            }
            Err(err) => {
                count(Outcome::Error);
                return format.error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, err.to_string());
            }
        }
    };
    let encode = move |known: &KnownIds| match request {
        Decoded::Protobuf(body) => S::encode_message(&body, known),
        Decoded::Json(request) => Ok(S::encode(&request, known)),
    };
    match ingest::<S>(&state.pipeline, "http", encode, Some(room), built).await {
        Ok(refused) => format.respond(StatusCode::OK, &S::respond(refused)),
        Err(err) => failure(format, &err),
    }
}

/// The answer to a request that was not stored, in the request's format.
fn failure(format: Format, err: &IngestError) -> Response {
    let status = http_status(err);
    let code = match status {
        StatusCode::BAD_REQUEST => INVALID_ARGUMENT,
        StatusCode::PAYLOAD_TOO_LARGE => RESOURCE_EXHAUSTED,
        _ if err.retryable() => UNAVAILABLE,
        _ => INTERNAL,
    };
    let mut response = format.error(status, code, err.to_string());
    if err.retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
    }
    response
}
