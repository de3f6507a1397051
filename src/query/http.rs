//! The query service over HTTP/JSON, on the OTLP/HTTP port: `POST
//! /otelephant.query.v1.QueryService/<Method>` with the request as JSON, answered with the
//! response as JSON. This is the unary form of the Connect protocol (connectrpc.com), so
//! `curl`, `buf curl --protocol connect` and Connect clients all work.
//!
//! Requests and responses use the protobuf JSON mapping (lowerCamelCase names, 64-bit integers
//! as strings, unset fields omitted); the OTLP messages inside them use the OTLP/JSON flavour
//! of it (hex trace and span ids, integer enums). NaN and the infinities are the strings
//! `"NaN"`, `"Infinity"` and `"-Infinity"`, as the mapping writes them. Errors carry the same codes and messages as
//! on gRPC: `{"code": "invalid_argument", "message": "..."}` with the HTTP status Connect
//! gives the code (400, 404, 429, 503, 504, ...).

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Code, Request, Status};

use super::special_floats::Special;
use super::{
    proto::{
        query_service_server::QueryService, AttributeFilter, CountLogsRequest, GetLlmConversationRequest,
        GetLlmOverviewRequest, GetTraceRequest, ListLlmCallsRequest, ListMetricsRequest,
        ListOperationsRequest, ListServiceDependenciesRequest, ListServiceStatsRequest, ListServicesRequest,
        LogFacetsRequest, QueryMetricsRequest, ScatterTracesRequest, SearchLogsRequest, SearchTracesRequest,
    },
    Query,
};
use crate::{
    auth::Access,
    receive::json::{any_value_doubles, decode, Doubles},
};

/// The doubles of attribute filters' values, which the protobuf JSON mapping lets a request
/// write as `"NaN"`, `"Infinity"` and `"-Infinity"`.
fn filter_doubles(filters: &mut [AttributeFilter], f: &mut dyn FnMut(&mut f64)) {
    for value in filters.iter_mut().filter_map(|filter| filter.value.as_mut()) {
        any_value_doubles(value, f);
    }
}

macro_rules! doubles {
    ($($request:ty: $($field:ident)?),* $(,)?) => {
        $(impl Doubles for $request {
            #[allow(unused_variables)]
            fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
                $(filter_doubles(&mut self.$field, f);)?
            }
        })*
    };
}

doubles!(
    SearchTracesRequest: attributes,
    SearchLogsRequest: attributes,
    QueryMetricsRequest: attributes,
    GetTraceRequest:,
    ListMetricsRequest:,
    ListServicesRequest:,
    ListServiceStatsRequest:,
    ListServiceDependenciesRequest:,
    ListOperationsRequest:,
    GetLlmOverviewRequest:,
    ListLlmCallsRequest:,
    GetLlmConversationRequest:,
);

impl Doubles for CountLogsRequest {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
        if let Some(filters) = self.filters.as_mut() {
            filters.each_double(f);
        }
    }
}

impl Doubles for ScatterTracesRequest {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
        if let Some(filters) = self.filters.as_mut() {
            filters.each_double(f);
        }
    }
}

impl Doubles for LogFacetsRequest {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
        if let Some(filters) = self.filters.as_mut() {
            filters.each_double(f);
        }
    }
}

/// Where the service's methods are served: `{SERVICE_PATH}/<Method>`.
pub const SERVICE_PATH: &str = "/otelephant.query.v1.QueryService";

/// The largest request body read: query requests are a few filters.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The read APIs of the OTLP/HTTP port: this JSON form of the query service, Jaeger's API
/// ([`super::jaeger`]) and Loki's ([`super::loki`]), all behind the query token (see
/// [`Access::admits_query`]).
pub fn router(query: Query, access: Access) -> Router {
    Router::new()
        .route(&format!("{SERVICE_PATH}/{{method}}"), post(call))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(query.clone())
        .merge(super::jaeger::router(query.clone()))
        .merge(super::loki::router(query))
        .layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: Next| {
            let access = access.clone();
            async move {
                if access.admits_query(request.headers()).await {
                    return next.run(request).await;
                }
                let mut response = error(&Status::unauthenticated(
                    "a valid query token is required (Authorization: Bearer <token>)",
                ));
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }))
}

/// Whether a request's body is declared JSON. Any other type (a form's, or `text/plain`) is
/// one a page on another site can make a visitor's browser send without asking first.
fn declares_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

async fn call(
    State(query): State<Query>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !declares_json(&headers) {
        let mut response =
            error(&Status::invalid_argument("the request must be sent as Content-Type: application/json"));
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    let q = &query;
    match method.as_str() {
        "GetTrace" => unary(body, |r| async move { q.get_trace(Request::new(r)).await }).await,
        "SearchTraces" => unary(body, |r| async move { q.search_traces(Request::new(r)).await }).await,
        "SearchLogs" => unary(body, |r| async move { q.search_logs(Request::new(r)).await }).await,
        "CountLogs" => unary(body, |r| async move { q.count_logs(Request::new(r)).await }).await,
        "LogFacets" => unary(body, |r| async move { q.log_facets(Request::new(r)).await }).await,
        "ScatterTraces" => unary(body, |r| async move { q.scatter_traces(Request::new(r)).await }).await,
        "ListMetrics" => unary(body, |r| async move { q.list_metrics(Request::new(r)).await }).await,
        "QueryMetrics" => unary(body, |r| async move { q.query_metrics(Request::new(r)).await }).await,
        "ListServices" => unary(body, |r| async move { q.list_services(Request::new(r)).await }).await,
        "ListServiceStats" => {
            unary(body, |r| async move { q.list_service_stats(Request::new(r)).await }).await
        }
        "ListServiceDependencies" => {
            unary(body, |r| async move { q.list_service_dependencies(Request::new(r)).await }).await
        }
        "ListOperations" => unary(body, |r| async move { q.list_operations(Request::new(r)).await }).await,
        "GetLlmOverview" => unary(body, |r| async move { q.get_llm_overview(Request::new(r)).await }).await,
        "ListLlmCalls" => unary(body, |r| async move { q.list_llm_calls(Request::new(r)).await }).await,
        "GetLlmConversation" => {
            unary(body, |r| async move { q.get_llm_conversation(Request::new(r)).await }).await
        }
        other => error(&Status::unimplemented(format!(
            "{SERVICE_PATH} has no method {other:?}; see proto/otelephant/query/v1/query.proto"
        ))),
    }
}

/// Decodes the request, runs the method, encodes its answer.
async fn unary<Req, Resp, F, Fut>(body: Bytes, method: F) -> Response
where
    Req: DeserializeOwned + Doubles,
    Resp: Serialize + Send + 'static,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    // An empty body is the empty message, as in protobuf.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    // As OTLP/JSON is read: NaN and the infinities may be written as the mapping writes them.
    let request = match decode::<Req, String>(body, &mut || Ok(())) {
        Ok(request) => request,
        Err(err) => {
            return error(&Status::invalid_argument(format!("the request is not valid JSON for it: {err}")))
        }
    };
    match method(request).await {
        Ok(response) => json_off_thread(StatusCode::OK, response.into_inner()).await,
        Err(status) => error(&status),
    }
}

/// A JSON answer. It is written in chunks, never into one buffer that doubles as it grows, so
/// an answer takes about its own size while it is written and sent.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let mut chunks = Chunks::default();
    match serde_json::to_writer(&mut chunks, &Special(body)) {
        Ok(()) => (status, [(header::CONTENT_TYPE, "application/json")], chunks.into_body()).into_response(),
        Err(err) => error(&Status::internal(format!("the answer does not encode as JSON: {err}"))),
    }
}

/// Size of the chunks an answer is written in.
const CHUNK_BYTES: usize = 256 * 1024;

/// An answer as it is written: full chunks, and the one being filled.
#[derive(Default)]
struct Chunks {
    full: Vec<Bytes>,
    current: Vec<u8>,
}

impl std::io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = (CHUNK_BYTES - self.current.len()).min(rest.len());
            self.current.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.current.len() == CHUNK_BYTES {
                self.full.push(Bytes::from(std::mem::take(&mut self.current)));
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Chunks {
    /// The answer's body: one buffer when it fits in one chunk (sent with its length), the
    /// chunks in order otherwise.
    fn into_body(mut self) -> axum::body::Body {
        if self.full.is_empty() {
            return axum::body::Body::from(self.current);
        }
        if !self.current.is_empty() {
            self.full.push(Bytes::from(self.current));
        }
        let chunks = self.full.into_iter().map(Ok::<Bytes, std::convert::Infallible>);
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    }
}

/// A JSON answer encoded on the blocking pool: a large one takes long enough to write that it
/// must not hold up the async worker threads.
pub(crate) async fn json_off_thread<T: Serialize + Send + 'static>(status: StatusCode, body: T) -> Response {
    tokio::task::spawn_blocking(move || json(status, &body))
        .await
        .unwrap_or_else(|e| error(&Status::internal(format!("the answer could not be encoded: {e}"))))
}

/// A Connect error answer for a gRPC status.
pub(crate) fn error(status: &Status) -> Response {
    let body = serde_json::json!({ "code": code_name(status.code()), "message": status.message() });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    (http_status(status.code()), [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The HTTP status the Connect protocol gives each code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound | Code::Unimplemented => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A code's name in Connect's (and gRPC's JSON) spelling: `invalid_argument`.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn an_answer_is_written_in_whole_chunks_and_read_back_in_order() {
        let text: Vec<u8> = (0..(CHUNK_BYTES * 2 + 1000)).map(|i| (i % 251) as u8).collect();
        let mut chunks = Chunks::default();
        for piece in text.chunks(7_777) {
            chunks.write_all(piece).expect("written");
        }
        assert_eq!(chunks.full.len(), 2);
        assert!(chunks.full.iter().all(|c| c.len() == CHUNK_BYTES));
        let joined: Vec<u8> = chunks
            .full
            .iter()
            .flat_map(|c| c.iter().copied())
            .chain(chunks.current.iter().copied())
            .collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn only_json_is_taken() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        assert!(declares_json(&with("application/json")));
        assert!(declares_json(&with("Application/JSON; charset=utf-8")));
        for other in
            ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/jsonx"]
        {
            assert!(!declares_json(&with(other)), "{other}");
        }
        assert!(!declares_json(&HeaderMap::new()));
    }
}
